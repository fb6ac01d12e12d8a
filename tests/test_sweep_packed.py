"""Packed sweeps end to end: one Tune trial per pack, one results row per configuration."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from ray import tune
from test_reliability_e2e import journal, restarts
from test_sweep_run import KillOnce

from model.data import load_arrays
from sweep.asha import AshaRungs
from sweep.config import load_study
from sweep.runner import RunOptions, _trainable, _writer_callback, fixed_params, run_study
from sweep.space import PACK_KEY, expand_grid

pytestmark = pytest.mark.slow

METRICS = ["train_loss", "val_loss", "val_acc"]


def tables(out: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = pq.read_table(os.path.join(out, "trials.parquet")).to_pandas()
    epochs = pq.read_table(os.path.join(out, "epochs.parquet")).to_pandas()
    return trials, epochs


def assert_exact(trials: pd.DataFrame, epochs: pd.DataFrame, expected: int) -> None:
    assert len(trials) == expected and trials["trial_id"].is_unique
    for row in trials.itertuples():
        got = sorted(epochs.loc[epochs.trial_id == row.trial_id, "epoch"])
        assert got == list(range(1, row.epochs_run + 1)), row.trial_id


GRID = {
    "train": {"epochs": 3},
    "search": {"batch_size": [64], "seeds": 2},
}
OPTIMIZERS = {"sgd": {"lr": [0.1, 0.03], "momentum": 0.9}, "adam": {"lr": [0.01, 0.001]}}


def test_packed_and_unpacked_sweeps_give_the_same_tables(ray_session, study_file, tmp_path):
    results = {}
    for models in ("auto", 1):
        study = load_study(
            study_file({**GRID, "resources": {"models_per_trial": models}}, optimizers=OPTIMIZERS)
        )
        summary = run_study(study, RunOptions(results=str(tmp_path / str(models))))
        assert summary.total == summary.done == 8
        results[models] = tables(summary.out)
    (packed, packed_epochs), (single, single_epochs) = results["auto"], results[1]
    assert_exact(packed, packed_epochs, 8)
    assert sorted(packed.trial_id) == sorted(p["trial_id"] for p in expand_grid(study))
    # auto on 2 CPUs: one pack per optimizer (same batch size), both running at once
    assert sorted(packed.groupby("pack_id").size()) == [4, 4]
    assert (packed.pack_size == 4).all() and (single.pack_size == 1).all()
    assert single.pack_id.is_unique
    merged = packed_epochs.merge(single_epochs, on=["trial_id", "epoch"], suffixes=("", "_1"))
    assert len(merged) == len(packed_epochs) == 8 * 3
    for name in METRICS:
        pd.testing.assert_series_equal(
            merged[name], merged[f"{name}_1"], check_names=False, rtol=1e-4
        )
    a, b = packed.set_index("trial_id"), single.set_index("trial_id").loc[packed.trial_id]
    assert (a.status == "completed").all()
    assert (a.test_epoch == a.best_epoch).all()  # train.select: best_epoch by default
    pd.testing.assert_series_equal(a.test_loss, b.test_loss, rtol=1e-4)


def test_a_killed_pack_is_retried_from_its_checkpoint_with_all_its_members(
    ray_session, study_file, tmp_path
):
    study = load_study(
        study_file(
            {"train": {"epochs": 10, "checkpoint_every": 2}, "search": {"batch_size": [8]}},
            optimizers=OPTIMIZERS,
        )
    )
    killer = KillOnce()  # SIGKILLs the first pack to report epoch 3 or later
    summary = run_study(study, RunOptions(results=str(tmp_path / "r")), callbacks=[killer])
    assert killer.recovered and not killer.errored
    trials, epochs = tables(summary.out)
    assert_exact(trials, epochs, 4)
    killed = trials[trials.pack_id == killer.killed]
    assert len(killed) == 2 and (killed.status == "completed").all()
    assert (killed.epochs_run == 10).all()
    # both members go on from the pack's last checkpoint, not from epoch 1 (the one before
    # the checkpoint reported with the kill: see test_sweep_run's kill test)
    found = restarts(journal(Path(summary.out)), checkpoint_every=2)
    assert sorted(tid for tid, _, _ in found) == sorted(killed.trial_id)
    assert all(first in (want, want - 2) and first > 1 for _, first, want in found)


def test_a_member_with_a_bad_value_is_an_error_and_its_pack_goes_on(
    ray_session, study_file, tmp_path
):
    study = load_study(study_file(GRID, optimizers={"adam": {"lr": [0.01, 0.001]}}))
    dataset = load_arrays(study.data)
    members = expand_grid(study)
    members[1] = {**members[1], "lr": -1.0}  # what validation would refuse, reaching a trial
    out = str(tmp_path / "bad")
    os.makedirs(out)
    writer = _writer_callback(study, out, fresh=True)
    tuner = tune.Tuner(
        _trainable(study, dataset),
        param_space={
            PACK_KEY: {"grid_search": [{"id": 0, "members": members}]},
            "fixed": fixed_params(study, out),
        },
        run_config=tune.RunConfig(storage_path=out, name="ray", callbacks=[writer], verbose=0),
    )
    sigint = signal.getsignal(signal.SIGINT)
    try:
        tuner.fit()
    finally:  # Tune leaves its SIGINT handler behind; later tests expect Python's
        signal.signal(signal.SIGINT, sigint)
    writer.close()
    trials, _ = tables(out)
    bad = trials.set_index("trial_id").loc[members[1]["trial_id"]]
    assert bad.status == "error" and "lr: -1.0" in bad.error and bad.epochs_run == 0
    others = trials[trials.trial_id != members[1]["trial_id"]]
    assert len(others) == 3 and (others.status == "completed").all()
    assert (others.epochs_run == 3).all() and (others.pack_size == 4).all()


def test_asha_decides_per_configuration_inside_a_pack(ray_session, study_file, tmp_path):
    """One pack of 8: its members are stopped at rung epochs exactly as AshaRungs decides when
    fed their rung values in the order the pack asked (epoch by epoch, member by member)."""
    study = load_study(
        study_file(
            {
                "train": {"epochs": 8, "checkpoint_every": 10},
                "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
                "resources": {"models_per_trial": 8},
            },
            optimizers={"adam": {"lr": [0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4, 1e-5, 1e-6]}},
        )
    )
    summary = run_study(study, RunOptions(results=str(tmp_path / "asha")))
    trials, epochs = tables(summary.out)
    assert_exact(trials, epochs, 8)
    assert trials.pack_id.nunique() == 1
    order = [p["trial_id"] for p in expand_grid(study)]
    asha = AshaRungs(max_t=8, grace_period=1, reduction_factor=2, mode="min")
    expected_stop: dict[str, int] = {}
    for epoch in asha.rungs:
        for tid in order:
            row = epochs[(epochs.trial_id == tid) & (epochs.epoch == epoch)]
            if tid in expected_stop or row.empty:
                continue
            if not asha.decide(tid, epoch, row.val_loss.item()):
                expected_stop[tid] = epoch
    t = trials.set_index("trial_id")
    stopped = t[t.status == "early_stopped"]
    assert dict(stopped.epochs_run) == expected_stop and expected_stop
    assert set(stopped.epochs_run) <= set(asha.rungs)
    assert (t.drop(index=list(expected_stop)).status == "completed").all()
    assert stopped.test_loss.isna().all()  # no test metrics without all epochs


def test_a_pack_result_ending_its_members_rewrites_the_tables_once(
    study_file, tmp_path, monkeypatch
):
    """Every member's end is journaled at once; the Parquet tables are rewritten once for the
    whole result when the flush interval has passed, and otherwise at Tune's next loop step
    after it (on_step_end)."""
    from types import SimpleNamespace

    from sweep import results as results_module

    study = load_study(study_file())
    points = expand_grid(study)
    assert len(points) >= 2
    trial = SimpleNamespace(trial_id="pack0", config={PACK_KEY: {"id": 0, "members": points}})
    callback = _writer_callback(study, str(tmp_path), fresh=True)
    writes = []
    real = results_module.ResultsWriter.flush
    monkeypatch.setattr(
        results_module.ResultsWriter, "flush", lambda self: writes.append(1) or real(self)
    )

    def result(epoch: int, end: str | None) -> dict:
        status = end or "running"
        members = [
            {
                "trial_id": p["trial_id"],
                "epoch": epoch,
                "val_loss": 0.4,
                "status": status,
                "end": end,
            }
            for p in points
        ]
        return {"epoch": epoch, "members": members}

    def statuses() -> set[str]:
        return set(pq.read_table(tmp_path / "trials.parquet").to_pandas().status)

    now = [1000.0]
    monkeypatch.setattr(results_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    interval = callback.ensure().flush_interval_s
    callback.on_trial_result(1, [], trial, result(1, None))  # the first result is written at once
    assert len(writes) == 1 and statuses() == {"running"}
    callback.on_trial_result(2, [], trial, result(2, "completed"))  # within flush_interval_s
    callback.on_step_end(2, [])
    assert len(writes) == 1 and statuses() == {"running"}
    events = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events].count("end") == len(points)  # journaled all the same

    now[0] += interval
    callback.on_step_end(3, [])  # Tune's next loop step, the interval passed
    assert len(writes) == 2 and statuses() == {"completed"}
    now[0] += interval
    callback.on_trial_result(3, [], trial, result(3, "completed"))
    assert len(writes) == 3  # one rewrite for the result, not one per ended member
    trials = pq.read_table(tmp_path / "trials.parquet").to_pandas()
    assert sorted(trials.trial_id) == sorted(p["trial_id"] for p in points)
    assert set(trials.status) == {"completed"} and set(trials.epochs_run) == {3}
