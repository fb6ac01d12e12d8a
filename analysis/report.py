"""Write a study's report: figures, CSV and Markdown tables, report.md and report.html.

``python -m analysis report results/digits-optimizers`` calls ``write_report``. The output goes
to RESULTS_DIR/report unless ``out`` says otherwise; either may be a URI pyarrow writes
(file://, s3://, gs://), in which case the report is built in a temporary directory and copied.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import posixpath
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from analysis.errors import ResultsError
from analysis.load import load_results, open_location
from analysis.plots import FIGURES, all_figures
from analysis.summarize import (
    CONFIDENCE,
    LR_TOLERANCE,
    MAX_SEEDS,
    TEST_OF,
    VALUES,
    Analysis,
    analyze,
    missing_test_note,
)

log = logging.getLogger(__name__)

FORMATS = ("png", "svg")
_NAMES = {
    "val_loss": "validation loss",
    "val_acc": "validation accuracy",
    "val_rmse": "validation RMSE",
    "train_loss": "training loss",
}
# (file, title) of each table, in report order.
TABLES = {
    "summary.csv": "Best configuration per optimizer",
    "best_lr.csv": "Best learning rate per optimizer and batch size",
    "divergence.csv": "Trials by status and diverged fraction per optimizer",
    "test.csv": "Test metrics of each optimizer's selected configuration",
    "paired.csv": "Paired comparison over seeds of each pair of optimizers at their best",
    "budget.csv": "Expected best value after k configurations drawn at random (figure 8)",
    "best_vs_final.csv": "Each optimizer's choice on best-epoch and on final-epoch values",
}
_SELECT_RULES = {
    "best_epoch": "Each configuration is scored, chosen and tested on the weights of its "
    "best-validation epoch (train.select: best_epoch).",
    "final": "Each configuration is scored, chosen and tested on the weights of its last epoch "
    "(train.select: final).",
}


@dataclass(frozen=True)
class Report:
    """Where a report went and the files it holds (paths relative to ``out``)."""

    out: str
    files: tuple[str, ...]


def write_report(
    location: str,
    out: str | None = None,
    *,
    metric: str | None = None,
    formats: Sequence[str] = ("png",),
    target: float | None = None,
    value: str | None = None,
) -> Report:
    """Load, analyze and write the report of the results at location; returns what was written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ResultsError(
            f"--format: unknown format {unknown[0] if unknown else ''!r} "
            f"(valid: {', '.join(FORMATS)})"
        )
    if value is not None and value not in VALUES:  # checked before anything is read
        raise ResultsError(f"--value: unknown value {value!r} (valid: {', '.join(VALUES)})")
    analysis = analyze(load_results(location), metric=metric, target=target, value=value)
    out = out or _join(location, "report")
    if "://" not in out:
        return Report(out, tuple(render_report(analysis, out, formats)))
    fs, path = open_location(out)
    with tempfile.TemporaryDirectory(prefix="analysis-report-") as staging:
        files = render_report(analysis, staging, formats)
        try:
            fs.create_dir(path, recursive=True)
            pafs.copy_files(staging, path, destination_filesystem=fs)
        except OSError as exc:
            raise ResultsError(f"{out}: cannot write the report ({exc})") from exc
    return Report(out, tuple(files))


def _join(location: str, name: str) -> str:
    if "://" in location:
        scheme, rest = location.split("://", 1)
        path, _, query = rest.partition("?")
        return f"{scheme}://{posixpath.join(path, name)}" + (f"?{query}" if query else "")
    return os.path.join(location, name)


def render_report(analysis: Analysis, directory: str, formats: Sequence[str]) -> list[str]:
    """Write every file of the report into a local directory; returns their relative paths."""
    os.makedirs(os.path.join(directory, "figures"), exist_ok=True)
    files: list[str] = []
    figures = {}
    for slug, figure in all_figures(analysis).items():
        rendered = {}
        for fmt in formats:
            buffer = io.BytesIO()
            figure.savefig(buffer, format=fmt, dpi=110)
            rendered[fmt] = buffer.getvalue()
            files.append(_write(directory, f"figures/{slug}.{fmt}", rendered[fmt]))
        figures[slug] = rendered
    tables = report_tables(analysis)
    for name, frame in tables.items():
        files.append(_write(directory, name, frame.to_csv(index=False).encode()))
    files.append(_write(directory, "configs.csv", analysis.configs.to_csv(index=False).encode()))
    blocks = report_blocks(analysis, figures, tables)
    files.append(_write(directory, "report.md", to_markdown(blocks, formats).encode()))
    files.append(_write(directory, "report.html", to_html(blocks, figures).encode()))
    log.info("wrote %d files to %s", len(files), directory)
    return files


