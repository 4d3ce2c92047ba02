"""`vtorque COMMAND --help` for every command the dispatcher lists: each one's module is there
and answers (the dispatcher imports a module by name, so a moved module fails only at run time)."""

import os
import subprocess
import sys

import pytest
from vtorque.cli.main import COMMANDS

VTORQUE = os.path.join(os.path.dirname(sys.executable), "vtorque")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_answers_help(command):
    done = subprocess.run(
        [VTORQUE, command, "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "usage" in (done.stdout + done.stderr).lower()
