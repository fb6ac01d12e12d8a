"""--mlflow: one parent run per study, one child run per configuration, equal to the Parquet
tables; against a sqlite:/// store and a real `mlflow server` on 127.0.0.1; resume catches up;
an unreachable tracking URI is exit 2 before anything starts."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from analysis.__main__ import main as analysis_main
from sweep.__main__ import main as sweep_main
from sweep.config import load_study
from sweep.results import ResultsWriter
from sweep.runner import RunOptions, run_study
from sweep.tracking import RUN_FILE, MlflowTracker

mlflow = pytest.importorskip("mlflow")  # the mlflow extra; `make test` installs it
from mlflow import MlflowClient  # noqa: E402

METRICS = ("train_loss", "val_loss", "val_acc")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a sqlite backend; stopped by its process group."""
    where = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--backend-store-uri", f"sqlite:///{where / 'server.db'}",
            "--artifacts-destination", str(where / "artifacts"),
        ],
        cwd=where, stdout=subprocess.DEVNULL, stderr=open(where / "server.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((where / "server.log").read_text()[-2000:])
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def children(client, parent_id: str) -> dict:
    experiment = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {run.data.tags["mlp_sweep.trial_id"]: run for run in runs}


def assert_mirrors(client, out: str, scratch) -> str:
    """The parent run and its children equal trials.parquet and epochs.parquet."""
    trials = pd.read_parquet(os.path.join(out, "trials.parquet"))
    epochs = pd.read_parquet(os.path.join(out, "epochs.parquet"))
    saved = json.loads(open(os.path.join(out, RUN_FILE)).read())
    parent = client.get_run(saved["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mlp_sweep.version.torch"] and parent.data.tags["mlp_sweep.results"]
    assert parent.data.params["configurations"] == str(len(trials))
    study_file = client.download_artifacts(saved["run_id"], "study.yaml", str(scratch))
    assert open(study_file).read() == open(os.path.join(out, "study.yaml")).read()
    runs = children(client, saved["run_id"])
    assert sorted(runs) == sorted(trials["trial_id"])  # one child each, none twice
    for row in trials.to_dict("records"):
        run = runs[row["trial_id"]]
        assert run.data.tags["status"] == row["status"]
        expected = "FINISHED" if row["status"] in ("completed", "early_stopped") else "FAILED"
        assert run.info.status == expected
        params = run.data.params
        assert (params["optimizer"], float(params["lr"])) == (row["optimizer"], row["lr"])
        assert (int(params["batch_size"]), int(params["seed"])) == (row["batch_size"], row["seed"])
        if row["optimizer"] == "sgd":
            assert float(params["momentum"]) == row["hp_momentum"]
        curve = epochs.loc[epochs["trial_id"] == row["trial_id"]]
        for key in METRICS:
            history = client.get_metric_history(run.info.run_id, key)
            want = [(e, v) for e, v in zip(curve["epoch"], curve[key], strict=True)
                    if math.isfinite(v)]  # fmt: skip
            got = sorted((m.step, m.value) for m in history)
            assert got == want, (row["trial_id"], key)
        if row["status"] == "completed":
            assert run.data.metrics["test_loss"] == pytest.approx(row["test_loss"])
            assert run.data.metrics["test_epoch"] == row["test_epoch"]
        else:
            assert "test_loss" not in run.data.metrics
    return saved["run_id"]


def study_with_a_diverging_lr(study_file):
    optimizers = {"sgd": {"lr": [0.1, 1.0e6], "momentum": 0.9}, "adam": {"lr": [0.01]}}
    return load_study(study_file(optimizers=optimizers))


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_a_sweep_is_mirrored_in_mlflow(
    store, ray_session, study_file, tmp_path, request, capsys
):  # fmt: skip
    uri = (
        f"sqlite:///{tmp_path / 'mlflow.db'}"
        if store == "sqlite"
        else request.getfixturevalue("mlflow_server")
    )
    study = study_with_a_diverging_lr(study_file)
    summary = run_study(study, RunOptions(results=str(tmp_path / "results"), mlflow=uri))
    client = MlflowClient(uri)
    os.makedirs(tmp_path / "downloads")
    parent_id = assert_mirrors(client, summary.out, tmp_path / "downloads")
    assert client.get_experiment_by_name(study.name) is not None

    # the report, attached to the parent run
    assert analysis_main(["report", summary.out, "--mlflow", uri]) == 0
    assert f"attached to MLflow run {parent_id}" in capsys.readouterr().out
    report = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert {"report/report.md", "report/report.html", "report/summary.csv"} <= report


def writer_for(out: str) -> ResultsWriter:
    return ResultsWriter(out, hp_columns={}, metric="val_loss", mode="min")


POINT = {"optimizer": "adam", "lr": 0.01, "batch_size": 16, "seed": 0, "optimizer_params": {}}


def epoch(n: int) -> dict:
    return {"epoch": n, "train_loss": 1.0 / n, "val_loss": 1.5 / n, "val_acc": 0.5 + n / 100}


def tracker(uri: str, out: str) -> MlflowTracker:
    return MlflowTracker(uri, study_name="resumed", out=out, study_text="name: resumed\n", tags={})


def test_a_resumed_run_catches_up_once_with_what_mlflow_missed(tmp_path):
    """The driver dies after logging 2 epochs to MLflow but recording 3 (and the end) in its
    results; the resumed run's tracker logs epoch 3 and the end, and nothing twice."""
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "results")
    os.makedirs(out)
    first = tracker(uri, out)
    first.start([])
    for n in (1, 2):
        first.on_result("a", POINT, epoch(n))
    first.on_result("c", {**POINT, "seed": 2}, epoch(1))
    first.close(interrupted=True)
    client = MlflowClient(uri)
    assert {run.info.status for run in children(client, first.parent_id).values()} == {"KILLED"}
    assert client.get_run(first.parent_id).info.status == "KILLED"

    writer = writer_for(out)  # what the results hold: three epochs, then the end
    for n in (1, 2, 3):
        writer.on_result("a", POINT, {**epoch(n), "test_loss": 0.7, "test_epoch": 3})
    writer.on_end("a", POINT, "completed")
    writer.on_result("b", {**POINT, "seed": 1}, epoch(1))  # one MLflow never saw, still running
    for n in (1, 2):  # cut short before, and still running: its child goes on
        writer.on_result("c", {**POINT, "seed": 2}, epoch(n))
    second = tracker(uri, out)
    second.start(writer.configurations())
    resumed = children(client, first.parent_id)["c"]
    assert resumed.info.status == "RUNNING"
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "val_loss")] == [1, 2]
    second.close(interrupted=True)

    assert second.parent_id == first.parent_id  # the same parent run, from mlflow.json
    runs = children(client, first.parent_id)
    assert sorted(runs) == ["a", "b", "c"]
    steps = [m.step for m in client.get_metric_history(runs["a"].info.run_id, "val_loss")]
    assert sorted(steps) == [1, 2, 3]
    assert runs["a"].info.status == "FINISHED" and runs["a"].data.tags["status"] == "completed"
    assert runs["a"].data.metrics["test_loss"] == 0.7
    assert [m.step for m in client.get_metric_history(runs["b"].info.run_id, "val_loss")] == [1]
    assert runs["b"].info.status == runs["c"].info.status == "KILLED"


