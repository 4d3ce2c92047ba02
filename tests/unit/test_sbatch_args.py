"""sbatch's command line and #SBATCH lines as vsbatch reads them, checked against the installed
Slurm 22.05 sbatch where there is one (it answers option errors, the script it would open and,
with -v, the options it took before any contact with a controller)."""

import os
import re
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vtorque.scheduler.slurm.batch_script import (
    find_script,
    foreign_line,
    mentions_vm,
    quote_directive_argument,
    read_batch_script,
    split_directive,
    wrapped_script,
)
from vtorque.scheduler.slurm.sbatch_args import (
    NONE,
    OPTIONS,
    REQUIRED,
    SbatchArgsError,
    environment_options,
    node_range,
    parse_sbatch_argv,
    size_mib,
)

SBATCH = shutil.which("sbatch")
needs_sbatch = pytest.mark.skipif(SBATCH is None, reason="no sbatch installed (slurm-client)")
# sbatch reads a slurm.conf before its options: this one names a controller port nobody
# listens on, so even a mistake here cannot submit to a cluster running on this host.
DUMMY_CONF = "ClusterName=vsbatchtest\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=1\n"
DUMMY_CONF += "NodeName=localhost CPUs=1\nPartitionName=p Nodes=localhost\n"
# ...and every call carries an unreadable --bbf: sbatch stops at it once all options are read
# (after printing them with -v), before it would contact the controller.
NO_SUBMIT = "--bbf=/nonexistent"


