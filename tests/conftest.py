"""Test tiers follow the folders: tests/<tier>/ gets the pytest marker <tier>
(tests/slurm, real Slurm daemons as root, counts as integration)."""

from pathlib import Path

import pytest

TIERS = ("unit", "collection", "integration", "deploy")
FOLDER_TIER = {"slurm": "integration"}


def pytest_collection_modifyitems(items):
    for item in items:
        folder = Path(str(item.fspath)).relative_to(Path(__file__).parent).parts[0]
        tier = FOLDER_TIER.get(folder, folder)
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
