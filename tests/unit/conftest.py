"""Fixtures shared by the unit tests."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def shared_tmp():
    """A temporary directory other users can enter (pytest's tmp_path is root's alone): root
    code acts on a job owner's files as the owner, who must be able to reach them."""
    path = tempfile.mkdtemp(dir="/var/tmp")
    os.chmod(path, 0o711)  # noqa: S103 - entered, never listed, by the other users
    yield Path(path)
    shutil.rmtree(path)
