"""sweep.tune_fixes: what each fix changes in Ray Tune (the retry fix is exercised end to end in
test_reliability_e2e.py)."""

from __future__ import annotations

import copy
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


class Counted:
    """A grid value that counts its deep copies."""

    copies = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __deepcopy__(self, memo):
        Counted.copies += 1
        return Counted(self.n)

    def __eq__(self, other) -> bool:
        return isinstance(other, Counted) and other.n == self.n


SPECS = {
    "one grid": {"config": {"pack": {"grid_search": [{"id": i, "m": [i, i]} for i in range(4)]}}},
    "two grids, nested": {
        "config": {
            "a": {"grid_search": [1, 2, 3]},
            "b": {"c": {"grid_search": ["x", {"d": [1]}]}, "e": [5, {"f": 6}]},
            "fixed": {"g": (1, 2)},
        },
        "num_samples": 1,
    },
    "a grid in a list and in a tuple": {
        "config": {"l": [0, {"grid_search": [1, 2]}], "t": ({"grid_search": [3, 4]}, 9)}
    },
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_grid_variants_are_tunes_own_and_the_space_is_left_as_it_was(name):
    from ray.tune.search import variant_generator
    from ray.tune.search.variant_generator import parse_spec_vars

    from sweep import tune_fixes

    tune_fixes.apply()
    spec = SPECS[name]
    before = copy.deepcopy(spec)
    grid_vars = parse_spec_vars(spec)[2]
    patched = variant_generator._grid_search_generator
    mine = list(patched(spec, grid_vars))
    tunes = list(patched.__wrapped__(spec, grid_vars))
    assert mine == tunes and len(mine) > 1
    assert spec == before  # nothing in the search space changed in place
    for variant in mine:  # and no variant holds a grid any more
        assert "grid_search" not in repr(variant)


def test_a_grid_is_not_copied_for_each_of_its_variants():
    from ray.tune.search import variant_generator
    from ray.tune.search.variant_generator import parse_spec_vars

    from sweep import tune_fixes

    tune_fixes.apply()
    spec = {"config": {"pack": {"grid_search": [Counted(i) for i in range(30)]}, "x": 1}}
    grid_vars = parse_spec_vars(spec)[2]
    Counted.copies = 0
    variants = list(variant_generator._grid_search_generator(spec, grid_vars))
    assert [v["config"]["pack"].n for v in variants] == list(range(30))
    assert Counted.copies == 0  # each value goes in as it is, as Tune's own does
    list(variant_generator._grid_search_generator.__wrapped__(spec, grid_vars))
    assert Counted.copies == 30 * 30  # Tune's copied the whole grid for every variant


def test_tunes_registry_is_read_from_ray_once_per_key_and_fit(ray_session, monkeypatch):
    from ray.tune import registry

    from sweep import tune_fixes

    tune_fixes.apply()
    reads: list[bytes] = []
    real = registry._internal_kv_get
    monkeypatch.setattr(
        registry, "_internal_kv_get", lambda key, *a, **k: reads.append(key) or real(key, *a, **k)
    )
    reg = registry._Registry(prefix="mlp-sweep-test")
    kind = registry.TRAINABLE_CLASS
    key, missing = (registry._make_key(reg.prefix, kind, k) for k in ("t", "missing"))
    reg.register(kind, "t", {"lr": 0.1})
    try:
        for _ in range(5):  # what Tune does for every trial: contains x3, get x2
            assert reg.contains(kind, "t") and reg.get(kind, "t") == {"lr": 0.1}
            assert not reg.contains(kind, "missing")
        assert reads.count(key) == 2  # once to find it, once to load it
        assert reads.count(missing) == 5  # a key that is not there is asked for every time

        reg.register(kind, "t", {"lr": 0.2})  # registered again: read again
        assert reg.get(kind, "t") == {"lr": 0.2} and reg.get(kind, "t") == {"lr": 0.2}
        assert reads.count(key) == 3
        tune_fixes.apply()  # the next fit reads afresh
        assert reg.get(kind, "t") == {"lr": 0.2}
        assert reads.count(key) == 4
    finally:
        reg.unregister(kind, "t")
    assert not reg.contains(kind, "t")  # removed: not found any more
