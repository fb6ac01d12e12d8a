"""analysis.plots: every figure renders, with the expected panels, axis labels and legend."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from analysis import plots
from analysis.load import load_results
from analysis.summarize import Metric, analyze, trial_curves
from analysis.synthetic import SyntheticSpec, write_results

SPEC = SyntheticSpec(
    optimizers={"sgd": (1.0, 0.1, 0.01), "adam": (1e-2, 1e-3, 1e-4)},
    batch_sizes=(16, 64),
    seeds=(0, 1, 2),
    epochs=6,
    scheduler="asha",
    grace_period=1,
    reduction_factor=2,
)


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    return analyze(load_results(write_results(SPEC, str(tmp_path_factory.mktemp("r")))))


@pytest.fixture(scope="module")
def figures(analysis):
    return plots.all_figures(analysis)


def panels(fig: Figure) -> list:
    """Data axes (colorbars excluded)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def legend_texts(fig: Figure) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


@pytest.mark.parametrize("slug", list(plots.FIGURES))
def test_every_figure_renders_to_png_and_svg(figures, slug):
    fig = figures[slug]
    assert isinstance(fig, Figure)
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=40)
    fig.savefig(svg, format="svg")
    assert png.getvalue().startswith(b"\x89PNG")
    assert b"<svg" in svg.getvalue()
    assert fig.get_suptitle() or panels(fig)[0].get_title()  # every figure says what it shows


def test_lr_sensitivity_has_a_panel_per_batch_size(figures):
    fig = figures["fig1_lr_sensitivity"]
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == ["batch size 16", "batch size 64"]
    assert all(ax.get_xlabel() == "learning rate (log scale)" for ax in axes)
    assert all(ax.get_xscale() == "log" for ax in axes)
    assert axes[0].get_ylabel() == "best validation loss (cross-entropy, nats)"
    assert legend_texts(fig) == ["sgd", "adam", "diverged (≥1 seed)", "early-stopped trial"]


def test_batch_size_figure(figures):
    fig = figures["fig2_batch_size"]
    (ax,) = panels(fig)
    assert ax.get_xlabel() == "batch size (samples, log2 scale)"
    assert ax.get_ylabel() == "best validation loss (cross-entropy, nats)"
    assert legend_texts(fig) == ["sgd", "adam"]


def test_heatmaps_one_panel_per_optimizer_with_outlines_and_hatches(figures, analysis):
    fig = figures["fig3_heatmaps"]
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == ["sgd", "adam"]
    assert len(fig.axes) == 3  # and one colorbar
    assert all(ax.get_xlabel() == "batch size (samples)" for ax in axes)
    for ax, opt in zip(axes, ["sgd", "adam"], strict=True):
        rectangles = [p for p in ax.patches if p.get_hatch() is None]
        hatched = [p for p in ax.patches if p.get_hatch()]
        configs = analysis.configs[analysis.configs["optimizer"] == opt]
        assert len(rectangles) == 2  # the best LR of each batch size
        assert len(hatched) == int((configs["n_diverged"] > 0).sum())
    assert "best LR of the batch size" in legend_texts(fig)


def test_learning_curves_show_train_and_validation(figures, analysis):
    fig = figures["fig4_learning_curves"]
    assert [ax.get_title() for ax in panels(fig)] == [
        "training loss",
        "validation loss",
        "validation accuracy",
    ]
    assert [ax.get_xlabel() for ax in panels(fig)] == ["epoch"] * 3
    best = analysis.best.set_index("optimizer")
    sgd = best.loc["sgd"]
    assert f"sgd (lr {sgd.lr:.3g}, batch {int(sgd.batch_size)})" in legend_texts(fig)


def test_best_lr_figure_has_reference_slopes(figures):
    fig = figures["fig5_best_lr_vs_batch_size"]
    (ax,) = panels(fig)
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    assert legend_texts(fig) == [
        "sgd",
        "adam",
        "slope 1 (linear scaling)",
        "slope 1/2 (square-root scaling)",
    ]


def test_time_to_target_has_steps_and_seconds(figures, analysis):
    fig = figures["fig6_time_to_target"]
    labels = [ax.get_ylabel() for ax in panels(fig)]
    assert labels == ["optimizer steps to target, log scale", "wall time to target (s), log scale"]
    assert f"{analysis.target:.4g}" in fig.get_suptitle()
    assert "perfect scaling (∝ 1/batch)" in legend_texts(fig)


def test_robustness_has_a_box_per_optimizer(figures):
    (ax,) = panels(figures["fig7_robustness"])
    ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    assert ticks == ["sgd", "adam"]
    assert ax.get_ylabel() == "final validation loss (cross-entropy, nats)"


