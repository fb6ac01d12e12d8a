"""python -m analysis optuna / dashboard: the study in an Optuna storage, read back through
Optuna's API, equals the Parquet tables; exporting again updates; the dashboard shows it."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.synthetic import SyntheticSpec, make_results, write_frames, write_results

optuna = pytest.importorskip("optuna")  # the dashboard extra; `make test` installs it

SPEC = SyntheticSpec(
    name="toy",
    optimizers={"sgd": (1.0, 0.1, 0.01), "adam": (1e-2, 1e-3)},
    batch_sizes=(16, 64),
    seeds=(0, 1),
    epochs=6,
    scheduler="asha",
    grace_period=2,
    n_error=1,
)
STATE = {
    "completed": "COMPLETE",
    "early_stopped": "PRUNED",
    "diverged": "FAIL",
    "error": "FAIL",
    "running": "RUNNING",
}


def in_flight(trials: pd.DataFrame, epochs: pd.DataFrame, n: int):
    """The same study earlier: n completed configurations still running, 2 epochs in."""
    running = trials.index[trials["status"] == "completed"][:n]
    ids = set(trials.loc[running, "trial_id"])
    trials = trials.copy()
    trials.loc[running, "status"] = "running"
    trials.loc[running, "epochs_run"] = 2
    for column in ("test_loss", "test_acc", "test_epoch"):
        trials.loc[running, column] = None
    early = ~epochs["trial_id"].isin(ids) | (epochs["epoch"] <= 2)
    return trials, epochs.loc[early].reset_index(drop=True), sorted(ids)


def assert_matches(storage: str, directory: str, name: str = "toy") -> None:
    """Every Optuna trial equals its row of trials.parquet and its epochs in epochs.parquet."""
    trials = pd.read_parquet(os.path.join(directory, "trials.parquet"))
    epochs = pd.read_parquet(os.path.join(directory, "epochs.parquet"))
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.metric_names == ["val_loss"]
    by_id = {t.user_attrs["trial_id"]: t for t in study.get_trials()}
    assert len(by_id) == len(study.trials) == len(trials)  # one each, none twice
    for row in trials.to_dict("records"):
        got = by_id[row["trial_id"]]
        assert got.state.name == STATE[row["status"]], row["trial_id"]
        assert got.user_attrs["status"] == row["status"]
        assert got.params["optimizer"] == row["optimizer"]
        assert got.params["lr"] == row["lr"]
        assert got.params["batch_size"] == row["batch_size"]
        assert got.params["seed"] == row["seed"]
        if row["optimizer"] == "sgd":
            assert got.params["momentum"] == row["hp_momentum"]
            assert got.params["nesterov"] == row["hp_nesterov"]
        else:
            assert "momentum" not in got.params
        curve = epochs.loc[epochs["trial_id"] == row["trial_id"]]
        assert sorted(got.intermediate_values) == list(curve["epoch"])
        for epoch, value in zip(curve["epoch"], curve["val_loss"], strict=True):
            stored = got.intermediate_values[epoch]
            assert stored == value or (math.isnan(stored) and math.isnan(value))
        if row["status"] in ("completed", "early_stopped"):
            assert got.value == row["best_val_loss"]
        else:
            assert got.value is None
        if row["status"] == "completed":
            assert got.user_attrs["test_loss"] == row["test_loss"]
            assert got.user_attrs["test_epoch"] == row["test_epoch"]
        else:
            assert "test_loss" not in got.user_attrs
        if row["status"] == "error":
            assert got.user_attrs["error"] == row["error"]


def test_export_equals_the_tables_and_a_second_export_changes_nothing(tmp_path, capsys):
    directory = write_results(SPEC, str(tmp_path))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["optuna", directory, "--storage", storage]) == 0
    n = len(pd.read_parquet(os.path.join(directory, "trials.parquet")))
    assert f"{n} added, 0 updated, 0 unchanged" in capsys.readouterr().out
    assert_matches(storage, directory)
    assert main(["optuna", directory, "--storage", storage]) == 0
    assert f"0 added, 0 updated, {n} unchanged" in capsys.readouterr().out
    assert_matches(storage, directory)


def test_a_running_study_is_updated_in_place(tmp_path, capsys):
    trials, epochs, study = make_results(SPEC)
    directory = str(tmp_path / "toy")
    early_trials, early_epochs, running = in_flight(trials, epochs, 3)
    # and one configuration not reported yet at all
    unseen = early_trials["trial_id"].iloc[-1]
    early_trials = early_trials.loc[early_trials["trial_id"] != unseen]
    early_epochs = early_epochs.loc[early_epochs["trial_id"] != unseen]
    write_frames(directory, early_trials, early_epochs, study)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["optuna", directory, "--storage", storage]) == 0
    assert_matches(storage, directory)
    first = {t.user_attrs["trial_id"]: t.number for t in optuna.load_study(
        study_name="toy", storage=storage).trials}  # fmt: skip

    write_frames(directory, trials, epochs, study)
    capsys.readouterr()
    assert main(["optuna", directory, "--storage", storage]) == 0
    assert f"1 added, {len(running)} updated" in capsys.readouterr().out
    assert_matches(storage, directory)
    again = {t.user_attrs["trial_id"]: t.number for t in optuna.load_study(
        study_name="toy", storage=storage).trials}  # fmt: skip
    assert {k: again[k] for k in first} == first  # the same Optuna trials, not new ones


def test_max_metric_makes_a_maximize_study(tmp_path):
    spec = SyntheticSpec(name="acc", metric="val_acc", mode="max", epochs=3)
    directory = write_results(spec, str(tmp_path))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["optuna", directory, "--storage", storage]) == 0
    study = optuna.load_study(study_name="acc", storage=storage)
    trials = pd.read_parquet(os.path.join(directory, "trials.parquet")).set_index("trial_id")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = trials.loc[trials["status"] == "completed", "best_val_acc"].max()
    assert study.best_value == best


def test_select_final_values_are_the_last_epoch(tmp_path):
    spec = SyntheticSpec(name="fin", select="final", epochs=10, overfit={"adam": 0.01})
    directory = write_results(spec, str(tmp_path))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["optuna", directory, "--storage", storage]) == 0
    trials = pd.read_parquet(os.path.join(directory, "trials.parquet")).set_index("trial_id")
    complete = [
        t for t in optuna.load_study(study_name="fin", storage=storage).trials
        if t.state.name == "COMPLETE"
    ]  # fmt: skip
    differs = 0
    for trial in complete:
        row = trials.loc[trial.user_attrs["trial_id"]]
        assert trial.value == row["final_val_loss"]
        assert trial.value == trial.intermediate_values[max(trial.intermediate_values)]
        differs += row["final_val_loss"] != row["best_val_loss"]
    assert complete and differs  # the final value, where it is not the best one


def test_other_results_under_the_same_name_are_refused(tmp_path, capsys):
    first = write_results(SPEC, str(tmp_path / "a"))
    second = write_results(SPEC, str(tmp_path / "b"))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["optuna", first, "--storage", storage]) == 0
    capsys.readouterr()
    assert main(["optuna", second, "--storage", storage]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--study-name" in err and "a/toy" in err
    assert main(["optuna", second, "--storage", storage, "--study-name", "toy-b"]) == 0
    assert_matches(storage, second, name="toy-b")


@pytest.mark.parametrize(
    "storage, words",
    [("nosuch://x", "nosuch://x"), ("sqlite:////no/such/dir/x.db", "unable to open")],
)
def test_a_bad_storage_is_one_line_and_exit_2(tmp_path, capsys, storage, words):
    directory = write_results(SPEC, str(tmp_path))
    assert main(["optuna", directory, "--storage", storage]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --storage:") and words in err


def test_a_missing_extra_names_the_install(tmp_path, capsys, monkeypatch):
    directory = write_results(SPEC, str(tmp_path))
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails
    assert main(["optuna", directory, "--storage", f"sqlite:///{tmp_path}/x.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: optuna is not installed: pip install 'mlp-sweep[dashboard]'"
    assert not (tmp_path / "x.db").exists()


# ---- the dashboard, as a person and as its JSON API see it ----------------------------------
def start_dashboard(directory: str, *extra: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "analysis", "dashboard", directory, "--port", "0", *extra]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # printed once the server listens
    if "http://" not in line:
        proc.kill()
        raise AssertionError(f"no URL: {line!r} {proc.stderr.read()}")
    url = line.split("at ", 1)[1].split()[0]
    return proc, url.removesuffix("/dashboard/")


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_dashboard_serves_the_study_and_follows_a_running_one(tmp_path):
    trials, epochs, study = make_results(SPEC)
    directory = str(tmp_path / "toy")
    early_trials, early_epochs, running = in_flight(trials, epochs, 2)
    write_frames(directory, early_trials, early_epochs, study)
    proc, base = start_dashboard(directory, "--refresh", "0.3")
    try:
        (summary,) = get_json(f"{base}/api/studies")["study_summaries"]
        assert summary["study_name"] == "toy" and summary["directions"] == ["minimize"]
        detail = get_json(f"{base}/api/studies/{summary['study_id']}")
        assert len(detail["trials"]) == len(early_trials)
        states = [t["state"] for t in detail["trials"]]
        assert states.count("Running") == 2

        time.sleep(1.1)  # a new mtime for the rewritten tables on coarse clocks
        write_frames(directory, trials, epochs, study)  # the sweep goes on and finishes
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            detail = get_json(f"{base}/api/studies/{summary['study_id']}")
            if not any(t["state"] == "Running" for t in detail["trials"]):
                break
            time.sleep(0.3)
        assert [t["state"] for t in detail["trials"]].count("Running") == 0
        assert len(detail["trials"]) == len(trials)
    finally:
        assert stop(proc) == 0


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"), reason="Debian's chromium not installed"
)
def test_dashboard_page_shows_the_study_in_a_browser(tmp_path):
    assert chromium() is not None, "CI installs Debian's chromium (.ci/run)"
    directory = write_results(SPEC, str(tmp_path))
    proc, base = start_dashboard(directory)
    try:
        page = subprocess.run(
            [
                chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=15000", "--dump-dom", f"{base}/dashboard/studies/1",
            ],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
    finally:
        assert stop(proc) == 0
    # the study page as rendered by the dashboard's JavaScript: its name, its plots' titles
    assert "toy" in page
    for heading in ("History", "Hyperparameter Importance", "Timeline"):
        assert heading in page, heading
