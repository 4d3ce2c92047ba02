"""The per-job spool directory `<spool_dir>/<jobid>/`, written by vsub as the submitting user.

The job id is known only after `qsub -h` returns, so files are first written into a private
staging directory that is then renamed to the job id (atomic on one filesystem).
"""

import json
import os
import re
import shutil
import tempfile

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import write_atomic

from vtorque.errors import SubmitError
from vtorque.owner_side import owner_side

# Job ids become directory names: one safe path component, in any batch system's spelling
# (Torque's 12[3].head, Slurm's 123_4); the scheduler adapter checks its own spelling.
JOB_ID_RE = re.compile(r"[0-9][A-Za-z0-9._\[\]-]{0,200}")
STAGING_PREFIX = ".staging-"


def check_job_id(job_id):
    if not JOB_ID_RE.fullmatch(job_id) or ".." in job_id:
        raise SubmitError(f"{job_id!r} is not a job id that can name a spool directory")
    return job_id


def create_staging(spool_dir):
    """The job directory is the owner's alone (0700): root on the nodes acts in it as the owner
    (owner_side), which also works through an NFS spool exported with root_squash."""
    try:
        path = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=spool_dir)
        os.chmod(path, 0o700)
    except OSError as err:
        raise SubmitError(f"cannot create a job directory in spool_dir {spool_dir}: {err.strerror}") from None
    return path


def write_new_file(path, data, mode):
    """Create `path` (never through a link, never over an existing file) with `data`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def publish(staging, spool_dir, job_id):
    """Rename the staging directory to `<spool_dir>/<job_id>`; refuses to replace anything."""
    final = os.path.join(spool_dir, check_job_id(job_id))
    if os.path.lexists(final):
        raise SubmitError(f"the job directory {final} already exists")
    try:
        os.rename(staging, final)
    except OSError as err:
        raise SubmitError(f"cannot create the job directory {final}: {err.strerror}") from None
    return final


def write_request(job_dir, document):
    data = json.dumps(document, sort_keys=True, indent=2) + "\n"
    write_atomic(os.path.join(job_dir, "request.json"), data, 0o600)


def remove(path):
    shutil.rmtree(path, ignore_errors=True)


@owner_side
def remove_as_owner(path, *, owner_uid):
    """Root removes an ended job's spool dir as its owner: what the owner cannot remove (a
    link's target, another user's files) stays; a link in place of the dir is not followed."""
    if not os.path.islink(path):
        remove(path)


def check_job_dir(path, owner_uid):
    """Root's look at a job's spool dir before acting in it: the owner's, and no link."""
    from vtorque.errors import UntrustedFileError

    info = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path):
        raise UntrustedFileError(f"job directory {path} is not a directory (links are refused)")
    if info.st_uid != owner_uid:
        raise UntrustedFileError(
            f"job directory {path} is owned by uid {info.st_uid}, expected uid {owner_uid}"
        )
