"""vTorque benchmark suite: each figure against its floor, min/median/max, JSON and PNG plots.

    .venv/bin/python benchmarks/run.py [--repeat N [CASE=N ...]] [--only CASE ...] [--out DIR]

(`tools/bench.sh` prepares the machine first and then runs this.)
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cases_fanout
import cases_host
import cases_nodes
import cases_slurm
import cases_snapshot
import cases_telemetry
import cases_vm
from plots import plot_comparisons, plot_series

CASES = {
    "submission": cases_host.submission,
    "hooks": cases_host.bare_metal_hooks,
    "provisioning": cases_vm.provisioning,
    "fanout": cases_fanout.fanout,
    "nodes": cases_nodes.nodes,
    "jobrun": cases_vm.job_run,
    "slurm": cases_slurm.slurm,
    "telemetry": cases_telemetry.telemetry,
    "snapshot": cases_snapshot.snapshot,
}
# Targets from issues 7 and 18: (figure name prefix, field, limit, description)
TARGETS = [
    ("submission: vsub VM job", "overhead_s", 0.300, "vsub overhead over qsub <= 300 ms"),
    ("hooks:", "per_hook_overhead_s", 0.150, "bare-metal hook overhead <= 150 ms per hook"),
    (
        "provisioning: 1 VM",
        "overhead_s",
        3.0,
        "provisioning overhead over direct libvirt <= 3 s for one VM",
    ),
    ("provisioning: 1 VM", "overhead_s", 1.0, "provisioning, 1 VM within 1.0 s of the floor (issue 18)"),
    ("provisioning: 2 VM", "ratio", 1.15, "provisioning, 2 VMs <= 1.15x the floor (issue 18)"),
    ("provisioning: 4 VM", "ratio", 1.15, "provisioning, 4 VMs <= 1.15x the floor (issue 18)"),
    ("teardown: 1 VM", "overhead_s", 0.3, "teardown, 1 VM within 0.3 s of the floor (issue 18)"),
    ("fan-out: job_start+job_stop over 256", "ratio", 4.0, "fan-out to 256 nodes <= 4x one node"),
    ("nodes: primary CPU s, job_start+job_stop", "ratio", 1.5, "primary's CPU, 32 nodes <= 1.5x one node"),
    (
        "snapshot: 1 VM, vm_start from the template",
        "ratio",
        0.5,
        "snapshot start, 1 VM SSH-ready <= 0.5x the fresh-boot floor",
    ),
]


def machine():
    cpus = Path("/proc/cpuinfo").read_text().count("processor\t:")
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": cpus}


def check_targets(results):
    verdicts = []
    for prefix, field, limit, text in TARGETS:
        for result in results:
            if result["name"].startswith(prefix) and result.get(field) is not None:
                verdict = {"target": text, "value": result[field], "met": result[field] <= limit}
                verdicts.append(verdict | ({"figure": result["name"]} if prefix.startswith("nodes:") else {}))
    return verdicts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat",
        nargs="+",
        type=_repeat,
        default=[],
        metavar="N|CASE=N",
        help="runs per measurement (default 5); CASE=N for one case (a noisy one wants more)",
    )
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="run only these cases")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    repeat = {None: 5} | dict(args.repeat)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="vtorque-bench-") as workdir:
        for name in args.only or CASES:
            print(f"bench: {name} ...", flush=True)
            case_dir = Path(workdir) / name
            case_dir.mkdir()
            for result in CASES[name](case_dir, repeat.get(name, repeat[None])):
                results.append(result)
                print(_line(result), flush=True)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "repeat": {name: repeat.get(name, repeat[None]) for name in args.only or CASES},
        "results": results,
        "targets": check_targets(results),
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("bench: no matplotlib here (tools/venv.sh test,bench): no plots")
    else:
        plot_comparisons([r for r in results if "series" not in r], args.out)
        cases_nodes.plot(results, args.out)
    fanout = [r for r in results if "series" in r and r["name"].startswith("fan-out")]
    if fanout and "matplotlib" in sys.modules:
        longest = max(fanout, key=lambda r: len(r["nodes"]))
        plot_series(
            "fan-out: job_start + job_stop",
            longest["nodes"],
            {
                r["name"].split(", ", 1)[1]: r["series"] + [None] * (len(longest["nodes"]) - len(r["series"]))
                for r in fanout
            },
            args.out,
            "simulated nodes",
        )
    for verdict in report["targets"]:
        value = verdict["value"]
        ratio = "x one node" in verdict["target"] or "x the" in verdict["target"]
        shown = f"{value:.2f}x" if ratio else f"{value * 1000:.0f} ms"
        figure = f" ({verdict['figure']})" if "figure" in verdict else ""
        print(f"target: {verdict['target']}{figure}: {shown}: {'met' if verdict['met'] else 'NOT met'}")
    print(f"bench: results in {args.out}")
    return 0


def _repeat(text):
    """`N` (every case) or `CASE=N` (one case) as (case or None, N)."""
    case, _, count = text.rpartition("=")
    if case and case not in CASES:
        raise argparse.ArgumentTypeError(f"no case {case!r} (cases: {', '.join(sorted(CASES))})")
    if not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a repeat is a whole number of at least 1")
    return case or None, int(count)


def _line(result):
    m, f = result["measured"], result["floor"]
    ratio = f"{result['ratio']:.2f}x" if result["ratio"] else "-"
    return (
        f"  {result['name']}: median {m['median'] * 1000:.0f} ms (min {m['min'] * 1000:.0f}, "
        f"max {m['max'] * 1000:.0f}) vs floor {f['median'] * 1000:.0f} ms: "
        f"+{result['overhead_s'] * 1000:.0f} ms, {ratio}"
    )


if __name__ == "__main__":
    sys.exit(main())
