"""cluster.yaml passes Ray's own cluster-config validation, offline, and holds no secrets."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"

# Things that must never be committed in a cluster file (comments included).
SECRET_PATTERNS = {
    "AWS key id setting": re.compile(r"aws_access_key_id", re.IGNORECASE),
    "AWS secret setting": re.compile(r"aws_secret_access_key|secret_key", re.IGNORECASE),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "12-digit account id": re.compile(r"(?<!\d)\d{12}(?!\d)"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "ARN": re.compile(r"arn:aws:"),
}


@pytest.fixture(scope="module")
def raw_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def validated(config: dict) -> dict:
    """Fill in Ray's AWS defaults and validate against Ray's schema, as `ray up` does first."""
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_passes_ray_cluster_config_validation(raw_config: dict) -> None:
    prepared = validated(raw_config)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_validation_rejects_a_broken_copy(raw_config: dict) -> None:
    """Guards the test above: Ray's validation really runs on this file's structure."""
    import jsonschema

    broken = copy.deepcopy(raw_config)
    broken["available_node_types"]["worker.gpu"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validated(broken)


def test_head_is_cpu_only_and_workers_are_gpu_nodes_scaling_from_zero(raw_config: dict) -> None:
    prepared = validated(raw_config)
    node_types = prepared["available_node_types"]
    head = node_types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"]["CPU"] >= 1
    workers = {name: t for name, t in node_types.items() if name != prepared["head_node_type"]}
    assert workers
    for name, worker in workers.items():
        assert worker.get("min_workers", 0) == 0, name
        assert worker["max_workers"] >= 1, name
        assert worker["resources"]["GPU"] >= 1, name
    assert prepared["max_workers"] >= max(t["max_workers"] for t in workers.values())


def test_setup_installs_this_project(raw_config: dict) -> None:
    commands = " ".join(raw_config["setup_commands"])
    assert "pip install -q -e ~/mlp-sweep" in commands
    assert "~/mlp-sweep" in raw_config["file_mounts"]
    assert "download.pytorch.org/whl/cpu" in commands  # CPU torch where there is no GPU


@pytest.mark.parametrize("what", sorted(SECRET_PATTERNS))
def test_no_credentials_inside(what: str) -> None:
    text = CLUSTER_YAML.read_text()
    match = SECRET_PATTERNS[what].search(text)
    assert match is None, f"cluster.yaml holds a {what}: {match.group(0)!r}"


def test_no_key_or_profile_pinned(raw_config: dict) -> None:
    assert "ssh_private_key" not in raw_config.get("auth", {})
    for name, node_type in raw_config["available_node_types"].items():
        assert "KeyName" not in node_type["node_config"], name
        assert "IamInstanceProfile" not in node_type["node_config"], name
