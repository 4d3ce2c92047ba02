"""The queue behind `vtorque run`: qsub, qrls, qdel and qstat for one machine, no Torque needed.

`python -m vtorque.scheduler.torque.emulator.queue qsub|qrls|qdel|qstat ARGS...` with
$VTORQUE_LOCAL_QUEUE set: qsub stores its argv and, as the real qsub does, the script's
content in `<queue>/<n>.json` and prints the job id `<first + n - 1>.<host>`; qrls and qdel
record themselves. `qsub -I` waits as Torque 6.1's does (docs/torque.md, "Interactive jobs"):
`qsub: waiting for job ID to start`, then, once PbsMom connects the job's terminal to the
socket `<queue>/<n>.tty`, `qsub: job ID ready`, the session relayed raw, `qsub: job ID
completed`; a qdel while it waits ends it with `qsub: Job ID was canceled while waiting to
start` and exit 1; a Ctrl-C while it waits asks whether to delete the job.

`qsub -t RANGE` makes an array, named `<n>[].<host>` as Torque 6.1 names it; PbsMom runs its
elements `<n>[i].<host>` and leaves each one's state in `<queue>/<element>.state` (R while it
runs, its epilogue too, as a real pbs_server showed it; C once done), which `qstat -t ARRAY`
lists as pbs_server does.

`qstat -f [-1] JOBID` of a job PbsMom runs shows its `exec_host` (`vm/0-1+n2/0-1`), which
the mom leaves in `<queue>/<jobid>.exec_host` (an array's element too, then known by its own
id). qstat JOBID answers as pbs_server does: exit 0 for a job it knows, else "Unknown Job Id" and
exit 153, for a job never submitted, deleted (qdel) or forgotten
(`<queue>/<jobid>.forgotten`, left by PbsMom once keep_completed would have passed). `vtorque
run` then plays pbs_mom for the stored job. $VTORQUE_LOCAL_FIRST_ID (set by PbsMom from its
pid) keeps job ids, and so domain names, apart between pbs_moms running at once on this machine.
"""

import json
import os
import signal
import socket
import sys