def _write(directory: str, name: str, data: bytes) -> str:
    with open(os.path.join(directory, name), "wb") as handle:
        handle.write(data)
    return name


# ---- tables -----------------------------------------------------------------------------


def report_tables(a: Analysis) -> dict[str, pd.DataFrame]:
    """The report's tables as plain numeric frames (written to CSV, formatted for display)."""
    metric = a.metric.name
    best = a.best.merge(
        a.divergence[["optimizer", "diverged_frac"]], on="optimizer", suffixes=("_config", "")
    )
    tests = [c for c in best.columns if c.startswith("test_") and c != "test_epoch_mean"]
    # every table with test numbers says how many seeds they come from
    tested = {
        "test_seeds": best["n_tested"],
        "test_note": [
            missing_test_note(r) if r.n_tested < r.n_trials else "" for r in best.itertuples()
        ],
        "test_epoch_mean": best["test_epoch_mean"],
    }
    summary = pd.DataFrame(
        {
            "rank": best["rank"],
            "optimizer": best["optimizer"],
            "lr": best["lr"],
            "batch_size": best["batch_size"],
            "seeds": best["n_scored"],
            f"{metric}_mean": best["score_mean"],
            f"{metric}_std": best["score_std"],
            "best_epoch_mean": best["best_epoch_mean"],
            "epochs_run_mean": best["epochs_run_mean"],
            "train_time_s_mean": best["train_time_mean"],
            **{c: best[c] for c in tests},
            **tested,
            "optimizer_diverged_frac": best["diverged_frac"],
        }
    )
    per_batch = a.best_per_batch
    best_lr = pd.DataFrame(
        {
            "optimizer": per_batch["optimizer"],
            "batch_size": per_batch["batch_size"],
            "lr": per_batch["lr"],
            "seeds": per_batch["n_scored"],
            f"{metric}_mean": per_batch["score_mean"],
            f"{metric}_std": per_batch["score_std"],
            "diverged_seeds": per_batch["n_diverged"],
        }
    )
    columns = ["optimizer", "lr", "batch_size", "seeds", f"{metric}_mean", f"{metric}_std"]
    test = summary[[*columns, *tests, *tested]]
    return {
        "summary.csv": summary,
        "best_lr.csv": best_lr,
        "divergence.csv": a.divergence,
        "test.csv": test,
        "paired.csv": a.pairs,
        "budget.csv": budget_table(a.budget, a.optimizers),
        "best_vs_final.csv": a.rankings,
    }


def budget_table(budget: pd.DataFrame, optimizers: Sequence[str]) -> pd.DataFrame:
    """Figure 8's curves as one row per k, <optimizer>_mean and _std columns (NaN past a grid)."""
    wide = budget.pivot(index="k", columns="optimizer", values=["expected", "std"])
    out = pd.DataFrame({"k": wide.index.to_numpy(dtype=np.int64)})
    for optimizer in (o for o in optimizers if o in wide["expected"]):
        out[f"{optimizer}_mean"] = wide["expected"][optimizer].to_numpy()
        out[f"{optimizer}_std"] = wide["std"][optimizer].to_numpy()
    return out


def _num(value: object, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float | np.floating):
        return f"{value:.{digits}g}"
    return str(value)


