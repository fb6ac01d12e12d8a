"""Issue 5 end to end: ``python -m sweep run`` as a subprocess against a two-node Ray cluster on
127.0.0.1 (losing a node mid-run), against moto's S3 server, and against unreachable endpoints.

The sweeps and the cluster run in subprocesses: the test process starts no Ray of its own and
joins none, so the in-process Ray session that other test modules share (conftest's
``ray_session``) is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, S3_BUCKET, S3_ENV, TINY_STUDY, merge, sweep_command

from sweep import storage
from sweep.launch import JOURNAL_FILE
from sweep.status import study_status

pytestmark = pytest.mark.slow

SWEEP_TIMEOUT_S = 240  # a generous ceiling on a busy 2-core machine; runs take far less
# The cluster nodes get conftest.S3_ENV's dummy credentials too: their trials write checkpoints
# to the bucket themselves, as nodes with an instance profile would on a real cluster.


# ---- helpers ------------------------------------------------------------------------------------
def write_study(path: Path, changes: dict, *, optimizers: dict | None = None) -> Path:
    study = merge(TINY_STUDY, changes)
    if optimizers is not None:
        study["search"] = {**study["search"], "optimizers": optimizers}
    path.write_text(yaml.safe_dump(study))
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test's environment, with this checkout's packages first and Ray on loopback."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": path, **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def run_cli(args: list[str], *, env=None, cwd=None, timeout=SWEEP_TIMEOUT_S, module="sweep"):
    argv = sweep_command(*args) if module == "sweep" else [*sweep_command()[:2], module, *args]
    return subprocess.run(
        argv,
        cwd=cwd or REPO,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tables(out: Path):
    trials = pq.read_table(out / "trials.parquet").to_pandas()
    epochs = pq.read_table(out / "epochs.parquet").to_pandas()
    return trials, epochs


def assert_exact(trials, epochs, n_trials: int, n_epochs: int) -> None:
    """One row per grid point, every trial completed, epoch rows 1..n exactly once each."""
    assert len(trials) == n_trials and trials.trial_id.is_unique
    assert (trials.status == "completed").all(), trials[["trial_id", "status", "error"]]
    assert (trials.epochs_run == n_epochs).all()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert set(epochs.trial_id) == set(trials.trial_id)
    for trial_id in trials.trial_id:
        got = sorted(epochs.loc[epochs.trial_id == trial_id, "epoch"])
        assert got == list(range(1, n_epochs + 1)), trial_id


def journal_results(out: Path) -> list[dict]:
    """The epoch results the driver journaled so far (one JSON line each, appended at once)."""
    path = out / JOURNAL_FILE
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written right now
        if event["kind"] == "result":
            events.append({"trial_id": event["trial_id"], **event["metrics"]})
    return events


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)


# ---- unreachable endpoints ----------------------------------------------------------------------
UNREACHABLE = {
    "address": ["--address", "127.0.0.1:1"],
    "storage": ["--storage", "s3://bucket/x?endpoint_override=http://127.0.0.1:1"],
}


@pytest.mark.parametrize("where", sorted(UNREACHABLE))
def test_unreachable_address_or_storage_is_one_line_and_exit_2(where, tmp_path):
    study = write_study(tmp_path / "study.yaml", {"name": "unreachable"})
    cwd = tmp_path / "cwd"  # the default --results (./results) would land here
    cwd.mkdir()
    env = subprocess_env(**S3_ENV)
    done = run_cli(["run", str(study), *UNREACHABLE[where]], env=env, cwd=cwd, timeout=120)
    err = done.stderr.strip()
    assert done.returncode == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "127.0.0.1:1" in err
    assert list(cwd.iterdir()) == []


# ---- a two-node cluster on 127.0.0.1 ------------------------------------------------------------
# The cluster lives in its own process too. A ray.cluster_utils.Cluster made in the pytest process
# leaves GCS clients behind after its shutdown; with conftest's in-process Ray session also up,
# Ray then ends the whole pytest process 60 s later ("Failed to connect to GCS within 60 seconds").
CLUSTER_SCRIPT = """
import json, sys
from ray.cluster_utils import Cluster

def say(**info):
    print(json.dumps(info), flush=True)

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
try:
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    say(address=cluster.address, head=cluster.head_node.node_id, worker=worker.node_id)
    for command in sys.stdin:  # one command a line; end of input shuts the cluster down
        if command.strip() == "remove-worker":
            cluster.remove_node(worker)
            worker = None
            say(worker=None)
        elif command.strip() == "add-worker" and worker is None:
            worker = cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            say(worker=worker.node_id)
