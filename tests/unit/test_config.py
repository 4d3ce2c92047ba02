"""Site config: defaults, every error names file and key, root trust rules, `vtorque config`."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from vtorque.errors import ConfigError
from vtorque.site.config import SiteConfig, load_config, parse_config

VTORQUE = str(Path(sys.executable).parent / "vtorque")
EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "vtorque.yml.example"


def problems(text):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "/etc/vtorque/vtorque.yml")
    assert str(err.value).startswith("invalid site config /etc/vtorque/vtorque.yml:")
    return err.value.problems


def test_empty_file_gives_documented_defaults():
    config = parse_config("", "/x.yml")
    assert config == SiteConfig()
    assert config.state_dir == "/var/lib/vtorque" and config.spool_dir == "/var/spool/vtorque"
    assert config.torque.qsub == "/usr/local/bin/qsub" and config.libvirt.virt_type == "kvm"
    assert config.policy.exclusive_node_alloc and not config.policy.allow_user_images
    assert config.source == "/x.yml"


def test_sizes_and_booleans_use_the_vsub_spellings():
    config = parse_config("defaults: {ram: 4G, vcpu_pinning: 'on'}\nhost_reserve: {ram_mib: 3G, cores: 0}")
    assert (config.defaults.ram, config.defaults.vcpu_pinning) == (4096, True)
    assert (config.host_reserve.ram_mib, config.host_reserve.cores) == (3072, 0)


def test_every_bad_key_is_reported_with_its_dotted_name():
    found = problems(
        "limits: {max_vcpus: many}\ndefaults: {ram: 1X, colour: red}\npolicy: {iocm: 1}\n"
        "runner: {strategy: random}\nspool_dir: relative/path\nbogus: 1\ntimeouts: 5\n"
    )
    text = "\n".join(found)
    for key in (
        "limits.max_vcpus",
        "defaults.ram",
        "defaults.colour: unknown key",
        "policy.iocm",
        "runner.strategy: expected one of linear, free",
        "spool_dir: expected an absolute path",
        "bogus: unknown key",
        "timeouts: expected a mapping",
    ):
        assert key in text
    assert len(found) == 8


def test_cross_key_rules():
    assert problems("defaults: {vcpus: 9}\nlimits: {max_vcpus: 8}") == [
        "defaults.vcpus: 9 exceeds limits.max_vcpus (8)"
    ]
    assert "defaults.iocm_min_cores" in problems("defaults: {iocm_min_cores: 5, iocm_max_cores: 2}")[0]
    assert "guest.mounts.home: type nfs needs" in problems("guest: {mounts: {home: {type: nfs}}}")[0]
    assert "needs cidr and gateway" in problems("network: {mode: bridge}")[0]
    assert (
        "outside network.cidr"
        in problems(
            "network: {mode: bridge, cidr: 10.0.0.0/24, gateway: 10.0.1.1, ranges: {n1: 10.0.0.2-10.0.0.9}}"
        )[0]
    )
    assert "not a valid regular expression" in problems("policy: {disabled_hosts: '('}")[0]
    assert "policy.vrdma is false" in problems("defaults: {vrdma: true}")[0]


def test_per_node_addresses_from_ranges_and_from_the_rule():
    config = parse_config(
        "network: {mode: bridge, cidr: 10.1.0.0/16, gateway: 10.1.0.1,"
        " ranges: {login1: 10.1.0.10-10.1.0.11}, derive: {pattern: 'n(\\d+)', first: 10.1.1.0, per_node: 4}}"
    )
    assert [str(a) for a in config.network.addresses_for("login1")] == ["10.1.0.10", "10.1.0.11"]
    assert [str(a) for a in config.network.addresses_for("n3")] == [
        "10.1.1.12",
        "10.1.1.13",
        "10.1.1.14",
        "10.1.1.15",
    ]


def test_path_comes_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "site.yml"
    path.write_text("spool_dir: /srv/spool\n")
    monkeypatch.setenv("VTORQUE_CONFIG", str(path))
    assert load_config().spool_dir == "/srv/spool"


@pytest.mark.skipif(os.geteuid() != 0, reason="the trust rules apply when loading as root")
def test_root_refuses_links_foreign_owner_and_writable_files(tmp_path):
    path = tmp_path / "site.yml"
    path.write_text("{}\n")
    path.chmod(0o664)
    with pytest.raises(ConfigError, match="writable by group or others"):
        load_config(path)
    path.chmod(0o644)
    os.chown(path, 12345, 0)
    with pytest.raises(ConfigError, match="owned by uid 12345"):
        load_config(path)
    os.chown(path, 0, 0)
    (tmp_path / "link.yml").symlink_to(path)
    with pytest.raises(ConfigError, match="symbolic link"):
        load_config(tmp_path / "link.yml")
    assert load_config(path).source == str(path)


@pytest.fixture
def world_readable_dir():
    """A directory an unprivileged user can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="vtorque-test-config-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def run(*args, env=None):
    return subprocess.run([VTORQUE, *args], capture_output=True, text=True, env=env, check=False, timeout=60)


