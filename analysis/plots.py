"""One function per report figure; each takes summary frames and returns a matplotlib Figure.

The caller saves (``analysis.report`` does). Figures are built with ``matplotlib.figure.Figure``
and the object API: no pyplot state, so nothing leaks between figures or into tests, and no
GUI backend is ever chosen (``Figure.savefig`` renders PNG with Agg, SVG with the SVG backend).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator, ScalarFormatter

from analysis.summarize import Analysis, Metric, trial_curves

# Okabe-Ito, a colour-blind-safe palette; vermillion is kept last because red marks divergence.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#000000", "#F0E442", "#D55E00")
DIVERGED = "#D00000"
STATUS_COLORS = {
    "completed": "#0072B2",
    "early_stopped": "#999999",
    "diverged": DIVERGED,
    "error": "#000000",
}
_METRIC_NAMES = {
    "val_loss": "validation loss",
    "val_acc": "validation accuracy",
    "val_rmse": "validation RMSE",
    "train_loss": "training loss",
}
_LOSS_NAMES = {"cross_entropy": "cross-entropy, nats", "mse": "MSE"}
_VALUE_WORDS = {"best": "best-epoch", "final": "final-epoch"}
LR_LABEL = "learning rate (log scale)"
BS_LABEL = "batch size (samples, log2 scale)"


def optimizer_colors(optimizers: Sequence[str]) -> dict[str, str]:
    """One fixed colour per optimizer, by its position in the study."""
    return {opt: PALETTE[i % len(PALETTE)] for i, opt in enumerate(optimizers)}


def metric_label(metric: str, loss: str = "cross_entropy", prefix: str = "") -> str:
    """Axis label with units, e.g. 'best validation loss (cross-entropy, nats)'."""
    name = _METRIC_NAMES.get(metric, metric)
    if metric in ("val_loss", "train_loss"):
        unit = _LOSS_NAMES.get(loss, loss)
    elif metric == "val_acc":
        unit = "fraction correct"
    else:
        unit = "target units"
    return f"{prefix}{name} ({unit})".strip()


def _colors(colors: Mapping[str, str] | None, optimizers: pd.Series) -> dict[str, str]:
    return dict(colors) if colors else optimizer_colors(sorted(optimizers.unique()))


def _panels(n: int, *, ncols: int = 3, width: float = 4.2, height: float = 3.4, **kw):
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    # at least 9 in wide: the suptitle and the outside legend need room even with one panel
    fig = Figure(
        figsize=(max(9.0, width * ncols + 1.6), height * nrows + 0.6), layout="constrained"
    )
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, **kw)).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, list(axes[:n])


def _log_y(ax) -> None:
    """Log y axis labelled in plain numbers; minor ticks labelled only when under one decade."""
    ax.set_yscale("log")
    _plain_log_labels(ax.yaxis)


def _plain_log_labels(axis) -> None:
    def minor(value: float, _pos: int) -> str:
        low, high = axis.get_view_interval()
        return f"{value:.3g}" if 0 < low and high / low < 10 else ""

    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:.3g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


def _log_if_wide(ax, values: pd.Series | np.ndarray, ratio: float = 10.0) -> None:
    """Log y axis when the values span more than ``ratio`` (a decade by default: losses across a
    LR grid do)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > ratio:
        _log_y(ax)


def _set_log2_x(ax, batch_sizes: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(int(b) for b in batch_sizes)))
    ax.get_xaxis().set_major_formatter(ScalarFormatter())
    ax.get_xaxis().set_minor_locator(NullLocator())
    if len(set(batch_sizes)) > 6:
        ax.tick_params(axis="x", labelrotation=45)


def _outside_legend(fig: Figure, handles: list, *, title: str | None = None) -> None:
    fig.legend(handles=handles, loc="outside right center", title=title, fontsize=8)