def _pm(mean: object, std: object) -> str:
    if isinstance(std, float) and np.isfinite(std):
        return f"{_num(mean)} ± {_num(std, 2)}"
    return _num(mean)


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A table with <x>_mean/<x>_std pairs joined as 'mean ± std' and numbers shortened."""
    columns: dict[str, list[str]] = {}
    for column in frame.columns:
        if column.endswith("_std") and column[:-4] + "_mean" in frame:
            continue
        if column.endswith("_mean") and column[:-5] + "_std" in frame:
            base = column[:-5]
            columns[base] = [
                _pm(m, s) for m, s in zip(frame[column], frame[base + "_std"], strict=True)
            ]
        elif column.endswith("_frac"):
            columns[column[:-5] + " %"] = [f"{v:.0%}" for v in frame[column]]
        else:
            columns[column] = [_num(v) for v in frame[column].tolist()]
    return pd.DataFrame(columns)


# ---- findings and checks ----------------------------------------------------------------


def findings(a: Analysis) -> list[str]:
    """The Findings section: each claim computed from the data, with its numbers."""
    name = _NAMES.get(a.metric.name, a.metric.name)
    return [
        _best_optimizer(a, name),
        _paired(a),
        _budget(a, name),
        _best_vs_final(a),
        *_robustness(a, name),
        *_batch_size(a, name),
        "**Best learning rate of each optimizer**: "
        + "; ".join(
            f"{r.optimizer} {_num(r.lr)} (batch size {r.batch_size})" for r in a.best.itertuples()
        )
        + ". The best LR at every batch size is in the table below and figure 5.",
        _to_target(a, name),
        _test(a),
    ]


def _to_target(a: Analysis, name: str) -> str:
    sign = "≥" if a.metric.mode == "max" else "≤"
    text = f"**Steps to target** ({name} {sign} {_num(a.target)}, figure 6): "
    reached = a.to_target.dropna(subset=["steps_mean"])
    if reached.empty:
        return text + "no configuration reached it; set another with --target."
    fastest = reached.sort_values("steps_mean").iloc[0]
    text += (
        f"fewest steps by {fastest.optimizer} at batch size {int(fastest.batch_size)} "
        f"({_num(fastest.steps_mean)} steps, {_num(fastest.time_mean, 3)} s)"
    )
    missed = a.to_target[a.to_target["n_reached"] == 0]
    if not missed.empty:
        listed = "; ".join(
            f"{opt} at batch size {', '.join(str(b) for b in rows['batch_size'])}"
            for opt, rows in missed.groupby("optimizer", sort=True)
        )
        text += f"; never reached by {listed}"
    return text + "."


def _best_optimizer(a: Analysis, name: str) -> str:
    top = a.best.iloc[0]
    text = (
        f"**Best optimizer here: {top.optimizer}**, {name} {_pm(top.score_mean, top.score_std)} "
        f"(mean ± std over {top.n_scored} seeds) at learning rate {_num(top.lr)} and batch size "
        f"{top.batch_size}, selected on validation ({a.metric.mode}imized)."
    )
    if len(a.best) < 2:
        return text
    second = a.best.iloc[1]
    gap = abs(second.score_mean - top.score_mean)
    text += (
        f" Next is {second.optimizer} with {_pm(second.score_mean, second.score_std)}, "
        f"{_num(gap, 3)} {'lower' if a.metric.mode == 'max' else 'higher'} ("
        f"{gap / abs(top.score_mean):.1%})"
    )
    pair = a.pairs[(a.pairs["optimizer_a"] == top.optimizer)]
    pair = pair[pair["optimizer_b"] == second.optimizer].iloc[0]
    if pair.n_seeds < 2:
        return (
            text + "; with one seed no paired comparison is possible: the ranking is not settled."
        )
    if pair.settled and pair.favours == top.optimizer:
        return text + f"; the paired interval over seeds ({pair.value}) excludes zero: settled."
    if pair.settled:
        return text + (
            f"; but on {pair.value} the paired interval over seeds favours {second.optimizer}: "
            "validation and test disagree, so the ranking is not settled."
        )
    return text + (
        f"; the paired interval over seeds ({pair.value}) includes zero, so this ranking is not "
        f"settled ({_needed(pair.seeds_needed)})."
    )


def _needed(seeds: float) -> str:
    if np.isnan(seeds):
        return "no estimate of the seeds needed"
    if np.isinf(seeds):
        return f"no number of seeds up to {MAX_SEEDS:,} would settle it at this mean and spread"
    return f"about {int(seeds)} seeds would settle it if the mean and spread held"


def _paired(a: Analysis) -> str:
    text = (
        "**Paired comparison over seeds** (seed s gives every optimizer the same initial weights "
        "and batch order; per seed, a's best configuration minus b's, "
        f"mean and {CONFIDENCE:.0%} paired t-interval; `paired.csv`): "
    )
    if a.pairs.empty:
        return text + "one optimizer only, nothing to compare."
    if int(a.pairs["n_seeds"].max()) < 2:
        return text + "one seed only: no comparison between optimizers is possible."
    parts = []
    for r in a.pairs.itertuples():
        verdict = (
            f"settled, favours {r.favours}"
            if r.settled
            else f"not settled: {_needed(r.seeds_needed)}"
        )
        parts.append(
            f"{r.optimizer_a} − {r.optimizer_b} on {r.value}: {r.diff_mean:+.3g} "
            f"[{_num(r.ci_low, 3)}, {_num(r.ci_high, 3)}] over {r.n_seeds} seeds, {verdict}"
        )
    return text + "; ".join(parts) + "."


def _budget(a: Analysis, name: str) -> str:
    sizes = a.budget.groupby("optimizer", sort=False)["n_configs"].first()
    ranks = a.budget_ranks
    common = int(sizes.min())
    text = (
        f"**Tuning budget** (figure 8: the expected best {name} of k configurations drawn at "
        f"random from each grid): with k = 1 the order is {ranks['ranking'].iloc[0]}"
    )
    changed = ranks[ranks["ranking"] != ranks["ranking"].shift()].iloc[1:]
    if changed.empty:
        text += f" and it stays so up to k = {common}"
    else:
        text += "; it changes at " + ", ".join(
            f"k = {r.k} ({r.ranking})" for r in changed.itertuples()
        )
    listed = ", ".join(f"{o} {int(sizes[o])}" for o in a.optimizers if o in sizes)
    text += f" (equal budgets reach k = {common}; configurations per grid: {listed})."
    if sizes.nunique() > 1:
        full = " > ".join(a.best["optimizer"])
        at_common = ranks["ranking"].iloc[-1]
        text += f" With each optimizer's whole grid the order is {full}" + (
            ", the same as at equal budget."
            if full == at_common
            else f", not {at_common} as at equal budget: the larger grids change the ranking."
        )
    empty = a.budget[(a.budget["k"] == 1) & (a.budget["p_none"] > 0)]
    if not empty.empty:
        text += " Draws that hold only diverged configurations are left out of the expectation" + (
            " (chance at k = 1: "
            + ", ".join(f"{r.optimizer} {r.p_none:.0%}" for r in empty.itertuples())
            + ")."
        )
    return text


def _best_vs_final(a: Analysis) -> str:
    r = a.rankings
    by_best = " > ".join(r.sort_values("rank_best")["optimizer"])
    by_final = " > ".join(r.sort_values("rank_final")["optimizer"])
    text = "**Best epoch vs final epoch** (`best_vs_final.csv`): "
    if by_best == by_final:
        text += f"ranked on best-epoch or on final-epoch values the order is the same ({by_best})"
    else:
        text += f"the rankings differ: {by_best} on best-epoch values, {by_final} on final-epoch"
    moved = r[(r["lr_best"] != r["lr_final"]) | (r["batch_size_best"] != r["batch_size_final"])]
    if moved.empty:
        text += "; every optimizer's chosen configuration is the same either way."
    else:
        text += (
            "; the chosen configuration differs for "
            + "; ".join(
                f"{m.optimizer} (lr {_num(m.lr_best)}, batch size {int(m.batch_size_best)} on "
                f"best-epoch values; lr {_num(m.lr_final)}, batch size {int(m.batch_size_final)} "
                "on final-epoch)"
                for m in moved.itertuples()
            )
            + "."
        )
    rule = "best-epoch" if a.study.select == "best_epoch" else "final-epoch"
    return text + (
        f" Tables and findings use {rule} values (train.select: {a.study.select}); figures 1 "
        f"and 3 show {'best-epoch' if a.value == 'best' else 'final-epoch'} values (--value)."
    )


def _robustness(a: Analysis, name: str) -> list[str]:
    medians = a.finals.groupby("optimizer")["final"].median()
    lines = []
    for r in a.robustness.itertuples():
        div = a.divergence[a.divergence["optimizer"] == r.optimizer].iloc[0]
        lines.append(
            f"**Robustness to the learning rate, {r.optimizer}**: {r.n_within} of {r.n_lrs} "
            f"learning rates come within {LR_TOLERANCE:.0%} of its best {name} at batch size "
            f"{r.batch_size}; over all its learning rates and batch sizes the median final {name} "
            f"is {_num(medians.get(r.optimizer, float('nan')))} and {int(div.n_diverged)} of "
            f"{int(div.n_trials)} trials ({div.diverged_frac:.0%}) diverged."
        )
    return lines


def _scaling_words(slope: float) -> str:
    if not np.isfinite(slope):
        return "no trend"
    if slope >= 0.75:
        return "close to linear scaling"
    if slope >= 0.25:
        return "close to square-root scaling"
    if slope > -0.25:
        return "roughly flat"
    return "falling with batch size"


def _batch_size(a: Analysis, name: str) -> list[str]:
    lines = []
    for r in a.trend.itertuples():
        if r.n_batch_sizes < 2:
            continue
        lines.append(
            f"**Batch size, {r.optimizer}**: from batch size {r.bs_small} to {r.bs_large} its best "
            f"{name} goes from {_num(r.score_small)} to {_num(r.score_large)} and its best "
            f"learning rate from {_num(r.lr_small)} to {_num(r.lr_large)} (log-log slope "
            f"{_num(r.lr_slope, 2)}: {_scaling_words(r.lr_slope)})."
        )
    return lines


def _test(a: Analysis) -> str:
    tests = [
        c[:-5]
        for c in a.best.columns
        if c.startswith("test_") and c.endswith("_mean") and c != "test_epoch_mean"
    ]
    parts = []
    for r in a.best.itertuples():
        values = ", ".join(
            f"{t} {_pm(getattr(r, t + '_mean'), getattr(r, t + '_std'))}" for t in tests
        )
        parts.append(f"{r.optimizer} {values} ({missing_test_note(r)})")
    rule = "best-validation epoch" if a.study.select == "best_epoch" else "last epoch"
    return (
        f"**Test split** (measured on the {rule}'s weights of the configurations chosen on "
        "validation, never used to choose; mean ± std over the seeds tested): "
        + "; ".join(parts)
        + "."
    )


# ---- document -----------------------------------------------------------------------------

TABLE_NOTES = {
    "test.csv": "Configurations that did not run all their epochs (stopped by ASHA, diverged, "
    "failed) have no test metrics; `test_seeds` counts the seeds that have them.",
    "paired.csv": "Per seed s, the value of a's best configuration minus b's (a is ranked above "
    "b on validation): seed s gives both the same initial weights and batch order. `value` is the "
    "test metric when every seed of both configurations has one, else the validation value they "
    "were chosen on, which flatters the optimizer with more configurations (the best of more "
    f"noisy values). Interval: {CONFIDENCE:.0%} paired t-interval, mean ± t(n−1) · sd / √n, "
    "assuming roughly normal differences. Not a bootstrap: over 3 seeds it has 10 distinct "
    "resamples and its interval never reaches past the smallest and largest difference, so it is "
    "too narrow; the t-interval widens for few seeds as it should. A ranking is settled when the "
    "interval excludes zero. `seeds_needed`: the smallest n with t(n−1) · sd / √n < |mean|, i.e. "
    "where the interval would just exclude zero if the observed mean and sd held (about an even "
    f"chance; inf: none up to {MAX_SEEDS:,} or a zero mean).",
    "budget.csv": "For k = 1 .. grid size: the expected best of k configurations drawn at random "
    "without replacement from the optimizer's (learning rate × batch size) grid, each valued by "
    "its mean over seeds, ± the sd of that best over draws. Computed exactly (no sampling): with "
    "the N configurations ordered worst to best, the best of k is the i-th with probability "
    "C(i−1, k−1) / C(N, k). Dodge et al. (2019) draw with replacement; without replacement k = N "
    "gives the grid's best, the value in the summary. – : k beyond the optimizer's grid.",
}


def selection_notes(a: Analysis) -> list[str]:
    """The report's first lines: which epoch is chosen on and tested, and which figures show."""
    study = a.study
    rule = _SELECT_RULES[study.select]
    if study.select == "best_epoch" and a.metric.name != study.metric:
        rule += f" The best epoch is the study's (by {study.metric}), not by {a.metric.name}."
    trials = a.results.trials
    has_test = trials[[c for c in TEST_OF.values() if c in trials]].notna().any(axis=1)
    if has_test.any() and trials.loc[has_test, "test_epoch"].isna().all():
        rule = (
            "These results do not record which epoch was tested (written before train.select): "
            "their test metrics come from the last epoch"
            + (
                ", while each configuration is scored and chosen on its best-validation epoch "
                "(train.select: best_epoch, the default), so the model chosen is not the model "
                "tested (see Warnings)."
                if study.select == "best_epoch"
                else ", the epoch each configuration is chosen on (train.select: final)."
            )
        )
    shown = "best-epoch" if a.value == "best" else "final-epoch"
    return [rule, f"Figures 1 and 3 show {shown} values (--value {a.value})."]


