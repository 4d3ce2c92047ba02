"""The queue behind `vtorque run`: qsub, qrls and qdel for one machine, no Torque needed.

`python -m vtorque.localqueue qsub|qrls|qdel ARGS...` with $VTORQUE_LOCAL_QUEUE set: qsub
stores its argv and, as the real qsub does, the script's content in `<queue>/<n>.json` and
prints the job id `<first + n - 1>.<host>`; qrls and qdel record themselves. `vtorque run`
then plays pbs_mom for the stored job. $VTORQUE_LOCAL_FIRST_ID (set by PbsMom from its pid)
keeps job ids, and so domain names, apart between pbs_moms running at once on this machine.
"""

import json
import os
import socket
import sys


def main(argv):
    program, args = argv[0], argv[1:]
    queue = os.environ["VTORQUE_LOCAL_QUEUE"]
    if program == "qsub":
        number = len([name for name in os.listdir(queue) if name.endswith(".json")]) + 1
        first = int(os.environ.get("VTORQUE_LOCAL_FIRST_ID", "1"))
        job_id = f"{first + number - 1}.{socket.gethostname().split('.')[0]}"
        with open(os.path.join(queue, f"{number}.json"), "w", encoding="utf-8") as handle:
            with open(args[-1], encoding="utf-8", errors="surrogateescape") as script:
                content = script.read()
            json.dump({"job_id": job_id, "argv": args, "cwd": os.getcwd(), "script": content}, handle)
        print(job_id)
        return 0
    with open(os.path.join(queue, "calls.log"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps([program, *args]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
