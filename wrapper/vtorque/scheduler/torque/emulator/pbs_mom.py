"""PbsMom: pbs_mom played on one machine, to the letter of docs/torque.md, for `vtorque run`
and the tests: a temporary $PBS_HOME with the hook shims and Torque's commands pointed at the
emulator's queue; node file in $PBS_HOME/aux; the mom_priv shims called as root with 8/11
arguments, umask 0077 and Torque's minimal environment; the job script as the owner with the
job's full PBS_* environment from its home directory; qdel as epilogue.precancel as the owner
then SIGTERM, or during the start as a real pbs_mom did it; the epilogue with the job's status.

PbsMom can also play sister nodes on this machine (`sisters`, for multi-node tests): they get
prologue.parallel before the mother superior's prologue (all sisters at once: they are other
hosts) and epilogue.parallel after its epilogue, as root without a node file, and the site
config names them local nodes. pbs_server's exec_host for the job (`vm/0-1+n2/0-1`) is left
in the queue dir, where `qstat -f` shows it. With `torque.start: each_node` every sister is
its own host as far as vTorque can tell: its own $PBS_HOME (mom_priv shims), site config and
state dir (`node_state_dir`), only the spool dir and the queue shared.
"""

import contextlib
import dataclasses
import grp
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from vtorque.errors import VTorqueError
from vtorque.scheduler.torque.adapter import EVENTS
from vtorque.scheduler.torque.emulator.environment import job_environment, user_environment

_MOM_NUMBERS = itertools.count()
HOOKS = tuple(EVENTS)  # the mom_priv scripts the compute role installs
QDEL_STATUS = 271  # 256 + SIGTERM, what Torque reports for a deleted running job
ABORTED, REQUEUED, WALLTIME = -2, -14, -11
KILL_DELAY = 2  # pbs_server's kill_delay: SIGTERM to SIGKILL of a deleted job, seconds
HOOK_UMASK = 0o077  # pbs_mom's default job umask, which its pelogs inherit too (docs/torque.md)


@dataclass
class LocalJob:
    job_id: str
    name: str
    user: pwd.struct_passwd
    group: str
    workdir: str
    script: str  # what qsub stored: pbs_mom runs its own copy ($PBS_HOME/mom_priv/jobs/<id>.SC)
    ppn: int
    node_count: int
    resources: str
    queue: str = "batch"
    tty: str | None = None  # qsub -I: the socket its terminal waits on
    command: str | None = None  # qsub -I -x: the path of the command the session runs
    elements: tuple = ()  # qsub -t: the array's element ids (this job is the array, N[].host)
    array_index: int | None = None  # an element of an array: its $PBS_ARRAYID
    session: int = 0
    exit_status: int | None = None
    outputs: list = field(default_factory=list)


