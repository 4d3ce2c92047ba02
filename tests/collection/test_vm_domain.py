"""vm_domain on test:///default: the check → run → rerun trio per state, redefinition, failures."""

import libvirt
import pytest
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import hugepages, naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import (
    InvalidSpec,
    Unavailable,
    VTorqueModuleError,
)
from module_calls import TEST_URI, domain_args, run_module


def spec(for_job, **extra):
    name = naming.domain_name(for_job["id"], for_job["node"], for_job["index"])
    options = dict(
        name=name,
        job=for_job,
        vcpus=1,
        memory_mib=256,
        disks=[{"path": "/var/lib/vtorque/jobs/x/disk.qcow2"}],
        seed="/var/lib/vtorque/jobs/x/seed.iso",
        nics=[{"mode": "network", "source": "default"}],
        serial_log="/var/lib/vtorque/jobs/x/serial.log",
        boot={"kernel": "/images/vmlinux", "initrd": "/images/initrd.img", "cmdline": "console=ttyS0"},
    )
    options.update(extra)
    return options


def trio(args):
    """Check mode and the real run report a change; the rerun (and a check after it) do not."""
    check = run_module("vm_domain", args, check=True)
    real = run_module("vm_domain", args)
    again = run_module("vm_domain", args)
    again_check = run_module("vm_domain", args, check=True)
    assert (check["changed"], real["changed"], again["changed"], again_check["changed"]) == (
        True,
        True,
        False,
        False,
    )
    return check, real, again


def test_present_defines_with_stable_uuid_and_mac(test_conn, job):
    check, real, again = trio(domain_args(state="present", **spec(job)))
    name = real["name"]
    dom = test_conn.lookupByName(name)
    assert dom.UUIDString() == naming.domain_uuid(job["id"], job["node"], job["index"]) == again["uuid"]
    assert real["macs"] == [naming.domain_mac(job["id"], job["node"], job["index"])]
    assert real["state"] == "shutoff" and not dom.isActive()
    assert check["diff"]["before"] == "" and f"<name>{name}</name>" in real["diff"]["after"]
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert 'xmlns:vtorque="https://vtorque.invalid/xmlns/job/1"' in xml and 'id="{}"'.format(job["id"]) in xml
    run_module("vm_domain", {"name": name, "state": "absent", "uri": TEST_URI})


def test_check_mode_leaves_no_domain(test_conn, job):
    result = run_module("vm_domain", domain_args(state="running", **spec(job)), check=True)
    assert result["changed"] and result["state"] == "running"
    assert result["name"] not in [d.name() for d in test_conn.listAllDomains()]


def test_running_then_redefinition_is_a_change_with_diff(test_conn, job):
    _, real, _ = trio(domain_args(state="running", **spec(job)))
    assert real["state"] == "running" and test_conn.lookupByName(real["name"]).isActive()
    bigger = domain_args(state="running", **spec(job, vcpus=2, nics=[]))
    check = run_module("vm_domain", bigger, check=True)
    changed = run_module("vm_domain", bigger)
    assert check["changed"] and changed["changed"]
    assert "<interface" in changed["diff"]["before"] and "<interface" not in changed["diff"]["after"]
    assert run_module("vm_domain", bigger)["changed"] is False
    run_module("vm_domain", {"name": real["name"], "state": "absent", "uri": TEST_URI})


def test_shutdown_and_absent_trios(test_conn, job):
    args = domain_args(state="running", **spec(job))
    run_module("vm_domain", args)
    name = args["name"]
    _, off, _ = trio({"name": name, "state": "shutdown", "uri": TEST_URI, "wait_timeout": 5})
    assert off["state"] == "shutoff" and not test_conn.lookupByName(name).isActive()
    run_module("vm_domain", args)
    _, gone, _ = trio({"name": name, "state": "absent", "uri": TEST_URI, "wait_timeout": 5})
    assert gone["state"] == "absent" and f"<name>{name}</name>" in gone["diff"]["before"]
    assert name not in [d.name() for d in test_conn.listAllDomains()]