def main(argv):
    program, args = argv[0], argv[1:]
    queue = os.environ["VTORQUE_LOCAL_QUEUE"]
    if program == "qsub":
        number = len([name for name in os.listdir(queue) if name.endswith(".json")]) + 1
        first = int(os.environ.get("VTORQUE_LOCAL_FIRST_ID", "1"))
        with open(args[-1], encoding="utf-8", errors="surrogateescape") as script:
            content = script.read()
        indices = _array_indices(args, content)
        number_id, host = first + number - 1, socket.gethostname().split(".")[0]
        job_id = f"{number_id}[].{host}" if indices else f"{number_id}.{host}"
        interactive = "-I" in args
        record = {"job_id": job_id, "argv": args, "cwd": os.getcwd(), "script": content}
        if indices:
            record["elements"] = [f"{number_id}[{index}].{host}" for index in indices]
        if interactive:  # -x: pbs_mom runs the command by the path given here, when the job starts
            record["command"] = os.path.abspath(args[-1])
            record["tty"] = os.path.join(queue, f"{number}.tty")
            listener = _listen(record["tty"])
        with open(os.path.join(queue, f"{number}.json"), "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        if interactive:
            return _interactive(queue, job_id, listener)
        print(job_id)
        return 0
    _record_call(queue, [program, *args])
    if program == "qstat":
        return _qstat_array(queue, args[-1]) if "-t" in args else _qstat(queue, args[-1])
    return 0


def _array_indices(args, content):
    """The indices of `-t 1-3,7` (the command line's, else a `#PBS -t` line's; `%N` ignored)."""
    spec = next((args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "-t"), None)
    for line in content.splitlines() if spec is None else ():
        if line.startswith("#PBS") and line.split()[1:2] == ["-t"]:
            spec = line.split()[2]
    indices = []
    for part in filter(None, (spec or "").split("%")[0].split(",")):
        low, _, high = part.partition("-")
        indices += range(int(low), int(high or low) + 1)
    return indices


def element_state(queue, element):
    try:
        with open(os.path.join(queue, f"{element}.state"), encoding="ascii") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return "Q"


def set_element_state(queue, element, state):
    with open(os.path.join(queue, f"{element}.state"), "w", encoding="ascii") as handle:
        handle.write(state)


def set_exec_host(queue, job_id, exec_host):
    with open(os.path.join(queue, f"{job_id}.exec_host"), "w", encoding="ascii") as handle:
        handle.write(exec_host)


def _exec_host(queue, job_id):
    try:
        with open(os.path.join(queue, f"{job_id}.exec_host"), encoding="ascii") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None


def _qstat_array(queue, array_id):
    """`qstat -t ARRAY`: a header, then one line per element: id, name, user, time, state, queue."""
    record = next((r for r in _records(queue) if r["job_id"] == array_id and r.get("elements")), None)
    if record is None or deleted(queue, array_id):
        print(f"qstat: Unknown Job Id Error {array_id}", file=sys.stderr)
        return UNKNOWN_EXIT
    print("Job ID                    Name             User            Time Use S Queue")
    print("------------------------- ---------------- --------------- -------- - -----")
    for element in record["elements"]:
        index = element.split("[")[1].split("]")[0]
        print(f"{element:<25} job-{index:<12} user 0 {element_state(queue, element)} batch")
    return 0


def _records(queue):
    """Every job qsub stored."""
    return (_read_json(os.path.join(queue, name)) for name in os.listdir(queue) if name.endswith(".json"))


def _read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


UNKNOWN_EXIT = 153  # pbs_server's PBSE_UNKJOBID, as qstat exits with it


def deleted(queue, job_id):
    """Whether job_id's owner (or vsub for them) ran qdel on it."""
    return _called(queue, "qdel", job_id)


def released(queue, job_id):
    return _called(queue, "qrls", job_id)


def _called(queue, program, job_id):
    with open(os.path.join(queue, "calls.log"), encoding="utf-8") as handle:
        return any(json.loads(line)[:2] == [program, job_id] for line in handle)


def _record_call(queue, argv):
    with open(os.path.join(queue, "calls.log"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(argv) + "\n")


def _listen(path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(0.2)
    return listener


def _interactive(queue, job_id, listener):
    """qsub -I's side: wait for the job's terminal (or its deletion), then relay it raw."""
    from vtorque.terminal import raw_mode, relay

    print(f"qsub: waiting for job {job_id} to start", flush=True)
    asked = []
    signal.signal(signal.SIGINT, lambda *_: asked.append(True))
    while True:
        if asked:
            asked.clear()
            print("Do you wish to terminate the job and exit (y|[n])? ", end="", flush=True)
            if sys.stdin.readline().strip().lower().startswith("y"):
                _record_call(queue, ["qdel", job_id])
                print(f"Job {job_id} is being deleted", flush=True)
                return 0
        if deleted(queue, job_id):
            print(f"qsub: Job {job_id} was canceled while waiting to start", flush=True)
            return 1
        try:
            connection, _ = listener.accept()
            break
        except (TimeoutError, InterruptedError):
            continue
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # from now on a Ctrl-C is a byte for the job
    print(f"qsub: job {job_id} ready\n", flush=True)
    stdin, stdout, far = sys.stdin.fileno(), sys.stdout.fileno(), connection.fileno()
    with raw_mode(stdin):
        relay({stdin: far, far: stdout}, until=far)
    connection.close()
    print(f"\nqsub: job {job_id} completed", flush=True)
    return 0


def _qstat(queue, job_id):
    records = list(_records(queue))
    record = next((r for r in records if r["job_id"] == job_id), None)
    exec_host = _exec_host(queue, job_id)
    array = next((r for r in records if job_id in r.get("elements", ())), None)
    if record is None and exec_host is not None and array is not None:  # an element the mom runs
        if not deleted(queue, array["job_id"]):
            print(f"Job Id: {job_id}\n    job_state = {element_state(queue, job_id)}")
            print(f"    exec_host = {exec_host}")
            return 0
    if (
        record
        and not deleted(queue, job_id)
        and not os.path.exists(os.path.join(queue, f"{job_id}.forgotten"))
    ):
        elements = record.get("elements")
        done = elements and all(element_state(queue, element) == "C" for element in elements)
        print(f"Job Id: {job_id}\n    job_state = {'C' if done else 'Q'}")  # an array: C once all are
        if exec_host is not None:
            print(f"    exec_host = {exec_host}")
        return 0
    print(f"qstat: Unknown Job Id Error {job_id}", file=sys.stderr)
    return UNKNOWN_EXIT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
