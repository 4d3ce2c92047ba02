"""Test tiers follow the folders: tests/<tier>/ gets the pytest marker <tier>."""

from pathlib import Path

import pytest

TIERS = ("unit", "collection", "integration", "deploy")


def pytest_collection_modifyitems(items):
    for item in items:
        tier = Path(str(item.fspath)).relative_to(Path(__file__).parent).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