def plot_lr_sensitivity(
    configs: pd.DataFrame,
    scored: pd.DataFrame,
    *,
    metric: Metric,
    colors: Mapping[str, str] | None = None,
    loss: str = "cross_entropy",
    value: str = "best",
) -> Figure:
    """Figure 1: metric vs learning rate, one line per optimizer, one panel per batch size.

    ``value`` is best (best epoch of each trial) or final (its last epoch)."""
    colors = _colors(colors, configs["optimizer"])
    batch_sizes = sorted(configs["batch_size"].unique())
    fig, axes = _panels(len(batch_sizes), sharey=True)
    lr_range = (configs["lr"].min() / 1.5, configs["lr"].max() * 1.5)  # diverged LRs included
    edge = 0.97 if metric.mode == "min" else 0.03  # the worse end of the y axis
    step = -0.05 if metric.mode == "min" else 0.05
    for ax, batch_size in zip(axes, batch_sizes, strict=True):
        panel = configs[configs["batch_size"] == batch_size]
        for row, (opt, color) in enumerate(colors.items()):
            rows = panel[panel["optimizer"] == opt].sort_values("lr")
            scoredrows = rows.dropna(subset=[f"{value}_mean"])
            mean, spread = scoredrows[f"{value}_mean"], scoredrows[f"{value}_std"].fillna(0)
            ax.plot(scoredrows["lr"], mean, "o-", color=color, ms=4)
            ax.fill_between(
                scoredrows["lr"],
                mean - spread,
                mean + spread,
                color=color,
                alpha=0.2,
                lw=0,
            )
            diverged = rows[rows["n_diverged"] > 0]
            if not diverged.empty:
                y = edge + step * row
                ax.scatter(
                    diverged["lr"],
                    np.full(len(diverged), y),
                    marker="x",
                    color=DIVERGED,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                    zorder=5,
                )
                ax.text(0.01, y, opt, transform=ax.transAxes, color=color, fontsize=7, va="center")
        early = scored[(scored["batch_size"] == batch_size) & (scored["status"] == "early_stopped")]
        ax.scatter(
            early["lr"],
            early[value],
            s=14,
            facecolors="none",
            linewidths=0.7,
            edgecolors=[colors.get(o, "#777777") for o in early["optimizer"]],
        )
        ax.set_xscale("log")
        ax.set_xlim(lr_range)
        ax.set_title(f"batch size {batch_size}")
        ax.set_xlabel(LR_LABEL)
    axes[0].set_ylabel(metric_label(metric.name, loss, f"{value} "))
    _log_if_wide(axes[0], configs[f"{value}_mean"])
    handles = [Line2D([], [], color=c, marker="o", label=o) for o, c in colors.items()]
    handles += [
        Line2D([], [], color=DIVERGED, marker="x", ls="", label="diverged (≥1 seed)"),
        Line2D([], [], color="#555555", marker="o", mfc="none", ls="", label="early-stopped trial"),
    ]
    _outside_legend(fig, handles, title="band: ±1 std over seeds")
    fig.suptitle(
        f"Learning-rate sensitivity: {_VALUE_WORDS[value]} "
        f"{_METRIC_NAMES.get(metric.name, metric.name)} vs learning rate, mean over seeds"
    )
    return fig


def plot_batch_size(
    best_per_batch: pd.DataFrame,
    *,
    metric: Metric,
    colors: Mapping[str, str] | None = None,
    loss: str = "cross_entropy",
) -> Figure:
    """Figure 2: per optimizer, the best-over-LR metric vs batch size, seed std as error bars."""
    colors = _colors(colors, best_per_batch["optimizer"])
    fig, (ax,) = _panels(1, width=6.0, height=4.2)
    annotate = len(best_per_batch) <= 40
    for opt, color in colors.items():
        rows = best_per_batch[best_per_batch["optimizer"] == opt].sort_values("batch_size")
        if rows.empty:
            continue
        ax.errorbar(
            rows["batch_size"],
            rows["score_mean"],
            yerr=rows["score_std"].fillna(0),
            color=color,
            marker="o",
            capsize=3,
            label=opt,
        )
        for r in rows.itertuples() if annotate else ():
            ax.annotate(
                f"lr {r.lr:.3g}",
                (r.batch_size, r.score_mean),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=color,
            )
    _set_log2_x(ax, best_per_batch["batch_size"])
    _log_if_wide(ax, best_per_batch["score_mean"])
    ax.set_xlabel(BS_LABEL)
    ax.set_ylabel(metric_label(metric.name, loss, "best "))
    ax.legend(title="optimizer (label: its best LR)", fontsize=8)
    ax.set_title("Batch size in isolation: best over learning rates, mean ± std over seeds")
    return fig


