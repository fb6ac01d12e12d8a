"""Shared fixtures: one Ray session for the whole run, tiny study files, and Ray on loopback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

# Before anything imports ray: every Ray process of the tests stays on 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.pop("RAY_ADDRESS", None)

REPO = Path(__file__).resolve().parent.parent

TINY_STUDY = {
    "name": "tiny",
    "data": {"source": "digits"},
    "model": {"hidden": [16]},
    "train": {"epochs": 3, "metric": "val_loss", "mode": "min", "checkpoint_every": 1},
    "search": {
        "batch_size": [128],
        "seeds": 1,
        "optimizers": {"sgd": {"lr": [0.1], "momentum": 0.9}, "adam": {"lr": [0.01]}},
    },
    "scheduler": {"type": "none"},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
}


def merge(base: dict, changes: dict) -> dict:
    """A copy of base with changes merged in, nested dicts merged key by key."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def study_file(tmp_path):
    """Write a tiny study (with optional changes) to a YAML file; returns its path."""

    def write(
        changes: dict | None = None, *, optimizers: dict | None = None, name: str = "study.yaml"
    ) -> Path:
        study = merge(TINY_STUDY, changes or {})
        if optimizers is not None:  # replaces the optimizer grid instead of merging into it
            study["search"] = {**study["search"], "optimizers": optimizers}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(study))
        return path

    return write


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that runs trials in-process: 2 CPUs, 1 logical GPU."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    yield ray
    ray.shutdown()


# Dummy credentials for moto's S3 server; subprocess drivers and cluster nodes get them too.
S3_BUCKET = "mlp-sweep-test"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a real HTTP endpoint, not a client mock) with one bucket."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request
    with pytest.MonkeyPatch.context() as mp:
        for name, value in S3_ENV.items():
            mp.setenv(name, value)
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
            mp.delenv(name, raising=False)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=S3_BUCKET)
            yield endpoint
        finally:
            server.stop()


def sweep_command(*args: str) -> list[str]:
    """argv of ``python -m sweep ARGS`` in this interpreter."""
    return [sys.executable, "-m", "sweep", *args]
