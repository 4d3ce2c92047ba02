"""`vtorque sweep` removes the spool dirs Torque never ends for (a job deleted while queued or
held runs no hook), and nothing the server still knows or could not say about."""

import os
import time

from vtorque.runtime.sweep import sweep_spool
from vtorque.scheduler.torque.adapter import Adapter
from vtorque.site.config import parse_config

NOBODY = 65534
QSTAT = """#!/bin/sh
[ "$1" = -f ] || exit 2
case "$2" in
  1.head) printf 'Job Id: 1.head\n    job_state = Q\n'; exit 0 ;;
  3.head) echo "qstat: cannot connect to server head (errno=111)" >&2; exit 1 ;;
  7.head) printf 'Job Id: 7.head\n    job_state = C\n'; exit 0 ;;
  *) echo "qstat: Unknown Job Id Error $2" >&2; exit 153 ;;
esac
"""


def spool_site(root, grace=60):
    spool = root / "spool"
    spool.mkdir()
    spool.chmod(0o1777)  # as the frontend role makes it
    qstat = root / "qstat"
    qstat.write_text(QSTAT)
    qstat.chmod(0o755)
    config = parse_config(
        f"spool_dir: {spool}\nspool_grace_minutes: {grace}\ntorque: {{qstat: {qstat}}}\n", "t"
    )
    return spool, config


def job_dir(spool, name, age_minutes, uid=NOBODY):
    path = spool / name
    path.mkdir(mode=0o700)
    (path / "request.json").write_text("{}")
    for entry in (path / "request.json", path):
        os.chown(entry, uid, uid)
    then = time.time() - age_minutes * 60
    os.utime(path, (then, then))
    return path


def test_only_old_dirs_of_jobs_the_server_forgot_go(shared_tmp):
    spool, config = spool_site(shared_tmp)
    known = job_dir(spool, "1.head", 120)  # still queued: stays
    forgotten = job_dir(spool, "2.head", 120)  # deleted while queued, then forgotten: goes
    completed = job_dir(spool, "7.head", 120)  # deleted while held, kept completed: goes
    unsure = job_dir(spool, "3.head", 120)  # the server did not answer: stays
    young = job_dir(spool, "4.head", 5)  # inside the grace period: stays
    staging = job_dir(spool, ".staging-abc", 120)  # a vsub killed before qsub returned: goes
    rootish = job_dir(spool, "5.head", 120, uid=0)  # not a user's: never touched
    os.symlink("/etc", spool / "6.head")  # a link: never followed
    gone = [str(staging), str(forgotten), str(completed)]
    assert sweep_spool(config, Adapter(config), dry_run=True) == gone
    assert forgotten.exists() and staging.exists() and completed.exists()
    assert sweep_spool(config, Adapter(config)) == gone
    assert not any(os.path.lexists(path) for path in gone)
    assert all(path.exists() for path in (known, unsure, young, rootish)) and os.path.islink(spool / "6.head")
