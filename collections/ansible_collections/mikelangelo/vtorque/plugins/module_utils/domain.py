# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Desired state of one libvirt domain: present, running, shutdown, absent."""

from __future__ import annotations

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import domain_xml, hugepages
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.connection import (
    Hypervisor,
    is_no_domain,
    libvirt,
    state_name,
)
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.domain_spec import DEFINING_STATES
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import (
    InvalidSpec,
    Refused,
    WaitTimeout,
)
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.waiter import wait_for

POLL = 0.05  # seconds between state looks: a look is one local libvirt call, a late one is a job's time


class DomainState:
    """Operations on the domain called ``name``; every libvirt call goes through ``hv.run``."""

    def __init__(self, hv: Hypervisor, name: str, check_mode: bool):
        self.hv = hv
        self.name = name
        self.check_mode = check_mode
        self.warnings = []

    def _run(self, what, func):
        return self.hv.run(what, self.name, func)

    def _with_domain(self, what, func):
        """``func(dom)``, or None when the domain does not exist, also when it vanishes between
        the lookup and the call (a concurrent teardown of the same job, e.g. a racing epilogue)."""

        def call(conn):
            dom = self.hv.lookup(conn, self.name)
            if dom is None:
                return None
            try:
                return func(dom)
            except libvirt.libvirtError as exc:
                if is_no_domain(exc):
                    return None
                raise

        return self._run(what, call)

    def inactive_xml(self) -> str | None:
        return self._with_domain("read definition", lambda d: d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

    def state(self) -> str:
        return self._with_domain("read state", lambda d: state_name(d.state()[0])) or "absent"

    def is_active(self) -> bool:
        return bool(self._with_domain("read state", lambda d: d.isActive()))

    # Named wait predicates (what the waits below wait for).
    def is_stopped(self) -> bool:
        return not self.is_active()

    def is_running(self) -> bool:
        return self.state() == "running"

    def define(self, xml: str) -> tuple[bool, str, str]:
        """(changed, before, after) inactive XML; redefines only when the definition differs."""
        before = self.inactive_xml()
        if before is not None:
            have, want = domain_xml.domain_uuid(before), domain_xml.domain_uuid(xml)
            if want and have != want:
                raise Refused(
                    f"domain {self.name} exists with UUID {have}, the definition has {want}; remove it first",
                    target=self.name,
                )
            if domain_xml.is_up_to_date(xml, before):
                return False, before, before
        if self.check_mode:
            return True, before or "", xml
        after = self._run("define", lambda c: c.defineXML(xml).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        drift = domain_xml.difference(xml, after)
        if drift:
            self.warnings.append(
                f"libvirt stored domain {self.name} differently from the rendered definition ({drift}); "
                "the next run will report a change again"
            )
        return True, before or "", after

    def start(self, timeout: int, wait: bool) -> bool:
        current = self.state()
        if current == "running":
            return False
        if self.check_mode:
            return True
        if current == "shutting_down":
            self._wait(self.is_stopped, timeout, "finish its shutdown before start")
        if current in ("paused", "pmsuspended"):
            self._with_domain("resume", lambda d: d.resume())
        else:
            self._with_domain("start", lambda d: d.create())
        if wait:
            self._wait(self.is_running, timeout, "run")
        return True

    def _wait(self, predicate, timeout: int, what: str) -> None:
        if not wait_for(predicate, timeout, POLL):
            raise WaitTimeout(
                f"domain {self.name} did not {what} within {timeout} s (state: {self.state()})",
                target=self.name,
            )

    def request_shutdown(self, mode: str) -> None:
        flag = (
            libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT
            if mode == "agent"
            else libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
        )

        def shutdown(dom):
            try:
                dom.shutdownFlags(flag)
            except libvirt.libvirtError as exc:
                if already_off(exc):
                    return  # a concurrent teardown of the same job got there first
                # Drivers without shutdown modes (the test driver) take only the default request.
                if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                    raise
                dom.shutdown()

        self._with_domain(f"{mode} shutdown", shutdown)

    def destroy(self) -> None:
        def destroy(dom):
            try:
                dom.destroy()
            except libvirt.libvirtError as exc:
                if not already_off(exc):
                    raise

        self._with_domain("destroy", destroy)

    def shutdown(self, timeout: int, force: bool, mode: str) -> dict:
        if not self.is_active():
            return dict(changed=False, forced=False)
        if self.check_mode:
            return dict(changed=True, forced=False)
        self.request_shutdown(mode)
        if wait_for(self.is_stopped, timeout, POLL):
            return dict(changed=True, forced=False)
        if not force:
            raise WaitTimeout(
                f"domain {self.name} still runs {timeout} s after the {mode} shutdown request; "
                "set force: true to destroy it after the wait",
                target=self.name,
            )
        self.destroy()
        return dict(changed=True, forced=True)

    def remove(self, timeout: int, mode: str) -> dict:
        """Graceful shutdown bounded by ``timeout``, destroy, then undefine with its metadata."""
        if self.inactive_xml() is None:
            return dict(changed=False, forced=False)
        if self.check_mode:
            return dict(changed=True, forced=False)
        forced = False
        if self.is_active():
            if timeout > 0:
                self.request_shutdown(mode)
            forced = not wait_for(self.is_stopped, timeout, POLL)
            self.destroy()
        self._with_domain("undefine", undefine)
        return dict(changed=True, forced=forced)


def already_off(exc) -> bool:
    """The domain no longer runs: what shutdown and destroy want anyway (a vanished domain is
    handled once, in DomainState._with_domain)."""
    return exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID


UNDEFINE_FLAGS = (
    "VIR_DOMAIN_UNDEFINE_MANAGED_SAVE",
    "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA",
    "VIR_DOMAIN_UNDEFINE_NVRAM",
    "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA",
)


def undefine(dom) -> None:
    """Undefine with managed save, snapshot/checkpoint metadata and NVRAM; a transient domain is gone."""
    if not dom.isPersistent():
        return
    flags = 0
    for flag in UNDEFINE_FLAGS:
        flags |= getattr(libvirt, flag, 0)
    try:
        dom.undefineFlags(flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
            raise
        dom.undefine()


def ensure(module_params: dict, check_mode: bool, want_diff: bool) -> dict:
    p = module_params
    name, state = p["name"], p["state"]
    hv = Hypervisor(p["uri"])
    domain = DomainState(hv, name, check_mode)
    try:
        result = dict(changed=False, name=name, forced=False)
        before = after = None
        if state in DEFINING_STATES or (state == "shutdown" and p.get("xml")):
            xml = p.get("xml")
            if not xml:
                raise InvalidSpec(
                    f"state {state} needs the domain definition: call vm_domain with its typed options "
                    "(the action plugin renders them) or pass xml",
                    target=name,
                )
            if domain_xml.domain_name(xml) != name:
                raise InvalidSpec(
                    f"the definition names domain {domain_xml.domain_name(xml)!r}, the task names {name!r}",
                    target=name,
                )
            if state == "running" and domain_xml.uses_hugepages(xml) and domain.state() != "running":
                hugepages.check(domain_xml.memory_kib(xml), name)  # before anything changes
            result["changed"], before, after = domain.define(xml)
        elif state == "shutdown" and domain.inactive_xml() is None:
            raise InvalidSpec(
                f"domain {name} does not exist; give its typed options to define it shut off", target=name
            )
        if state == "running":
            result["changed"] |= domain.start(p["wait_timeout"], p["wait"])
        elif state == "shutdown":
            outcome = domain.shutdown(p["wait_timeout"], p["force"], p["shutdown_mode"])
            result["changed"] |= outcome["changed"]
            result["forced"] = outcome["forced"]
        elif state == "absent":
            before = domain.inactive_xml() or ""
            outcome = domain.remove(p["wait_timeout"], p["shutdown_mode"])
            result.update(outcome)
            after = ""
        stored = after if check_mode and after is not None else domain.inactive_xml()
        result["state"] = domain.state() if not check_mode else _predicted_state(state, domain)
        result["uuid"] = domain_xml.domain_uuid(stored) if stored else ""
        result["macs"] = domain_xml.interface_macs(stored) if stored else []
        if want_diff and before is not None:
            result["diff"] = dict(before=before, after=after if after is not None else before)
        if domain.warnings:
            result["warnings"] = domain.warnings
        return result
    finally:
        hv.close()


def _predicted_state(state: str, domain: DomainState) -> str:
    current = domain.state()
    if state == "present":
        return "shutoff" if current == "absent" else current
    return {"running": "running", "shutdown": "shutoff", "absent": "absent"}[state]