@pytest.fixture
def real_sbatch(tmp_path):
    """Run the installed sbatch in `tmp_path` (never submitting); its stderr+stdout."""
    conf = tmp_path / "slurm.conf"
    conf.write_text(DUMMY_CONF)

    def run(*args):
        done = subprocess.run(
            [SBATCH, NO_SUBMIT, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"], "SLURM_CONF": str(conf)},
            timeout=20,
            check=False,
        )
        return done.stderr + done.stdout

    return run


def taken_options(output):
    """{option: value} of `sbatch -v` ("defined options", printed before NO_SUBMIT stops it)."""
    return dict(re.findall(r"^sbatch: (\S+)\s+: (.*)$", output, re.M))


# --- the option table against the installed sbatch ---------------------------------------


@needs_sbatch
@pytest.mark.parametrize(("name", "kind", "letter"), OPTIONS)
def test_every_option_takes_its_argument_as_the_installed_sbatch_does(real_sbatch, name, kind, letter):
    alone, attached = real_sbatch(f"--{name}"), real_sbatch(f"--{name}=x")
    assert "unrecognized option" not in alone and "ambiguous" not in alone, alone
    assert ("requires an argument" in alone) == (kind == REQUIRED), alone
    assert ("doesn't allow an argument" in attached) == (kind == NONE), attached
    if letter:
        short = real_sbatch(f"-{letter}")
        assert "invalid option" not in short
        assert ("requires an argument" in short) == (kind == REQUIRED), short


@needs_sbatch
def test_the_table_has_every_option_of_sbatch_help_and_every_letter(real_sbatch):
    listed = set(re.findall(r"--([a-z][a-z0-9-]*)", real_sbatch("--help")))
    assert listed <= {name for name, _, _ in OPTIONS}
    letters = {letter for _, _, letter in OPTIONS if letter}
    for letter in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        assert ("invalid option" not in real_sbatch(f"-{letter}")) == (letter in letters), letter


SCRIPT_PLACES = [
    ["-N2", "nosuch.sh"],
    ["-vN", "2", "nosuch.sh", "-J", "x"],
    ["--exclusive", "nosuch.sh"],
    ["--exclusive=user", "-k", "nosuch.sh", "arg"],
    ["--nice", "nosuch.sh"],
    ["-k", "nosuch.sh"],
    ["-koff", "nosuch.sh"],
    ["--mem", "4G", "--time=5", "nosuch.sh"],
    ["--tasks", "3", "nosuch.sh"],
    ["--extra", "1", "nosuch.sh"],
    ["--", "-nosuch.sh"],
    ["-J", "--", "nosuch.sh"],
    ["-J", ":", "nosuch.sh", "x"],
    ["-HvQ", "nosuch.sh"],
]


@needs_sbatch
@pytest.mark.parametrize("argv", SCRIPT_PLACES, ids=" ".join)
def test_the_script_operand_is_where_the_installed_sbatch_finds_it(real_sbatch, argv):
    opened = re.search(r"Unable to open file (\S+)", real_sbatch(*argv))
    assert opened, real_sbatch(*argv)
    assert parse_sbatch_argv(argv).script == opened.group(1)


@needs_sbatch
@pytest.mark.parametrize(
    ("lines", "options"),
    [
        ('#SBATCH -J "a b" --comment=x#c\n', {"job-name": "a b", "comment": "x"}),
        ("#SBATCH -J 'q\\'x' --comment=a\\#b\n", {"job-name": "q'x", "comment": "a#b"}),
        ("#SBATCH -J x hetjob -t 5\n", {"job-name": "x"}),
        ("#SBATCH -J\n#SBATCH next-line\n", {"job-name": "next-line"}),
        ("#SLURM --comment=old\n  #SBATCH -J indented-is-a-comment\n", {"comment": "old"}),
        ("#SBATCH -J first\necho\n#SBATCH -J after-the-command\n", {"job-name": "first"}),
        ('#SBATCH --comment="a\\"b c" -J n\n', {"comment": 'a"b c', "job-name": "n"}),
    ],
)
def test_directives_are_read_as_the_installed_sbatch_reads_them(real_sbatch, tmp_path, lines, options):
    script = "#!/bin/sh\n" + lines + "echo\n"
    (tmp_path / "job.sh").write_text(script)
    taken = taken_options(real_sbatch("-v", "job.sh"))
    assert {key: taken[key] for key in options} == options
    args = read_batch_script(script.encode(), "job.sh").args
    assert {key: args.last(key).value for key in options} == options


@needs_sbatch
def test_a_quoted_directive_argument_reads_back_in_the_installed_sbatch(real_sbatch, tmp_path):
    comment = "a b\"c'd\\e#f hetjob"
    (tmp_path / "job.sh").write_text(f"#!/bin/sh\n#SBATCH --comment={quote_directive_argument(comment)}\n")
    assert taken_options(real_sbatch("-v", "job.sh"))["comment"] == comment


# --- the command line --------------------------------------------------------------------


def test_options_keep_their_order_values_and_tokens():
    args = parse_sbatch_argv(["-vN2", "--exclusive", "--mem", "4G", "-k", "--nice=5", "job.sh", "-N", "3"])
    assert [(o.name, o.value) for o in args.options] == [
        ("verbose", None),
        ("nodes", "2"),
        ("exclusive", None),
        ("mem", "4G"),
        ("no-kill", None),
        ("nice", "5"),
    ]
    assert (args.script, args.script_args) == ("job.sh", ("-N", "3"))  # POSIX: options end at the script
    assert args.argv() == ["-vN2", "--exclusive", "--mem", "4G", "-k", "--nice=5"]


def test_abbreviations_and_aliases_resolve_like_getopt_long():
    args = parse_sbatch_argv(["--parsa", "--tasks=2", "--ntasks-per-node=3", "--cpus-per-t=4"])
    assert [(o.name, o.value) for o in args.options] == [
        ("parsable", None),
        ("ntasks-per-node", "2"),
        ("ntasks-per-node", "3"),
        ("cpus-per-task", "4"),
    ]
    assert args.script is None  # the script comes on stdin


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--par", "job.sh"], "option '--par' is ambiguous; possibilities: '--parsable' '--partition'"),
        (["--vmx=1", "job.sh"], "unrecognized sbatch option '--vmx'"),
        (["--hold=yes", "job.sh"], "option '--hold' doesn't allow an argument"),
        (["--mem"], "option '--mem' requires an argument"),
        (["-vZ", "job.sh"], "invalid sbatch option -- 'Z'"),
        (["-N"], "sbatch option -N requires an argument"),
        (["--vm"], "option '--vm' requires an argument"),
    ],
)
def test_what_sbatch_would_refuse_is_an_error_naming_it(argv, message):
    with pytest.raises(SbatchArgsError, match=re.escape(message)):
        parse_sbatch_argv(argv)


