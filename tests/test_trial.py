"""The trial function on its own, without Ray Tune: which epochs each report to Tune carries."""

from __future__ import annotations

import pytest

from model.data import load_arrays
from sweep import trial
from sweep.config import load_study
from sweep.runner import fixed_params
from sweep.space import PACK_KEY, expand_grid
from sweep.trainable import payload_of


@pytest.fixture
def reports(monkeypatch) -> list[tuple[list[tuple[str, int, str | None]], bool]]:
    """What run_pack hands Tune: per report, its (trial_id, epoch, end) records and whether a
    checkpoint came with it."""
    got = []

    def report(result, checkpoint=None):
        records = [(m["trial_id"], m.get("epoch"), m["end"]) for m in result["members"]]
        got.append((records, checkpoint is not None))

    monkeypatch.setattr(trial.tune, "report", report)
    monkeypatch.setattr(trial.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(trial.ray, "get_runtime_context", lambda: _Context())
    return got


class _Context:
    def get_node_id(self) -> str:
        return "node"


def run(study_file, tmp_path, epochs: int, every: int) -> list[str]:
    study = load_study(
        study_file(
            {"train": {"epochs": epochs, "checkpoint_every": every}, "search": {"seeds": 1}},
            optimizers={"adam": {"lr": [0.01, 0.001]}},
        )
    )
    members = expand_grid(study)
    config = {PACK_KEY: {"id": 0, "members": members}, "fixed": fixed_params(study, str(tmp_path))}
    trial.run_pack(config, payload_of(load_arrays(study.data)))
    return [m["trial_id"] for m in members]


def test_quick_epochs_are_reported_together_at_checkpoints_and_at_the_end(
    reports, study_file, tmp_path
):
    ids = run(study_file, tmp_path, epochs=7, every=3)
    assert [checkpoint for _, checkpoint in reports] == [True, True, False]
    for (records, _), epochs in zip(reports, ([1, 2, 3], [4, 5, 6], [7]), strict=True):
        assert records == [(i, e, "completed" if e == 7 else None) for e in epochs for i in ids]


def test_each_epoch_is_reported_once_the_interval_has_passed(
    reports, study_file, tmp_path, monkeypatch
):
    monkeypatch.setattr(trial, "REPORT_INTERVAL_S", 0.0)
    ids = run(study_file, tmp_path, epochs=4, every=2)
    assert [checkpoint for _, checkpoint in reports] == [False, True, False, False]
    assert [records for records, _ in reports] == [
        [(i, e, "completed" if e == 4 else None) for i in ids] for e in (1, 2, 3, 4)
    ]


class _Clock:
    """time for sweep.trial: each reading 0.4 s after the one before."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 0.4
        return self.now


def test_the_interval_counts_from_the_last_report(reports, study_file, tmp_path, monkeypatch):
    monkeypatch.setattr(trial, "time", _Clock())  # one reading per epoch, one per report
    run(study_file, tmp_path, epochs=7, every=100)
    epochs = [sorted({e for _, e, _ in records}) for records, _ in reports]
    assert epochs == [[1, 2, 3], [4, 5, 6], [7]]
