"""sweep.tune_fixes: what each fix changes in Ray Tune (the retry fix is exercised end to end in
test_reliability_e2e.py)."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = textwrap.dedent(
    """
    import sys
    from ray import tune
    from ray.air._internal import usage
    from sweep import tune_fixes
    if sys.argv[1] == "fixed":
        tune_fixes.apply()
        tune_fixes.apply()  # idempotent

    class Progress(tune.Callback):
        pass

    usage.tag_callbacks([Progress()])  # what tune.run calls before its first trial
    print("mlflow" in sys.modules)
    """
)


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
@pytest.mark.parametrize("fixed", [False, True])
def test_tunes_callback_usage_tag_imports_mlflow_only_unfixed(fixed):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": REPO}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, "fixed" if fixed else "unfixed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    # Unfixed, the tag imports mlflow (about a second before the first trial); fixed, it does not.
    assert child.stdout.split()[-1] == str(not fixed)


class LookupCounter:
    """A storage filesystem that holds nothing and counts Tune's lookups in it."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    def get_file_info(self, path: str):
        import pyarrow.fs

        self.lookups.append(path)
        return pyarrow.fs.FileInfo(path, pyarrow.fs.FileType.NotFound)


def _analysis(fs: LookupCounter, trial_ids: list[str]):
    """Tune's ExperimentAnalysis as fit builds it at its end: the trials given, on fs."""
    from types import SimpleNamespace

    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis

    trials = [
        SimpleNamespace(
            trial_id=tid,
            last_result={"epoch": 1},  # each reported, as every pack does
            config={},
            storage=SimpleNamespace(trial_fs_path=f"/exp/{tid}", storage_filesystem=fs),
        )
        for tid in trial_ids
    ]
    return ExperimentAnalysis("/exp/experiment_state-x.json", storage_filesystem=fs, trials=trials)


@pytest.mark.parametrize("loggers", ["off", "on"])
def test_tune_looks_up_result_files_only_while_it_writes_them(loggers, monkeypatch, caplog):
    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis

    from sweep import tune_fixes

    tune_fixes.apply()
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1" if loggers == "off" else "0")
    fs = LookupCounter()
    # Tune's logger heard whatever earlier tests did to logging: a sweep run in process sets
    # "ray" to CRITICAL, and MLflow's database migrations (logging.config.fileConfig) disable
    # every logger that exists.
    name = "ray.tune.analysis.experiment_analysis"
    monkeypatch.setattr(logging.getLogger(name), "disabled", False)
    with caplog.at_level(logging.WARNING, logger=name):
        analysis = _analysis(fs, ["a", "b", "c"])
    frames = analysis.trial_dataframes
    assert sorted(frames) == ["a", "b", "c"] and all(frame.empty for frame in frames.values())
    if loggers == "off":  # the sweep's default: nothing to find, so nothing looked up or warned
        assert fs.lookups == []
        assert "Could not fetch metrics" not in caplog.text
    else:  # --tensorboard: Tune's own reading, result.json then progress.csv per trial
        assert [path.rsplit("/", 1)[-1] for path in fs.lookups] == [
            "result.json", "progress.csv"
        ] * 3  # fmt: skip
        assert "Failed to fetch metrics for 3 trial(s)" in caplog.text

    # Unfixed, Tune looks both files up for every trial whatever the loggers.
    fs.lookups.clear()
    ExperimentAnalysis._fetch_trial_dataframes.__wrapped__(analysis)
    assert len(fs.lookups) == 6
