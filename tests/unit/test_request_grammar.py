"""The `-vm` grammar and value parsers: sizes, booleans, counts, keys, precedence, limits."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vtorque.errors import RequestError
from vtorque.request.grammar import KEYS, parse_vm_values
from vtorque.request.resolve import resolve_request
from vtorque.site.catalog import ImageEntry
from vtorque.site.config import parse_config
from vtorque.values import parse_bool, parse_count, parse_size_mib

CATALOG = {
    "tiny": ImageEntry("tiny", "/srv/tiny.qcow2", "qcow2", "debian"),
    "u22": ImageEntry("u22", "/srv/u22.qcow2", "qcow2", "ubuntu"),
    "osv1": ImageEntry("osv1", "/srv/osv.qcow2", "qcow2", "osv"),
}


def resolve(text, config_text="defaults: {img: tiny}", cwd="/"):
    config = parse_config(config_text, "/etc/vtorque/test.yml")
    options = parse_vm_values([(text, "command line")]) if text else {}
    return resolve_request(options, config, owner_uid=0, cwd=cwd, catalog=CATALOG)


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("512", 512),
        ("512M", 512),
        ("15G", 15360),
        ("1T", 1048576),
        ("2048K", 2),
        ("1k", 1),
        ("4gb", 4096),
        (64, 64),
    ],
)
def test_sizes_are_binary_and_plain_numbers_are_mib(text, mib):
    assert parse_size_mib(text) == mib


@pytest.mark.parametrize("text", ["", "0", "0G", "1.5G", "-1G", "12X", "G", "1 G B", True])
def test_bad_sizes_say_what_is_accepted(text):
    with pytest.raises(ValueError, match="K, M, G or T"):
        parse_size_mib(text)


@given(st.integers(min_value=1, max_value=2**20), st.sampled_from(["", "M", "m", "G", "T", "K"]))
def test_size_suffixes_scale_by_1024(number, suffix):
    factor = {"": 1, "M": 1, "m": 1, "G": 1024, "T": 1024**2}.get(suffix)
    expected = number * factor if factor else -(-number // 1024)
    assert parse_size_mib(f"{number}{suffix}") == expected


@pytest.mark.parametrize("word", ["true", "YES", "On", "enabled"])
def test_true_words(word):
    assert parse_bool(word) is True


@pytest.mark.parametrize("word", ["false", "No", "OFF", "Disabled"])
def test_false_words(word):
    assert parse_bool(word) is False


@pytest.mark.parametrize("word", ["0", "1"])
def test_zero_and_one_are_refused_with_the_reason(word):
    with pytest.raises(ValueError, match="read 0 as true"):
        parse_bool(word)


@given(
    st.text().filter(
        lambda s: s.strip().lower() not in {"true", "yes", "on", "enabled", "false", "no", "off", "disabled"}
    )
)
def test_anything_else_is_not_a_boolean(text):
    with pytest.raises(ValueError):
        parse_bool(text)


def test_counts_are_plain_positive_digits():
    assert parse_count("7") == 7
    for bad in ("0", "-1", "1e3", "3.0", "", "x"):
        with pytest.raises(ValueError):
            parse_count(bad)


def test_keys_are_case_insensitive_and_later_values_win():
    options = parse_vm_values([("VCPUS=2,Ram=1G", "script line 2"), ("vcpus=4", "command line")])
    assert options == {"vcpus": ("4", "command line"), "ram": ("1G", "script line 2")}


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20).filter(lambda k: k not in KEYS)
)
def test_unknown_keys_are_refused_with_the_key_list(key):
    with pytest.raises(RequestError, match="unknown key") as err:
        parse_vm_values([(f"{key}=1", "command line")])
    assert "vms_per_node" in str(err.value)


@pytest.mark.parametrize("text", ["vcpus=", "=2", "vcpus=1,", ",", "vcpus", "", "   ", "vcpus=1,,ram=1G"])
def test_empty_sides_are_refused(text):
    with pytest.raises(RequestError, match="key=value"):
        parse_vm_values([(text, "command line")])


def test_defaults_fill_every_key_not_given():
    request = resolve("")
    assert (request.image.name, request.distro, request.ram_mib, request.vcpus) == ("tiny", "debian", 2048, 1)
    assert (request.vms_per_node, request.fs_type, request.unclot_shmem_mib) == (1, "sharedfs", 1024)
    assert not (request.vrdma or request.unclot or request.iocm or request.vcpu_pinning)


def test_limits_come_from_the_site_config_and_are_named():
    with pytest.raises(RequestError, match=r"limits.max_vcpus = 4") as err:
        resolve("vcpus=5", "defaults: {img: tiny}\nlimits: {max_vcpus: 4}")
    assert "command line: -vm vcpus=5" in str(err.value)
    assert resolve("vcpus=4", "defaults: {img: tiny}\nlimits: {max_vcpus: 4}").vcpus == 4


def test_distro_picks_the_only_matching_image_and_must_agree_with_img():
    assert resolve("distro=Ubuntu", "{}").image.name == "u22"
    assert resolve("distro=ubuntu").image.name == "u22"  # the default image is debian
    assert resolve("distro=debian").image.name == "tiny"
    with pytest.raises(RequestError, match="is a debian image"):
        resolve("img=tiny,distro=ubuntu")


def test_no_image_and_no_default_is_an_error_listing_images():
    with pytest.raises(RequestError, match="no defaults.img") as err:
        resolve("", "{}")
    assert "tiny" in str(err.value)


VRDMA_SITE = "defaults: {img: tiny}\npolicy: {vrdma: true}\nvrdma: {devices: {n1: ['0000:3b:00.1']}}"


def test_switches_need_the_site_policy():
    with pytest.raises(RequestError, match="policy.vrdma: false"):
        resolve("vrdma=yes")
    assert resolve("vrdma=yes", VRDMA_SITE).vrdma
    with pytest.raises(
        RequestError, match=r"-vm hugepages=on: hugepages is disabled on this site \(policy.hugepages"
    ):
        resolve("hugepages=on")
    assert resolve("hugepages=on", "defaults: {img: tiny}\npolicy: {hugepages: true}").hugepages


def test_unclot_for_any_guest_with_a_power_of_two_region():
    config = "defaults: {img: tiny}\npolicy: {unclot: true}"
    assert resolve("unclot=on", config).unclot  # a Linux guest maps the BAR (no longer OSv only)
    assert resolve("img=osv1,unclot=on,unclot_shmem=2G", config).unclot_shmem_mib == 2048
    with pytest.raises(RequestError, match=r"-vm unclot_shmem=3M: 3 MiB is not a power of two"):
        resolve("unclot=on,unclot_shmem=3M", config)


def test_fragments_are_the_sites_always_ones_then_those_asked_for():
    site = (
        "defaults: {img: tiny}\nfragments:\n  audit: {template: /etc/vtorque/audit.j2, always: true}\n"
        "  watchdog: {template: /etc/vtorque/wd.j2}\n  rng: {template: /etc/vtorque/rng.j2}"
    )
    assert resolve("", site).fragments == ("audit",)
    request = resolve("fragments=rng+watchdog+audit", site)
    assert request.fragments == ("audit", "rng", "watchdog")
    assert request.as_options()["fragments"] == "audit+rng+watchdog"
    with pytest.raises(RequestError, match=r"-vm fragments=gpu: no site fragment named 'gpu'") as err:
        resolve("fragments=gpu", site)
    assert "audit, watchdog, rng" in str(err.value)
    with pytest.raises(RequestError, match="this site defines no fragments"):
        resolve("fragments=gpu")


def test_iocm_cores_add_to_ppn_and_must_be_ordered():
    config = parse_config("defaults: {img: tiny}\npolicy: {iocm: true}\nhost_reserve: {cores: 2}")
    options = parse_vm_values([("iocm=true,iocm_min_cores=2,iocm_max_cores=3,vcpus=4,vms_per_node=2", "cli")])
    request = resolve_request(options, config, owner_uid=0, cwd="/", catalog=CATALOG)
    assert request.cores_per_node(config) == 2 + 4 * 2 + 3
    with pytest.raises(RequestError, match="above iocm_max_cores"):
        resolve("iocm=true,iocm_min_cores=5,iocm_max_cores=3", "defaults: {img: tiny}\npolicy: {iocm: true}")


def test_vm_prologue_must_exist_and_be_executable(tmp_path):
    script = tmp_path / "pro.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(RequestError, match="not executable"):
        resolve("vm_prologue=pro.sh", cwd=str(tmp_path))
    script.chmod(0o755)
    assert resolve("vm_prologue=pro.sh", cwd=str(tmp_path)).vm_prologue == str(script)


def test_metadata_must_be_a_yaml_mapping(tmp_path):
    (tmp_path / "meta.yaml").write_text("- a list\n")
    with pytest.raises(RequestError, match="not a YAML mapping"):
        resolve("metadata=meta.yaml", cwd=str(tmp_path))
    (tmp_path / "meta.yaml").write_text("packages: [htop]\n")
    assert resolve("metadata=meta.yaml", cwd=str(tmp_path)).metadata == str(tmp_path / "meta.yaml")
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + n)}: &{chr(98 + n)} [*{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}]\n"
        for n in range(8)
    )  # 64 KiB of these expand to gigabytes when the root prologue writes the seed
    (tmp_path / "meta.yaml").write_text(laughs)
    with pytest.raises(
        RequestError, match=r"-vm metadata=meta.yaml: .*YAML aliases \(\*name\) are not accepted"
    ):
        resolve("metadata=meta.yaml", cwd=str(tmp_path))

    def block(levels):  # a mapping nested `levels` deep, ending in a scalar
        return "".join(" " * n + "k:\n" for n in range(levels - 1)) + " " * (levels - 1) + "k: 1\n"

    for deep in ("a: " + "[" * 30000, block(33)):  # the first would blow PyYAML's recursive composer
        (tmp_path / "meta.yaml").write_text(deep)
        with pytest.raises(RequestError, match=r"-vm metadata=meta.yaml: .*nested deeper than 32 levels"):
            resolve("metadata=meta.yaml", cwd=str(tmp_path))
    (tmp_path / "meta.yaml").write_text(block(32))
    assert resolve("metadata=meta.yaml", cwd=str(tmp_path)).metadata == str(tmp_path / "meta.yaml")


@given(
    st.integers(1, 8),
    st.integers(64, 16384),
    st.integers(1, 4),
    st.booleans(),
    st.sampled_from(["sharedfs", "ramdisk"]),
)
def test_as_options_round_trips_through_the_parser(vcpus, ram, vms, pinning, fs_type):
    pin = "yes" if pinning else "no"
    text = f"vcpus={vcpus},ram={ram}M,vms_per_node={vms},vcpu_pinning={pin},fs_type={fs_type}"
    request = resolve(text)
    again = resolve(",".join(f"{key}={value}" for key, value in request.as_options().items()))
    assert again == request


@given(
    st.dictionaries(
        st.sampled_from([k for k in KEYS if k not in ("vm_prologue", "vm_epilogue", "metadata")]),
        st.text(alphabet="abcdefgiklmnorstuvxyz0123456789KMGT./_-", min_size=1, max_size=12),
    )
)
def test_any_request_either_resolves_within_limits_or_is_a_request_error(values):
    config = parse_config(
        "defaults: {img: tiny}\npolicy: {iocm: true, vrdma: true, unclot: true, hugepages: true}\n"
        "vrdma: {devices: {n1: ['0000:3b:00.1']}}"
    )
    options = {key: (value, "command line") for key, value in values.items()}
    try:
        request = resolve_request(options, config, owner_uid=0, cwd="/nonexistent", catalog=CATALOG)
    except RequestError as err:
        assert "command line" in str(err) or "site config" in str(err)
        return
    limits = config.limits
    assert 1 <= request.vcpus <= limits.max_vcpus and 1 <= request.ram_mib <= limits.max_ram_mib
    assert 1 <= request.vms_per_node <= limits.max_vms_per_node
    assert request.image in CATALOG.values() and request.distro == request.image.distro
