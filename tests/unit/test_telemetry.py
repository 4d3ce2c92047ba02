"""Per-job telemetry: the samples root keeps beside the record, bounded; the owner reads their
copy and no other user does; the table, the plot and node_exporter's textfile; a sampler ends
when told (and only the process started as it) or when its job is gone."""

import json
import os
import pwd
import re
import subprocess
import sys
import time

import libvirt
import pytest
from vtorque.job.records import stats_path, update_record
from vtorque.job.stats import load_samples, render_table, size, summarise
from vtorque.runtime import telemetry
from vtorque.site.config import load_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the owner's copy and other users need root")
JOB = "42.head"
GIB = 1024**3


@pytest.fixture
def tmp_path(shared_tmp):
    return shared_tmp


def make_config(tmp_path, **telemetry_keys):
    keys = {"interval_seconds": 1, **telemetry_keys}
    path = tmp_path / "vtorque.yml"
    path.write_text(
        json.dumps(
            {
                "spool_dir": str(tmp_path / "spool"),
                "state_dir": str(tmp_path),
                "libvirt": {"uri": "test:///default"},
                "telemetry": keys,
            }
        )
    )
    return load_config(str(path))


def sample(t, cpu_s, rd=0, wr=0, rx=0, tx=0, rss=300_000, name="vt-42.head-n1-0"):
    numbers = {"cpu": int(cpu_s * 1e9), "rss": rss, "mem": 262144, "rd": rd, "wr": wr, "rx": rx, "tx": tx}
    return {"t": t, "vms": {name: numbers}}


def test_libvirt_stats_become_a_few_numbers_summed_over_disks_and_interfaces():
    stats = {
        "cpu.time": 5_000_000_000,
        "balloon.rss": 123,
        "balloon.current": 262144,
        "block.count": 2,
        "block.0.rd.bytes": 10,
        "block.1.rd.bytes": 5,
        "block.0.wr.bytes": 7,
        "net.count": 1,
        "net.0.rx.bytes": 100,
        "net.0.tx.bytes": 50,
    }
    assert telemetry.compact(stats) == {
        "cpu": 5_000_000_000,
        "rss": 123,
        "mem": 262144,
        "rd": 15,
        "wr": 7,
        "rx": 100,
        "tx": 50,
    }
    assert telemetry.compact({}) == {"cpu": 0, "rss": 0, "mem": 0, "rd": 0, "wr": 0}  # no net counters: none
    (vm,) = summarise([{"t": 0.0, "vms": {"vt-42.head-n1-0": telemetry.compact({})}}])
    assert (vm.net_rx, size(vm.net_tx)) == (None, "-")


def test_the_table_shows_cpu_seconds_mean_and_peak_and_io_since_the_vm_started():
    samples = [
        sample(100.0, 2.0, rd=GIB),
        sample(110.0, 7.0, rd=2 * GIB),  # 50 % of one core
        sample(120.0, 16.0, rd=2 * GIB, wr=3 * 1024 * 1024, rss=400_000),  # 90 %
        sample(120.0, 3.0, name="vt-42.head-n1-1"),
    ]
    first, second = summarise(samples)
    assert (first.name, first.samples, first.span) == ("vt-42.head-n1-0", 3, 20.0)
    assert first.cpu_seconds == pytest.approx(16.0)
    assert first.mean_cpu == pytest.approx(70.0) and first.peak_cpu == pytest.approx(90.0)
    assert (first.disk_read, first.disk_written, first.peak_rss_kib) == (2 * GIB, 3 * 1024 * 1024, 400_000)
    assert (second.samples, second.mean_cpu, second.peak_cpu) == (1, None, None)  # one sample: no rate
    table = render_table(JOB, [first, second]).splitlines()
    assert table[1].split()[:4] == ["vm", "cpu", "s", "mean"]
    assert table[2].split() == [
        "vt-42.head-n1-0",
        "16.0",
        "70",
        "90",
        "391",
        "MiB",
        "256",
        "MiB",
        "2.0",
        "GiB",
        "3.0",
        "MiB",
        "0",
        "B",
        "0",
        "B",
        "3",
        "20s",
    ]
    assert table[3].split()[1:4] == ["3.0", "-", "-"]
    assert render_table(JOB, []) == f"job {JOB}: no samples (yet)"
    assert (size(512), size(3300), size(41 * 1024 * 1024)) == ("512 B", "3.2 KiB", "41 MiB")


