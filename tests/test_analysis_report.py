"""analysis.report: every figure and table in report.md and report.html, warnings, findings."""

from __future__ import annotations

import os
import re

import pandas as pd
import pytest

from analysis.load import load_results
from analysis.plots import FIGURES
from analysis.report import TABLES, report_blocks, report_tables, to_markdown, write_report
from analysis.summarize import analyze
from analysis.synthetic import SyntheticSpec, make_results, write_frames, write_results

ASHA = SyntheticSpec(
    optimizers={"sgd": (1.0, 0.1, 0.01), "adam": (1e-2, 1e-3)},  # unequal grids
    batch_sizes=(16, 64),
    seeds=(0, 1),  # too few
    epochs=6,
    scheduler="asha",
    grace_period=2,
    reduction_factor=2,
)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> str:
    results = write_results(ASHA, str(tmp_path_factory.mktemp("r")))
    write_report(results)  # png; svg is covered by test_svg_report_to_a_uri
    return os.path.join(results, "report")  # the default output directory


def read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def test_report_md_links_every_figure_and_table(report_dir):
    markdown = read(os.path.join(report_dir, "report.md"))
    for slug in FIGURES:  # ASHA ran, so all nine
        assert f"](figures/{slug}.png)" in markdown
        assert os.path.getsize(os.path.join(report_dir, "figures", f"{slug}.png")) > 1000
    for name, title in TABLES.items():
        assert f"### {title} (`{name}`)" in markdown
        assert os.path.exists(os.path.join(report_dir, name))
    for section in ("## Warnings", "## Findings", "## Tables", "## Figures"):
        assert section in markdown
    assert markdown.count("\n|---|") == len(TABLES)


def test_report_html_is_self_contained(report_dir):
    page = read(os.path.join(report_dir, "report.html"))
    assert page.count("src='data:image/png;base64,") == len(FIGURES)
    assert not re.search(r"src=['\"](?!data:)", page)  # nothing fetched from elsewhere
    for title in TABLES.values():
        assert title in page
    assert page.count("<table>") == len(TABLES)


def test_report_warnings_fire_on_a_constructed_study(report_dir):
    markdown = read(os.path.join(report_dir, "report.md"))
    warnings = markdown.split("## Warnings")[1].split("## Findings")[0]
    assert "**few_seeds**: only 2 seed(s)" in warnings
    assert "**asha**: ASHA was used" in warnings
    assert "**unequal_lr_grids**" in warnings and "sgd 3, adam 2" in warnings
    assert "**lr_edge**" in warnings  # adam's best LR lies on a 2-point grid's edge


def test_clean_study_reports_no_warnings(tmp_path):
    analysis = analyze(load_results(write_results(SyntheticSpec(), str(tmp_path))))
    markdown = to_markdown(report_blocks(analysis, {}, report_tables(analysis)), ("png",))
    assert "None of the tuning playbook's checks fired." in markdown
    assert analysis.checks == ()
    assert "Figure 9 (ASHA view) is drawn only for studies that used ASHA." in markdown


def test_findings_state_numbers_from_the_data(report_dir):
    markdown = read(os.path.join(report_dir, "report.md"))
    findings = markdown.split("## Findings")[1].split("## Tables")[0]
    summary = pd.read_csv(os.path.join(report_dir, "summary.csv"))
    top = summary.iloc[0]
    assert f"**Best optimizer here: {top.optimizer}**" in findings
    assert f"validation loss {top.val_loss_mean:.4g} ± {top.val_loss_std:.2g}" in findings
    for line in (
        "Robustness to the learning rate, sgd",
        "Batch size, adam",
        "Best learning rate of each optimizer",
        "Test split",
    ):
        assert line in findings


def test_summary_csv_has_the_best_configuration_per_optimizer(report_dir):
    summary = pd.read_csv(os.path.join(report_dir, "summary.csv"))
    assert list(summary["optimizer"]) in (["sgd", "adam"], ["adam", "sgd"])
    assert list(summary["rank"]) == [1, 2]
    assert summary["val_loss_mean"].is_monotonic_increasing
    for column in (
        "lr",
        "batch_size",
        "seeds",
        "val_loss_std",
        "epochs_run_mean",
        "train_time_s_mean",
        "test_loss_mean",
        "test_acc_mean",
        "optimizer_diverged_frac",
    ):
        assert column in summary


def test_selection_ignores_the_test_split(tmp_path):
    spec = SyntheticSpec(optimizers={"sgd": (0.1, 0.03, 0.01)}, batch_sizes=(16,), epochs=4)
    trials, epochs, study = make_results(spec)
    analysis = analyze(load_results(write_frames(str(tmp_path / "a"), trials, epochs, study)))
    chosen = analysis.best["lr"].item()
    trials.loc[trials["lr"] != chosen, "test_loss"] = 0.0  # other configs look perfect on test
    analysis = analyze(load_results(write_frames(str(tmp_path / "b"), trials, epochs, study)))
    assert analysis.best["lr"].item() == chosen
    assert analysis.best["test_loss_mean"].item() > 0


def test_svg_report_to_a_uri(tmp_path):
    spec = SyntheticSpec(optimizers={"sgd": (0.1, 0.01)}, batch_sizes=(16, 64), epochs=3)
    results = write_results(spec, str(tmp_path))
    out = "file://" + str(tmp_path / "out")
    report = write_report("file://" + results, out, formats=("svg",), metric="val_acc")
    assert report.out == out and "report.html" in report.files
    page = read(str(tmp_path / "out" / "report.html"))
    assert page.count("<figure") == 8 and page.count("<svg") >= 8 and "<img" not in page
    markdown = read(str(tmp_path / "out" / "report.md"))
    assert "](figures/fig1_lr_sensitivity.svg)" in markdown
    assert "`val_acc` (maximized, validation only)" in markdown