def plot_heatmaps(
    configs: pd.DataFrame,
    best_per_batch: pd.DataFrame,
    *,
    metric: Metric,
    colors: Mapping[str, str] | None = None,
    loss: str = "cross_entropy",
    value: str = "best",
) -> Figure:
    """Figure 3: LR x batch size per optimizer; best LR per batch size boxed, diverged hatched.

    ``value`` is best or final; ``best_per_batch`` should be chosen on the same value."""
    colors = _colors(colors, configs["optimizer"])
    optimizers = [o for o in colors if (configs["optimizer"] == o).any()]
    fig, axes = _panels(len(optimizers), width=3.8, height=3.8)
    values = configs[f"{value}_mean"].dropna()
    vmin, vmax = (values.min(), values.max()) if not values.empty else (0.0, 1.0)
    norm = LogNorm(vmin, vmax) if vmin > 0 and vmax / vmin > 10 else None
    cmap = "viridis_r" if metric.mode == "min" else "viridis"  # brighter is always better
    image = None
    for ax, opt in zip(axes, optimizers, strict=True):
        rows = configs[configs["optimizer"] == opt]
        grid = rows.pivot(index="lr", columns="batch_size", values=f"{value}_mean").sort_index()
        diverged = rows.pivot(index="lr", columns="batch_size", values="n_diverged")
        diverged = diverged.reindex_like(grid).fillna(0)
        kw = {"norm": norm} if norm else {"vmin": vmin, "vmax": vmax}
        image = ax.imshow(
            grid.to_numpy(dtype=float), origin="lower", aspect="auto", cmap=cmap, **kw
        )
        ax.set_facecolor("#DDDDDD")
        lr_pos = {lr: i for i, lr in enumerate(grid.index)}
        bs_pos = {bs: j for j, bs in enumerate(grid.columns)}
        for i, j in zip(*np.nonzero(diverged.to_numpy() > 0), strict=True):
            ax.add_patch(
                Rectangle(
                    (j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xxx", edgecolor=DIVERGED, lw=0
                )
            )
        for r in best_per_batch[best_per_batch["optimizer"] == opt].itertuples():
            ax.add_patch(
                Rectangle(
                    (bs_pos[r.batch_size] - 0.5, lr_pos[r.lr] - 0.5),
                    1,
                    1,
                    fill=False,
                    edgecolor="black",
                    lw=2.2,
                )
            )
        if grid.size <= 49:
            for (i, j), cell in np.ndenumerate(grid.to_numpy(dtype=float)):
                if np.isfinite(cell):
                    ax.text(
                        j,
                        i,
                        f"{cell:.3g}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if _is_dark(image, cell) else "black",
                    )
        ax.set_xticks(
            range(grid.shape[1]),
            [str(b) for b in grid.columns],
            rotation=45 if grid.shape[1] > 6 else 0,
        )
        ax.set_yticks(range(grid.shape[0]), [f"{lr:.3g}" for lr in grid.index])
        ax.set_xlabel("batch size (samples)")
        ax.set_ylabel("learning rate")
        ax.set_title(opt, color=colors[opt], fontweight="bold")
    bar = fig.colorbar(image, ax=axes, label=metric_label(metric.name, loss, f"mean {value} "))
    if norm is not None:
        _plain_log_labels(bar.ax.yaxis)
    handles = [
        Patch(fill=False, edgecolor="black", lw=2, label="best LR of the batch size"),
        Patch(fill=False, hatch="xxx", edgecolor=DIVERGED, label="≥1 seed diverged"),
        Patch(facecolor="#DDDDDD", label="no finite value"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(
        f"Learning rate × batch size per optimizer: {_VALUE_WORDS[value]} value, mean over seeds "
        "(brighter is better)"
    )
    return fig


def _is_dark(image, value: float) -> bool:
    red, green, blue, _ = image.cmap(image.norm(value))
    return 0.299 * red + 0.587 * green + 0.114 * blue < 0.5


def plot_learning_curves(
    curves: pd.DataFrame,
    best: pd.DataFrame,
    *,
    task: str = "classification",
    colors: Mapping[str, str] | None = None,
    loss: str = "cross_entropy",
) -> Figure:
    """Figure 4: training/validation curves of each optimizer's best configuration, ±std band."""
    colors = _colors(colors, curves["optimizer"])
    panels = ["train_loss", "val_loss", "val_rmse" if task == "regression" else "val_acc"]
    fig, axes = _panels(len(panels), width=4.4)
    configs = {
        r.optimizer: f"{r.optimizer} (lr {r.lr:.3g}, batch {r.batch_size})"
        for r in best.itertuples()
    }
    for ax, name in zip(axes, panels, strict=True):
        for opt, color in colors.items():
            rows = curves[curves["optimizer"] == opt]
            mean, std = rows[f"{name}_mean"], rows[f"{name}_std"].fillna(0)
            ax.plot(rows["epoch"], mean, color=color, label=configs.get(opt, opt))
            ax.fill_between(rows["epoch"], mean - std, mean + std, color=color, alpha=0.2, lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric_label(name, loss))
        ax.set_title(_METRIC_NAMES[name])
        if name != "val_acc":
            _log_if_wide(ax, curves[f"{name}_mean"])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside right center",
        fontsize=8,
        title="best configuration (band ±1 std)",
    )
    fig.suptitle("Learning curves of each optimizer's best configuration, mean over seeds")
    return fig


def plot_best_lr(
    best_per_batch: pd.DataFrame, *, colors: Mapping[str, str] | None = None
) -> Figure:
    """Figure 5: best LR vs batch size (log-log) with reference slopes 1 and 1/2."""
    colors = _colors(colors, best_per_batch["optimizer"])
    fig, (ax,) = _panels(1, width=6.0, height=4.4)
    for opt, color in colors.items():
        rows = best_per_batch[best_per_batch["optimizer"] == opt].sort_values("batch_size")
        if not rows.empty:
            ax.plot(rows["batch_size"], rows["lr"], "o-", color=color, label=opt)
    sizes = np.sort(best_per_batch["batch_size"].unique()).astype(float)
    bs0 = float(np.exp(np.log(sizes).mean()))
    lr0 = float(np.exp(np.log(best_per_batch["lr"]).mean()))
    for slope, style, text in (
        (1.0, "--", "slope 1 (linear scaling)"),
        (0.5, ":", "slope 1/2 (square-root scaling)"),
    ):
        ax.plot(sizes, lr0 * (sizes / bs0) ** slope, style, color="#666666", label=text)
    _set_log2_x(ax, sizes)
    _log_y(ax)
    ax.set_xlabel(BS_LABEL)
    ax.set_ylabel("best learning rate (log scale)")
    ax.legend(fontsize=8)
    ax.set_title("Best learning rate vs batch size, with reference scaling slopes")
    return fig


def plot_time_to_target(
    to_target: pd.DataFrame,
    *,
    metric: Metric,
    target: float,
    colors: Mapping[str, str] | None = None,
) -> Figure:
    """Figure 6: steps and wall time to reach the target vs batch size, with perfect scaling."""
    colors = _colors(colors, to_target["optimizer"])
    fig, axes = _panels(2, width=4.6, height=3.8)
    reached = to_target.dropna(subset=["steps_mean"])
    panels = (("steps", "optimizer steps to target"), ("time", "wall time to target (s)"))
    for ax, (column, label) in zip(axes, panels, strict=True):
        for opt, color in colors.items():
            rows = reached[reached["optimizer"] == opt].sort_values("batch_size")
            if rows.empty:
                continue
            ax.errorbar(
                rows["batch_size"],
                rows[f"{column}_mean"],
                yerr=rows[f"{column}_std"].fillna(0),
                color=color,
                marker="o",
                capsize=3,
                label=opt,
            )
            first = rows.iloc[0]
            perfect = first[f"{column}_mean"] * first["batch_size"] / rows["batch_size"]
            ax.plot(rows["batch_size"], perfect, "--", color=color, lw=1, alpha=0.7)
        if reached.empty:
            ax.text(
                0.5, 0.5, "no configuration reached the target", ha="center", transform=ax.transAxes
            )
        else:
            _set_log2_x(ax, to_target["batch_size"])
            _log_y(ax)
        ax.set_xlabel(BS_LABEL)
        ax.set_ylabel(f"{label}, log scale")
    handles = [Line2D([], [], color=c, marker="o", label=o) for o, c in colors.items()]
    handles.append(Line2D([], [], color="#666666", ls="--", label="perfect scaling (∝ 1/batch)"))
    _outside_legend(fig, handles, title="best LR per batch size")
    missed = int((to_target["n_reached"] == 0).sum())
    if missed:
        axes[0].text(
            0.02,
            0.02,
            f"{missed} of {len(to_target)} (optimizer, batch size) never "
            "reached it (see the report)",
            transform=axes[0].transAxes,
            fontsize=7,
        )
    fig.suptitle(
        f"Steps and time to reach {_METRIC_NAMES.get(metric.name, metric.name)} "
        f"{'≥' if metric.mode == 'max' else '≤'} {target:.4g}, mean ± std over seeds"
    )
    return fig


def plot_robustness(
    finals: pd.DataFrame,
    best: pd.DataFrame,
    divergence: pd.DataFrame,
    *,
    metric: Metric,
    colors: Mapping[str, str] | None = None,
    loss: str = "cross_entropy",
) -> Figure:
    """Figure 7: each optimizer's final-metric distribution over all LRs and batch sizes."""
    colors = _colors(colors, finals["optimizer"])
    optimizers = [o for o in colors if (divergence["optimizer"] == o).any()]
    fig, (ax,) = _panels(1, width=max(5.0, 1.5 * len(optimizers) + 2), height=4.4)
    counts = divergence.set_index("optimizer")
    for i, opt in enumerate(optimizers):
        values = finals.loc[finals["optimizer"] == opt, "final"].to_numpy(dtype=float)
        if values.size:
            box = ax.boxplot(
                [values],
                positions=[i],
                widths=0.45,
                patch_artist=True,
                flierprops={"markersize": 2, "alpha": 0.4},
                medianprops={"color": "black"},
            )
            box["boxes"][0].set(facecolor=colors[opt], alpha=0.45)
        row = best[best["optimizer"] == opt]
        if not row.empty:
            ax.errorbar(
                [i + 0.35],
                row["final_mean"],
                yerr=row["final_std"].fillna(0),
                marker="D",
                color=colors[opt],
                capsize=4,
                markeredgecolor="black",
            )
    labels = [
        f"{o}\n{counts.at[o, 'n_trials']} trials,\n{counts.at[o, 'n_diverged']} diverged"
        for o in optimizers
    ]
    ax.set_xticks(range(len(optimizers)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(optimizers) - 0.2)
    _log_if_wide(ax, finals["final"])
    ax.set_xlabel("optimizer (diverged trials are left out of the box)")
    ax.set_ylabel(metric_label(metric.name, loss, "final "))
    handles = [
        Patch(facecolor="#BBBBBB", label="all LRs × batch sizes (quartiles, 1.5 IQR whiskers)"),
        Line2D([], [], marker="D", color="#444444", ls="", label="best-tuned (mean ± std)"),
    ]
    ax.legend(handles=handles, fontsize=8)
    ax.set_title("Optimizer robustness: final metric over the whole grid vs best-tuned")
    return fig


def plot_budget(
    budget: pd.DataFrame,
    *,
    metric: Metric,
    colors: Mapping[str, str] | None = None,
    loss: str = "cross_entropy",
) -> Figure:
    """Figure 8: expected best value after k configurations drawn at random from each
    optimizer's grid (exact, without replacement), ±1 sd band; equal budgets end at the
    smallest grid."""
    colors = _colors(colors, budget["optimizer"])
    fig, (ax,) = _panels(1, width=6.4, height=4.4)
    for opt, color in colors.items():
        rows = budget[budget["optimizer"] == opt].dropna(subset=["expected"])
        if rows.empty:
            continue
        label = f"{opt} ({int(rows['n_configs'].iloc[0])} configurations)"
        ax.plot(rows["k"], rows["expected"], "o-", color=color, ms=3, label=label)
        ax.fill_between(
            rows["k"], rows["band_low"], rows["band_high"], color=color, alpha=0.15, lw=0
        )
    common = int(budget.groupby("optimizer")["n_configs"].first().min())
    if budget["n_configs"].nunique() > 1:
        ax.axvline(common, color="#333333", ls=":", lw=1, label="largest equal budget")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.set_xlabel("configurations tried, k (drawn at random from the grid; log scale)")
    ax.set_ylabel(metric_label(metric.name, loss, "expected best "))
    # the curves fall steeply then flatten near the grid's best: log y keeps that end readable
    _log_if_wide(ax, budget[["band_low", "band_high"]].to_numpy().ravel(), ratio=2.0)
    ax.legend(fontsize=8, title="band: ±1 sd over draws, within the grid's range")
    ax.set_title("Tuning budget: expected best value of k random configurations (mean over seeds)")
    return fig


def plot_asha(
    curves: pd.DataFrame,
    *,
    metric: Metric,
    rungs: Sequence[int],
    loss: str = "cross_entropy",
) -> Figure:
    """Figure 9: every trial's curve coloured by status, ASHA rungs marked."""
    fig, (ax,) = _panels(1, width=7.0, height=4.6)
    alpha = float(np.clip(40 / max(len(curves["trial_id"].unique()), 1), 0.05, 0.8))
    for status, color in STATUS_COLORS.items():
        rows = curves[curves["status"] == status]
        if rows.empty:
            continue
        ids = rows["trial_id"].to_numpy()
        starts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
        points = np.column_stack([rows["epoch"].to_numpy(float), rows["value"].to_numpy(float)])
        lines = LineCollection(np.split(points, starts), colors=color, linewidths=0.8, alpha=alpha)
        ax.add_collection(lines)
        if status == "diverged":
            ends = points[np.append(starts, len(points)) - 1]
            ax.scatter(ends[:, 0], ends[:, 1], marker="x", color=color, s=14, zorder=4)
    ax.autoscale_view()
    for k, rung in enumerate(rungs, start=1):
        ax.axvline(rung, color="#333333", ls=":", lw=1)
        ax.text(
            rung, 1.01, f"rung {k}", transform=ax.get_xaxis_transform(), ha="center", fontsize=7
        )
    if metric.name != "val_acc":
        _log_if_wide(ax, curves["value"])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric_label(metric.name, loss))
    present = set(curves["status"])
    handles = [
        Line2D([], [], color=c, label=s.replace("_", "-"))
        for s, c in STATUS_COLORS.items()
        if s in present
    ]
    handles.append(Line2D([], [], color="#333333", ls=":", label="ASHA rung"))
    ax.legend(handles=handles, fontsize=8, title="trial status")
    ax.set_title(
        "ASHA: every trial's curve by status, with the rungs where trials were cut", pad=14
    )
    return fig


# (slug, caption) for each figure, in report order.
FIGURES = {
    "fig1_lr_sensitivity": "Learning-rate sensitivity per batch size",
    "fig2_batch_size": "Batch size in isolation",
    "fig3_heatmaps": "Learning rate × batch size heatmaps",
    "fig4_learning_curves": "Learning curves of the best configurations",
    "fig5_best_lr_vs_batch_size": "Best learning rate vs batch size",
    "fig6_time_to_target": "Steps and wall time to target",
    "fig7_robustness": "Optimizer robustness",
    "fig8_tuning_budget": "Expected best value vs tuning budget",
    "fig9_asha": "ASHA view",
}


def all_figures(analysis: Analysis) -> dict[str, Figure]:
    """Every report figure for an analysis, keyed by slug; the ASHA view only when ASHA ran."""
    a, study, metric = analysis, analysis.study, analysis.metric
    colors = optimizer_colors(a.optimizers)
    figures = {
        "fig1_lr_sensitivity": plot_lr_sensitivity(
            a.configs, a.scored, metric=metric, colors=colors, loss=study.loss, value=a.value
        ),
        "fig2_batch_size": plot_batch_size(
            a.best_per_batch, metric=metric, colors=colors, loss=study.loss
        ),
        "fig3_heatmaps": plot_heatmaps(
            a.configs,
            a.shown_per_batch,
            metric=metric,
            colors=colors,
            loss=study.loss,
            value=a.value,
        ),
        "fig4_learning_curves": plot_learning_curves(
            a.curves, a.best, task=study.task, colors=colors, loss=study.loss
        ),
        "fig5_best_lr_vs_batch_size": plot_best_lr(a.best_per_batch, colors=colors),
        "fig6_time_to_target": plot_time_to_target(
            a.to_target, metric=metric, target=a.target, colors=colors
        ),
        "fig7_robustness": plot_robustness(
            a.finals, a.best, a.divergence, metric=metric, colors=colors, loss=study.loss
        ),
        "fig8_tuning_budget": plot_budget(a.budget, metric=metric, colors=colors, loss=study.loss),
    }
    if study.scheduler == "asha":
        curves = trial_curves(a.results.epochs, a.scored, metric)
        figures["fig9_asha"] = plot_asha(curves, metric=metric, rungs=study.rungs, loss=study.loss)
    return figures
