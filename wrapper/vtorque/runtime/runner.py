"""Running the collection's job playbooks with ansible-runner.

One fresh private data dir per job and phase, removed afterwards; the inventory is the plan's
nodes; forks are sized to the node count. The playbook's variables go in a root-only file
passed with `-e @file`, every string tagged `!unsafe` so nothing a user wrote is ever
templated, and the tasks that carry keys are `no_log`, so no secret reaches the runner's
artifacts or events.
"""

import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass

import yaml
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming

PLAYBOOKS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(naming.__file__))), "..", "playbooks"
)
FAILED_EVENTS = ("runner_on_failed", "runner_on_unreachable")


@dataclass(frozen=True)
class RunResult:
    ok: bool
    status: str
    rc: int
    seconds: float
    failures: tuple  # "host: task: message"

    def joined(self, other, seconds):
        """One result of two parts of a phase (this machine's and the other nodes'); `seconds`
        as they ran (one after the other, or side by side)."""
        return RunResult(
            self.ok and other.ok,
            other.status if self.ok else self.status,
            other.rc or self.rc,
            seconds,
            self.failures + other.failures,
        )


def local_names():
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    return names | {name.split(".")[0] for name in names}


def here(local_nodes=()):
    """Node names that are this machine: its own, and the site's runner.local_nodes."""
    return local_names() | set(local_nodes)


def is_local(node, local_nodes=()):
    """Whether `node` (as the batch system names it, maybe fully qualified) is this machine."""
    names = here(local_nodes)
    return node in names or node.split(".")[0] in names


def inventory(nodes, local=None):
    """Nodes named like this host (or in `local`) run with the local connection, the others over SSH."""
    hosts = {}
    for node in nodes:
        host = {"ansible_python_interpreter": sys.executable}
        if is_local(node, local or ()):
            host["ansible_connection"] = "local"
        hosts[node] = host
    return {"all": {"hosts": hosts}}


def run_playbook(
    phase, nodes, variables, *, work_dir, runner_config, timeout, local_nodes=None, cancelled=None
):
    """Run `job_<phase>.yml` over `nodes` with `variables` in a fresh dir under the existing,
    root-only `work_dir`; RunResult with the failed tasks' messages. `cancelled()`, polled while
    it runs, stops the run when it answers True."""
    import ansible_runner

    private = os.path.join(work_dir, f"runner-{phase}-{time.time_ns()}")
    os.mkdir(private, 0o700)
    vars_file = os.path.join(private, "vars.yml")
    fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(unsafe_yaml(variables))
    envvars = {
        "PATH": os.path.dirname(sys.executable) + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
        "ANSIBLE_PIPELINING": str(runner_config.pipelining),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        RUN_MARK: private,
    }
    start = time.monotonic()
    try:
        run = ansible_runner.run(
            private_data_dir=private,
            playbook=os.path.normpath(os.path.join(PLAYBOOKS, f"job_{phase}.yml")),
            inventory=inventory(nodes, local_nodes),
            cmdline=f"-e @{vars_file} -e ansible_strategy={runner_config.strategy}",
            forks=max(1, min(runner_config.forks, len(nodes))),
            envvars=envvars,
            quiet=True,
            timeout=timeout,
            cancel_callback=cancelled,
        )
        failures = tuple(_failure(event) for event in run.events if event.get("event") in FAILED_EVENTS)
        status, rc = run.status, run.rc
    finally:
        reap(private)
        shutil.rmtree(private, ignore_errors=True)
    return RunResult(status == "successful", status, rc, time.monotonic() - start, failures)


RUN_MARK = "VTORQUE_RUNNER_DIR"  # in the environment of every process a run starts here
REAP_SECONDS = 10


def reap(private):
    """Kill what a run left behind on this machine and wait until it is gone. Ansible's workers
    leave the runner's session (setsid), so when ansible-playbook is killed (the runner's
    timeout or cancel, the OOM killer) they go on running their module: a vm_start would define
    a VM after the teardown that follows. They all carry the run's mark in their environment."""
    mark = f"{RUN_MARK}={private}".encode()
    deadline = time.monotonic() + REAP_SECONDS
    while True:
        left = [pid for pid in _pids() if mark in _environ(pid)]
        if not left or time.monotonic() > deadline:
            return left
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) != os.getpid()]


def _environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:  # gone, or a zombie
        return ()


TEMPLATE_MARKS = ("{", "#jinja2:")  # Jinja's delimiters, and Ansible's override header


class _UnsafeDumper(yaml.SafeDumper):
    """Strings that could be templates as `!unsafe`: Ansible then never renders them."""


def _unsafe_string(dumper, value):
    # Only strings that could be templates: `!unsafe "0644"` would come back as the int 420, while
    # a string with a brace or the header can never be read as a number, a boolean or a date.
    if any(mark in value for mark in TEMPLATE_MARKS):
        return dumper.represent_scalar("!unsafe", value, style='"')
    return dumper.represent_str(value)


_UnsafeDumper.add_representer(str, _unsafe_string)


def unsafe_yaml(variables):
    """The playbook's variables as an extra-vars YAML document in which no string is a template
    and every string stays a string.

    Values in them come from users (work dir, metadata cloud-config, names); Ansible would
    otherwise render a `{{ lookup('pipe', ...) }}` among them as root on every node."""
    return yaml.dump(variables, Dumper=_UnsafeDumper, sort_keys=False, allow_unicode=True)


def _failure(event):
    """'host: task: message'; a loop's failed items speak for themselves (the loop only says
    "One or more items failed")."""
    data = event.get("event_data", {})
    result = data.get("res", {}) or {}
    items = [item for item in result.get("results", []) if isinstance(item, dict) and item.get("failed")]
    message = "; ".join(_message(item) for item in items) if items else _message(result)
    return f"{data.get('host', '?')}: {data.get('task', '?')}: {message}"


def _message(result):
    return result.get("msg") or result.get("reason") or result.get("stderr") or "failed"
