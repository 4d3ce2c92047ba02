"""The shipped inventories: their site configs validate, and the playbooks parse with them."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from vtorque.site.config import from_data

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("inventory", ["example", "local"])
def test_the_inventory_site_config_is_valid(inventory):
    variables = yaml.safe_load((ROOT / "inventories" / inventory / "group_vars" / "all.yml").read_text())
    config = from_data(variables["vtorque_config"], f"inventories/{inventory}")
    assert config.network.mode in ("bridge", "user")


@pytest.mark.parametrize("inventory", ["example", "local"])
@pytest.mark.parametrize("playbook", ["site.yml", "uninstall.yml"])
def test_the_playbooks_parse_with_the_inventory(inventory, playbook):
    done = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "--syntax-check",
            "-i",
            str(ROOT / "inventories" / inventory),
            str(ROOT / "playbooks" / playbook),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_example_inventory_has_both_groups():
    done = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(ROOT / "inventories" / "example"), "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    groups = yaml.safe_load(done.stdout)
    assert len(groups["compute"]["hosts"]) == 32 and len(groups["frontend"]["hosts"]) == 2
