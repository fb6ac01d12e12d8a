"""analysis.report: every figure and table in report.md and report.html, warnings, findings."""

from __future__ import annotations

import os
import re
from dataclasses import replace

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


def markdown_of(path: str, **kw) -> str:
    """report.md's text without rendering figures (fast)."""
    analysis = analyze(load_results(path), **kw)
    return to_markdown(report_blocks(analysis, {}, report_tables(analysis)), ("png",))


def section(markdown: str, start: str, end: str) -> str:
    return markdown.split(start)[1].split(end)[0]


def test_report_states_the_selection_rule_in_its_first_lines(report_dir):
    markdown = read(os.path.join(report_dir, "report.md"))
    first = markdown.splitlines()[2]
    assert first == (
        "- Each configuration is scored, chosen and tested on the weights of its best-validation "
        "epoch (train.select: best_epoch)."
    )
    assert markdown.splitlines()[3] == "- Figures 1 and 3 show best-epoch values (--value best)."


# adam overfits after epoch 10: its best epoch beats sgd, its final epoch does not
OVERFIT = SyntheticSpec(
    optimizers={"sgd": (0.3, 0.1, 0.03), "adam": (3e-3, 1e-3, 3e-4)},
    batch_sizes=(16,),
    epochs=20,
    overfit={"adam": 0.01},
)


@pytest.mark.parametrize(("select", "winner"), [("best_epoch", "adam"), ("final", "sgd")])
def test_best_epoch_and_final_winners_differ_on_a_constructed_study(tmp_path, select, winner):
    path = write_results(replace(OVERFIT, select=select), str(tmp_path))
    analysis = analyze(load_results(path))
    assert analysis.best["optimizer"].iloc[0] == winner
    # the model tested is the model chosen: the test epoch is the selected epoch
    chosen = analysis.scored.merge(analysis.best[["optimizer", "lr", "batch_size"]])
    selected = chosen["best_epoch"] if select == "best_epoch" else chosen["epochs_run"]
    assert (chosen["test_epoch"] == selected).all()
    markdown = markdown_of(path)
    findings = section(markdown, "## Findings", "## Tables")
    assert "**Best epoch vs final epoch**" in findings
    assert "the rankings differ: adam > sgd on best-epoch values, sgd > adam on final-epoch" in (
        findings
    )
    assert f"**Best optimizer here: {winner}**" in findings
    rule = "best-validation epoch" if select == "best_epoch" else "last epoch"
    assert f"weights of its {rule} (train.select: {select})" in markdown.splitlines()[2]


def test_a_winner_tested_on_one_seed_says_so_in_every_table(tmp_path):
    trials, epochs, study = make_results(OVERFIT)
    best = analyze(load_results(write_frames(str(tmp_path / "a"), trials, epochs, study))).best
    top = best.iloc[0]
    chosen = (trials["optimizer"] == top.optimizer) & (trials["lr"] == top.lr)
    stopped = chosen & trials["seed"].isin([1, 2])  # as ASHA would: no test metrics
    trials.loc[stopped, "status"] = "early_stopped"
    trials.loc[stopped, ["test_loss", "test_acc", "test_epoch"]] = None
    path = write_frames(str(tmp_path / "b"), trials, epochs, study)
    analysis = analyze(load_results(path))
    tables = report_tables(analysis)
    note = "1 of 3 seeds (2 stopped early by ASHA)"
    for name in ("summary.csv", "test.csv"):
        row = tables[name].set_index("optimizer").loc[top.optimizer]
        assert row["test_seeds"] == 1 and row["test_note"] == note
    markdown = markdown_of(path)
    assert f"**untested_seeds**: {top.optimizer}" in markdown
    assert f"{top.optimizer} test_loss" in markdown and f"({note})" in markdown
    pair = tables["paired.csv"].iloc[0]
    assert pair["value"] == "val_loss"  # not every seed has a test value: validation is compared


def test_one_seed_allows_no_comparison(tmp_path):
    path = write_results(replace(OVERFIT, seeds=(0,), epochs=12), str(tmp_path))
    findings = section(markdown_of(path), "## Findings", "## Tables")
    assert "one seed only: no comparison between optimizers is possible" in findings
    assert "with one seed no paired comparison is possible: the ranking is not settled" in findings


def test_paired_and_budget_findings_on_unequal_grids(report_dir):
    markdown = read(os.path.join(report_dir, "report.md"))
    findings = section(markdown, "## Findings", "## Tables")
    assert "**Paired comparison over seeds**" in findings and "over 2 seeds" in findings
    assert "paired t-interval" in markdown and "Not a bootstrap" in markdown
    assert "**Tuning budget** (figure 8" in findings
    assert "equal budgets reach k = 4; configurations per grid: sgd 6, adam 4" in findings
    assert "With each optimizer's whole grid the order is" in findings
    budget = pd.read_csv(os.path.join(report_dir, "budget.csv"))
    assert budget["k"].tolist() == [1, 2, 3, 4, 5, 6]
    assert budget["adam_mean"].iloc[4:].isna().all()  # past adam's 4 configurations


def test_old_results_say_their_test_metrics_come_from_the_last_epoch(tmp_path):
    trials, epochs, study = make_results(SyntheticSpec(optimizers={"sgd": (0.1, 0.03)}, epochs=4))
    del study["train"]["select"]
    path = write_frames(str(tmp_path / "old"), trials.drop(columns="test_epoch"), epochs, study)
    markdown = markdown_of(path)
    first = markdown.splitlines()[2]
    assert "their test metrics come from the last epoch, while each configuration" in first
    assert "so the model chosen is not the model tested" in first
    assert "**test_epoch**: trials.parquet does not say which epoch was tested" in markdown
