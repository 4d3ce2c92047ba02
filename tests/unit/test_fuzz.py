"""Fuzzing the parsers root and vsub feed with user or admin text: whatever comes in, the
result is either a value that passes every rule or a VTorqueError naming the problem; never
an unhandled exception, never an accepted invalid value."""

import dataclasses
import json
import os
import shlex

from fakesite import make_site
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from vtorque.errors import ConfigError, QsubArgsError, RequestError, UntrustedFileError, VTorqueError
from vtorque.request.document import REQUEST_VERSION, load_request
from vtorque.request.grammar import KEYS
from vtorque.scheduler.torque.pbs_script import read_script
from vtorque.scheduler.torque.qsub_args import parse_qsub_argv
from vtorque.site.config import SiteConfig, as_dict, from_data, load_config, parse_config

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- #PBS directives -------------------------------------------------------------------------

TOKENS = st.sampled_from(
    [
        "-vm",
        "-l",
        "-N",
        "-h",
        "-C",
        "-q",
        "-W",
        "-V",
        "-I",
        "--",
        "'",
        '"',
        "\\",
        "#",
        ";",
        "$(id)",
        "nodes=2:ppn=4",
        "img=tiny,vcpus=2",
        "vcpus=999",
        "ram=",
        "=",
        ",",
        "walltime=1:00",
        "x" * 300,
    ]
)
LINE = st.one_of(
    st.lists(TOKENS, max_size=6).map(lambda tokens: "#PBS " + " ".join(tokens)),
    st.text(max_size=40).map(lambda text: "#PBS" + text),
    st.sampled_from(["", "# a comment", "echo start", "#!/bin/sh"]),
)


@FUZZ
@given(st.lists(LINE, max_size=8))
@example(lines=["#PBS -l -vm"])  # -vm as the value of -l: kept, as qsub would read it
def test_pbs_directives_parse_or_fail_with_the_line(lines):
    content = "\n".join(lines).encode("utf-8", "surrogatepass")
    try:
        script = read_script(content, "job.sh")
    except (QsubArgsError, RequestError) as err:
        assert "job.sh" in str(err)
        return
    for line in script.directives:  # ("-vm" may still be the value of another option, as in qsub)
        kept = parse_qsub_argv(shlex.split(line.strip()[len("#PBS") :]), "kept")
        assert kept.vm == (), "a -vm directive must never reach Torque"
    for _, source in script.vm:
        assert source.startswith("job.sh line ")


# --- site config -----------------------------------------------------------------------------


def field_names(cls, names):
    for field in dataclasses.fields(cls):
        names.add(field.name)
        if dataclasses.is_dataclass(field.default):
            field_names(type(field.default), names)
    return names


KNOWN_KEYS = sorted(field_names(SiteConfig, set()) - {"source"})
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.sampled_from(
        [
            "",
            "0",
            "1G",
            "512M",
            "user",
            "bridge",
            "/srv/x",
            "a,b",
            "10.0.0.1",
            "yes",
            "{{ evil }}",
            "$(reboot)",
            "../../etc/shadow",
        ]
    ),
    st.text(max_size=12),
)
DOCUMENT = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=20,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(KNOWN_KEYS), DOCUMENT, max_size=6))
def test_site_config_is_valid_or_every_problem_is_named(data):
    try:
        config = from_data(data, "/etc/vtorque/fuzz.yml")
    except ConfigError as err:
        assert err.problems and str(err).startswith("invalid site config /etc/vtorque/fuzz.yml")
        return
    # An accepted config is a fixed point: shown and loaded again, it is the same config.
    assert from_data(as_dict(config), "again") == config
    assert config.limits.max_vcpus >= 1 and config.limits.max_vms_per_node >= 1


@FUZZ
@given(st.text(max_size=200))
def test_any_config_text_is_valid_or_a_config_error(text):
    try:
        parse_config(text, "/etc/vtorque/fuzz.yml")
    except ConfigError:
        pass


# --- request.json as root reads it -----------------------------------------------------------

VALUES = st.one_of(
    st.text(alphabet="abcdefgiklmnorstuvxyz0123456789KMGT./_-", max_size=12),
    st.sampled_from(["../../etc/shadow", "/etc/shadow", "tiny", "osv1", "9999", "1G", "true", "a,b"]),
)
OPTIONS = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), VALUES, max_size=6)
DOCUMENTS = st.one_of(
    st.fixed_dictionaries({"version": st.just(REQUEST_VERSION), "options": OPTIONS}),
    st.fixed_dictionaries({"version": st.integers(-2, 3), "options": st.one_of(OPTIONS, DOCUMENT)}),
    DOCUMENT,
)


@FUZZ
@given(document=DOCUMENTS)
def test_request_file_is_valid_or_refused_with_the_file_named(tmp_path_factory, document):
    root = tmp_path_factory.mktemp("site")
    site = make_site(root)
    config = load_config(site.config)
    path = root / "request.json"
    path.write_text(json.dumps(document))
    try:
        request = load_request(path, os.getuid(), config)
    except (RequestError, UntrustedFileError) as err:
        assert str(path) in str(err) or "site config" in str(err) or "catalog" in str(err)
        return
    except VTorqueError as err:  # catalog problems are reported as themselves
        raise AssertionError(f"unexpected error class {type(err).__name__}: {err}") from err
    limits = config.limits
    assert 1 <= request.vcpus <= limits.max_vcpus and 1 <= request.ram_mib <= limits.max_ram_mib
    assert 1 <= request.vms_per_node <= limits.max_vms_per_node
    assert request.image.path.startswith(str(root / "images"))