def test_vm_and_dry_run_are_vsbatchs_own_exact_options_and_never_passed_on():
    args = parse_sbatch_argv(
        ["--vm", "vcpus=2", "-J", "x", "--vm=ram=1G", "--dry-run", "job.sh", "--vm", "a"]
    )
    assert args.vm == ("vcpus=2", "ram=1G") and args.dry_run
    assert args.script_args == ("--vm", "a")  # after the script: the script's arguments
    assert args.argv() == ["-J", "x"]
    with pytest.raises(SbatchArgsError, match="unrecognized sbatch option '--dry'"):
        parse_sbatch_argv(["--dry", "job.sh"])


def test_a_short_cluster_losing_a_member_is_spelled_anew():
    args = parse_sbatch_argv(["-QvJname", "--parsable", "--wrap", "true", "-H"])
    assert args.argv(drop=("quiet", "parsable", "wrap")) == ["-v", "-J", "name", "-H"]


def test_het_job_separators_are_dropped_as_sbatch_drops_them():
    args = parse_sbatch_argv(["-N1", ":", "-N2", "job.sh"])
    assert args.het_job and args.values("nodes") == ["1", "2"] and args.script == "job.sh"
    assert not parse_sbatch_argv(["job.sh"]).het_job


def test_only_the_sbatch_variables_vsbatch_decides_on_are_read_from_the_environment():
    found = environment_options({"SBATCH_MEM_PER_NODE": "2G", "SBATCH_WAIT": "", "SBATCH_JOB_NAME": "x"})
    assert sorted((o.name, o.value) for o in found) == [("mem", "2G"), ("wait", None)]


@pytest.mark.parametrize(
    ("text", "mib"),
    [("12", 12), ("1500K", 2), ("2G", 2048), ("3gb", 3072), ("1T", 1024**2), ("+5M", 5), ("0", 0)],
)
def test_sizes_are_mib_as_sbatch_reads_them(text, mib):
    assert size_mib(text) == mib


@pytest.mark.parametrize("text", ["", "G", "1.5G", "1P", "-1", "1GiB"])
def test_unreadable_sizes_are_none(text):
    assert size_mib(text) is None


@pytest.mark.parametrize(("text", "counts"), [("2", (2, 2)), ("2-4", (2, 4)), ("1k", (1024, 1024))])
def test_node_counts_and_ranges(text, counts):
    assert node_range(text) == counts


@pytest.mark.parametrize("text", ["", "two", "4-2", "2-"])
def test_unreadable_node_counts_are_none(text):
    assert node_range(text) is None


# --- #SBATCH lines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ('-J "a b" -t 5', ["-J", "a b", "-t", "5"]),
        ("--comment=x\\ y", ["--comment=x", "y"]),  # an escaped blank still ends the argument
        ("-J x # a comment --vm y", ["-J", "x"]),
        ("-J 'a#b'", ["-J", "a#b"]),
        ('-J "" -t 5', ["-J"]),  # an empty argument ends the line's arguments
        ("-J x HetJob -t 5", ["-J", "x"]),
        ("-J x \t\r", ["-J", "x"]),
    ],
)
def test_directive_lines_split_like_sbatch_get_argument(text, arguments):
    assert split_directive(text, "job.sh line 2") == arguments


@pytest.mark.parametrize(("text", "message"), [("-J 'open", "unmatched `'`"), ("-N2 :", "unexpected `:`")])
def test_what_sbatch_refuses_in_a_directive_line_names_the_line(text, message):
    with pytest.raises(SbatchArgsError, match=f"job.sh line 2: {message}"):
        split_directive(text, "job.sh line 2")