class CountingClient:
    """The tracker's MlflowClient, each call counted; log_batch can wait or fail."""

    def __init__(self, real, *, delay_s: float = 0.0, fail_batches: bool = False) -> None:
        self.real, self.delay_s, self.fail_batches = real, delay_s, fail_batches
        self.calls: list[str] = []

    def __getattr__(self, name):
        method = getattr(self.real, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            if name == "log_batch":
                time.sleep(self.delay_s)
                if self.fail_batches:
                    raise RuntimeError("store unavailable")
            return method(*args, **kwargs)

        return call


def started(tmp_path, **client_args) -> tuple[MlflowTracker, CountingClient, str]:
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "results")
    os.makedirs(out)
    t = tracker(uri, out)
    t.start([])
    t.client = CountingClient(t.client, **client_args)
    return t, t.client, uri


def test_a_configuration_logged_at_once_takes_three_calls(tmp_path):
    t, client, uri = started(tmp_path)
    t.on_result("a", POINT, epoch(1))
    t.on_result("a", POINT, epoch(2))
    t.on_end("a", POINT, "completed", None, {"test_loss": 0.7, "test_epoch": 2})
    t.close(interrupted=False)
    assert client.calls[:3] == ["create_run", "log_batch", "set_terminated"]  # then the parent
    run = children(MlflowClient(uri), t.parent_id)["a"]
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "completed"
    assert run.data.params == {"optimizer": "adam", "lr": "0.01", "batch_size": "16", "seed": "0"}
    assert run.data.metrics["test_loss"] == 0.7 and run.data.metrics["train_loss"] == 0.5
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == [1, 2]


