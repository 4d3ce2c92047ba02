#!/usr/bin/env python3
"""Recording stand-in for Torque's qsub, qrls and qdel (the program name picks the role).

Every call appends one JSON line to $VTORQUE_FAKE_LOG: {"prog", "argv", "script"}, where
"script" is the submitted script's text (the last operand's file, or stdin for qsub without
an operand). qsub prints a new job id `<n>.fakeserver`; $VTORQUE_FAKE_<PROG>_RC makes a
program fail with that exit code (after recording the call).
"""

import json
import os
import sys

prog = os.path.basename(sys.argv[0])
args = sys.argv[1:]
log = os.environ["VTORQUE_FAKE_LOG"]
script = None
if prog == "qsub" and "-I" not in args:
    operand = args[-1] if args and not args[-1].startswith("-") and os.path.isfile(args[-1]) else None
    if operand:
        with open(operand, encoding="utf-8", errors="replace") as handle:
            script = handle.read()
    else:
        script = sys.stdin.read()
with open(log, "a", encoding="utf-8") as handle:
    handle.write(json.dumps({"prog": prog, "argv": args, "script": script}) + "\n")
with open(log, encoding="utf-8") as handle:
    count = sum(1 for _ in handle)
rc = int(os.environ.get(f"VTORQUE_FAKE_{prog.upper()}_RC", "0"))
if rc:
    print(f"{prog}: simulated failure", file=sys.stderr)
    sys.exit(rc)
if prog == "qsub":
    print(f"{count}[].fakeserver" if "-t" in args else f"{count}.fakeserver")  # as Torque 6.1 names arrays