def test_asha_view_draws_curves_by_status_and_rungs(figures, analysis):
    (ax,) = panels(figures["fig9_asha"])
    assert any(isinstance(c, LineCollection) for c in ax.collections)
    rungs = [t.get_text() for t in ax.texts]
    assert rungs == ["rung 1", "rung 2", "rung 3"]  # 1, 2, 4 < 6 epochs
    assert analysis.study.rungs == (1, 2, 4)
    assert {"completed", "early-stopped", "ASHA rung"} <= set(legend_texts(figures["fig9_asha"]))


def test_asha_view_only_when_asha_ran(tmp_path):
    spec = SyntheticSpec(optimizers={"sgd": (0.1, 0.01)}, batch_sizes=(16,), epochs=3)
    analysis = analyze(load_results(write_results(spec, str(tmp_path))))
    figures = plots.all_figures(analysis)
    assert "fig9_asha" not in figures and len(figures) == 8


def test_one_colour_per_optimizer_across_figures(figures):
    fig1 = panels(figures["fig1_lr_sensitivity"])[0]
    fig5 = panels(figures["fig5_best_lr_vs_batch_size"])[0]
    for ax in (fig1, fig5):
        colours = [line.get_color() for line in ax.get_lines()[:2]]
        assert colours == list(plots.PALETTE[:2])


def test_regression_curves_show_rmse(tmp_path):
    spec = SyntheticSpec(
        optimizers={"sgd": (0.1, 0.01)}, batch_sizes=(16,), epochs=3, task="regression"
    )
    analysis = analyze(load_results(write_results(spec, str(tmp_path))))
    fig = plots.plot_learning_curves(analysis.curves, analysis.best, task="regression")
    assert panels(fig)[2].get_ylabel() == "validation RMSE (target units)"


def test_asha_view_scales_with_a_line_collection_per_status(analysis):
    curves = trial_curves(analysis.results.epochs, analysis.scored, Metric("val_loss", "min"))
    fig = plots.plot_asha(curves, metric=Metric("val_loss", "min"), rungs=(2,))
    collections = [c for c in panels(fig)[0].collections if isinstance(c, LineCollection)]
    assert sum(len(c.get_segments()) for c in collections) == curves["trial_id"].nunique()


def test_budget_figure_has_a_curve_per_optimizer(figures, analysis):
    (ax,) = panels(figures["fig8_tuning_budget"])
    assert ax.get_ylabel() == "expected best validation loss (cross-entropy, nats)"
    assert ax.get_xlabel().startswith("configurations tried, k")
    labels = legend_texts(figures["fig8_tuning_budget"])
    assert labels == ["sgd (6 configurations)", "adam (6 configurations)"]  # equal grids: no line
    sgd = ax.get_lines()[0]
    assert list(sgd.get_xdata()) == [1, 2, 3, 4, 5, 6]
    curve = analysis.budget[analysis.budget["optimizer"] == "sgd"]
    assert list(sgd.get_ydata()) == pytest.approx(curve["expected"].tolist())


def test_budget_figure_marks_the_largest_equal_budget(analysis):
    budget = analysis.budget[(analysis.budget["optimizer"] == "sgd")]
    budget = pd.concat([budget, analysis.budget[analysis.budget["optimizer"] == "adam"].head(4)])
    budget.loc[budget["optimizer"] == "adam", "n_configs"] = 4
    fig = plots.plot_budget(budget, metric=Metric("val_loss", "min"))
    assert "largest equal budget" in legend_texts(fig)
    assert [line.get_xdata()[0] for line in panels(fig)[0].get_lines()][-1] == 4


def test_final_value_figures_say_so(analysis):
    metric = Metric("val_loss", "min")
    configs = analysis.configs.assign(final_mean=analysis.configs["best_mean"] * 2)
    colors = plots.optimizer_colors(["sgd", "adam"])
    fig1 = plots.plot_lr_sensitivity(
        configs, analysis.scored, metric=metric, value="final", colors=colors
    )
    assert panels(fig1)[0].get_ylabel() == "final validation loss (cross-entropy, nats)"
    assert "final-epoch validation loss" in fig1.get_suptitle()
    sgd = configs[(configs["optimizer"] == "sgd") & (configs["batch_size"] == 16)]
    sgd = sgd.dropna(subset=["final_mean"])
    line = panels(fig1)[0].get_lines()[0]  # sgd at batch size 16
    assert list(line.get_ydata()) == pytest.approx(sgd.sort_values("lr")["final_mean"].tolist())
    fig3 = plots.plot_heatmaps(configs, analysis.best_per_batch, metric=metric, value="final")
    colorbar = [ax for ax in fig3.axes if ax.get_label() == "<colorbar>"][0]
    assert colorbar.get_ylabel() == "mean final validation loss (cross-entropy, nats)"
    (panel,) = [ax for ax in panels(fig3) if ax.get_title() == "sgd"]
    sgd = configs[configs["optimizer"] == "sgd"].sort_values(["lr", "batch_size"])
    cells = [t.get_text() for t in panel.texts]
    assert cells == [f"{v:.3g}" for v in sgd["final_mean"] if np.isfinite(v)]