def test_config_check_exit_codes_and_messages(tmp_path):
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    commands = (
        "{" + ", ".join(f"{name}: /bin/true" for name in ("qsub", "qrls", "qdel", "qstat", "pbsnodes")) + "}"
    )
    good.write_text(f"limits: {{max_vcpus: 32}}\ntorque: {commands}\n")
    bad.write_text("limits: {max_vcpus: lots}\n")
    assert run("config", "check", str(good)).returncode == 0
    done = run("config", "check", str(bad))
    assert done.returncode == 1
    assert str(bad) in done.stderr and "limits.max_vcpus" in done.stderr


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("pbsnodes", "torque.pbsnodes: expected an absolute path"),  # a hook's PATH would not find it
        ("/nonexistent/pbsnodes", "torque.pbsnodes: /nonexistent/pbsnodes: no such file"),
        ("{tmp}/plain", "torque.pbsnodes: {tmp}/plain: not executable"),
    ],
)
def test_config_check_refuses_a_torque_command_a_hook_could_not_run(tmp_path, value, problem):
    path = tmp_path / "site.yml"
    (tmp_path / "plain").touch(mode=0o644)
    value, problem = value.format(tmp=tmp_path), problem.format(tmp=tmp_path)
    others = ", ".join(f"{name}: /bin/true" for name in ("qsub", "qrls", "qdel", "qstat"))
    path.write_text(f"torque: {{{others}, pbsnodes: {value}}}\n")
    done = run("config", "check", str(path))
    assert done.returncode == 1 and problem in done.stderr, done.stderr


def test_config_show_user_view_hides_admin_keys(world_readable_dir):
    path = world_readable_dir / "site.yml"
    path.write_text("libvirt: {uri: 'qemu+ssh://secret/system'}\n")
    path.chmod(0o644)
    env = dict(os.environ, VTORQUE_CONFIG=str(path))
    as_root = run("config", "show", env=env)
    assert as_root.returncode == 0 and "qemu+ssh://secret/system" in as_root.stdout
    as_user = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", VTORQUE, "config", "show"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert as_user.returncode == 0, as_user.stderr
    assert "limits:" in as_user.stdout and "secret" not in as_user.stdout and "torque:" not in as_user.stdout


def test_the_shipped_example_config_is_valid():
    config = parse_config(EXAMPLE.read_text(), str(EXAMPLE))
    assert config.network.mode == "bridge"


def leaf_keys(cls, prefix=""):
    """Dotted names of every config key, nested sections expanded."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        if spec.metadata.get("internal"):
            continue
        hint = hints[spec.name]
        inner = [arg for arg in typing.get_args(hint) if dataclasses.is_dataclass(arg)]
        section = inner[0] if inner else hint
        if dataclasses.is_dataclass(section):
            yield from leaf_keys(section, f"{prefix}{spec.name}.")
        else:
            yield f"{prefix}{spec.name}"


def test_every_config_key_is_documented_and_in_the_example():
    docs = (EXAMPLE.parents[1] / "docs" / "site-config.md").read_text()
    example = EXAMPLE.read_text()
    for key in leaf_keys(SiteConfig):
        name = key.rsplit(".", 1)[-1]
        assert f"`{name}`" in docs or f"`{key}`" in docs or f"{name}`" in docs, key
        assert f"{name}:" in example, key


def test_every_vm_key_is_in_the_user_guide():
    from vtorque.request.grammar import KEYS

    guide = (EXAMPLE.parents[1] / "docs" / "user-guide.md").read_text()
    for key in KEYS:
        assert f"`{key}`" in guide, key
