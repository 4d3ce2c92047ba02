"""What site.yml leaves on a Slurm compute + front-end node, and what uninstall.yml leaves after.

The phase comes from the scenario: side_effect (uninstall) writes `uninstalled` into
<root>/phase; before that the machine must be fully installed. slurmctld and slurmd run
throughout (prepare.yml started them), so Slurm itself is asked what it runs.
"""

import time

import pytest
import yaml

ROOT = "/var/tmp/vtorque-molecule-slurm"
VENV = f"{ROOT}/venv"
SLURM_CONF = "/etc/slurm/slurm.conf"
SHIMS = "/usr/local/libexec/vtorque"
KEY_SECRET = "/etc/vtorque/job-key.secret"  # noqa: S105 - a path, not a secret
SITE_PROLOG, SITE_EPILOG = f"{ROOT}/site/prolog.sh", f"{ROOT}/site/epilog.sh"
USER = "vtmolecule"
COMMANDS = ("sbatch", "scontrol", "scancel", "squeue")


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


def slurm_config(host):
    """`scontrol show config` as {name: value}: what slurmctld runs with now."""
    shown = host.check_output("scontrol show config")
    pairs = (line.split("=", 1) for line in shown.splitlines() if " = " in line)
    return {name.strip(): value.strip() for name, value in pairs}


def run_bare_metal_job(host):
    """`sbatch --wrap true` as the job owner; the job's final `scontrol show job` record."""
    job_id = host.check_output(
        f"runuser -u {USER} -- sbatch --parsable --chdir {ROOT}/jobs -o {ROOT}/jobs/%j.out --wrap true"
    ).strip()
    deadline = time.monotonic() + 90
    while True:
        record = dict(
            field.split("=", 1)
            for field in host.check_output(f"scontrol show job -o {job_id}").split()
            if "=" in field
        )
        if record["JobState"] not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return job_id, record
        assert time.monotonic() < deadline, f"job {job_id} still {record['JobState']}: {record}"
        time.sleep(0.5)


def site_hooks_of(job_id):
    return [f"site prolog ran for job {job_id}", f"site epilog ran for job {job_id}"]


def site_hooks_ran(host, job_id):
    log = host.file(f"{ROOT}/site-hooks.log")
    lines = log.content_string.splitlines() if log.exists else []
    return [line for line in lines if line.endswith(f" for job {job_id}")]


# --- installed ---------------------------------------------------------------------------


@pytest.mark.parametrize("hook", ("prolog", "epilog"))
def test_the_shims_set_path_and_run_vtorque_hook_with_no_arguments(host, phase, hook):
    installed_only(phase)
    shim = host.file(f"{SHIMS}/slurm-{hook}")
    assert shim.is_file and shim.user == "root" and shim.group == "root" and shim.mode == 0o755
    text = shim.content_string
    assert "\nexport PATH\n" in text and "\nPATH=/usr/local/sbin:" in text
    assert f"{VENV}/bin/vtorque-hook slurm-{hook}\n" in text  # no arguments: slurmd's environment
    if hook == "prolog":  # the site's Prolog first, and its failure stands
        assert text.index(f"\n{SITE_PROLOG} || exit $?\n") < text.index(f"\nexec {VENV}/bin/vtorque-hook")
    else:  # vTorque's Epilog first, then the site's, always
        assert text.index(f"\n{VENV}/bin/vtorque-hook slurm-epilog\n") < text.index(f"\n{SITE_EPILOG};")


def test_the_key_secret_is_roots_alone_and_long_enough(host, phase):
    installed_only(phase)
    secret = host.file(KEY_SECRET)
    assert secret.is_file and not secret.is_symlink
    assert (secret.user, secret.group, secret.mode) == ("root", "root", 0o600)
    assert secret.size >= 32


def test_the_config_is_slurms_with_this_hosts_command_paths(host, phase):
    installed_only(phase)
    config = yaml.safe_load(host.file("/etc/vtorque/vtorque.yml").content_string)
    assert config["scheduler"] == "slurm" and "torque" not in config
    found = {name: host.check_output(f"command -v {name}") for name in COMMANDS}
    assert {name: config["slurm"][name] for name in COMMANDS} == found
    assert config["slurm"]["key_secret"] == KEY_SECRET
    checked = host.run(f"{VENV}/bin/vtorque config check /etc/vtorque/vtorque.yml")  # root: reads the secret
    assert checked.rc == 0, checked.stderr


