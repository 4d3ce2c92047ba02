"""What a killed ansible-playbook leaves behind is killed before the teardown that follows."""

import os
import subprocess
import sys

from vtorque.runtime.runner import RUN_MARK, reap

# A process that leaves its parent's session, as Ansible's workers do, and runs on.
DETACHED = "import os, time; os.setsid(); time.sleep(120)"


def _spawn(env):
    return subprocess.Popen([sys.executable, "-c", DETACHED], env=env)


def test_the_processes_of_a_run_are_killed_and_others_are_not(tmp_path):
    mine = str(tmp_path / "runner-start-1")
    marked = _spawn({**os.environ, RUN_MARK: mine})
    other_run = _spawn({**os.environ, RUN_MARK: mine + "0"})  # a longer name is another run
    unmarked = _spawn(dict(os.environ))
    try:
        assert reap(mine) == []
        assert marked.wait(timeout=5) == -9
        assert other_run.poll() is None and unmarked.poll() is None
    finally:
        for child in (marked, other_run, unmarked):
            child.kill()
            child.wait()


def test_a_run_that_left_nothing_returns_at_once(tmp_path):
    assert reap(str(tmp_path / "runner-stop-1")) == []