class PbsMom:
    """One-machine pbs_mom: a temp $PBS_HOME with the hook shims, and the job's life in it."""

    def __init__(self, site_config_path, base=None, hook_env=None, sisters=()):
        self.root = tempfile.mkdtemp(prefix="vtorque-mom-", dir=base)
        os.chmod(self.root, 0o755)  # noqa: S103 - the owner reads the config and runs the shims
        self.pbs_home = os.path.join(self.root, "pbs_home")
        self.queue = os.path.join(self.root, "queue")
        for sub in ("aux", "mom_priv/jobs", "bin"):
            os.makedirs(os.path.join(self.pbs_home, sub), mode=0o755)
        os.makedirs(self.queue, mode=0o777)
        os.chmod(self.queue, 0o1777)  # noqa: S103 - the owner's qsub writes its record here
        self.sisters = tuple(sisters)
        # Job ids, and so domain names, must not repeat between pbs_moms alive at once on this
        # machine: this process's pid, then this mom's number in it, then the job's.
        self.first_id = (os.getpid() * 100 + next(_MOM_NUMBERS) % 100) * 1000 + 1
        calls = os.path.join(self.queue, "calls.log")  # every owner's qrls/qdel appends to it
        os.close(os.open(calls, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.chmod(calls, 0o666)  # noqa: S103 - the harness's own record, written by job owners
        self.config = self._site_config(site_config_path)
        self.hook_env = hook_env or {}
        self._install_shims()
        self.homes = {}  # each_node: a sister's own $PBS_HOME
        if self.sisters and self._each_node():
            for sister in self.sisters:
                self.homes[sister] = self._sister_home(sister)

    # --- set-up -------------------------------------------------------------------------
    def _site_config(self, path):
        """The site config with Torque's commands pointed at the local queue and pbs_home here."""
        from vtorque.site.config_file import read_config_data

        data = read_config_data(path)
        bin_dir = os.path.join(self.pbs_home, "bin")
        torque = dict(data.get("torque") or {})
        for program in ("qsub", "qrls", "qdel", "qstat", "pbsnodes"):
            shim = os.path.join(bin_dir, program)
            with open(shim, "w", encoding="utf-8") as handle:
                run = (
                    f"VTORQUE_LOCAL_QUEUE={self.queue} VTORQUE_LOCAL_FIRST_ID={self.first_id}"
                    f" exec {sys.executable} -m vtorque.scheduler.torque.emulator.queue"
                )
                handle.write(f'#!/bin/sh\n{run} {program} "$@"\n')
            os.chmod(shim, 0o755)  # noqa: S103 - Torque's commands, run by the owner
            torque[program] = shim
        torque["pbs_home"] = self.pbs_home
        data = {**data, "torque": torque}
        if self.sisters:
            runner = dict(data.get("runner") or {})
            runner["local_nodes"] = sorted({*runner.get("local_nodes", []), *self.sisters})
            data["runner"] = runner
        local = os.path.join(self.root, "vtorque.yml")
        import yaml

        with open(local, "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle)
        os.chmod(local, 0o644)
        return local

    def _install_shims(self, pbs_home=None, config=None):
        """mom_priv scripts as the compute role installs them (plus this run's config path)."""
        hook = os.path.join(os.path.dirname(sys.executable), "vtorque-hook")
        for event in HOOKS:
            path = os.path.join(pbs_home or self.pbs_home, "mom_priv", event)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(f'#!/bin/sh\nVTORQUE_CONFIG={config or self.config} exec {hook} {event} "$@"\n')
            os.chmod(path, 0o755)  # noqa: S103 - Torque demands 0755 root:root hooks

    def _each_node(self):
        from vtorque.scheduler.torque.config import start_mode
        from vtorque.site.config_file import read_config_data

        return start_mode(read_config_data(self.config)) == "each_node"

    def _sister_home(self, sister):
        """A sister's $PBS_HOME with its shims, and its site config: the MS's, with the
        sister's own pbs_home and state dir."""
        import yaml

        from vtorque.site.config_file import read_config_data

        root = os.path.join(self.root, "sisters", sister)
        pbs_home = os.path.join(root, "pbs_home")
        for sub in ("aux", "mom_priv/jobs"):
            os.makedirs(os.path.join(pbs_home, sub), mode=0o755)
        os.chmod(os.path.dirname(root), 0o755)  # noqa: S103 - as the MS's own $PBS_HOME
        os.chmod(root, 0o755)  # noqa: S103
        data = read_config_data(self.config)
        data["torque"] = {**data["torque"], "pbs_home": pbs_home}
        data["state_dir"] = os.path.join(root, "state")
        config = os.path.join(root, "vtorque.yml")
        with open(config, "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle)
        os.chmod(config, 0o644)
        self._install_shims(pbs_home, config)
        return pbs_home

    def node_state_dir(self, node):
        """The state dir vTorque uses on `node` (each_node: a sister's own)."""
        from vtorque.site.config_file import read_config_data

        if node in self.homes:
            return os.path.join(os.path.dirname(self.homes[node]), "state")
        return read_config_data(self.config).get("state_dir")

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)

    # --- submission -----------------------------------------------------------------------
    def submit(self, user, argv, cwd):
        """`vsub ARGV` as `user` in `cwd`; the LocalJob, or VTorqueError with vsub's message."""
        entry = pwd.getpwnam(user)
        vsub = os.path.join(os.path.dirname(sys.executable), "vsub")
        env = user_environment(entry, {"VTORQUE_CONFIG": self.config})
        done = subprocess.run(
            [vsub, *argv], cwd=cwd, env=env, capture_output=True, text=True, check=False, **_as_user(entry)
        )
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            raise VTorqueError(f"vsub failed (exit {done.returncode})")
        job_id = done.stdout.strip().splitlines()[-1]
        record = next(document for document in self._records() if document["job_id"] == job_id)
        return self._local_job(record, entry, cwd)

    def _records(self):
        for path in Path(self.queue).glob("*.json"):
            with contextlib.suppress(ValueError):  # qsub may be writing it right now
                yield json.loads(path.read_text())

    def _local_job(self, record, entry, cwd):
        """The LocalJob of a job qsub stored, as pbs_server would hand it to this mom."""
        from vtorque.scheduler.torque.pbs_script import read_script
        from vtorque.scheduler.torque.qsub_args import QsubArgs, parse_qsub_argv, resource

        given = parse_qsub_argv(record["argv"])
        content = record["script"].encode("utf-8", "surrogateescape")
        script = read_script(content, os.path.basename(given.script))
        args = QsubArgs(script.args.options + given.options)  # as qsub: the command line wins
        nodes = resource(args, "nodes") or "1"
        ppn = int(nodes.split("ppn=")[1].split(":")[0]) if "ppn=" in nodes else 1
        count = int(nodes.split(":")[0]) if nodes.split(":")[0].isdigit() else 1
        if count > 1 + len(self.sisters):
            raise VTorqueError(f"the job asks for {count} nodes; this pbs_mom plays {1 + len(self.sisters)}")
        names = args.values("N")
        name = names[-1] if names else os.path.basename(given.script)
        resources = ",".join(f"{k}={v}" for k, v in (("nodes", nodes), ("neednodes", nodes)))
        group = grp.getgrgid(entry.pw_gid).gr_name
        return LocalJob(
            record["job_id"],
            name,
            entry,
            group,
            cwd,
            record["script"],
            ppn,
            count,
            resources,
            tty=record.get("tty"),
            command=record.get("command"),
            elements=tuple(record.get("elements", ())),
        )

    def elements(self, array):
        """The LocalJobs of an array's elements, as pbs_server hands them out: `N[i].host`,
        named `NAME-i`, with $PBS_ARRAYID = i."""
        jobs = []
        for element in array.elements:
            index = int(element.split("[", 1)[1].split("]", 1)[0])
            jobs.append(
                dataclasses.replace(array, job_id=element, name=f"{array.name}-{index}", array_index=index)
            )
        return jobs

    # --- the job's life, as pbs_mom lives it -------------------------------------------------
    def hosts(self, job):
        """The job's nodes, mother superior (this host's name) first."""
        return (socket.gethostname(), *self.sisters[: job.node_count - 1])

    def exec_host(self, job):
        """pbs_server's exec_host for the job, as Torque 6.1 spells it: `vm/0-1+n2/0-1`."""
        slots = "0" if job.ppn == 1 else f"0-{job.ppn - 1}"
        return "+".join(f"{host}/{slots}" for host in self.hosts(job))

    def prologue(self, job, terminal=None):
        """The sisters' prologue.parallel, all at once, then the MS prologue (its output on
        `terminal`, the job's pty, for an interactive job); the first non-zero exit code, or 0."""
        self._element_state(job, "R")
        from vtorque.scheduler.torque.emulator.queue import set_exec_host

        set_exec_host(self.queue, job.job_id, self.exec_host(job))
        with open(self.nodefile(job), "w", encoding="utf-8") as handle:
            handle.write("".join(f"{host}\n" * job.ppn for host in self.hosts(job)))
        with open(self.script_copy(job), "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(job.script)
        os.chmod(self.script_copy(job), 0o755)  # noqa: S103 - run by the job owner, as pbs_mom does
        args = [
            job.job_id,
            job.user.pw_name,
            job.group,
            job.name,
            job.resources,
            job.queue,
            "",
            self.script_copy(job),
        ]
        for code in self._on_sisters(job, "prologue.parallel", args[:7]):
            if code != 0:  # the sister refuses to join: Torque requeues the job (-3)
                return code
        return self._hook("prologue", args, job, output=terminal)

    def await_interactive(self, user, cwd, timeout=60):
        """The LocalJob of the `qsub -I` that `user` started, once it is released (qrls)."""
        from vtorque.scheduler.torque.emulator.queue import released

        entry = pwd.getpwnam(user)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self._records():
                if record.get("tty") and released(self.queue, record["job_id"]):
                    return self._local_job(record, entry, cwd)
            time.sleep(0.1)
        raise VTorqueError(f"no interactive job was released within {timeout}s")

    def run_interactive(self, job, kill_delay=KILL_DELAY):
        """pbs_mom's side of `qsub -I` as a real one played it (docs/torque.md, "Interactive
        jobs"): the job's pty is connected to qsub first, so the prologue's output is on the
        user's terminal; any failed prologue aborts (no requeue); the script then runs as the
        owner with that pty as its controlling terminal, PBS_ENVIRONMENT=PBS_INTERACTIVE, from
        its home, by the path qsub was given (`-x`: what is there when the job starts, through
        the owner's shell); a qdel is played as for a batch job; the epilogue last. (prologue
        exit code, the job's exit status)."""
        from vtorque.scheduler.torque.emulator.queue import deleted
        from vtorque.terminal import relay

        master, slave = os.openpty()
        qsub = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        qsub.connect(job.tty)
        pipe = threading.Thread(
            target=relay, args=({master: qsub.fileno(), qsub.fileno(): master},), kwargs={"until": master}
        )
        pipe.start()
        try:
            with ThreadPoolExecutor(1) as pool:
                prologue = pool.submit(self.prologue, job, slave)
                while not prologue.done():
                    if deleted(self.queue, job.job_id):
                        code, _ = self.qdel_starting(job, prologue, kill_delay)
                        return code, None
                    time.sleep(0.2)
                code = prologue.result()
            if code != 0:
                self.epilogue(job, ABORTED)
                return code, None
            status = self._interactive_session(job, slave, deleted)
            return code, status
        finally:
            os.close(slave)
            pipe.join(timeout=10)
            qsub.close()
            os.close(master)

    def _interactive_session(self, job, terminal, deleted):
        env = {**job_environment(job, self.nodefile(job)), "PBS_ENVIRONMENT": "PBS_INTERACTIVE"}
        child = subprocess.Popen(
            # a session led on the job's pty, as pbs_mom starts it: the owner's shell runs the command
            ["/usr/bin/setsid", "--ctty", job.user.pw_shell or "/bin/sh", "-c", job.command],
            cwd=job.user.pw_dir,
            env=env,
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            umask=HOOK_UMASK,
            **_as_user(job.user),
        )
        job.session = child.pid
        while child.poll() is None:
            if deleted(self.queue, job.job_id):
                self.qdel(job, child)
                child.wait()
                self.epilogue(job, QDEL_STATUS)
                return QDEL_STATUS
            time.sleep(0.2)
        # A real pbs_mom gave the epilogue $10 = 0 after a session whose shell exited 7: the
        # status of an interactive job is not its command's (qsub -I exits 0 too).
        self.epilogue(job, 0)
        return child.returncode

    def run_job(self, job, stdout=None, stderr=None):
        """Start the job script (the wrapper) as the owner; a Popen."""
        env = job_environment(job, self.nodefile(job))
        child = subprocess.Popen(
            [self.script_copy(job)],
            cwd=job.user.pw_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            umask=HOOK_UMASK,
            **_as_user(job.user),
        )
        job.session = child.pid
        return child

    def precancel(self, job):
        """epilogue.precancel, as qdel runs it: as the owner, synchronously, output discarded."""
        return self._hook(
            "epilogue.precancel", self._epilogue_args(job, status=0, used=""), job, as_owner=True
        )

    def qdel(self, job, child):
        """qdel of a running job: precancel as the owner (synchronously), then SIGTERM to the session."""
        self.precancel(job)
        try:
            os.killpg(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def qdel_starting(self, job, prologue, kill_delay=KILL_DELAY):
        """qdel while the prologue (a Future of prologue()) still runs, as a real pbs_mom did it
        (docs/torque.md): precancel as the owner, synchronously; SIGTERM finds no task yet; at
        the SIGKILL `kill_delay` s later the mom gives the job up ("recycled into exiting ... from
        substate 41") and runs the epilogue with $10 = 0 beside a prologue that may still run.
        A prologue that ended before gets its job script started and killed: $10 = 271.
        (prologue exit, epilogue exit) once both have ended."""
        self.precancel(job)
        try:
            code = prologue.result(timeout=kill_delay)
        except TimeoutError:
            epilogue = self.epilogue(job, 0)
            return prologue.result(timeout=600), epilogue
        return code, self.epilogue(job, QDEL_STATUS)

    def walltime_exceeded(self, job, child):
        """The mom's limit check: precancel as the owner, SIGTERM to the session, then the
        epilogues with $10 = -11."""
        self.qdel(job, child)
        child.wait()
        return self.epilogue(job, WALLTIME)

    def delete_queued(self, job):
        """qdel of a job still queued or held, by its owner: pbs_server forgets it and no pelog
        runs at all, so whatever vsub left in the spool stays for `vtorque sweep`."""
        qdel = os.path.join(self.pbs_home, "bin", "qdel")
        subprocess.run(
            [qdel, job.job_id], check=True, env=user_environment(job.user, {}), **_as_user(job.user)
        )

    def forget(self, job):
        """pbs_server forgets a completed job (keep_completed passed): qstat no longer knows it."""
        with open(os.path.join(self.queue, f"{job.job_id}.forgotten"), "w", encoding="utf-8"):
            pass

    def epilogue(self, job, status):
        job.exit_status = status
        code = self._hook("epilogue", self._epilogue_args(job, status=status), job)
        self._on_sisters(job, "epilogue.parallel", self._epilogue_args(job, status=0, session="0")[:10])
        for path in (self.nodefile(job), self.script_copy(job)):  # pbs_mom drops them with the job
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._element_state(job, "C")  # a real pbs_server still showed R while the epilogue ran
        return code

    # --- helpers ---------------------------------------------------------------------------
    def nodefile(self, job):
        return os.path.join(self.pbs_home, "aux", job.job_id)

    def script_copy(self, job, node=None):
        """mom_priv/jobs/<id>.SC (of `node`'s $PBS_HOME: a sister's names a file it does not
        have); an element's file is named 51-1.vm.SC for 51[1].vm, as Torque 6.1 does."""
        stem = job.job_id.replace("[", "-").replace("]", "", 1) if job.array_index is not None else job.job_id
        return os.path.join(self.homes.get(node, self.pbs_home), "mom_priv", "jobs", f"{stem}.SC")

    def _on_sisters(self, job, event, args):
        """`event` on every sister of the job at once (they are other hosts), with `args` and,
        last, the job script's path in the sister's mom_priv/jobs; their exit codes."""
        sisters = self.hosts(job)[1:]
        if not sisters:
            return []
        with ThreadPoolExecutor(len(sisters)) as pool:
            runs = []
            for number, sister in enumerate(sisters, start=1):
                argv = [*args, self.script_copy(job, sister)]
                runs.append(pool.submit(self._hook, event, argv, job, node_number=number, node=sister))
            return [run.result() for run in runs]

    def _element_state(self, job, state):
        if job.array_index is not None:
            from vtorque.scheduler.torque.emulator.queue import set_element_state

            set_element_state(self.queue, job.job_id, state)

    def _epilogue_args(
        self, job, status, used="cput=00:00:00,vmem=0kb,walltime=00:00:01,mem=0kb", session=None
    ):
        return [
            job.job_id,
            job.user.pw_name,
            job.group,
            job.name,
            str(job.session) if session is None else session,
            job.resources,
            used,
            job.queue,
            "",
            str(status),
            self.script_copy(job),
        ]

    def _hook(self, event, args, job, as_owner=False, node_number=0, output=None, node=None):
        """Torque's way: stdin /dev/null, cwd mom_priv (owner: home), minimal environment;
        sisters (node_number > 0) have no node file, and `node`'s own mom_priv where it has one."""
        env = {
            "PATH": "/bin:/usr/bin",
            "LANG": os.environ.get("LANG", "C"),
            "PBS_MSHOST": socket.gethostname(),
            "PBS_NODENUM": str(node_number),
            "PBS_O_WORKDIR": job.workdir,
            "PBS_RESOURCE_NODES": f"{job.node_count}:ppn={job.ppn}",
            "PBS_NUM_NODES": str(job.node_count),
            "PBS_NUM_PPN": str(job.ppn),
            "PBS_NP": str(job.ppn * job.node_count),
            **({} if node_number else {"PBS_NODEFILE": self.nodefile(job)}),
            **self.hook_env,
        }
        path = os.path.join(self.homes.get(node, self.pbs_home), "mom_priv", event)
        cwd = job.user.pw_dir if as_owner else os.path.dirname(path)
        if event in ("epilogue.precancel", "prologue.parallel", "epilogue.parallel"):
            output = subprocess.DEVNULL  # a sister's go to its own spool, never delivered
        done = subprocess.run(
            [path, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            check=False,
            umask=HOOK_UMASK,
            **(_as_user(job.user) if as_owner else {}),
        )
        return done.returncode


def _as_user(entry):
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)  # as owner_side resolves them
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups}