def test_user_mode_nic_is_rendered_with_loopback_forward_and_fixed_slot(job):
    args = domain_args(
        state="present", **spec(job, nics=[{"mode": "user", "host_port": 2299, "guest_address": "10.0.2.41"}])
    )
    assert "hostfwd=tcp:127.0.0.1:2299-10.0.2.41:22" in args["xml"]
    assert (
        "mac={},bus=pci.0,addr=0x1f".format(naming.domain_mac(job["id"], job["node"], job["index"]))
        in args["xml"]
    )
    assert "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'" in args["xml"]


def test_values_are_xml_escaped_and_extra_devices_kept(test_conn, job):
    shmem = "<shmem name='vt-ivshmem'><model type='ivshmem-plain'/><size unit='M'>4</size></shmem>"
    args = domain_args(
        state="present", **spec(job, boot={"kernel": "/k", "cmdline": "a=<b>&c"}, extra_devices=[shmem])
    )
    real = run_module("vm_domain", args)
    xml = test_conn.lookupByName(real["name"]).XMLDesc(0)
    assert "<cmdline>a=&lt;b&gt;&amp;c</cmdline>" in xml and "<shmem name='vt-ivshmem'>" in xml
    assert run_module("vm_domain", args)["changed"] is False
    run_module("vm_domain", {"name": real["name"], "state": "absent", "uri": TEST_URI})


def test_the_serial_port_is_a_pty_logged_to_serial_log(test_conn, job):
    """Root attaches with `virsh console`; the log (appended to across restarts) keeps it all."""
    args = domain_args(state="running", **spec(job))
    real = run_module("vm_domain", args)
    xml = test_conn.lookupByName(real["name"]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "<serial type='pty'>" in xml
    assert "<log file='/var/lib/vtorque/jobs/x/serial.log' append='on'/>" in xml
    assert "<console type='pty'>" in xml  # libvirt's, for `virsh console`
    assert run_module("vm_domain", args)["changed"] is False
    run_module("vm_domain", {"name": real["name"], "state": "absent", "uri": TEST_URI})


@pytest.mark.parametrize("usb_controller", [False, True])
def test_a_usb_controller_only_when_asked_for(test_conn, job, usb_controller):
    """None by default (no guest device needs one; under TCG it slowed the boot): libvirt's
    qemu driver adds its default controller unless the XML says model='none'."""
    args = domain_args(state="present", **spec(job, usb_controller=usb_controller))
    real = run_module("vm_domain", args)
    xml = test_conn.lookupByName(real["name"]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    controllers = [line.strip() for line in xml.splitlines() if "<controller type='usb'" in line]
    if usb_controller:  # libvirt's own default, which the test driver leaves out
        assert not any("model='none'" in line for line in controllers)
    else:
        assert len(controllers) == 1 and "model='none'" in controllers[0]
    assert run_module("vm_domain", args)["changed"] is False
    run_module("vm_domain", {"name": real["name"], "state": "absent", "uri": TEST_URI})


def test_site_template_override(tmp_path, test_conn, job):
    template = tmp_path / "site.xml.j2"
    template.write_text(
        "<domain type='{{ virt_type }}'><name>{{ name }}</name><uuid>{{ uuid }}</uuid>"
        "<memory unit='MiB'>{{ memory_mib }}</memory><vcpu>3</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    args = domain_args(state="present", template=str(template), **spec(job))
    real = run_module("vm_domain", args)
    assert real["changed"] and "<vcpu placement='static'>3</vcpu>" in test_conn.lookupByName(
        real["name"]
    ).XMLDesc(0)
    assert run_module("vm_domain", args)["changed"] is False, "MiB in the template must compare equal to KiB"
    run_module("vm_domain", {"name": real["name"], "state": "absent", "uri": TEST_URI})


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(nics=[{"mode": "bridge"}]), "nics[0]: mode bridge needs source"),
        (dict(nics=[{"mode": "user"}]), "nics[0]: mode user needs host_port"),
        (
            dict(nics=[{"mode": "network", "source": "default", "mac": "52:54:zz:00:00:01"}]),
            "is not a MAC address",
        ),
        (dict(job=None), "uuid or job is required"),
        (dict(disks=[{"path": "relative.qcow2"}]), "disks[0].path 'relative.qcow2' must be an absolute path"),
        (dict(extra_devices=["<shmem>"]), "extra_devices[0] is not one XML element"),
        (dict(cpu_pinning=[{"vcpu": 4, "cpuset": "0"}]), "cpu_pinning: vcpu 4 does not exist"),
    ],
)
def test_bad_options_name_the_key(job, options, message):
    with pytest.raises(InvalidSpec) as caught:
        domain_args(state="present", **spec(job, **options))
    assert message in caught.value.msg and caught.value.target.startswith("vt-")


