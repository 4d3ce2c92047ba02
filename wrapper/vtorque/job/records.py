"""What vTorque remembers about a job, and where a person finds the reason for a failure.

Root keeps one record per job in `<state_dir>/records/` (root's alone; it outlives the job's
files) and, with every change, writes the same record for the job's owner into
`records/owner/` (0600, the owner's): `vtorque jobs show` reads the first as root and the
second as anyone else, so no user reads another's VM names, addresses, reasons or console
tails, and root never reads a file a user can write. A failure reason also goes to syslog and
to `vtorque.log` in the user's spool directory, because Torque discards the .o/.e files of a
job whose prologue exits 1.
"""

import contextlib
import fcntl
import json
import os
import pwd
import stat
import sys
import syslog
import time

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import write_atomic

from vtorque.errors import VTorqueError
from vtorque.job import statedir
from vtorque.owner_side import owner_side

USER_LOG = "vtorque.log"


def record_path(state_dir, job_id, *, owner_copy=False):
    place = ("records", "owner") if owner_copy else ("records",)
    return os.path.join(state_dir, *place, naming.sanitise_job_id(job_id) + ".json")


def stats_path(state_dir, job_id, *, owner_copy=False):
    """The job's VM statistics (runtime/telemetry.py), beside its record and kept as long."""
    return record_path(state_dir, job_id, owner_copy=owner_copy).removesuffix(".json") + ".stats"


def load_record(state_dir, job_id, *, owner_copy=False):
    try:
        with open(record_path(state_dir, job_id, owner_copy=owner_copy), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def prune_records(state_dir, *, keep_days, live_jobs, dry_run=False):
    """Job ids whose records (root's, the owner's copy, the lock) were removed: every job not
    in `live_jobs` whose record last changed more than `keep_days` days ago (0: none)."""
    directory = os.path.join(state_dir, "records")
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    live = {naming.sanitise_job_id(job) for job in live_jobs}
    cutoff = time.time() - keep_days * 86400
    pruned = []
    for name in names:
        job_id = name.removesuffix(".json")
        path = os.path.join(directory, name)
        if not keep_days or name == job_id or job_id in live:
            continue
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_mtime >= cutoff:
            continue
        pruned.append(job_id)
        if not dry_run:
            stats = (stats_path(state_dir, job_id, owner_copy=True), stats_path(state_dir, job_id))
            for stale in (record_path(state_dir, job_id, owner_copy=True), path, f"{path}.lock", *stats):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(stale)
    return pruned


def update_record(state_dir, job_id, *, unless=None, **changes):
    """Merge `changes` into the job's record (phases and events are appended to); atomic
    replace, under a lock, so hooks racing on one job (two epilogues) lose no update. When
    `unless(record)` is true under that lock, nothing changes and None is returned."""
    path, copy = record_path(state_dir, job_id), record_path(state_dir, job_id, owner_copy=True)
    statedir.subdir(state_dir, "records/owner")
    lock = os.open(f"{path}.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = load_record(state_dir, job_id)
        if unless is not None and unless(record or {}):
            return None
        record = _merge(record or {"job_id": job_id, "phases": {}, "events": []}, changes)
        _replace(path, record)
        owner = _owner_ids(record.get("owner"))
        if owner:
            _replace(copy, record, owner)
        return record
    finally:
        os.close(lock)


def _merge(record, changes):
    for key, value in changes.items():
        if key == "phases":
            record["phases"].update(value)
        elif key == "event":
            record["events"].append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "text": value})
        else:
            record[key] = value
    return record


def _owner_ids(name):
    try:
        entry = pwd.getpwnam(name) if name else None
    except KeyError:  # the owner is gone: root's record has it all
        return None
    return (entry.pw_uid, entry.pw_gid) if entry else None


def _replace(path, record, owner=None):
    """Atomically replace `path` with `record`, 0600, root's or (uid, gid) `owner`'s. Root owns
    the directory, so the owner of the copy cannot put anything in its place."""
    write_atomic(path, json.dumps(record, indent=2, sort_keys=True), 0o600, owner)


def report(message, *, state_dir, job_id, spool_job_dir=None, owner_uid=None, priority=syslog.LOG_ERR):
    """Tell admin and user: syslog, the job record, and the user's spool log when there is one."""
    syslog.openlog("vtorque", syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(priority, f"job {job_id}: {message}")
    update_record(state_dir, job_id, event=message)
    if spool_job_dir and owner_uid is not None:
        try:
            append_user_log(spool_job_dir, message, owner_uid=owner_uid)
        except VTorqueError:
            pass  # the owner is gone: syslog and the record have it


@owner_side
def append_user_log(job_dir, message, *, owner_uid):
    """Append a line to `<spool job dir>/vtorque.log`, as the owner (owner_side), still without
    trusting the dir: it must be the owner's and no link; the log is unlinked and created anew
    (O_EXCL), so a link or hard link planted there is never written through."""
    try:
        dir_fd = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        info = os.fstat(dir_fd)
        if info.st_uid != owner_uid or info.st_mode & stat.S_IWOTH:
            return False
        old = _previous_log(dir_fd, owner_uid)
        try:
            os.unlink(USER_LOG, dir_fd=dir_fd)  # a planted link goes, never what it points to
        except FileNotFoundError:
            pass
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} vtorque: {message}\n".encode()
        fd = os.open(USER_LOG, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as handle:
            handle.write(old + line)
            os.fchown(handle.fileno(), owner_uid, -1)
        return True
    except OSError:
        return False
    finally:
        os.close(dir_fd)


def _previous_log(dir_fd, owner_uid):
    """The earlier lines, only from the owner's own regular, singly linked log: a link or a hard
    link planted in its place must not make root copy another file into the user's log."""
    try:
        fd = os.open(USER_LOG, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_uid == owner_uid and info.st_nlink == 1:
            return handle.read(64 * 1024)
    return b""


def message(err):
    """What a person reads of an error; an unknown user comes as a KeyError from pwd."""
    return str(err) if not isinstance(err, KeyError) else f"unknown user {err.args[0]!r}"


class Reporter:
    """`report` for one job; once the owner is known, also to their spool log; and on the
    hook's stderr, which is the user's terminal in an interactive Torque job (pbs_mom connects
    it before the prologue) and the job's .e file in a batch one."""

    def __init__(self, state_dir, job_id, spool_job_dir):
        self.state_dir, self.job_id, self.spool, self.owner_uid = state_dir, job_id, spool_job_dir, None

    def __call__(self, text):
        with contextlib.suppress(OSError):
            print(f"vtorque: job {self.job_id}: {text}", file=sys.stderr, flush=True)
        report(
            text,
            state_dir=self.state_dir,
            job_id=self.job_id,
            spool_job_dir=self.spool,
            owner_uid=self.owner_uid,
        )
