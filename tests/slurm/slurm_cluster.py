"""A real, throw-away Slurm 22.05 cluster on this host, for tests, demos and CI.

Everything lives under one root directory: slurm.conf, cgroup.conf, the controller's state,
one spool dir per node, pid files, logs and cluster.json (the constructor arguments and the
daemons' pids, so `stop` works from another process, e.g. the CLI at the bottom).
slurmctld listens on 127.0.0.1:ctld_port (6817) and node i's slurmd on ctld_port+1+i; every
node is this host (`NodeHostname=` its short name), so clusters beside each other need their
own ports. munged must already be running (tools/setup-host.sh starts it).

Found on this host (Debian 12, slurm 22.05.8), beyond docs/the Slurm reference:

- SLURM_CONF in hooks: slurmd started as `slurmd -N n1 -f ROOT/slurm.conf`, with no SLURM_CONF
  in its own environment, hands `SLURM_CONF=ROOT/slurm.conf` to the Prolog and Epilog. Hooks
  that call scontrol therefore reach this cluster, not /etc/slurm. The batch job's SLURM_CONF
  is the submitter's (sbatch's default --export=ALL), which `run` sets to the same file.
- More CPUs than the host has: `CPUs=4` on this 2-CPU machine registers the node as
  `UNKNOWN+DRAIN+INVALID_REG`, "Low socket*core*thread count, Low CPUs". With
  `SlurmdParameters=config_overrides` (always set here) it is IDLE with CPUTot=4; a 3-task job
  runs, its cpuset is just the 2 real CPUs. But task/affinity cannot bind more tasks than real
  CPUs: `srun` with 4 tasks on such a node fails ("failed to distribute tasks (bind_type:sockets,
  mask_cpu,one_thread) - this should never happen", "Unable to layout tasks on given cpus")
  unless `--cpu-bind=none`. So TaskPlugin is task/cgroup alone (ConstrainCores still applies).
- Pid files: when the pid dir belongs to SlurmUser, slurmctld removes its pid file on exit
  (the stale /run/slurmctld.pid only comes from /run being root's). stop() still checks
  /proc/PID/comm before any signal.
- `ip netns exec` mounts a fresh sysfs over /sys, which hides /sys/fs/cgroup, so proctrack/cgroup
  cannot work under it. The daemons and clients enter a namespace with `nsenter --net=` instead,
  which changes only the network namespace; munged's unix socket is reached from inside it.
  A namespace with only lo needs one more address there (see _prepare_netns).
- Nodes are IDLE 0.1-0.6 s after start(), but slurmctld's first scheduling pass comes ~3 s
  after it started, whenever the job was submitted (a job sent 3.5 s after start ran in 0.7 s).
"""

import argparse
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SBIN = Path("/usr/sbin")
CTLD_PORT, SLURMD_PORT = 6817, 6818
HOST = socket.gethostname().split(".")[0]  # slurmctld and every slurmd run here
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
CGROUP_CONF = "CgroupPlugin=autodetect\nConstrainCores=yes\nConstrainRAMSpace=no\nConstrainDevices=no\n"
# `Key=` starts a field: Slurm's keys are CamelCase (AllocNode:Sid, CPUs/Task), so a value such as
# Comment=vm_image=x;vm_mem=2G stays whole. A value with " Capital=" inside would still be split.
FIELD = re.compile(r"(?:^| )([A-Z][A-Za-z0-9_:/]*)=")


class SlurmCommandError(subprocess.CalledProcessError):
    """A failed command that shows its output in the message, for assertion failures."""

    def __str__(self):
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def parse_record(line):
    """`scontrol show ... -o` output as a dict; values keep their inner spaces."""
    line = line.strip()
    marks = list(FIELD.finditer(line))
    return {
        m.group(1): line[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(line)].strip()
        for i, m in enumerate(marks)
    }


def _stat(pid):
    """(name, fields after it) of a live process; None when gone or a zombie (PID 1 reaps late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = stat.partition("(")[2].rpartition(")")
    fields = rest.split()
    return None if fields[0] in ("Z", "X") else (name, fields)


def _comm(pid):
    stat = _stat(pid)
    return stat and stat[0]


def _identity(pid):
    """pid plus start time, so a reused pid is not taken for the process that recorded it."""
    stat = _stat(pid)
    return [pid, stat[1][19]] if stat else None


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _slurm_daemons():
    """(pid, argv) of every slurmctld and slurmd on this host, in any network namespace."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _comm(entry.name) in ("slurmctld", "slurmd"):
            found.append((int(entry.name), _cmdline(entry.name)))
    return found