def test_a_counter_that_restarts_is_a_new_domain_counted_from_zero():
    (vm,) = summarise([sample(0.0, 10.0), sample(10.0, 15.0), sample(20.0, 2.0), sample(30.0, 4.0)])
    assert vm.cpu_seconds == pytest.approx(19.0)  # 15 of the first domain, 4 of the second
    assert vm.peak_cpu == pytest.approx(50.0)  # the restart's interval has no rate


def test_samples_are_appended_for_root_and_the_owner_and_a_cut_line_is_left_out(tmp_path):
    config = make_config(tmp_path)
    update_record(str(tmp_path), JOB, state="running", owner="nobody")
    sampler = telemetry.Sampler(config, JOB)
    sampler.record(sample(1.0, 1.0))
    sampler.record(sample(2.0, 2.0))
    root, copy = stats_path(str(tmp_path), JOB), stats_path(str(tmp_path), JOB, owner_copy=True)
    nobody = pwd.getpwnam("nobody").pw_uid
    assert [(os.stat(p).st_uid, os.stat(p).st_mode & 0o777) for p in (root, copy)] == [
        (0, 0o600),
        (nobody, 0o600),
    ]
    with open(root, "a") as handle:
        handle.write('{"t": 3.0, "vms": {"vt-')  # a sampler killed mid-write
    assert [s["t"] for s in load_samples(root)] == [1.0, 2.0]
    assert load_samples(copy, owner_uid=nobody) == load_samples(root)
    with pytest.raises(Exception, match="not the job's statistics file"):
        load_samples(copy, owner_uid=0)  # the owner's copy must be the caller's
    os.symlink(root, str(tmp_path / "link"))
    with pytest.raises(Exception, match="cannot read"):
        load_samples(str(tmp_path / "link"))
    assert load_samples(str(tmp_path / "none")) is None


def test_at_the_bound_every_other_sample_goes_and_the_interval_doubles(tmp_path):
    config = make_config(tmp_path, max_kib=16)
    update_record(str(tmp_path), JOB, state="running", owner="nobody")
    sampler = telemetry.Sampler(config, JOB)
    for second in range(400):
        sampler.record(sample(float(second), second / 10))
    root = stats_path(str(tmp_path), JOB)
    kept = load_samples(root)
    assert os.path.getsize(root) <= 16 * 1024
    assert sampler.interval >= 2 and kept[0]["t"] == 0.0 and kept[-1]["t"] == 399.0
    assert len(kept) < 200
    assert load_samples(stats_path(str(tmp_path), JOB, owner_copy=True)) == kept


def test_the_textfile_is_replaced_with_each_sample_and_removed_when_the_sampler_stops(tmp_path):
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    config = make_config(tmp_path, prometheus_textfile_dir=str(textfiles))
    sampler = telemetry.Sampler(config, JOB)
    sampler.record(sample(1.0, 1.5, rx=10))
    sampler.record(sample(2.0, 2.5, rx=20))
    assert sorted(p.name for p in textfiles.iterdir()) == [f"vtorque_job_{JOB}.prom"]  # no temp left
    text = (textfiles / f"vtorque_job_{JOB}.prom").read_text()
    labels = f'job="{JOB}",vm="vt-42.head-n1-0",host="{sampler.host}"'
    assert f"vtorque_vm_cpu_seconds_total{{{labels}}} 2.5\n" in text
    assert f"vtorque_vm_network_receive_bytes_total{{{labels}}} 20\n" in text
    assert "# TYPE vtorque_vm_memory_rss_bytes gauge" in text
    assert (textfiles / f"vtorque_job_{JOB}.prom").stat().st_mode & 0o777 == 0o644
    telemetry.stop_sampler(JOB, config)
    assert list(textfiles.iterdir()) == []


def test_a_tick_samples_only_the_jobs_running_domains(tmp_path):
    conn = libvirt.open("test:///default")
    xml = conn.lookupByName("test").XMLDesc()
    for name in ("vt-42.head-n1-0", "vt-42.head-n2-0", "vt-421.head-n1-0"):
        conn.createXML(
            re.sub(r"<uuid>.*</uuid>", "", xml.replace("<name>test</name>", f"<name>{name}</name>")), 0
        )
    config = make_config(tmp_path)
    assert telemetry.Sampler(config, JOB).tick(conn) == 2
    assert telemetry.Sampler(config, JOB, node="n2").tick(conn) == 1
    assert telemetry.Sampler(config, "7.head").tick(conn) == 0
    names = [sorted(s["vms"]) for s in load_samples(stats_path(str(tmp_path), JOB))]
    assert names == [["vt-42.head-n1-0", "vt-42.head-n2-0"], ["vt-42.head-n2-0"]]