def test_failures_name_the_domain(test_conn, job):
    args = domain_args(state="present", **spec(job))
    missing = run_module("vm_domain", {"name": args["name"], "state": "shutdown", "uri": TEST_URI})
    assert missing["failed"] and missing["reason"] == "invalid" and args["name"] in missing["msg"]
    run_module("vm_domain", args)
    other = domain_args(state="present", **spec(job, uuid="11111111-2222-3333-4444-555555555555"))
    refused = run_module("vm_domain", other)
    assert refused["failed"] and refused["reason"] == "refused" and refused["target"] == args["name"]
    no_xml = run_module("vm_domain", {"name": args["name"], "state": "running", "uri": TEST_URI})
    assert no_xml["failed"] and "needs the domain definition" in no_xml["msg"]
    bad_uri = run_module("vm_domain", dict(args, uri="test:///nonexistent/file.xml"))
    assert (
        bad_uri["failed"]
        and bad_uri["reason"] == "libvirt"
        and "read definition on domain {}".format(args["name"]) in bad_uri["msg"]
    )
    run_module("vm_domain", {"name": args["name"], "state": "absent", "uri": TEST_URI})


FEATURES = dict(
    vcpus=2,
    cpu_pinning=[{"vcpu": 0, "cpuset": "0"}, {"vcpu": 1, "cpuset": "0"}],
    iothreads={"count": 2, "cpuset": "1"},
    emulator_cpuset="1",
    hugepages=True,
    shmem=[{"name": "vt-featjob-unclot", "size_mib": 64}],
    hostdevs=[{"address": "0000:3B:00.1"}],
)


