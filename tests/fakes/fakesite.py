"""A throw-away vTorque site for tests: config, image catalog, spool, and recording stand-ins
for qsub/qrls/qdel, plus a runner for the real console scripts of the venv."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

STANDIN = Path(__file__).with_name("torque_standin.py")
BIN = Path(sys.executable).parent


@dataclass
class FakeSite:
    root: Path
    config: Path
    catalog: Path
    spool: Path
    log: Path

    def env(self, **extra):
        env = dict(os.environ, VTORQUE_CONFIG=str(self.config), VTORQUE_FAKE_LOG=str(self.log))
        env.pop("PBS_DPREFIX", None)
        env.update(extra)
        return env

    def run(self, program, *args, stdin=None, cwd=None, **env):
        return subprocess.run(
            [str(BIN / program), *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=cwd or self.root,
            env=self.env(**env),
            timeout=60,
            check=False,
        )

    def calls(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def write_config(self, **overrides):
        data = {
            "spool_dir": str(self.spool),
            "images": str(self.catalog),
            "torque": {name: str(self.root / "bin" / name) for name in ("qsub", "qrls", "qdel")},
            "defaults": {"img": "tiny", "vcpus": 2, "ram": "1G"},
            "limits": {"max_vcpus": 8, "max_ram_mib": "16G", "max_vms_per_node": 4},
            "host_reserve": {"cores": 1, "ram_mib": 1024},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        self.config.write_text(yaml.safe_dump(data))


def make_site(root):
    root = Path(root)
    (root / "bin").mkdir()
    for name in ("qsub", "qrls", "qdel"):
        (root / "bin" / name).symlink_to(STANDIN)
    spool = root / "spool"
    spool.mkdir()
    images = root / "images"
    images.mkdir()
    for name in ("tiny.qcow2", "osv.qcow2"):
        (images / name).write_bytes(b"QFI\xfb" + bytes(60))
    catalog = root / "images.yml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "images": {
                    "tiny": {"path": str(images / "tiny.qcow2"), "distro": "debian", "description": "test"},
                    "osv1": {"path": str(images / "osv.qcow2"), "distro": "osv"},
                }
            }
        )
    )
    site = FakeSite(root, root / "vtorque.yml", catalog, spool, root / "calls.jsonl")
    site.write_config()
    return site