def test_a_run_whose_values_were_not_logged_is_not_ended(tmp_path, caplog):
    t, client, uri = started(tmp_path, fail_batches=True)
    t.on_result("a", POINT, epoch(1))
    t.on_end("a", POINT, "completed", None, {})
    with caplog.at_level(logging.WARNING, logger="sweep.tracking"):
        t.close(interrupted=False)
    assert "set_terminated" in client.calls  # the parent's, at close...
    run = children(MlflowClient(uri), t.parent_id)["a"]
    assert run.info.status == "KILLED"  # ...but the configuration's run stays open: a resume
    assert "could not be logged" in caplog.text  # logs what it lacks


def test_close_waits_while_mlflow_keeps_up_and_not_after_a_stop(tmp_path, caplog):
    """A finished sweep's last events are logged however long that takes, as long as each
    MLflow call returns within the stall limit; an interrupted sweep waits that limit in all,
    then says how many events were not logged."""
    t, client, uri = started(tmp_path, delay_s=0.4)
    for n in range(6):  # 6 batches of 0.4 s: 2.4 s of logging, more than the limit below
        t.on_result(f"c{n}", {**POINT, "seed": n}, epoch(1))
    t.close(interrupted=False, stall_s=1.0)
    runs = children(MlflowClient(uri), t.parent_id)
    assert sorted(runs) == [f"c{n}" for n in range(6)]
    assert all(run.data.metrics["train_loss"] == 1.0 for run in runs.values())

    second, slow, _ = started(tmp_path / "second", delay_s=1.0)
    for n in range(20):  # 20 s of logging
        second.on_result(f"d{n}", {**POINT, "seed": n}, epoch(1))
    thread = second._thread  # noqa: SLF001 - joined below, so no test outlives it
    with caplog.at_level(logging.WARNING, logger="sweep.tracking"):
        begin = time.monotonic()
        second.close(interrupted=True, stall_s=1.0)
        assert time.monotonic() - begin < 10  # not the 20 s the backlog needs
    assert "with 20 event(s) not logged" in caplog.text
    slow.delay_s = 0  # let the thread finish quickly
    thread.join(30)


def test_an_unreachable_tracking_uri_is_exit_2_before_anything_starts(
    study_file, tmp_path, capsys
):  # fmt: skip
    results = tmp_path / "results"
    code = sweep_main(
        ["run", str(study_file()), "--results", str(results), "--mlflow", "http://127.0.0.1:1"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --mlflow: cannot reach the tracking server at http://127.0.0.1:1")
    assert len(err.splitlines()) == 1
    assert not results.exists()


def test_a_missing_extra_names_the_install(study_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails
    results = tmp_path / "results"
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert sweep_main(["run", str(study_file()), "--results", str(results), "--mlflow", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --mlflow: MLflow is not installed: pip install 'mlp-sweep[mlflow]'"
    assert not results.exists() and not (tmp_path / "m.db").exists()


def test_report_without_a_parent_run_is_exit_2_and_writes_nothing(tmp_path, capsys):
    from analysis.synthetic import SyntheticSpec, write_results

    directory = write_results(SyntheticSpec(epochs=3), str(tmp_path))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert analysis_main(["report", directory, "--mlflow", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --mlflow:") and "has no run of the study" in err
    assert not os.path.exists(os.path.join(directory, "report"))


def test_resume_with_an_unreachable_tracking_uri_is_exit_2_before_anything_starts(
    study_file, tmp_path, capsys
):  # fmt: skip
    from sweep.config import dump_study

    out = tmp_path / "results" / "tiny"
    out.mkdir(parents=True)
    (out / "study.yaml").write_text(dump_study(load_study(study_file())))
    assert sweep_main(["resume", str(out), "--mlflow", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --mlflow: cannot reach the tracking server")
    assert sorted(p.name for p in out.iterdir()) == ["study.yaml"]  # nothing written
