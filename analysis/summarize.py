"""Pure pandas data preparation for every figure, table, warning and finding of the report.

``analyze(load_results(path))`` returns an ``Analysis`` holding all of them; each function here
takes and returns DataFrames and is tested on hand-built frames. Selection uses validation
metrics only; test metrics are carried along to be reported, never to choose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import ResultsError
from analysis.load import MAX_METRICS, METRICS, Results, StudyInfo

CONFIG = ["optimizer", "batch_size", "lr"]
CURVE_METRICS = ("train_loss", "val_loss", "val_acc", "val_rmse")
TARGET_FRACTION = 0.95
LR_TOLERANCE = 0.10  # an LR is "forgiving" when within 10 % (relative) of the optimizer's best


@dataclass(frozen=True)
class Metric:
    """The selection metric: a validation (or training) column and whether lower is better."""

    name: str
    mode: str  # min | max

    @property
    def sign(self) -> float:
        """Multiply by this to make lower better."""
        return -1.0 if self.mode == "max" else 1.0


def resolve_metric(study: StudyInfo, name: str | None = None) -> Metric:
    """The --metric choice, defaulting to the study's train.metric and mode."""
    name = name or study.metric
    if name not in METRICS:
        raise ResultsError(f"--metric: unknown metric {name!r} (valid: {', '.join(METRICS)})")
    if name == study.metric:
        return Metric(name, study.mode)
    return Metric(name, "max" if name in MAX_METRICS else "min")


def test_columns(task: str) -> tuple[str, ...]:
    """Test metrics reported for the selected configurations."""
    return ("test_loss", "test_rmse") if task == "regression" else ("test_loss", "test_acc")


def score_trials(
    trials: pd.DataFrame, epochs: pd.DataFrame, metric: Metric, *, study_metric: str
) -> pd.DataFrame:
    """One row per trial with ``score`` (best over epochs) and ``final`` (last epoch) values.

    Diverged and failed trials get no score: they are counted, never averaged.
    """
    if metric.name == study_metric and f"best_{metric.name}" in trials:
        score, best_epoch = trials[f"best_{metric.name}"], trials["best_epoch"].astype(float)
    else:
        best = _best_from_epochs(epochs, metric)
        lookup = trials[["trial_id"]].merge(best, on="trial_id", how="left")
        score, best_epoch = lookup["score"], lookup["best_epoch"]
    unscored = trials["status"].isin(["diverged", "error"])
    columns = ["trial_id", *CONFIG, "seed", "status", "epochs_run", "steps", "train_time_s"]
    out = trials[columns + [c for c in ("test_loss", "test_acc", "test_rmse") if c in trials]]
    return out.assign(
        score=score.to_numpy(dtype=float),
        final=trials[f"final_{metric.name}"].to_numpy(dtype=float),
        best_epoch=best_epoch.to_numpy(dtype=float),
    ).assign(
        score=lambda f: f["score"].mask(unscored.to_numpy()),
        final=lambda f: f["final"].mask(unscored.to_numpy()),
    )


