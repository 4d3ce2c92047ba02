"""module_utils/naming.py: the one derivation of names, UUIDs, MACs and paths (contracts §2)."""

import re
import uuid

import pytest
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming


def test_identity_is_deterministic_and_libvirt_safe():
    first = naming.vm_identity("123[4].head.example", "node-1", 2, "/srv/vt")
    assert first == naming.vm_identity("123[4].head.example", "node-1", 2, "/srv/vt")
    assert first.name == "vt-123_4_.head.example-node-1-2"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", first.name)
    assert uuid.UUID(first.uuid).version == 5
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", first.mac)
    assert first.job_dir == "/srv/vt/jobs/123_4_.head.example"
    assert first.overlay_path.startswith(first.job_dir + "/") and first.seed_path.startswith(
        first.job_dir + "/"
    )


def test_every_input_changes_the_identity():
    base = ("7.head", "n1", 0)
    variants = [("8.head", "n1", 0), ("7.head", "n2", 0), ("7.head", "n1", 1)]
    for other in variants:
        assert naming.domain_uuid(*other) != naming.domain_uuid(*base)
        assert naming.domain_mac(*other) != naming.domain_mac(*base)
    assert naming.domain_mac(*base, nic=1) != naming.domain_mac(*base)


def test_job_prefix_never_matches_another_job():
    assert naming.domain_prefix("12") == "vt-12-"
    assert not naming.domain_name("12-3", "n", 0).startswith(naming.domain_prefix("12"))


@pytest.mark.parametrize(
    "call",
    [
        lambda: naming.domain_name("", "n", 0),
        lambda: naming.domain_name("1", " ", 0),
        lambda: naming.domain_name("1", "n", -1),
        lambda: naming.domain_name("1", "n", True),
        lambda: naming.job_dir(".."),
    ],
)
def test_bad_input_is_refused(call):
    with pytest.raises(ValueError):
        call()
