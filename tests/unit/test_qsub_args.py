"""qsub argv model (getopt rules), `-l` rewriting, and `#PBS` directive reading."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vtorque.errors import QsubArgsError
from vtorque.scheduler.torque.pbs_script import directive_prefix, read_script, render_job_wrapper
from vtorque.scheduler.torque.qsub_args import (
    FLAGS,
    WITH_VALUE,
    mem_mib,
    nodes_count,
    parse_qsub_argv,
    raise_ppn,
    resource,
    set_resource,
)


def test_options_keep_their_order_and_forms():
    args = parse_qsub_argv(["-hV", "-lnodes=2", "-N", "name", "-vm", "vcpus=2", "job.sh", "-q", "batch"])
    assert args.options == (("h", None), ("V", None), ("l", "nodes=2"), ("N", "name"), ("q", "batch"))
    assert args.script == "job.sh" and args.vm == ("vcpus=2",)
    assert args.argv() == ["-h", "-V", "-l", "nodes=2", "-N", "name", "-q", "batch"]


def test_value_that_looks_like_an_option_is_still_a_value():
    args = parse_qsub_argv(["-N", "-vm", "-F", "-a -b", "--", "-weird.sh"])
    assert args.options == (("N", "-vm"), ("F", "-a -b"))
    assert args.script == "-weird.sh" and args.vm == ()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-Y"], "unknown qsub option -Y"),
        (["-l"], "-l needs a value"),
        (["-vm"], "-vm needs a value"),
        (["a.sh", "b.sh"], "more than one job script"),
    ],
)
def test_unparseable_argv_is_reported(argv, message):
    with pytest.raises(QsubArgsError, match=message):
        parse_qsub_argv(argv)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(sorted(FLAGS)).map(lambda f: [f"-{f}"]),
            st.tuples(
                st.sampled_from(sorted(WITH_VALUE)),
                st.text(min_size=1).filter(lambda v: not v.startswith("-")),
            ).map(lambda p: [f"-{p[0]}", p[1]]),
        ),
        max_size=8,
    )
)
def test_argv_round_trips(chunks):
    argv = [token for chunk in chunks for token in chunk]
    assert parse_qsub_argv(argv).argv() == argv


def test_ppn_is_raised_in_every_part_and_added_when_missing():
    assert raise_ppn("2:ppn=1+node7:gpu", 5) == ("2:ppn=5+node7:gpu:ppn=5", 1)
    assert raise_ppn("1:ppn=8", 5) == ("1:ppn=8", 8)
    assert nodes_count("2:ppn=4+node7:ppn=1") == 3


def test_resources_are_rewritten_in_place_or_appended():
    args = parse_qsub_argv(["-l", "walltime=1:00:00,nodes=1", "-N", "x"])
    assert resource(args, "nodes") == "1" and resource(args, "mem") is None
    rewritten = set_resource(set_resource(args, "nodes", "1:ppn=3"), "mem", "2048mb")
    assert rewritten.argv() == ["-l", "walltime=1:00:00,nodes=1:ppn=3", "-N", "x", "-l", "mem=2048mb"]


@pytest.mark.parametrize(
    ("text", "mib"),
    [("4gb", 4096), ("512mb", 512), ("1048576", 1), ("1tb", 1048576), ("1mw", 8), ("x", None)],
)
def test_torque_memory_sizes(text, mib):
    assert mem_mib(text) == mib


SCRIPT = b"""#!/bin/bash
#PBS -N job
# a comment

#PBS -l nodes=2 -vm vcpus=2
#PBS -vm ram=1G
#PBS -m 'a e' -vm iocm=yes -M me@example.org
echo start
#PBS -vm vcpus=99
"""


def test_directives_are_read_until_the_first_command_and_vm_parts_split_off():
    script = read_script(SCRIPT, "job.sh")
    assert script.vm == (
        ("vcpus=2", "job.sh line 5 (#PBS directive)"),
        ("ram=1G", "job.sh line 6 (#PBS directive)"),
        ("iocm=yes", "job.sh line 7 (#PBS directive)"),
    )
    assert script.directives == ("#PBS -N job", "#PBS -l nodes=2", "#PBS -m 'a e' -M me@example.org")
    assert resource(script.args, "nodes") == "2"


def test_directive_prefix_follows_qsub():
    assert directive_prefix(parse_qsub_argv(["-C", "#VT"]), {"PBS_DPREFIX": "#X"}) == "#VT"
    assert directive_prefix(parse_qsub_argv([]), {"PBS_DPREFIX": "#X"}) == "#X"
    assert read_script(b"#VT -vm vcpus=1\n#PBS -vm vcpus=2\n", "s", "#VT").vm == (
        ("vcpus=1", "s line 1 (#VT directive)"),
    )
    assert read_script(b"#PBS -vm vcpus=2\n", "s", "").vm == ()


def test_wrapper_keeps_directives_and_hands_over_to_job_run():
    text = render_job_wrapper(("#PBS -N job",), "/spool dir", "/opt/vt/bin/vtorque").decode()
    lines = text.splitlines()
    assert lines[:2] == ["#!/bin/sh", "#PBS -N job"]
    assert lines[-1] == 'exec /opt/vt/bin/vtorque job-run \'/spool dir\'/"$PBS_JOBID" "$@"'
