"""analysis.load: schema checks, typed errors naming the file and column, running trials, URIs."""

from __future__ import annotations

import os
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from analysis.errors import ResultsError
from analysis.load import load_results
from analysis.synthetic import SyntheticSpec, make_results, write_frames, write_results

SMALL = SyntheticSpec(
    optimizers={"sgd": (0.3, 0.1, 0.03), "adam": (1e-2, 1e-3, 1e-4)},
    batch_sizes=(16, 64),
    seeds=(0, 1),
    epochs=4,
)


@pytest.fixture
def results_dir(tmp_path) -> str:
    return write_results(SMALL, str(tmp_path))


def test_loads_trials_epochs_and_study(results_dir):
    results = load_results(results_dir)
    assert len(results.trials) == 2 * 3 * 2 * 2
    assert results.study.optimizers == ("sgd", "adam")
    assert results.study.lr_grids["sgd"] == (0.03, 0.1, 0.3)
    assert results.hp_columns == ("hp_momentum", "hp_nesterov")
    assert results.epochs["epoch"].max() == 4


def test_running_trials_are_ignored_with_their_epochs(tmp_path):
    path = write_results(SyntheticSpec(n_running=5, epochs=4), str(tmp_path))
    results = load_results(path)
    assert results.n_running == 5
    assert "running" not in set(results.trials["status"])
    assert set(results.epochs["trial_id"]) <= set(results.trials["trial_id"])


def test_missing_study_yaml_infers_the_grid(results_dir):
    os.remove(os.path.join(results_dir, "study.yaml"))
    results = load_results(results_dir)
    assert not results.study.from_yaml
    assert results.study.lr_grids["adam"] == (1e-4, 1e-3, 1e-2)
    assert results.study.metric == "val_loss"


def test_file_uri_reads_the_same(results_dir):
    results = load_results("file://" + results_dir)
    assert len(results.trials) == 24


def test_missing_directory(tmp_path):
    with pytest.raises(ResultsError, match="results directory not found"):
        load_results(str(tmp_path / "nope"))


@pytest.mark.parametrize("name", ["trials.parquet", "epochs.parquet"])
def test_missing_parquet(results_dir, name):
    os.remove(os.path.join(results_dir, name))
    with pytest.raises(ResultsError, match=f"{name}: file not found"):
        load_results(results_dir)


def test_empty_and_corrupt_parquet(results_dir):
    path = os.path.join(results_dir, "trials.parquet")
    open(path, "wb").close()
    with pytest.raises(ResultsError, match="trials.parquet: file is empty"):
        load_results(results_dir)
    with open(path, "wb") as handle:
        handle.write(b"not parquet at all")
    with pytest.raises(ResultsError, match="trials.parquet: not a readable Parquet file"):
        load_results(results_dir)


def test_parquet_without_rows(results_dir):
    path = os.path.join(results_dir, "epochs.parquet")
    pq.write_table(pq.read_table(path).slice(0, 0), path)
    with pytest.raises(ResultsError, match="epochs.parquet: has no rows"):
        load_results(results_dir)


def test_missing_column_is_named(results_dir):
    path = os.path.join(results_dir, "trials.parquet")
    pq.write_table(pq.read_table(path).drop_columns(["best_val_loss", "lr"]), path)
    with pytest.raises(ResultsError, match="missing column\\(s\\) lr, best_val_loss"):
        load_results(results_dir)


def test_mistyped_column_is_named(results_dir):
    path = os.path.join(results_dir, "trials.parquet")
    table = pq.read_table(path)
    index = table.schema.get_field_index("lr")
    table = table.set_column(index, "lr", table.column("lr").cast(pa.string()))
    pq.write_table(table, path)
    with pytest.raises(ResultsError, match="column 'lr' has type string, expected double"):
        load_results(results_dir)


def test_no_completed_trial(tmp_path):
    trials, epochs, study = make_results(SMALL)
    trials["status"] = "early_stopped"
    path = write_frames(str(tmp_path / "s"), trials, epochs, study)
    with pytest.raises(ResultsError, match="no completed trial"):
        load_results(path)


def test_unknown_status(tmp_path):
    trials, epochs, study = make_results(SMALL)
    trials.loc[0, "status"] = "finished"
    path = write_frames(str(tmp_path / "s"), trials, epochs, study)
    with pytest.raises(ResultsError, match="unknown status 'finished'"):
        load_results(path)


def test_selection_rule_and_test_epoch_are_read(tmp_path):
    path = write_results(replace(SMALL, select="final", pack_size=3), str(tmp_path))
    results = load_results(path)
    assert results.study.select == "final"
    completed = results.trials[results.trials["status"] == "completed"]
    assert (completed["test_epoch"] == completed["epochs_run"]).all()  # final: the last epoch
    assert (results.trials["pack_size"] == 3).all()
    assert results.trials.groupby("pack_id").size().max() == 3


def test_results_written_before_train_select_load_with_nulls(results_dir):
    path = os.path.join(results_dir, "trials.parquet")
    old = pq.read_table(path).drop_columns(["test_epoch", "pack_id", "pack_size"])
    pq.write_table(old, path)
    study_path = os.path.join(results_dir, "study.yaml")
    with open(study_path, encoding="utf-8") as handle:
        study = yaml.safe_load(handle)
    del study["train"]["select"]
    with open(study_path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(study, handle)
    results = load_results(results_dir)
    assert results.study.select == "best_epoch"  # the default when the field is absent
    assert results.trials["test_epoch"].isna().all() and results.trials["pack_id"].isna().all()
    assert results.trials["pack_size"].isna().all()


def test_unknown_selection_rule_is_named(results_dir):
    study_path = os.path.join(results_dir, "study.yaml")
    with open(study_path, encoding="utf-8") as handle:
        study = yaml.safe_load(handle)
    study["train"]["select"] = "best"
    with open(study_path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(study, handle)
    with pytest.raises(ResultsError, match="train.select: unknown value 'best'"):
        load_results(results_dir)