@given(st.text(alphabet=st.characters(blacklist_characters="\n\x00"), min_size=1))
def test_a_quoted_argument_splits_back_to_itself(argument):
    assert split_directive(quote_directive_argument(argument), "here") == [argument]


SCRIPT = b"""#!/bin/sh
# a comment
#SBATCH -J keep --vm vcpus=2 --comment 'two words'

#SBATCH --vm=ram=1G
#SLURM -t 5
echo go
#SBATCH --vm vcpus=9
"""


def test_vm_lines_are_split_off_and_reading_stops_at_the_first_command():
    script = read_batch_script(SCRIPT, "job.sh")
    assert script.vm == (
        ("vcpus=2", "job.sh line 3 (#SBATCH directive)"),
        ("ram=1G", "job.sh line 5 (#SBATCH directive)"),
    )
    assert script.directives == ('#SBATCH -J keep --comment "two words"', "#SLURM -t 5")
    assert [(o.name, o.value) for o in script.args.options if o.name != "vm"] == [
        ("job-name", "keep"),
        ("comment", "two words"),
        ("time", "5"),
    ]
    assert not script.het_job and script.foreign_line is None


def test_a_rewritten_directive_line_reads_back_to_the_same_options():
    script = read_batch_script(b"#!/bin/sh\n#SBATCH --vm vcpus=1 -J 'a \"b\"' --comment=c\\#d\n", "j")
    again = read_batch_script(("\n".join(script.directives) + "\n").encode(), "j")
    assert [(o.name, o.value) for o in again.args.options] == [("job-name", 'a "b"'), ("comment", "c#d")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"#!/bin/sh\n#SBATCH -N 2 extra\n", "job.sh line 2 (#SBATCH directive): invalid directive found"),
        (b"#!/bin/sh\n#SBATCH -J x\n#SBATCH --bogus\n", "job.sh line 3 (#SBATCH directive): unrecognized"),
        (
            b"#!/bin/sh\n#SBATCH --vm\n#SBATCH vcpus=2\n",
            "job.sh line 2 (#SBATCH directive): --vm needs its value",
        ),
    ],
)
def test_a_bad_directive_names_its_line(content, message):
    with pytest.raises(SbatchArgsError, match=re.escape(message)):
        read_batch_script(content, "job.sh")


def test_hetjob_lines_mark_a_heterogeneous_job():
    assert read_batch_script(b"#SBATCH -N1\n#SBATCH hetjob\n#SBATCH -N2\n", "j").het_job


def test_pbs_and_bsub_lines_are_found_in_sbatchs_translation_window():
    assert foreign_line(["#!/bin/sh", "echo", "#PBS -N x"]) == (3, "#PBS -N x")
    assert foreign_line(["#BSUB -J x"]) == (1, "#BSUB -J x")
    assert foreign_line(["echo"] * 101 + ["#PBS -N x"]) is None
    assert foreign_line([" #PBS -N x"]) is None


def test_a_vm_mention_is_found_even_in_a_script_sbatch_cannot_read():
    assert mentions_vm(b"#!/bin/sh\n#SBATCH --bogus 'open --vm vcpus=1\n")
    assert not mentions_vm(b"#!/bin/sh\necho\n#SBATCH --vm vcpus=1\n")


def test_the_script_is_found_where_sbatch_looks_for_it(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool.sh").write_text("")
    (tmp_path / "here.sh").write_text("")
    search = f"/nonexistent:{tmp_path / 'bin'}"
    assert find_script("here.sh", str(tmp_path), search) == str(tmp_path / "here.sh")
    assert find_script("tool.sh", str(tmp_path), search) == str(tmp_path / "bin" / "tool.sh")
    assert find_script("./tool.sh", str(tmp_path), search) == "./tool.sh"
    assert find_script("missing.sh", str(tmp_path), search) == "missing.sh"


def test_wrap_makes_the_script_sbatch_makes():
    assert wrapped_script("echo hi") == b"#!/bin/sh\n# This script was created by sbatch --wrap.\n\necho hi\n"