def _best_from_epochs(epochs: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """Best value of the metric over each trial's epochs and the epoch it came at."""
    values = epochs[["trial_id", "epoch", metric.name]].dropna()
    values = values.assign(key=values[metric.name] * metric.sign)
    first = values.sort_values(["trial_id", "key", "epoch"]).groupby("trial_id").head(1)
    first = first.rename(columns={metric.name: "score", "epoch": "best_epoch"})
    return first[["trial_id", "score", "best_epoch"]].astype({"best_epoch": float})


def config_summary(scored: pd.DataFrame) -> pd.DataFrame:
    """One row per (optimizer, batch_size, lr): counts and mean/std over seeds."""
    flags = scored.assign(
        diverged=scored["status"] == "diverged",
        early_stopped=scored["status"] == "early_stopped",
        failed=scored["status"] == "error",
    )
    out = (
        flags.groupby(CONFIG, sort=True)
        .agg(
            n_trials=("trial_id", "size"),
            n_scored=("score", "count"),
            n_diverged=("diverged", "sum"),
            n_early_stopped=("early_stopped", "sum"),
            n_error=("failed", "sum"),
            score_mean=("score", "mean"),
            score_std=("score", "std"),
            final_mean=("final", "mean"),
            final_std=("final", "std"),
            best_epoch_mean=("best_epoch", "mean"),
            epochs_run_mean=("epochs_run", "mean"),
            train_time_mean=("train_time_s", "mean"),
        )
        .reset_index()
    )
    return out.assign(diverged_frac=out["n_diverged"] / out["n_trials"])


def best_configs(configs: pd.DataFrame, metric: Metric, by: Sequence[str]) -> pd.DataFrame:
    """The best configuration within each group of ``by``, by mean score over seeds.

    A configuration with a diverged seed only wins when every one in its group had as many:
    configurations are ranked by diverged fraction first, then by the mean score.
    """
    ranked = configs.dropna(subset=["score_mean"]).assign(
        _key=lambda f: f["score_mean"] * metric.sign
    )
    ranked = ranked.sort_values([*by, "diverged_frac", "_key", "lr", "batch_size"])
    return ranked.groupby(list(by), sort=True).head(1).drop(columns="_key").reset_index(drop=True)


def divergence_table(scored: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: trials by status and the fraction that diverged."""
    counts = pd.crosstab(scored["optimizer"], scored["status"])
    out = pd.DataFrame({"optimizer": counts.index})
    for status in ("completed", "early_stopped", "diverged", "error"):
        values = counts[status] if status in counts else 0
        out[f"n_{status}"] = np.asarray(values, dtype=np.int64) * np.ones(len(out), np.int64)
    out.insert(1, "n_trials", counts.sum(axis=1).to_numpy(dtype=np.int64))
    out["diverged_frac"] = out["n_diverged"] / out["n_trials"]
    return out.reset_index(drop=True)


def best_table(
    scored: pd.DataFrame, best: pd.DataFrame, metric: Metric, tests: Sequence[str]
) -> pd.DataFrame:
    """The best configuration per optimizer, ranked, with the test metrics of its seeds."""
    chosen = scored.merge(best[CONFIG], on=CONFIG)
    chosen = chosen[chosen["status"] != "error"]
    test = chosen.groupby("optimizer").agg(
        **{f"{c}_{s}": (c, s) for c in tests for s in ("mean", "std")}
    )
    out = best.merge(test.reset_index(), on="optimizer", how="left")
    out = out.assign(_key=out["score_mean"] * metric.sign).sort_values(["_key", "optimizer"])
    out.insert(0, "rank", np.arange(1, len(out) + 1, dtype=np.int64))
    return out.drop(columns="_key").reset_index(drop=True)


def learning_curves(epochs: pd.DataFrame, scored: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer and epoch: mean and std over the seeds of its best configuration."""
    chosen = scored.merge(best[CONFIG], on=CONFIG)[["trial_id", "optimizer"]]
    rows = epochs.merge(chosen, on="trial_id")
    aggs = {f"{m}_{s}": (m, s) for m in CURVE_METRICS for s in ("mean", "std")}
    out = rows.groupby(["optimizer", "epoch"], sort=True).agg(n_seeds=("trial_id", "size"), **aggs)
    return out.reset_index()


def default_target(
    configs: pd.DataFrame, metric: Metric, fraction: float = TARGET_FRACTION
) -> float:
    """95 % of the best mean final metric: 0.95 x best for a maximized metric, best / 0.95 else."""
    finals = configs["final_mean"].dropna()
    if finals.empty:
        return float("nan")
    if metric.mode == "max":
        return float(finals.max() * fraction)
    return float(finals.min() / fraction)


def time_to_target(
    epochs: pd.DataFrame,
    scored: pd.DataFrame,
    best_per_batch: pd.DataFrame,
    metric: Metric,
    target: float,
) -> pd.DataFrame:
    """Per (optimizer, batch_size) at its best LR: steps, seconds and epochs to reach target."""
    chosen = scored.merge(best_per_batch[CONFIG], on=CONFIG)[
        ["trial_id", "optimizer", "batch_size"]
    ]
    rows = epochs.merge(chosen[["trial_id"]], on="trial_id")
    reached = rows[rows[metric.name] * metric.sign <= target * metric.sign]
    first = reached.sort_values(["trial_id", "epoch"]).groupby("trial_id").head(1)
    hit = chosen.merge(
        first[["trial_id", "epoch", "steps", "elapsed_s"]], on="trial_id", how="left"
    )
    out = hit.groupby(["optimizer", "batch_size"], sort=True).agg(
        n_seeds=("trial_id", "size"),
        n_reached=("epoch", "count"),
        epoch_mean=("epoch", "mean"),
        steps_mean=("steps", "mean"),
        steps_std=("steps", "std"),
        time_mean=("elapsed_s", "mean"),
        time_std=("elapsed_s", "std"),
    )
    return out.reset_index()


def final_distribution(scored: pd.DataFrame) -> pd.DataFrame:
    """Final metric of every scored trial (all LRs and batch sizes): figure 7's distributions."""
    rows = scored.dropna(subset=["final"])
    return rows[["trial_id", *CONFIG, "seed", "final"]].reset_index(drop=True)


def lr_robustness(
    configs: pd.DataFrame, best: pd.DataFrame, metric: Metric, tolerance: float = LR_TOLERANCE
) -> pd.DataFrame:
    """Per optimizer at its best batch size: how many LRs score within tolerance of its best."""
    at_best_bs = configs.merge(
        best[["optimizer", "batch_size", "score_mean"]],
        on=["optimizer", "batch_size"],
        suffixes=("", "_best"),
    )
    bound = at_best_bs["score_mean_best"] * (1 + metric.sign * tolerance)
    within = at_best_bs["score_mean"] * metric.sign <= bound * metric.sign
    out = (
        at_best_bs.assign(within=within)
        .groupby("optimizer", sort=True)
        .agg(batch_size=("batch_size", "first"), n_lrs=("lr", "size"), n_within=("within", "sum"))
    )
    return out.reset_index().astype({"n_within": np.int64})


def batch_size_trend(best_per_batch: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: best score and best LR at its smallest and largest batch size, and the
    slope of log(best LR) against log(batch size) (1: linear scaling, 0.5: square root)."""
    rows = best_per_batch.sort_values(["optimizer", "batch_size"])
    log_bs, log_lr = np.log(rows["batch_size"].astype(float)), np.log(rows["lr"])
    centred = rows.assign(
        x=log_bs - log_bs.groupby(rows["optimizer"]).transform("mean"),
        y=log_lr - log_lr.groupby(rows["optimizer"]).transform("mean"),
    )
    centred = centred.assign(xy=centred["x"] * centred["y"], xx=centred["x"] ** 2)
    grouped = centred.groupby("optimizer", sort=True)
    out = grouped.agg(
        n_batch_sizes=("batch_size", "size"),
        bs_small=("batch_size", "first"),
        bs_large=("batch_size", "last"),
        score_small=("score_mean", "first"),
        score_large=("score_mean", "last"),
        lr_small=("lr", "first"),
        lr_large=("lr", "last"),
        xy=("xy", "sum"),
        xx=("xx", "sum"),
    )
    slope = (out["xy"] / out["xx"]).where(out["xx"] > 0)
    return out.assign(lr_slope=slope).drop(columns=["xy", "xx"]).reset_index()


def trial_curves(epochs: pd.DataFrame, scored: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """Every trial's metric by epoch with its status, sorted by trial then epoch (figure 8)."""
    rows = epochs[["trial_id", "epoch", metric.name]].merge(
        scored[["trial_id", "status"]], on="trial_id"
    )
    rows = rows.rename(columns={metric.name: "value"})
    rows = rows[np.isfinite(rows["value"])]  # a diverged epoch's non-finite loss ends its curve
    return rows.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Check:
    """One of the tuning playbook's checks that fired: a kind for tests, a message for people."""

    kind: (
        str  # lr_edge | few_seeds | asha | unequal_lr_grids | mostly_diverged | errors | hp_varies
    )
    message: str


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def lr_edge_checks(best_per_batch: pd.DataFrame, lr_grids: dict) -> list[Check]:
    """An optimizer's best LR (at any batch size) at the low or high edge of its grid."""
    checks = []
    for optimizer, rows in best_per_batch.groupby("optimizer", sort=True):
        grid = lr_grids.get(optimizer, ())
        if len(grid) < 2:
            continue
        for edge, lr, side in (("smallest", min(grid), "below"), ("largest", max(grid), "above")):
            at_edge = rows[np.isclose(rows["lr"], lr, rtol=1e-9, atol=0)]
            if at_edge.empty:
                continue
            sizes = ", ".join(str(b) for b in at_edge["batch_size"])
            checks.append(
                Check(
                    "lr_edge",
                    f"{optimizer}: the best learning rate is the {edge} in its grid ({_fmt(lr)}) "
                    f"at batch size {sizes}; the optimum may lie outside: widen the grid "
                    f"{side} {_fmt(lr)}.",
                )
            )
    return checks


def seed_checks(scored: pd.DataFrame) -> list[Check]:
    """Fewer than 3 seeds: spreads and rankings are unreliable."""
    seeds = sorted(scored["seed"].unique())
    if len(seeds) >= 3:
        return []
    listed = ", ".join(str(s) for s in seeds)
    return [
        Check(
            "few_seeds",
            f"only {len(seeds)} seed(s) ({listed}): the spread over seeds and the ranking of close "
            "configurations are unreliable; use at least 3 seeds.",
        )
    ]


def asha_checks(study: StudyInfo, scored: pd.DataFrame) -> list[Check]:
    """ASHA stopped trials early: their final metrics are not comparable with completed ones."""
    if study.scheduler != "asha":
        return []
    stopped = int((scored["status"] == "early_stopped").sum())
    return [
        Check(
            "asha",
            f"ASHA was used: {stopped} of {len(scored)} trials were stopped early (rungs at epochs "
            f"{', '.join(map(str, study.rungs)) or 'none'}); their final metrics come from fewer "
            "epochs and are not comparable with those of completed trials.",
        )
    ]


def grid_size_checks(lr_grids: dict, optimizers: Sequence[str]) -> list[Check]:
    """LR grids of unequal size: the optimizers had unequal tuning budgets."""
    sizes = {opt: len(lr_grids.get(opt, ())) for opt in optimizers}
    if len(set(sizes.values())) <= 1:
        return []
    listed = ", ".join(f"{opt} {n}" for opt, n in sizes.items())
    return [
        Check(
            "unequal_lr_grids",
            f"the learning-rate grids differ in size ({listed}): the optimizers had unequal tuning "
            "budgets, which favours the one tuned more finely.",
        )
    ]


def divergence_checks(divergence: pd.DataFrame) -> list[Check]:
    """More than half of an optimizer's trials diverged; any trial failed with an error."""
    checks = [
        Check(
            "mostly_diverged",
            f"{row.optimizer}: {row.n_diverged} of {row.n_trials} trials diverged "
            f"({row.diverged_frac:.0%}); its learning-rate grid is mostly too high.",
        )
        for row in divergence.itertuples()
        if row.diverged_frac > 0.5
    ]
    failed = divergence[divergence["n_error"] > 0]
    if not failed.empty:
        listed = ", ".join(f"{r.optimizer} {r.n_error}" for r in failed.itertuples())
        checks.append(
            Check(
                "errors",
                f"trials failed with an error ({listed}); see the error column of "
                "trials.parquet. They count in the status table and nowhere else.",
            )
        )
    return checks


def hp_checks(trials: pd.DataFrame, hp_columns: Sequence[str]) -> list[Check]:
    """A hyperparameter other than lr varies within an optimizer: its values are pooled."""
    checks = []
    for column in hp_columns:
        counts = trials.groupby("optimizer", sort=True)[column].nunique()
        for optimizer in counts[counts > 1].index:
            checks.append(
                Check(
                    "hp_varies",
                    f"{optimizer}: {column} takes {counts[optimizer]} values; the analysis pools "
                    "them within each (learning rate, batch size).",
                )
            )
    return checks


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything the figures, tables and findings show, computed once from a Results."""

    results: Results
    metric: Metric
    scored: pd.DataFrame  # score_trials
    configs: pd.DataFrame  # config_summary
    best: pd.DataFrame  # best_table: one row per optimizer, ranked
    best_per_batch: pd.DataFrame  # best_configs by (optimizer, batch_size)
    divergence: pd.DataFrame
    curves: pd.DataFrame  # learning_curves
    target: float
    to_target: pd.DataFrame
    finals: pd.DataFrame  # final_distribution
    robustness: pd.DataFrame  # lr_robustness
    trend: pd.DataFrame  # batch_size_trend
    checks: tuple[Check, ...]

    @property
    def study(self) -> StudyInfo:
        return self.results.study

    @property
    def optimizers(self) -> tuple[str, ...]:
        """Optimizers present in the results, in the study's order (fixes their colours)."""
        present = set(self.scored["optimizer"])
        return tuple(opt for opt in self.study.optimizers if opt in present)


def analyze(results: Results, metric: str | None = None, target: float | None = None) -> Analysis:
    """Compute every summary of a results set; raises ResultsError for an unusable metric."""
    study = results.study
    chosen = resolve_metric(study, metric)
    if results.epochs[chosen.name].notna().sum() == 0:
        raise ResultsError(
            f"{results.location}: metric {chosen.name} has no values (task: {study.task})"
        )
    scored = score_trials(results.trials, results.epochs, chosen, study_metric=study.metric)
    configs = config_summary(scored)
    best = best_configs(configs, chosen, ["optimizer"])
    if best.empty:
        raise ResultsError(f"{results.location}: no trial has a finite {chosen.name}")
    per_batch = best_configs(configs, chosen, ["optimizer", "batch_size"])
    divergence = divergence_table(scored)
    present = set(scored["optimizer"])
    goal = default_target(configs, chosen) if target is None else float(target)
    checks = [
        *lr_edge_checks(per_batch, dict(study.lr_grids)),
        *seed_checks(scored),
        *asha_checks(study, scored),
        *grid_size_checks(dict(study.lr_grids), [o for o in study.optimizers if o in present]),
        *divergence_checks(divergence),
        *hp_checks(results.trials, results.hp_columns),
    ]
    return Analysis(
        results=results,
        metric=chosen,
        scored=scored,
        configs=configs,
        best=best_table(scored, best, chosen, test_columns(study.task)),
        best_per_batch=per_batch,
        divergence=divergence,
        curves=learning_curves(results.epochs, scored, best),
        target=goal,
        to_target=time_to_target(results.epochs, scored, per_batch, chosen, goal),
        finals=final_distribution(scored),
        robustness=lr_robustness(configs, best, chosen),
        trend=batch_size_trend(per_batch),
        checks=tuple(checks),
    )
