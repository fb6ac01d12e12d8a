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
from analysis.summarize import LR_TOLERANCE, Analysis, analyze

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
) -> Report:
    """Load, analyze and write the report of the results at location; returns what was written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ResultsError(
            f"--format: unknown format {unknown[0] if unknown else ''!r} "
            f"(valid: {', '.join(FORMATS)})"
        )
    analysis = analyze(load_results(location), metric=metric, target=target)
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
    tests = [c for c in best.columns if c.startswith("test_")]
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
    test = summary[["optimizer", "lr", "batch_size", f"{metric}_mean", f"{metric}_std", *tests]]
    return {
        "summary.csv": summary,
        "best_lr.csv": best_lr,
        "divergence.csv": a.divergence,
        "test.csv": test,
    }


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
    if len(a.best) > 1:
        second = a.best.iloc[1]
        gap = abs(second.score_mean - top.score_mean)
        spread = np.nanmax([top.score_std, second.score_std, 0.0])
        text += (
            f" Next is {second.optimizer} with {_pm(second.score_mean, second.score_std)}, "
            f"{_num(gap, 3)} {'lower' if a.metric.mode == 'max' else 'higher'} ("
            f"{gap / abs(top.score_mean):.1%})"
        )
        text += (
            "; the gap is within the spread over seeds, so this ranking is not settled."
            if gap <= spread
            else "; the gap is larger than the spread over seeds."
        )
    return text


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
    tests = [c[:-5] for c in a.best.columns if c.startswith("test_") and c.endswith("_mean")]
    parts = []
    for r in a.best.itertuples():
        values = ", ".join(
            f"{t} {_pm(getattr(r, t + '_mean'), getattr(r, t + '_std'))}" for t in tests
        )
        parts.append(f"{r.optimizer} {values}")
    return (
        "**Test split** (reported for the configurations chosen on validation, never used to "
        "choose): " + "; ".join(parts) + "."
    )


# ---- document -----------------------------------------------------------------------------

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
    blocks.append(("p", "Every configuration (mean and std over seeds): `configs.csv`."))
    blocks.append(("h2", "Figures"))
    for number, (slug, caption) in enumerate(FIGURES.items(), start=1):
        if slug in figures:
            blocks.append(("figure", slug, f"Figure {number}. {caption}"))
    if "fig8_asha" not in figures:
        blocks.append(("p", "Figure 8 (ASHA view) is drawn only for studies that used ASHA."))
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