Block = tuple  # ("h1"|"h2"|"h3"|"p", text) | ("list", [text]) | ("table", frame) | ("figure", ...)


def report_blocks(
    a: Analysis, figures: dict[str, dict[str, bytes]], tables: dict[str, pd.DataFrame]
) -> list[Block]:
    """The report as a list of blocks, rendered to Markdown and to HTML alike."""
    results, study = a.results, a.study
    counts = a.scored["status"].value_counts()
    status = ", ".join(
        f"{counts.get(s, 0)} {s.replace('_', '-')}"
        for s in ("completed", "early_stopped", "diverged", "error")
    )
    notes = [
        *selection_notes(a),
        f"Results: `{results.location}`; selection metric: `{a.metric.name}` "
        f"({a.metric.mode}imized, validation only); scheduler: {study.scheduler}.",
        f"{len(a.scored)} trials: {status}."
        + (
            f" {results.n_running} trial(s) still running were ignored."
            if results.n_running
            else ""
        ),
    ]
    if not study.from_yaml:
        notes.append("study.yaml was not found: the grid was inferred from the trials.")
    blocks: list[Block] = [("h1", f"Study report: {study.name}"), ("list", notes)]
    blocks.append(("h2", "Warnings"))
    if a.checks:
        blocks.append(("list", [f"**{c.kind}**: {c.message}" for c in a.checks]))
    else:
        blocks.append(("p", "None of the tuning playbook's checks fired."))
    blocks += [("h2", "Findings"), ("list", findings(a)), ("h2", "Tables")]
    for name, title in TABLES.items():
        blocks += [("h3", f"{title} (`{name}`)"), ("table", display_table(tables[name]))]
        if name in TABLE_NOTES:
            blocks.append(("p", TABLE_NOTES[name]))
    blocks.append(("p", "Every configuration (mean and std over seeds): `configs.csv`."))
    blocks.append(("h2", "Figures"))
    for number, (slug, caption) in enumerate(FIGURES.items(), start=1):
        if slug in figures:
            blocks.append(("figure", slug, f"Figure {number}. {caption}"))
    if "fig9_asha" not in figures:
        blocks.append(("p", "Figure 9 (ASHA view) is drawn only for studies that used ASHA."))
    return blocks


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], formats: Sequence[str]) -> str:
    """report.md: GitHub-flavoured Markdown, figures linked from figures/."""
    fmt = "png" if "png" in formats else formats[0]
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            frame = block[1]
            lines.append("| " + " | ".join(_md_cell(str(c)) for c in frame.columns) + " |")
            lines.append("|" + "---|" * len(frame.columns))
            lines += [
                "| " + " | ".join(_md_cell(v) for v in row) + " |"
                for row in frame.itertuples(index=False)
            ]
            lines.append("")
        elif kind == "figure":
            _, slug, caption = block
            lines += [f"### {caption}", "", f"![{caption}](figures/{slug}.{fmt})", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;
padding:.25em .6em;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{
text-align:left}img,svg{max-width:100%;height:auto}code{background:#f3f3f3;padding:0 .2em}
figure{margin:1em 0 2em}figcaption{font-weight:bold;margin-bottom:.5em}"""


def to_html(blocks: list[Block], figures: dict[str, dict[str, bytes]]) -> str:
    """report.html: one self-contained file, figures embedded (base64 PNG, else inline SVG)."""
    title = next(b[1] for b in blocks if b[0] == "h1")
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
    ]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3", "p"):
            parts.append(f"<{kind}>{_inline(block[1])}</{kind}>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            frame = block[1]
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                for row in frame.itertuples(index=False)
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "figure":
            _, slug, caption = block
            parts.append(
                f"<figure id='{slug}'><figcaption>{html.escape(caption)}</figcaption>"
                f"{_embed(figures[slug], caption)}</figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def _embed(rendered: dict[str, bytes], caption: str) -> str:
    if "png" in rendered:
        data = base64.b64encode(rendered["png"]).decode("ascii")
        return f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
    svg = rendered["svg"].decode("utf-8")
    return svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE
