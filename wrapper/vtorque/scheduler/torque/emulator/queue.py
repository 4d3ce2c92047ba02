"""The queue behind `vtorque run`: qsub, qrls, qdel and qstat for one machine, no Torque needed.

`python -m vtorque.scheduler.torque.emulator.queue qsub|qrls|qdel|qstat ARGS...` with
$VTORQUE_LOCAL_QUEUE set: qsub stores its argv and, as the real qsub does, the script's
content in `<queue>/<n>.json` and prints the job id `<first + n - 1>.<host>`; qrls and qdel
record themselves. qstat JOBID answers as pbs_server does: exit 0 for a job it knows, else
"Unknown Job Id" and exit 153, for a job never submitted, deleted (qdel) or forgotten
(`<queue>/<jobid>.forgotten`, left by PbsMom once keep_completed would have passed). `vtorque
run` then plays pbs_mom for the stored job. $VTORQUE_LOCAL_FIRST_ID (set by PbsMom from its
pid) keeps job ids, and so domain names, apart between pbs_moms running at once on this machine.
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
    calls = os.path.join(queue, "calls.log")
    with open(calls, "a", encoding="utf-8") as handle:
        handle.write(json.dumps([program, *args]) + "\n")
    if program == "qstat":
        return _qstat(queue, calls, args[-1])
    return 0


def _read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


UNKNOWN_EXIT = 153  # pbs_server's PBSE_UNKJOBID, as qstat exits with it


def _qstat(queue, calls, job_id):
    submitted = any(
        _read_json(os.path.join(queue, name))["job_id"] == job_id
        for name in os.listdir(queue)
        if name.endswith(".json")
    )
    with open(calls, encoding="utf-8") as handle:
        deleted = any(json.loads(line)[:2] == ["qdel", job_id] for line in handle)
    if submitted and not deleted and not os.path.exists(os.path.join(queue, f"{job_id}.forgotten")):
        print(f"Job Id: {job_id}\n    job_state = Q")
        return 0
    print(f"qstat: Unknown Job Id Error {job_id}", file=sys.stderr)
    return UNKNOWN_EXIT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