def test_slurm_conf_has_vtorques_lines_with_the_sites_originals(host, phase):
    installed_only(phase)
    lines = host.file(SLURM_CONF).content_string.splitlines()
    assert f"Prolog={SHIMS}/slurm-prolog  # vTorque (uninstall restores: Prolog={SITE_PROLOG})" in lines
    assert f"Epilog={SHIMS}/slurm-epilog  # vTorque (uninstall restores: Epilog={SITE_EPILOG})" in lines
    assert (
        "PrologFlags=Contain,Alloc,DeferBatch  # vTorque (uninstall restores: PrologFlags=Contain)" in lines
    )
    assert lines[-1] == "PrologEpilogTimeout=340  # vTorque (added)"  # 280 s + the 60 s margin


def test_slurm_runs_with_vtorques_hooks_and_flags(host, phase):
    installed_only(phase)
    config = slurm_config(host)
    assert config["Prolog"] == f"{SHIMS}/slurm-prolog"
    assert config["Epilog"] == f"{SHIMS}/slurm-epilog"
    assert set(config["PrologFlags"].split(",")) == {"Alloc", "Contain", "DeferBatch"}
    assert config["PrologEpilogTimeout"] == "340"


def test_a_bare_metal_job_runs_through_the_chained_prolog_and_epilog(host, phase):
    """The site's own Prolog and Epilog still run, and vtorque-hook passes a job that is no
    VM job (exit 0: a failing Prolog would drain the node and hold the job)."""
    installed_only(phase)
    job_id, record = run_bare_metal_job(host)
    assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), record
    assert site_hooks_ran(host, job_id) == site_hooks_of(job_id)
    assert host.check_output("sinfo -h -n vm -o %T") == "idle"  # not drained


def test_users_get_vsbatch_on_path_and_a_module_file(host, phase):
    installed_only(phase)
    for command in ("vsbatch", "vsalloc", "vtorque"):
        assert host.file(f"{ROOT}/bin/{command}").linked_to == f"{VENV}/bin/{command}"
    assert not host.file(f"{ROOT}/bin/vsub").exists  # Torque's, not on a Slurm site
    module = host.file(f"{ROOT}/modulefiles/vtorque").content_string
    assert module.startswith("#%Module") and "vsbatch" in module and f"prepend-path PATH {VENV}/bin" in module
    help_text = host.run(f"runuser -u {USER} -- {ROOT}/bin/vsbatch --help")
    assert help_text.rc == 0, help_text.stderr


# --- uninstalled -------------------------------------------------------------------------


def test_uninstall_gives_slurm_conf_back_byte_for_byte(host, phase):
    uninstalled_only(phase)
    now, before = host.file(SLURM_CONF), host.file(f"{ROOT}/slurm.conf.before")
    assert now.content == before.content
    assert (now.user, now.group, now.mode) == (before.user, before.group, before.mode)


def test_slurm_runs_the_sites_own_hooks_again(host, phase):
    uninstalled_only(phase)
    config = slurm_config(host)
    assert (config["Prolog"], config["Epilog"]) == (SITE_PROLOG, SITE_EPILOG)
    assert config["PrologEpilogTimeout"] == "65534"  # Slurm's default: the site set none
    job_id, record = run_bare_metal_job(host)
    assert record["JobState"] == "COMPLETED", record
    assert site_hooks_ran(host, job_id) == site_hooks_of(job_id)


def test_uninstall_leaves_nothing_of_vtorque(host, phase):
    uninstalled_only(phase)
    for path in (
        "/etc/vtorque",
        SHIMS,
        VENV,
        f"{ROOT}/bin/vsbatch",
        f"{ROOT}/bin/vtorque",
        f"{ROOT}/modulefiles/vtorque",
        f"{ROOT}/state",
        f"{ROOT}/spool",
    ):
        assert not host.file(path).exists, path
    assert host.file(f"{ROOT}/bin").is_directory  # the directory was there before