def test_device_features_are_defined_and_idempotent(test_conn, job):
    args = domain_args(
        state="present", **spec(job, disks=[{"path": "/j/a.qcow2"}, {"path": "/j/b.qcow2"}], **FEATURES)
    )
    _, real, _ = trio(args)
    xml = test_conn.lookupByName(real["name"]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    for piece in (
        "<iothreads>2</iothreads>",
        "<emulatorpin cpuset='1'/>",
        "<iothreadpin iothread='1' cpuset='1'/>",
        "<iothreadpin iothread='2' cpuset='1'/>",
        "<hugepages/>",
        "<shmem name='vt-featjob-unclot'>",
        "<model type='ivshmem-plain'/>",
        "<size unit='M'>64</size>",
        "<hostdev mode='subsystem' type='pci' managed='yes'>",
        "<address domain='0x0000' bus='0x3b' slot='0x00' function='0x1'/>",
    ):
        assert piece in xml, piece
    drivers = [line.strip() for line in xml.splitlines() if "<driver name='qemu'" in line]
    assert drivers[0].endswith("iothread='1'/>") and drivers[1].endswith("iothread='2'/>")
    assert "iothread" not in drivers[2], "the read-only seed gets no I/O thread"
    for dropped in ("hugepages", "iothreads", "shmem", "hostdevs", "emulator_cpuset"):
        fewer = domain_args(
            state="present",
            **spec(job, **{key: value for key, value in FEATURES.items() if key != dropped}),
        )
        assert run_module("vm_domain", fewer, check=True)["changed"], f"dropping {dropped} is a change"
    run_module("vm_domain", {"name": real["name"], "state": "absent", "uri": TEST_URI})


def test_site_fragment_is_rendered_into_devices(tmp_path, test_conn, job):
    fragment = tmp_path / "watchdog.xml.j2"
    fragment.write_text(
        "<watchdog model='i6300esb' action='{{ \"reset\" if vcpus > 1 else \"poweroff\" }}'/>\n"
    )
    args = domain_args(
        state="present", **spec(job, fragments=[{"name": "watchdog", "template": str(fragment)}])
    )
    real = run_module("vm_domain", args)
    xml = test_conn.lookupByName(real["name"]).XMLDesc(0)
    assert "<watchdog model='i6300esb' action='poweroff'/>" in xml
    assert run_module("vm_domain", args)["changed"] is False
    run_module("vm_domain", {"name": real["name"], "state": "absent", "uri": TEST_URI})
    fragment.write_text("<watchdog")
    with pytest.raises(
        VTorqueModuleError, match=r"fragments\[0\] \(watchdog\).*does not render device elements"
    ):
        domain_args(state="present", **spec(job, fragments=[{"name": "watchdog", "template": str(fragment)}]))


def test_override_that_leaves_a_feature_out_fails(tmp_path, job):
    template = tmp_path / "site.xml.j2"
    template.write_text(
        "<domain type='{{ virt_type }}'><name>{{ name }}</name><uuid>{{ uuid }}</uuid>"
        "<memory unit='MiB'>{{ memory_mib }}</memory><os><type arch='x86_64'>hvm</type></os></domain>"
    )
    with pytest.raises(
        InvalidSpec, match=r"does not render <memoryBacking><hugepages/> \(option hugepages\)"
    ):
        domain_args(state="present", template=str(template), **spec(job, hugepages=True))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(iothreads={"count": 0}), "iothreads.count must be 1-64, got 0"),
        (dict(iothreads={"count": 1, "cpuset": "one"}), "iothreads.cpuset 'one' is not a libvirt cpuset"),
        (dict(emulator_cpuset="1;2"), "emulator_cpuset '1;2' is not a libvirt cpuset"),
        (dict(shmem=[{"name": "../x", "size_mib": 4}]), "shmem[0]: name '../x' must be"),
        (dict(shmem=[{"name": "x", "size_mib": 3}]), "shmem[0]: size_mib must be a power of two"),
        (dict(hostdevs=[{"address": "3b:00.1"}]), "hostdevs[0]: address '3b:00.1' is not a PCI address"),
        (
            dict(hostdevs=[{"address": "0000:3b:00.1"}, {"address": "0000:3B:00.1"}]),
            "hostdevs[1]: address 0000:3b:00.1 is given twice",
        ),
        (
            dict(fragments=[{"name": "Bad-Name", "template": "/x.j2"}]),
            "fragments[0]: name 'Bad-Name' must be",
        ),
    ],
)
def test_bad_feature_options_name_the_key(job, options, message):
    with pytest.raises(InvalidSpec) as caught:
        domain_args(state="present", **spec(job, **options))
    assert message in caught.value.msg


def test_hugepages_check_reads_the_node_pools(tmp_path):
    for size, free in ((2048, 0), (1048576, 0)):
        pool = tmp_path / f"hugepages-{size}kB"
        pool.mkdir()
        (pool / "free_hugepages").write_text(f"{free}\n")
    with pytest.raises(Unavailable, match="this node has none configured"):
        hugepages.check(256 * 1024, "vt-x", root=str(tmp_path))
    (tmp_path / "hugepages-2048kB" / "free_hugepages").write_text("64\n")
    with pytest.raises(
        Unavailable, match="needs 256 MiB of huge pages but this node has at most 128 MiB free"
    ):
        hugepages.check(256 * 1024, "vt-x", root=str(tmp_path))
    hugepages.check(128 * 1024, "vt-x", root=str(tmp_path))
    with pytest.raises(Unavailable, match="no huge page support"):
        hugepages.check(1024, "vt-x", root=str(tmp_path / "missing"))


@pytest.mark.skipif(
    any(free >= 256 * 1024 for free in hugepages.free_kib().values()), reason="this host has huge pages free"
)
def test_running_with_hugepages_is_refused_on_a_node_without_them_and_changes_nothing(test_conn, job):
    args = domain_args(state="running", **spec(job, hugepages=True))
    refused = run_module("vm_domain", args)
    assert (
        refused["failed"] and refused["reason"] == "unavailable" and "asks for huge pages" in refused["msg"]
    )
    assert args["name"] not in [d.name() for d in test_conn.listAllDomains()]