finally:
    cluster.shutdown()
"""


class LocalCluster:
    """A head node and a worker node on 127.0.0.1, one CPU each, run by a helper process."""

    def __init__(self, ray_tmp: str, log_path: Path) -> None:
        # RAY_TMPDIR: the session files and the `ray_current_cluster` address file (which Cluster
        # writes and deletes) stay out of /tmp/ray, where other Ray instances keep theirs. The
        # S3 credentials are for the trials, which write their checkpoints to the bucket.
        env = subprocess_env(RAY_TMPDIR=ray_tmp, **S3_ENV)
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLUSTER_SCRIPT],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        info = self._answer()
        self.address, self.head, self.worker = info["address"], info["head"], info["worker"]

    def _answer(self) -> dict:
        for line in self.process.stdout:  # the helper's answers are JSON lines; skip anything else
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError("the cluster helper died:\n" + Path(self.log.name).read_text())

    def _command(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()

    def ensure_worker(self) -> str:
        """The worker's node id, starting a fresh worker node if an earlier test removed it."""
        if self.worker is None:
            self.worker = self._command("add-worker")["worker"]
        return self.worker

    def remove_worker(self) -> None:
        self.worker = self._command("remove-worker")["worker"]

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=60)
        finally:
            stop(self.process)  # Ray's processes die with it (kernel fate sharing)
            self.log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    """The two-node cluster, shared by this module's cluster tests; torn down at module end."""
    ray_tmp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Unix socket paths are bounded
    log_path = tmp_path_factory.mktemp("cluster") / "cluster.log"
    nodes = None
    try:
        nodes = LocalCluster(ray_tmp, log_path)
        yield nodes
    finally:
        if nodes is not None:
            nodes.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_trials_run_on_both_nodes_and_tables_are_complete(cluster, tmp_path):
    worker, head = cluster.ensure_worker(), cluster.head
    study = write_study(
        tmp_path / "study.yaml",
        # four Tune trials (one configuration each) for two one-CPU nodes
        {"name": "two-nodes", "train": {"epochs": 3}, "resources": {"models_per_trial": 1}},
        optimizers={"sgd": {"lr": [0.1, 0.05], "momentum": 0.9}, "adam": {"lr": [0.01, 0.003]}},
    )
    done = run_cli(
        ["run", str(study), "--address", cluster.address, "--results", str(tmp_path / "r")]
    )
    assert done.returncode == 0, done.stderr[-4000:]
    trials, epochs = tables(tmp_path / "r" / "two-nodes")
    assert_exact(trials, epochs, n_trials=4, n_epochs=3)
    assert set(trials.node_id) == {head, worker}


