"""What site.yml leaves on a compute + front-end node, and what uninstall.yml leaves after it.

The phase comes from the scenario: side_effect (uninstall) writes `uninstalled` into
<root>/phase; before that the machine must be fully installed.
"""

import pytest
import yaml

ROOT = "/var/tmp/vtorque-molecule"
MOM_PRIV = f"{ROOT}/pbs_home/mom_priv"
VENV = f"{ROOT}/venv"
HOOKS = ("prologue", "prologue.parallel", "epilogue", "epilogue.parallel", "epilogue.precancel")
PROLOGUE_ARGS = "42.head root root job nodes=1 batch '' /x.SC"


@pytest.fixture(scope="module")
def phase(host):
    marker = host.file(f"{ROOT}/phase")
    return marker.content_string.strip() if marker.exists else "installed"


def installed_only(phase):
    if phase != "installed":
        pytest.skip("checks of the installed state; the machine is uninstalled now")


def uninstalled_only(phase):
    if phase != "uninstalled":
        pytest.skip("checks of the uninstalled state; the machine is installed now")


# --- installed ---------------------------------------------------------------------------


@pytest.mark.parametrize("hook", HOOKS)
def test_hooks_are_shims_with_the_modes_torque_demands(host, phase, hook):
    installed_only(phase)
    script = host.file(f"{MOM_PRIV}/{hook}")
    assert script.is_file and script.user == "root" and script.group == "root"
    assert script.mode == 0o755  # root-owned, not group/other writable; o+rx for the precancel
    assert f"exec {VENV}/bin/vtorque-hook {hook}" in script.content_string or (
        f'{VENV}/bin/vtorque-hook {hook} "$@"' in script.content_string
    )


def test_the_sites_prologue_is_kept_and_still_runs_before_vtorque(host, phase):
    installed_only(phase)
    original = host.file(f"{MOM_PRIV}/prologue.orig")
    assert original.is_file and original.mode == 0o700 and "site prologue" in original.content_string
    done = host.run(f"env -i PATH=/bin:/usr/bin {MOM_PRIV}/prologue {PROLOGUE_ARGS}")
    assert done.rc == 0, done.stderr  # a bare-metal job: vtorque-hook passes it
    assert "site prologue ran for 42.head" in host.file(f"{ROOT}/site-prologue.log").content_string
    assert not host.file(f"{MOM_PRIV}/epilogue.orig").exists  # nothing was there: nothing invented


def test_the_package_config_and_catalog_are_in_place(host, phase):
    installed_only(phase)
    assert host.run(f"{VENV}/bin/vtorque config check /etc/vtorque/vtorque.yml").rc == 0
    catalog = host.file("/etc/vtorque/images.yml")
    assert (
        catalog.user == "root"
        and catalog.mode == 0o644
        and f"{ROOT}/images/tiny.qcow2" in catalog.content_string
    )
    listed = host.run(f"VTORQUE_CONFIG=/etc/vtorque/vtorque.yml {VENV}/bin/vtorque images verify tiny")
    assert listed.rc == 0, listed.stdout + listed.stderr
    assert host.file(f"{ROOT}/spool").mode == 0o1777 and host.file(f"{ROOT}/spool").user == "root"


def test_the_config_names_torques_commands_by_the_absolute_paths_found_at_deploy(host, phase):
    """Hooks get PATH=/bin:/usr/bin from pbs_mom: a bare `pbsnodes` would never be found."""
    installed_only(phase)
    torque = yaml.safe_load(host.file("/etc/vtorque/vtorque.yml").content_string)["torque"]
    names = ("qsub", "qrls", "qdel", "qstat", "pbsnodes")
    assert {name: torque[name] for name in names} == {name: f"{ROOT}/torque/bin/{name}" for name in names}


def test_pbs_mom_blocks_one_second_not_five_while_a_prologue_runs(host, phase):
    """$jobstartblocktime 5 (Torque's default) held a qdel of a starting VM job 5 s more."""
    installed_only(phase)
    assert "\n$jobstartblocktime 1\n" in host.file(f"{MOM_PRIV}/config").content_string


def test_users_get_vsub_on_path_and_a_module_file(host, phase):
    installed_only(phase)
    for command in ("vsub", "vtorque"):
        assert host.file(f"{ROOT}/bin/{command}").linked_to == f"{VENV}/bin/{command}"
    module = host.file(f"{ROOT}/modulefiles/vtorque")
    assert (
        module.content_string.startswith("#%Module")
        and f"prepend-path PATH {VENV}/bin" in module.content_string
    )
    help_text = host.run(f"su nobody -s /bin/sh -c '{ROOT}/bin/vsub --help'")
    assert help_text.rc == 0 and "-vm keys" in help_text.stdout


def test_libvirt_runs(host, phase):
    installed_only(phase)
    assert host.process.filter(comm="libvirtd") and host.process.filter(comm="virtlogd")
    assert host.run("virsh -c qemu:///system version").rc == 0


# --- uninstalled -------------------------------------------------------------------------


def test_uninstall_restores_mom_priv_exactly(host, phase):
    uninstalled_only(phase)
    now = host.run(f"cd {ROOT}/pbs_home && find . -printf '%p %m %u:%g %s\\n' | sort").stdout
    assert now == host.file(f"{ROOT}/before.txt").content_string
    assert "site prologue" in host.file(f"{MOM_PRIV}/prologue").content_string


def test_uninstall_removes_only_what_vtorque_installed(host, phase):
    uninstalled_only(phase)
    for path in (
        "/etc/vtorque",
        VENV,
        f"{ROOT}/bin/vsub",
        f"{ROOT}/bin/vtorque",
        f"{ROOT}/modulefiles/vtorque",
        f"{ROOT}/state",
        f"{ROOT}/spool",
    ):
        assert not host.file(path).exists, path
    assert host.file(f"{ROOT}/images/tiny.qcow2").exists  # images are site data: kept
    assert host.file(f"{ROOT}/bin").is_directory  # the directory was there before
