"""sweep.status and ``python -m sweep status``: counts, pending, best, damaged results. No Ray."""

from __future__ import annotations

import json

import pytest
from test_results import ADAM, SGD, metrics

from model.errors import ConfigError
from sweep.__main__ import main
from sweep.config import dump_study, load_study
from sweep.results import ResultsWriter
from sweep.space import hyperparameter_columns
from sweep.status import study_status


@pytest.fixture
def results(study_file, tmp_path):
    """A results directory of the tiny study (2 trials): one completed, one running."""
    study = load_study(study_file({"search": {"seeds": 2}}))  # 4 trials
    out = tmp_path / "tiny"
    out.mkdir()
    (out / "study.yaml").write_text(dump_study(study))
    (out / "run.json").write_text(json.dumps({"started": "S", "ended": None, "runs": [{}]}))
    w = ResultsWriter(
        str(out), hp_columns=hyperparameter_columns(study), metric="val_loss", mode="min"
    )
    w.on_result("a", SGD, metrics(1, 0.5))
    w.on_result("a", SGD, metrics(2, 0.25))
    w.on_end("a", SGD, "completed")
    w.on_result("b", ADAM, metrics(1, 0.75))
    w.close()
    return out


def test_counts_pending_and_best(results):
    report = study_status(str(results))
    assert (report["name"], report["total"], report["done"], report["pending"]) == (
        "tiny", 4, 1, 2
    )  # fmt: skip
    assert report["statuses"] == {"completed": 1, "running": 1}
    assert report["best"] == "val_loss 0.25: sgd lr=0.1 batch_size=16 seed=0 (completed)"
    assert (report["started"], report["ended"]) == ("S", None)


def test_cli_prints_the_counts(results, capsys):
    assert main(["status", str(results)]) == 0
    out = capsys.readouterr().out
    assert "study tiny: 1/4 trials done" in out and "pending" in out and "val_loss 0.25" in out
    assert main(["status", str(results), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == 1


def test_no_tables_yet_means_everything_pending(results):
    (results / "trials.parquet").unlink()
    report = study_status(str(results))
    assert (report["done"], report["pending"], report["best"]) == (0, 4, None)


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("trials.parquet", b"PAR1 cut short", "trials.parquet is damaged"),
        ("run.json", b'{"started": "S", "ru', "run.json is damaged"),
        ("study.yaml", b"name: [unclosed", "study.yaml is damaged"),
        ("study.yaml", b"- a list", "study.yaml is damaged"),
    ],
)
def test_damaged_results_are_one_error_line_and_exit_2(results, capsys, name, content, expected):
    (results / name).write_bytes(content)
    with pytest.raises(ConfigError, match=expected):
        study_status(str(results))
    assert main(["status", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and len(err.splitlines()) == 1


def test_not_a_results_directory(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "not a sweep results directory" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["trials.parquet", "epochs.parquet"])
def test_report_on_a_damaged_table_is_one_error_line_and_exit_2(results, capsys, name):
    from analysis.__main__ import main as analysis_main

    (results / name).write_bytes(b"PAR1 cut short")
    assert analysis_main(["report", str(results), "--out", str(results / "report")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and name in err and len(err.splitlines()) == 1, err
