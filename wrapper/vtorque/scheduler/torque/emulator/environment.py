"""The environments the pbs_mom emulator gives: a user's login (for vsub and the job) and the
job script's full PBS_* set (docs/torque.md, "Environment"). Hooks get only Torque's minimal
environment, which PbsMom builds where it calls them."""

import os
import socket
import sys


def user_environment(entry, extra):
    return {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": entry.pw_dir,
        "USER": entry.pw_name,
        "LOGNAME": entry.pw_name,
        "SHELL": entry.pw_shell,
        "LANG": "C.UTF-8",
        **extra,
    }


def job_environment(job, nodefile):
    host = socket.gethostname()
    env = user_environment(job.user, {})
    env.update(
        {
            "PBS_JOBID": job.job_id,
            "PBS_JOBNAME": job.name,
            "PBS_QUEUE": job.queue,
            "PBS_ENVIRONMENT": "PBS_BATCH",
            "PBS_JOBCOOKIE": "0" * 32,
            "PBS_VERSION": "TORQUE-6.1-dev",
            "PBS_NODEFILE": nodefile,
            "PBS_NODENUM": "0",
            "PBS_VNODENUM": "0",
            "PBS_TASKNUM": "1",
            "PBS_MOMPORT": "15003",
            "PBS_NP": str(job.ppn * job.node_count),
            "PBS_NUM_NODES": str(job.node_count),
            "PBS_NUM_PPN": str(job.ppn),
            "PBS_O_HOME": job.user.pw_dir,
            "PBS_O_HOST": host,
            "PBS_O_LOGNAME": job.user.pw_name,
            "PBS_O_PATH": env["PATH"],
            "PBS_O_SHELL": job.user.pw_shell,
            "PBS_O_WORKDIR": job.workdir,
            "PBS_O_QUEUE": job.queue,
            "PBS_O_SERVER": host,
            **({} if job.array_index is None else {"PBS_ARRAYID": str(job.array_index)}),
        }
    )
    return env
