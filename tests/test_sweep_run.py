"""End-to-end sweeps on the shared local Ray: tables, statuses, ASHA, divergence, GPUs, retries."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from ray import tune
from test_reliability_e2e import journal, restarts

from sweep.config import load_study
from sweep.results import EPOCHS_SCHEMA, RUN_FILE, STUDY_FILE, trials_schema
from sweep.runner import RunOptions, run_study
from sweep.space import hyperparameter_columns, trial_count

pytestmark = pytest.mark.slow


def tables(out: str):
    trials = pq.read_table(os.path.join(out, "trials.parquet"))
    epochs = pq.read_table(os.path.join(out, "epochs.parquet"))
    return trials, epochs


def assert_exact(trials, epochs, expected_trials: int) -> None:
    """One row per grid point, epoch rows 1..epochs_run per trial without duplicates."""
    t, e = trials.to_pandas(), epochs.to_pandas()
    assert len(t) == expected_trials
    assert t["trial_id"].is_unique
    assert not e.duplicated(["trial_id", "epoch"]).any()
    for row in t.itertuples():
        got = sorted(e.loc[e.trial_id == row.trial_id, "epoch"])
        assert got == list(range(1, row.epochs_run + 1)), row.trial_id


def test_tiny_grid_end_to_end_with_a_diverging_lr(ray_session, study_file, tmp_path):
    study = load_study(
        study_file({"search": {"optimizers": {"sgd": {"lr": [0.1, 1.0e6], "momentum": 0.9}}}})
    )
    sigint = signal.getsignal(signal.SIGINT)
    summary = run_study(study, RunOptions(results=str(tmp_path / "results")))
    assert signal.getsignal(signal.SIGINT) is sigint  # Ctrl-C works as before in the caller
    out = summary.out
    assert summary.total == trial_count(study) == 3
    assert not summary.interrupted
    trials, epochs = tables(out)
    assert trials.schema.equals(trials_schema(hyperparameter_columns(study)))
    assert epochs.schema.equals(EPOCHS_SCHEMA)
    assert_exact(trials, epochs, 3)
    t = trials.to_pandas().set_index(["optimizer", "lr"])
    assert t.loc[("sgd", 1.0e6), "status"] == "diverged"
    assert t.loc[("sgd", 1.0e6), "epochs_run"] == 1
    for key in [("sgd", 0.1), ("adam", 0.01)]:
        row = t.loc[key]
        assert row["status"] == "completed" and row["epochs_run"] == 3
        assert 0.5 < row["test_acc"] <= 1.0 and 0.5 < row["best_val_acc"] <= 1.0
        assert row["device"] == "cpu" and row["node_id"]
    assert t.loc[("sgd", 0.1), "hp_momentum"] == 0.9
    assert t["hp_momentum"].isna().sum() == 1  # adam has no momentum
    assert os.path.exists(os.path.join(out, STUDY_FILE))
    assert os.path.exists(os.path.join(out, RUN_FILE))
    assert os.path.isdir(os.path.join(out, "ray"))


def test_asha_stops_bad_trials(ray_session, study_file, tmp_path):
    # Good learning rates first, hopeless ones after: ASHA compares them at rung 1 and 2.
    study = load_study(
        study_file(
            {
                "train": {"epochs": 6, "checkpoint_every": 10},
                "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
            },
            optimizers={"adam": {"lr": [0.01, 0.003, 1e-7, 1e-8]}},
        )
    )
    summary = run_study(study, RunOptions(results=str(tmp_path / "results")))
    trials, epochs = tables(summary.out)
    t = trials.to_pandas()
    assert_exact(trials, epochs, 4)
    stopped = t[t.status == "early_stopped"]
    assert stopped.lr.isin([1e-7, 1e-8]).any()  # a hopeless trial was cut short
    assert (stopped.epochs_run < 6).all()
    assert t.loc[t.lr == 0.01, "status"].item() == "completed"


class MaxRunning(tune.Callback):
    def __init__(self):
        self.max_running = 0

    def on_step_end(self, iteration, trials, **info):
        self.max_running = max(self.max_running, sum(t.status == "RUNNING" for t in trials))


def test_quarter_gpus_pack_four_trials_on_one_logical_gpu(ray_session, study_file, tmp_path):
    # 8 trials that need a quarter GPU and an eighth of the 2 CPUs: the one logical GPU, not the
    # CPUs, limits them to four at a time.
    study = load_study(
        study_file(
            {
                "train": {"epochs": 10},
                "search": {"batch_size": [32]},
                # one configuration per Tune trial: 8 trials compete for the logical GPU
                "resources": {
                    "cpus_per_trial": 0.25,
                    "gpus_per_trial": 0.25,
                    "models_per_trial": 1,
                },
            },
            optimizers={
                "sgd": {"lr": [0.1, 0.05, 0.03, 0.01]},
                "adam": {"lr": [0.01, 0.003, 0.001, 0.0003]},
            },
        )
    )
    probe = MaxRunning()
    summary = run_study(study, RunOptions(results=str(tmp_path / "r")), callbacks=[probe])
    assert probe.max_running == 4
    t = tables(summary.out)[0].to_pandas()
    assert len(t) == 8 and (t.status == "completed").all()
    assert (t.gpu_fraction == 0.25).all()
    if torch.cuda.is_available():  # Ray's logical GPU is GPU 0 here: the trials use it
        assert t.device.str.startswith("cuda").all()
    else:  # a logical GPU without CUDA: the trial falls back to CPU
        assert (t.device == "cpu").all()


class KillOnce(tune.Callback):
    """SIGKILL the process of the first trial to report epoch 3 or later (a pack reports quick
    epochs together, at its checkpoints: then epoch 4); note what Tune does next."""

    def __init__(self):
        self.killed = None
        self.recovered = self.errored = False

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.recovered |= trial.trial_id == self.killed

    def on_trial_error(self, iteration, trials, trial, **info):
        self.errored |= trial.trial_id == self.killed

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.killed is None and result["epoch"] >= 3:
            self.killed = trial.trial_id
            os.kill(result["pid"], signal.SIGKILL)


def test_killed_trial_is_retried_from_checkpoint_and_tables_stay_exact(
    ray_session, study_file, tmp_path
):
    # small batches: epochs 4..12 leave the kill time to land while the trial still runs
    study = load_study(
        study_file({"train": {"epochs": 12, "checkpoint_every": 2}, "search": {"batch_size": [8]}})
    )
    killer = KillOnce()
    summary = run_study(study, RunOptions(results=str(tmp_path / "r")), callbacks=[killer])
    assert killer.recovered and not killer.errored
    trials, epochs = tables(summary.out)
    assert_exact(trials, epochs, 2)
    t = trials.to_pandas().set_index("pack_id")
    assert t.loc[killer.killed, "status"] == "completed"
    assert t.loc[killer.killed, "epochs_run"] == 12
    # killed at its report of epoch 3 or 4: the retry goes on from its last checkpoint, not
    # from epoch 1. Tune fetches a report's checkpoint after the callbacks have seen the report,
    # so a kill at the report of checkpoint 4 retries from checkpoint 2 (re-running 3 and 4)
    [(retried, first_epoch, checkpoint_next)] = restarts(journal(Path(summary.out)), 2)
    assert t.loc[killer.killed, "trial_id"] == retried  # its one configuration
    assert first_epoch in (checkpoint_next, checkpoint_next - 2) and first_epoch > 1


def test_a_failing_trial_is_recorded_with_its_message_and_the_sweep_goes_on(
    ray_session, study_file, tmp_path
):
    study = load_study(
        study_file({"train": {"epochs": 12, "max_failures": 0}, "search": {"batch_size": [8]}})
    )
    killer = KillOnce()
    summary = run_study(study, RunOptions(results=str(tmp_path / "r")), callbacks=[killer])
    assert killer.errored
    assert not summary.interrupted
    trials, epochs = tables(summary.out)
    assert_exact(trials, epochs, 2)
    t = trials.to_pandas().set_index("pack_id")
    failed = t.loc[killer.killed]
    assert failed.status == "error"
    assert "died" in failed.error.lower()  # Ray's ActorDiedError, as the trial saw it
    assert failed.epochs_run >= 2  # what it reported before it died is kept
    others = t.drop(index=killer.killed)
    assert (others.status == "completed").all() and others.error.isna().all()
