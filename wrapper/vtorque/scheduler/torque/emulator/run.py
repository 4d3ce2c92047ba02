"""`vtorque run [--user NAME] [qsub options] [-vm ...] job.sh`: a VM job on this one machine.

It submits with the real `vsub` (as the job owner) to the emulator's local queue, then plays
pbs_mom (PbsMom) for it: prologue, the job as the owner with its output on this terminal,
epilogue. Ctrl-C is qdel: during the start as pbs_mom does it then (precancel, the epilogue
beside the prologue), while the job runs precancel then SIGTERM. The exit code is the job's
(125: it never ran).
"""

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from vtorque.errors import VTorqueError
from vtorque.scheduler.torque.emulator.pbs_mom import ABORTED, QDEL_STATUS, REQUEUED, PbsMom

DID_NOT_RUN = 125


def main(argv, prog="vtorque run"):
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        usage=f"{prog} [--user NAME] [qsub options] [-vm key=value,...] job.sh",
    )
    parser.add_argument("--user", default=os.environ.get("SUDO_USER"), help="job owner (default: $SUDO_USER)")
    parser.add_argument(
        "--config", default=None, help="site config (default: $VTORQUE_CONFIG or /etc/vtorque/vtorque.yml)"
    )
    options, vsub_argv = parser.parse_known_args(argv)
    if os.geteuid() != 0:
        raise VTorqueError("vtorque run plays pbs_mom and runs the root hooks: run it as root")
    if not options.user or options.user == "root":
        raise VTorqueError("the job needs a non-root owner: --user NAME (or run through sudo)")
    from vtorque.site.config_file import config_path

    mom = PbsMom(config_path(options.config))
    try:
        return _run(mom, options.user, vsub_argv)
    finally:
        mom.close()


def _run(mom, user, vsub_argv):
    job = mom.submit(user, vsub_argv, os.getcwd())
    print(f"vtorque run: job {job.job_id}: prologue (starting the VMs) ...", file=sys.stderr, flush=True)
    began = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        prologue = pool.submit(mom.prologue, job)
        try:
            code = prologue.result()
        except KeyboardInterrupt:  # qdel while the VMs start: as pbs_mom plays it
            print("\nvtorque run: cancelling the start (as qdel would)", file=sys.stderr)
            mom.qdel_starting(job, prologue)
            return DID_NOT_RUN
    if code != 0:
        status = ABORTED if code == 1 else REQUEUED
        mom.epilogue(job, status)
        verdict = "aborted" if code == 1 else "would be requeued"
        print(
            f"vtorque run: the prologue exited {code}: the job {verdict}; `vtorque jobs show {job.job_id}`"
            " says why",
            file=sys.stderr,
        )
        return DID_NOT_RUN
    print(
        f"vtorque run: VMs ready in {time.monotonic() - began:.1f}s; running {job.name}",
        file=sys.stderr,
        flush=True,
    )
    child = mom.run_job(job)
    try:
        status = child.wait()
    except KeyboardInterrupt:
        print("\nvtorque run: cancelling (as qdel would)", file=sys.stderr)
        mom.qdel(job, child)
        child.wait()
        status = QDEL_STATUS
    mom.epilogue(job, status)
    return status if 0 <= status < 256 else 1