def _conf_of(argv):
    """The config a daemon reads: its -f argument, else the packaged default."""
    return Path(argv[argv.index("-f") + 1]) if "-f" in argv[:-1] else Path("/etc/slurm/slurm.conf")


def _claims(argv):
    """(ports, node names) a foreign daemon may hold, from its slurm.conf; None if unreadable.
    A bracketed NodeName (n[1-9]) claims its prefix: names starting with it count as taken."""
    try:
        text = _conf_of(argv).read_text()
    except OSError:
        return None

    def setting(key, default):
        found = re.search(rf"(?im)^\s*{key}\s*=\s*(\S+)", text)
        return {int(n) for n in re.findall(r"\d+", found.group(1))} if found else {default}

    ports = setting("SlurmctldPort", CTLD_PORT) | setting("SlurmdPort", SLURMD_PORT)
    ports |= {int(p) for p in re.findall(r"(?im)^\s*NodeName=.*?\bPort=(\d+)", text)}
    nodes = {n.split("[")[0] for n in re.findall(r"(?im)^\s*NodeName=(\S+)", text)}
    if "-N" in argv[:-1]:
        nodes.add(argv[argv.index("-N") + 1])
    return ports, nodes


class SlurmCluster:
    """Controller plus one slurmd per node, started with start() (or `with`) and stopped by pid."""

    def __init__(
        self,
        root,
        nodes=("n1",),
        cpus_per_node=2,
        prolog=None,
        epilog=None,
        extra_conf=(),
        netns=None,
        prolog_epilog_timeout=None,
        kill_wait=5,
        ctld_port=CTLD_PORT,
        real_memory_mib=4096,
    ):
        self.root = Path(root).resolve()
        # slurmctld on ctld_port, node i's slurmd on ctld_port + 1 + i: clusters on other ports
        # (a deployment test's own Slurm on the packaged 6817) can run beside this one.
        self.ctld_port = ctld_port
        self.real_memory_mib = real_memory_mib
        self.nodes = tuple(nodes)
        self.cpus_per_node = cpus_per_node
        self.prolog, self.epilog = (str(p) if p else None for p in (prolog, epilog))
        self.extra_conf = tuple(extra_conf)
        self.netns = netns
        self.prolog_epilog_timeout = prolog_epilog_timeout
        self.kill_wait = kill_wait
        self.conf = self.root / "slurm.conf"
        self.pids = {}
        self.owner = None  # [pid, start time] of the process using the cluster; None: detached

    # --- configuration -------------------------------------------------------------------

    def _settings(self):
        """The global slurm.conf keys, in order; extra_conf replaces any of them by name."""
        r = self.root
        s = {
            "ClusterName": "vtest",
            "SlurmctldHost": f"{HOST}(127.0.0.1)",
            "SlurmUser": "slurm",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "SlurmctldPort": str(self.ctld_port),
            "CommunicationParameters": "NoCtldInAddrAny,NoInAddrAny",  # loopback only
            "StateSaveLocation": f"{r}/state",
            "SlurmdSpoolDir": f"{r}/spool-%n",
            "SlurmctldPidFile": f"{r}/run/slurmctld.pid",
            "SlurmdPidFile": f"{r}/run/slurmd-%n.pid",
            "SlurmctldLogFile": f"{r}/log/slurmctld.log",
            "SlurmdLogFile": f"{r}/log/slurmd-%n.log",
            "SlurmctldDebug": "debug",
            "SlurmdDebug": "debug",
            "SlurmdParameters": "config_overrides",  # tests may give nodes more CPUs than the host has
            "ProctrackType": "proctrack/cgroup",
            "TaskPlugin": "task/cgroup",  # + task/affinity breaks srun on CPUs the host lacks
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "SchedulerType": "sched/backfill",
            "SchedulerParameters": "batch_sched_delay=0",
            "ReturnToService": "2",
            "MpiDefault": "none",
            "MailProg": "/bin/true",
            "KillWait": str(self.kill_wait),
            "MinJobAge": "300",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "PrologFlags": "Alloc,Contain,DeferBatch",
        }
        optional = {
            "Prolog": self.prolog,
            "Epilog": self.epilog,
            "PrologEpilogTimeout": self.prolog_epilog_timeout,
        }
        s.update({k: str(v) for k, v in optional.items() if v is not None})
        return s

    def conf_text(self):
        settings, tail = self._settings(), []
        names = {k.lower(): k for k in settings}
        for line in self.extra_conf:
            key, _, value = line.partition("=")
            if key.lower() in names and not key.lower().startswith(("nodename", "partitionname")):
                settings[names[key.lower()]] = value
            else:
                tail.append(line)
        lines = [f"{k}={v}" for k, v in settings.items()] + tail
        for i, node in enumerate(self.nodes):
            lines.append(
                f"NodeName={node} NodeHostname={HOST} NodeAddr=127.0.0.1 Port={self.ctld_port + 1 + i} "
                # RealMemory: slurmctld checks a job's --mem against it even when memory is not a
                # consumable resource; its default (1 MB) would refuse every VM job.
                f"CPUs={self.cpus_per_node} RealMemory={self.real_memory_mib} State=UNKNOWN"
            )
        lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        return "\n".join(lines) + "\n"

    def _prepare_root(self):
        """Write the config and the dirs; the state, pid and log dirs belong to SlurmUser."""
        slurm = pwd.getpwnam("slurm")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # noqa: S103 - slurmctld (user slurm) reads the config
        self._check_reachable()
        for sub in ("state", "run", "log"):
            (self.root / sub).mkdir(exist_ok=True)
            os.chown(self.root / sub, slurm.pw_uid, slurm.pw_gid)
        for node in self.nodes:
            (self.root / f"spool-{node}").mkdir(exist_ok=True)
        self.conf.write_text(self.conf_text())
        (self.root / "cgroup.conf").write_text(CGROUP_CONF)  # read from slurm.conf's dir
        self._save()

    def _check_reachable(self):
        """slurmctld runs as slurm: a 0700 parent (pytest's tmp_path) makes it fail late and obscurely."""
        for parent in self.root.parents:
            if not parent.stat().st_mode & 0o001:
                raise RuntimeError(f"{self.root}: {parent} is not searchable by user slurm; try /var/tmp")

    # --- state shared with other processes (cluster.json) ----------------------------------

    def _save(self):
        args = {
            "nodes": list(self.nodes),
            "cpus_per_node": self.cpus_per_node,
            "prolog": self.prolog,
            "epilog": self.epilog,
            "extra_conf": list(self.extra_conf),
            "netns": self.netns,
            "prolog_epilog_timeout": self.prolog_epilog_timeout,
            "kill_wait": self.kill_wait,
            "ctld_port": self.ctld_port,
            "real_memory_mib": self.real_memory_mib,
        }
        state = {"args": args, "pids": self.pids, "owner": self.owner}
        (self.root / "cluster.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def from_root(cls, root):
        """The cluster an earlier process started in `root` (for stop, run, job, ...)."""
        state = json.loads((Path(root) / "cluster.json").read_text())
        cluster = cls(root, **state["args"])
        cluster.pids, cluster.owner = state["pids"], state.get("owner")
        return cluster

    def in_use(self):
        """Running for a live process, or started detached (the CLI): not a leftover to stop."""
        return self.owner is None or _identity(self.owner[0]) == self.owner

    # --- starting and stopping -----------------------------------------------------------

    def start(self, detached=False):
        """Start the daemons; detached (the CLI) marks the cluster in use until `stop`, otherwise
        it belongs to this process and a later start() elsewhere may stop it once we are gone."""
        self.owner = None if detached else _identity(os.getpid())
        self._clear_leftovers()
        self._check_host()
        self._prepare_root()
        self._prepare_netns()
        try:
            self._launch("slurmctld", [SBIN / "slurmctld", "-f", self.conf], self.root / "run/slurmctld.pid")
            for node in self.nodes:
                argv = [SBIN / "slurmd", "-N", node, "-f", self.conf]
                self._launch(f"slurmd-{node}", argv, self.root / f"run/slurmd-{node}.pid")
            self._wait_idle(20)
        except BaseException:
            self.stop()
            raise
        return self

    def _clear_leftovers(self):
        """Stop the daemons of a SlurmCluster whose process died (a crashed test); refuse to start
        beside a cluster still in use, or a foreign Slurm that may hold our ports or node names
        (other Slurm setups on other ports, as experiments run, are left alone)."""
        ours = {self.ctld_port, *(self.ctld_port + 1 + i for i in range(len(self.nodes)))}
        for pid, argv in _slurm_daemons():
            root = _conf_of(argv).parent
            if (root / "cluster.json").is_file():
                other = SlurmCluster.from_root(root)
                if other.in_use():
                    who = f"by pid {other.owner[0]}" if other.owner else f"detached: {__file__} stop {root}"
                    raise RuntimeError(f"the SlurmCluster in {root} is in use ({who})")
                other.stop()
                continue
            claims = _claims(argv)
            if claims is None or claims[0] & ours or self._shares_nodes(claims[1]):
                raise RuntimeError(f"another Slurm may use our ports or nodes: pid {pid} {' '.join(argv)}")

    def _shares_nodes(self, claimed):
        """Same node names mean the same slurm_<node> cgroups, which stop() sweeps."""
        return any(node.startswith(prefix) for prefix in claimed for node in self.nodes)

    @staticmethod
    def _check_host():
        if not (SBIN / "slurmctld").exists():
            raise RuntimeError("Slurm is not installed: run tools/setup-host.sh")
        done = subprocess.run(["munge", "-n"], capture_output=True, check=False)
        if done.returncode:
            raise RuntimeError(f"munged does not answer (setup-host.sh starts it): {done.stderr.decode()}")

    def _prepare_netns(self):
        """Slurm resolves `vm` with AF_INET + AI_ADDRCONFIG, which glibc answers only when some
        IPv4 address other than 127.0.0.1 exists: in a namespace with just lo, slurmd dies with
        'Unable to resolve "vm"'. A second loopback address satisfies glibc and routes nowhere."""
        if self.netns:
            subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
            extra_addr = ["addr", "replace", "127.0.0.2/8", "dev", "lo"]
            subprocess.run(["ip", "-n", self.netns, *extra_addr], check=True)

    def _wrap(self, argv):
        """argv run inside the cluster's network namespace (see the module docstring: nsenter)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv] if self.netns else list(argv)

    def _launch(self, name, argv, pidfile):
        """Start a daemon (it forks into the background) and record its pid from its pid file."""
        env = {"PATH": ROOT_PATH}  # deliberately no SLURM_CONF: -f alone must reach the hooks
        argv = self._wrap([str(a) for a in argv])
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            logs = self.log_tail(name)
            raise RuntimeError(f"{name} did not start, rc {done.returncode}: {done.stderr}\n{logs}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = self._read_pid(pidfile)
            if pid and _comm(pid) == name.split("-")[0]:
                self.pids[name] = pid
                self._save()
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} wrote no pid file {pidfile}\n{self.log_tail(name)}")

    @staticmethod
    def _read_pid(pidfile):
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_idle(self, timeout):
        deadline, states = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            states = {n: self._node_state(n) for n in self.nodes}
            if all(s == "IDLE" for s in states.values()):
                return
            time.sleep(0.1)
        logs = "\n".join(self.log_tail(w, 15) for w in ["slurmctld", *(f"slurmd-{n}" for n in self.nodes)])
        raise RuntimeError(f"nodes not idle after {timeout} s: {states}\n{logs}")

    def _node_state(self, name):
        done = self.run(["scontrol", "show", "node", "-o", name], check=False)
        return parse_record(done.stdout).get("State") if done.returncode == 0 else None

    def stop(self):
        """TERM slurmd and slurmctld by pid, kill what jobs left in the node cgroups, rmdir those."""
        pids = dict(self.pids)  # plus any daemon of this config whose pid never got recorded
        pids.update({f"pid-{pid}": pid for pid, argv in _slurm_daemons() if _conf_of(argv) == self.conf})
        for name in sorted(pids, key=lambda name: name == "slurmctld"):  # nodes first
            self._terminate(pids[name], ("slurmctld", "slurmd"))
        for node in self.nodes:
            self._sweep_cgroups(node)
        self.pids = {}
        if (self.root / "cluster.json").exists():
            self._save()

    @staticmethod
    def _terminate(pid, comms, grace=10):
        if _comm(pid) not in comms:
            return  # gone, or the pid was reused: never signal a stranger
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _comm(pid) in comms and time.monotonic() < deadline:
            time.sleep(0.05)
        if _comm(pid) in comms:
            os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _sweep_cgroups(node):
        """slurmstepd and job tasks outlive slurmd; they sit in slurm_<node>, which slurmd leaves."""
        for top in Path("/sys/fs/cgroup").glob(f"*/slurm_{node}"):
            dirs = sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True)
            for cg in [*dirs, top]:
                procs = cg / "cgroup.procs"
                for pid in procs.read_text().split() if procs.exists() else ():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for cg in [*dirs, top]:
                for _ in range(50):  # a killed task leaves its cgroup a moment later
                    try:
                        cg.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- clients ---------------------------------------------------------------------------

    @property
    def env(self):
        """What a client needs on top of a normal environment to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf), "PATH": ROOT_PATH}

    def run(self, argv, user=None, check=True, input=None, cwd=None, env=None, timeout=60):
        """argv in the cluster's netns, as root or as `user` with a login-like environment."""
        full_env = {"SLURM_CONF": str(self.conf), "LANG": "C.UTF-8"}
        prefix = []
        if user is None:
            full_env.update(HOME="/root", USER="root", LOGNAME="root", PATH=ROOT_PATH)
        else:
            pw = pwd.getpwnam(user)
            full_env.update(HOME=pw.pw_dir, USER=user, LOGNAME=user, SHELL=pw.pw_shell, PATH=USER_PATH)
            prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
            cwd = cwd or pw.pw_dir
        full_env.update(env or {})
        done = subprocess.run(
            self._wrap([*prefix, *map(str, argv)]),
            env=full_env,
            cwd=cwd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode:
            raise SlurmCommandError(done.returncode, done.args, done.stdout, done.stderr)
        return done

    def sbatch(self, args, user=None, cwd=None, env=None):
        """Submit (`sbatch --parsable ARGS`) and return the job id."""
        done = self.run(["sbatch", "--parsable", *args], user=user, cwd=cwd, env=env)
        return int(done.stdout.strip().split(";")[0])

    def job(self, job_id):
        return parse_record(self.run(["scontrol", "show", "job", "-o", str(job_id)]).stdout)

    def wait_job(self, job_id, states=FINAL_STATES, reason=None, timeout=30):
        """Poll until JobState is one of `states` (and Reason contains `reason`); the final dict."""
        deadline, history, t0 = time.monotonic() + timeout, [], time.monotonic()
        while True:
            job = self.job(job_id)
            seen = (job.get("JobState"), job.get("Reason"))
            if not history or history[-1][1:] != seen:
                history.append((round(time.monotonic() - t0, 2), *seen))
            if seen[0] in states and (reason is None or reason in (seen[1] or "")):
                return job
            if time.monotonic() > deadline:
                steps = ", ".join(f"{t}s {s} ({r})" for t, s, r in history)
                logs = self.log_tail("slurmctld")
                raise TimeoutError(f"job {job_id} not {states} within {timeout} s: {steps}\n{job}\n{logs}")
            time.sleep(0.1)

    def node(self, name):
        return parse_record(self.run(["scontrol", "show", "node", "-o", name]).stdout)

    def resume(self, name):
        self.run(["scontrol", "update", f"nodename={name}", "state=resume"])

    def drained_reason(self, name):
        """The node's Reason while it is draining or drained, else None."""
        node = self.node(name)
        return node.get("Reason") if "DRAIN" in node.get("State", "") else None

    def log_tail(self, which, lines=30):
        """The last lines of log/<which>.log (slurmctld, slurmd-<node>) for failure messages."""
        path = self.root / "log" / f"{which}.log"
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError as err:
            return f"--- {path}: {err.strerror}"
        return f"--- {path} (last {len(text)} lines)\n" + "\n".join(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Start or stop a throw-away Slurm cluster in ROOT.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    start = sub.add_parser("start")
    start.add_argument("root", type=Path)
    start.add_argument("--nodes", nargs="+", default=["n1"])
    start.add_argument("--cpus", type=int, default=2)
    start.add_argument("--prolog")
    start.add_argument("--epilog")
    start.add_argument("--netns")
    sub.add_parser("stop").add_argument("root", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "start":
        cluster = SlurmCluster(args.root, args.nodes, args.cpus, args.prolog, args.epilog, netns=args.netns)
        cluster.start(detached=True)
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        SlurmCluster.from_root(args.root).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