# ---- shared storage: moto's S3 server on loopback (conftest.s3_endpoint) --------------------
def bucket_keys(endpoint: str, prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.mark.timeout(SWEEP_TIMEOUT_S + 120 + 180 + 120)
def test_study_on_the_cluster_with_s3_storage_then_status_and_report(
    cluster, s3_endpoint, tmp_path, monkeypatch
):
    worker, head = cluster.ensure_worker(), cluster.head
    study = write_study(tmp_path / "study.yaml", {"name": "on-s3", "train": {"epochs": 2}})
    env = subprocess_env(**S3_ENV)  # no endpoint in the environment: the URI carries it
    root = f"s3://{S3_BUCKET}/studies?endpoint_override={s3_endpoint}"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = run_cli(
        ["run", str(study), "--storage", root, "--address", cluster.address], env=env, cwd=cwd
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results_uri = f"s3://{S3_BUCKET}/studies/on-s3?endpoint_override={s3_endpoint}"
    assert done.stdout.strip() == f"results: {results_uri}"
    assert list(cwd.iterdir()) == []  # nothing local: every file went to the bucket

    keys = bucket_keys(s3_endpoint, "studies/on-s3/")
    for name in ("trials.parquet", "epochs.parquet", "study.yaml", "run.json"):
        assert f"studies/on-s3/{name}" in keys, keys
    # Each node's trial uploaded its own checkpoint (kept: the last one) into Ray's directory.
    checkpoints = [k for k in keys if k.startswith("studies/on-s3/ray/") and k.endswith(".pt")]
    assert len(checkpoints) == 2, keys

    status = run_cli(["status", results_uri, "--json"], env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert (counts["total"], counts["done"], counts["statuses"]) == (2, 2, {"completed": 2})
    # The plain URI works too when the endpoint comes from the environment.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    assert study_status(f"s3://{S3_BUCKET}/studies/on-s3")["statuses"] == {"completed": 2}
    trials = storage.read_parquet(f"s3://{S3_BUCKET}/studies/on-s3/trials.parquet").to_pandas()
    assert set(trials.node_id) == {head, worker}

    report_dir = tmp_path / "report"
    report = run_cli(
        ["report", results_uri, "--out", str(report_dir)], env=env, timeout=180, module="analysis"
    )
    assert report.returncode == 0, report.stderr[-4000:]
    assert "on-s3" in (report_dir / "report.md").read_text()


# ---- losing a node mid-run -----------------------------------------------------------------------
@pytest.mark.timeout(3 * SWEEP_TIMEOUT_S + 120)  # longer than the waits below, added up
def test_trial_on_a_removed_node_resumes_on_the_head_from_its_checkpoint(cluster, tmp_path):
    worker, head = cluster.ensure_worker(), cluster.head
    epochs_per_trial = 16
    study = write_study(
        tmp_path / "study.yaml",
        {
            "name": "node-loss",
            "model": {"hidden": [64]},
            # batch 4: about 0.3 s per epoch, so the worker's trial is still running when the
            # worker goes away
            "search": {"batch_size": [4]},
            "train": {"epochs": epochs_per_trial, "checkpoint_every": 2, "max_failures": 2},
        },
        optimizers={"sgd": {"lr": [0.01], "momentum": 0.9}, "adam": {"lr": [0.001]}},
    )
    out = tmp_path / "r" / "node-loss"
    log_path = tmp_path / "driver.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen(
            sweep_command(
                "run", str(study), "--address", cluster.address, "--results", str(tmp_path / "r")
            ),
            cwd=REPO,
            env=subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # Wait for a trial on the worker to pass its first checkpoint (epoch 2). The driver's
        # journal gets every epoch at once; the Parquet files follow at most every 2 s.
        moved = None
        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        while moved is None and driver.poll() is None and time.monotonic() < deadline:
            on_worker = [
                r for r in journal_results(out) if r["node_id"] == worker and r["epoch"] >= 3
            ]
            moved = on_worker[0]["trial_id"] if on_worker else None
            time.sleep(0.1)
        assert moved is not None, (
            "no trial reported 3 epochs on the worker:\n" + log_path.read_text()
        )
        last_on_worker = max(r["epoch"] for r in journal_results(out) if r["trial_id"] == moved)
        assert last_on_worker < epochs_per_trial, "the trial finished before the node went away"
        cluster.remove_worker()
        assert driver.wait(timeout=SWEEP_TIMEOUT_S) == 0, log_path.read_text()[-4000:]
    finally:
        stop(driver)

    trials, epochs = tables(out)
    assert_exact(trials, epochs, n_trials=2, n_epochs=epochs_per_trial)
    assert trials.set_index("trial_id").loc[moved, "node_id"] == head
    # The retry started from a checkpoint (every 2 epochs), not from epoch 1.
    results = journal_results(out)
    resumed_at = min(r["epoch"] for r in results if r["trial_id"] == moved and r["node_id"] == head)
    assert 1 < resumed_at <= epochs_per_trial and resumed_at % 2 == 1, resumed_at


# ---- a trial that no node can hold
def test_a_trial_no_node_can_hold_is_reported_and_stopped_after_the_pending_timeout(
    cluster, tmp_path
):
    cluster.ensure_worker()  # two nodes of 1 CPU: 2 CPUs in all, but no node holds a 2-CPU trial
    study = write_study(
        tmp_path / "study.yaml", {"name": "too-big", "resources": {"cpus_per_trial": 2}}
    )
    out = tmp_path / "r" / "too-big"
    done = run_cli(
        ["run", str(study), "--address", cluster.address, "--results", str(tmp_path / "r")]
        + ["--pending-timeout", "6"]
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-4000:]
    assert "waiting for resources: a trial needs 2 CPU, the largest node has 1" in lines
    assert lines[-1].startswith("error: waiting for resources: a trial needs 2 CPU")
    assert f"is up: python -m sweep resume {out}" in lines[-1]
    assert "Traceback" not in done.stderr
    trials, epochs = tables(out)  # written and valid, with nothing in them
    assert len(trials) == 0 and len(epochs) == 0
