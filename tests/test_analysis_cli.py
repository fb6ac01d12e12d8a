"""python -m analysis: --help with examples, exit codes, one-line errors, no ray or torch."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from analysis.__main__ import main
from analysis.synthetic import SyntheticSpec, write_results

TINY = SyntheticSpec(optimizers={"sgd": (0.1, 0.01)}, batch_sizes=(16,), epochs=3)


@pytest.fixture
def results_dir(tmp_path) -> str:
    return write_results(TINY, str(tmp_path))


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["report", "--help"],
        ["summary", "--help"],
        ["optuna", "--help"],
        ["dashboard", "--help"],
    ],
)
def test_every_command_has_help_with_an_example(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text
    command = argv[0] if argv[0] != "--help" else "report"
    assert f"python -m analysis {command} results/" in text


def test_summary_prints_the_table_and_warnings(results_dir, capsys):
    assert main(["summary", results_dir]) == 0
    out = capsys.readouterr().out
    assert "best configuration per optimizer (val_loss, minimized on validation)" in out
    assert "sgd" in out and "val_loss" in out
    assert "warning [few_seeds]" not in out  # three seeds
    assert "warning [lr_edge]" in out  # a two-point grid: the best is always at an edge


def test_report_command_writes_the_report(results_dir, tmp_path, capsys):
    out = str(tmp_path / "rep")
    assert main(["report", results_dir, "--out", out, "--metric", "val_acc"]) == 0
    assert f"to {out}" in capsys.readouterr().out
    assert {"report.md", "report.html", "summary.csv"} <= set(os.listdir(out))


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err


def test_missing_directory_exits_2(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "missing")]) == 2
    assert "results directory not found" in error_line(capsys)


def test_wrong_schema_exits_2_naming_the_column(results_dir, capsys):
    path = os.path.join(results_dir, "epochs.parquet")
    pq.write_table(pq.read_table(path).drop_columns(["val_loss"]), path)
    assert main(["report", results_dir]) == 2
    assert "epochs.parquet: missing column(s) val_loss" in error_line(capsys)


def test_no_completed_trial_exits_2(results_dir, capsys):
    path = os.path.join(results_dir, "trials.parquet")
    table = pq.read_table(path)
    import pyarrow as pa

    status = pa.array(["diverged"] * table.num_rows)
    pq.write_table(table.set_column(table.schema.get_field_index("status"), "status", status), path)
    assert main(["summary", results_dir]) == 2
    assert "no completed trial" in error_line(capsys)


def test_bad_format_and_metric_exit_2(results_dir, capsys):
    assert main(["report", results_dir, "--format", "png,gif"]) == 2
    assert "--format: unknown format 'gif'" in error_line(capsys)
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", results_dir, "--metric", "accuracy"])
    assert exit_info.value.code == 2


def test_module_runs_without_ray_or_torch():
    code = (
        "import sys, runpy, analysis.report, analysis.plots, analysis.synthetic\n"
        "sys.argv = ['python -m analysis', '--help']\n"
        "try:\n    runpy.run_module('analysis', run_name='__main__')\n"
        "except SystemExit as done:\n    assert done.code == 0\n"
        "print(sorted({'ray', 'torch'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "example:" in done.stdout
    assert done.stdout.strip().endswith("[]")


def test_value_final_redraws_figures_1_and_3(results_dir, tmp_path, capsys):
    out = str(tmp_path / "rep")
    assert main(["report", results_dir, "--out", out, "--value", "final", "--format", "svg"]) == 0
    with open(os.path.join(out, "report.md"), encoding="utf-8") as handle:
        assert "- Figures 1 and 3 show final-epoch values (--value final)." in handle.read()
    with open(os.path.join(out, "figures", "fig1_lr_sensitivity.svg"), encoding="utf-8") as handle:
        assert "final-epoch validation loss vs learning rate" in handle.read()


def test_bad_value_exits_2_before_reading(results_dir, capsys):
    assert main(["report", results_dir, "--value", "last"]) == 2
    assert "--value: unknown value 'last' (valid: best, final)" in error_line(capsys)
    assert not os.path.exists(os.path.join(results_dir, "report"))


def test_report_help_shows_the_value_option(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = capsys.readouterr().out
    assert "python -m analysis report results/digits-optimizers --value final" in text
    assert "--value best|final" in text


def test_summary_states_the_rule_and_the_paired_comparison(results_dir, capsys):
    assert main(["summary", results_dir]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("Each configuration is scored, chosen and tested")
    assert "paired comparison over seeds" not in out  # one optimizer: nothing to pair


def test_summary_prints_the_paired_comparison_of_two_optimizers(tmp_path, capsys):
    spec = SyntheticSpec(optimizers={"sgd": (0.1,), "adam": (1e-3,)}, batch_sizes=(16,), epochs=3)
    assert main(["summary", write_results(spec, str(tmp_path))]) == 0
    out = capsys.readouterr().out
    paired = out.split("paired comparison over seeds")[1].splitlines()
    assert paired[1].split()[:4] == ["optimizer_a", "optimizer_b", "value", "n_seeds"]
    assert paired[2].split()[2:4] == ["test_loss", "3"]