def sampler_processes(job_id):
    found = subprocess.run(["pgrep", "-f", f"{telemetry.MODULE} .* {job_id}"], capture_output=True, text=True)
    return found.stdout.split()


def test_a_started_sampler_is_no_child_of_the_hook_and_stops_when_told(tmp_path):
    config = make_config(tmp_path)
    job_dir = tmp_path / "jobs" / JOB
    job_dir.mkdir(parents=True)
    pid = telemetry.start_sampler(JOB, config)
    assert sampler_processes(JOB) == [str(pid)]
    assert os.getsid(pid) == pid  # a session of its own
    for fd in ("0", "1", "2"):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    assert telemetry.stop_sampler(JOB, config)
    os.waitpid(pid, 0)  # this test started it: its zombie is ours
    assert sampler_processes(JOB) == [] and not (job_dir / telemetry.PID_FILE).exists()
    assert not telemetry.stop_sampler(JOB, config)  # a second epilogue: nothing to do


def test_a_recycled_pid_is_never_killed(tmp_path):
    config = make_config(tmp_path)
    job_dir = tmp_path / "jobs" / JOB
    job_dir.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", telemetry.MODULE])
    try:
        start = telemetry._start_time(other.pid)
        (job_dir / telemetry.PID_FILE).write_text(json.dumps({"pid": other.pid, "start": start - 1}))
        assert not telemetry.stop_sampler(JOB, config)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_sampler_ends_by_itself_once_its_job_dir_is_gone(tmp_path):
    config = make_config(tmp_path)
    job_dir = tmp_path / "jobs" / JOB
    job_dir.mkdir(parents=True)
    pid = telemetry.start_sampler(JOB, config)
    job_dir.joinpath(telemetry.PID_FILE).unlink()
    job_dir.rmdir()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
        time.sleep(0.1)
    assert sampler_processes(JOB) == []


def test_sweep_stops_the_samplers_of_jobs_that_are_gone_only(tmp_path):
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    config = make_config(tmp_path, prometheus_textfile_dir=str(textfiles))
    pids = {}
    for job_id in ("1.head", "2.head"):
        (tmp_path / "jobs" / job_id).mkdir(parents=True)
        (textfiles / f"vtorque_job_{job_id}.prom").write_text("")
        pids[job_id] = telemetry.start_sampler(job_id, config)
    (textfiles / "node.prom").write_text("")  # another exporter's
    try:
        assert telemetry.stop_stale_samplers(config, ["2.head"]) == ["1.head"]
        os.waitpid(pids["1.head"], 0)
        assert sampler_processes("1.head") == [] and sampler_processes("2.head") == [str(pids["2.head"])]
        assert sorted(p.name for p in textfiles.iterdir()) == ["node.prom", "vtorque_job_2.head.prom"]
    finally:
        telemetry.stop_sampler("2.head", config)
        os.waitpid(pids["2.head"], 0)


def stats_cli(tmp_path, *args, user=None):
    entry = pwd.getpwnam(user) if user else None
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "vtorque"), "jobs", "stats", JOB, *args],
        env={"PATH": "/usr/bin:/bin", "VTORQUE_CONFIG": str(tmp_path / "vtorque.yml")},
        user=entry.pw_uid if entry else None,
        group=entry.pw_gid if entry else None,
        extra_groups=[] if entry else None,
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_owner_and_root_see_the_stats_and_a_plot_and_no_other_user_does(tmp_path):
    config = make_config(tmp_path)
    update_record(str(tmp_path), JOB, state="ended", owner="nobody")
    sampler = telemetry.Sampler(config, JOB)
    for second in range(5):
        sampler.record(sample(float(second * 10), second * 5.0, rd=second * 2**20, tx=second * 1000))
    plots = tmp_path / "plots"
    plots.mkdir()
    os.chown(plots, pwd.getpwnam("nobody").pw_uid, -1)
    for user in (None, "nobody"):
        done = stats_cli(tmp_path, "--plot", str(plots / f"{user}.png"), user=user)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[2].split()[:2] == ["vt-42.head-n1-0", "20.0"], done.stdout
        assert done.stdout.splitlines()[-1] == f"plot: {plots}/{user}.png"
        assert (plots / f"{user}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = stats_cli(tmp_path, user="daemon")
    assert other.returncode != 0 and other.stdout == ""
    assert f"job {JOB} is another user's" in other.stderr
    raw = stats_cli(tmp_path, "--json", user="nobody")
    assert [json.loads(line)["t"] for line in raw.stdout.splitlines()] == [0.0, 10.0, 20.0, 30.0, 40.0]
