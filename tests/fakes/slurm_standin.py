#!/usr/bin/env python3
"""Recording stand-in for Slurm's sbatch, scontrol and scancel (the program name picks the role).

Every call appends one JSON line to $VTORQUE_FAKE_LOG: {"prog", "argv", "script"}, where
"script" is the submitted script's text for sbatch: the first argument naming an existing
file, else stdin (none with --wrap). sbatch numbers jobs by the log's line count and prints
what the real one prints: `Submitted batch job N`, with --parsable `N` (`N;CLUSTER` when
$VTORQUE_FAKE_CLUSTER is set), with -Q/--quiet nothing. $VTORQUE_FAKE_<PROG>_RC makes a
program fail with that exit code (after recording the call).
"""

import json
import os
import sys

prog = os.path.basename(sys.argv[0])
args = sys.argv[1:]
log = os.environ["VTORQUE_FAKE_LOG"]
script = None
if prog == "sbatch":
    operand = next((arg for arg in args if os.path.isfile(arg)), None)
    if operand:
        with open(operand, encoding="utf-8", errors="replace") as handle:
            script = handle.read()
    elif not any(arg.startswith("--wrap") for arg in args):
        script = sys.stdin.read()
with open(log, "a", encoding="utf-8") as handle:
    handle.write(json.dumps({"prog": prog, "argv": args, "script": script}) + "\n")
with open(log, encoding="utf-8") as handle:
    count = sum(1 for _ in handle)
rc = int(os.environ.get(f"VTORQUE_FAKE_{prog.upper()}_RC", "0"))
if rc:
    print(f"{prog}: error: simulated failure", file=sys.stderr)
    sys.exit(rc)
if prog == "sbatch" and not {"-Q", "--quiet"} & set(args):
    cluster = os.environ.get("VTORQUE_FAKE_CLUSTER")
    if "--parsable" in args:
        print(f"{count};{cluster}" if cluster else count)
    else:
        print(f"Submitted batch job {count}" + (f" on cluster {cluster}" if cluster else ""))
