"""Pure pandas data preparation for every figure, table, warning and finding of the report.

``analyze(load_results(path))`` returns an ``Analysis`` holding all of them; each function here
takes and returns DataFrames and is tested on hand-built frames. Selection uses validation
metrics only; test metrics are carried along to be reported, never to choose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import ResultsError
from analysis.load import MAX_METRICS, METRICS, Results, StudyInfo

CONFIG = ["optimizer", "batch_size", "lr"]
TEST_METRICS = ("test_loss", "test_acc", "test_rmse")
# the test metric that measures what each validation metric measures
TEST_OF = {"val_loss": "test_loss", "val_acc": "test_acc", "val_rmse": "test_rmse"}
VALUES = ("best", "final")  # --value: best-over-epochs or last-epoch values in figures 1 and 3
CONFIDENCE = 0.95
MAX_SEEDS = 100_000  # "seeds needed" beyond this is reported as more than it
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
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    metric: Metric,
    *,
    study_metric: str,
    select: str = "best_epoch",
) -> pd.DataFrame:
    """One row per trial with ``best`` (best over epochs), ``final`` (last epoch) and ``score``.

    ``score`` is the value configurations are chosen on: ``best`` under train.select
    best_epoch, ``final`` under final. Diverged and failed trials get no value: they are
    counted, never averaged. ``tested`` says whether the trial has test metrics.
    """
    if metric.name == study_metric and f"best_{metric.name}" in trials:
        best, best_epoch = trials[f"best_{metric.name}"], trials["best_epoch"].astype(float)
    else:
        found = _best_from_epochs(epochs, metric)
        lookup = trials[["trial_id"]].merge(found, on="trial_id", how="left")
        best, best_epoch = lookup["score"], lookup["best_epoch"]
    unscored = trials["status"].isin(["diverged", "error"]).to_numpy()
    columns = ["trial_id", *CONFIG, "seed", "status", "epochs_run", "steps", "train_time_s"]
    tests = [c for c in TEST_METRICS if c in trials]
    best = pd.Series(best.to_numpy(dtype=float)).mask(unscored)
    final = pd.Series(trials[f"final_{metric.name}"].to_numpy(dtype=float)).mask(unscored)
    test_epoch = trials["test_epoch"] if "test_epoch" in trials else pd.Series(np.nan, trials.index)
    out = trials[columns + tests].assign(
        score=(best if select == "best_epoch" else final).to_numpy(),
        best=best.to_numpy(),
        final=final.to_numpy(),
        best_epoch=best_epoch.to_numpy(dtype=float),
        test_epoch=test_epoch.to_numpy(dtype=float),
    )
    return out.assign(tested=out[tests].notna().any(axis=1) if tests else False)


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
            n_tested=("tested", "sum"),
            score_mean=("score", "mean"),
            score_std=("score", "std"),
            best_mean=("best", "mean"),
            best_std=("best", "std"),
            final_mean=("final", "mean"),
            final_std=("final", "std"),
            best_epoch_mean=("best_epoch", "mean"),
            test_epoch_mean=("test_epoch", "mean"),
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


# ---- paired comparison over seeds ------------------------------------------------------


def seed_values(scored: pd.DataFrame, best: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """Per optimizer and seed of its best configuration: the value it was chosen on (``score``)
    and the matching test metric (``test``, NaN where that seed has none)."""
    test = TEST_OF.get(metric.name)
    chosen = scored.merge(best[CONFIG], on=CONFIG)
    tests = chosen[test].to_numpy(dtype=float) if test in chosen else np.nan
    out = chosen[["optimizer", "seed", "score"]].assign(test=tests)
    return out.sort_values(["optimizer", "seed"], kind="stable").reset_index(drop=True)


def t_quantile(confidence: float, df: np.ndarray | float) -> np.ndarray | float:
    """Two-sided Student t quantile: a ``confidence`` interval's half-width is this x sd/sqrt(n)."""
    from scipy import stats  # imported here: only the paired comparison needs it

    return stats.t.ppf((1 + confidence) / 2, df)


def seeds_needed(mean: float, std: float, confidence: float = CONFIDENCE) -> float:
    """Smallest n >= 2 with t_{(1+c)/2, n-1} x std / sqrt(n) < |mean|: the seeds at which the
    paired t-interval would exclude zero if the mean and sd stayed as observed.

    NaN without a spread (fewer than 2 seeds); inf when mean is 0 or n would exceed MAX_SEEDS.
    """
    if not (np.isfinite(mean) and np.isfinite(std)):
        return float("nan")
    if mean == 0:
        return float("inf")
    n = np.arange(2, MAX_SEEDS + 1)
    enough = t_quantile(confidence, n - 1) * std / np.sqrt(n) < abs(mean)
    return float(n[np.argmax(enough)]) if enough.any() else float("inf")


def paired_interval(diffs: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean and sd of paired differences, their t-interval, whether it excludes zero, and the
    seeds needed for it to; fewer than 2 differences give no interval."""
    diffs = np.asarray(diffs, dtype=float)
    n = len(diffs)
    mean = float(diffs.mean()) if n else float("nan")
    std = float(diffs.std(ddof=1)) if n >= 2 else float("nan")
    half = float(t_quantile(confidence, n - 1)) * std / np.sqrt(n) if n >= 2 else float("nan")
    low, high = mean - half, mean + half
    return {
        "n_seeds": n,
        "diff_mean": mean,
        "diff_std": std,
        "ci_low": low,
        "ci_high": high,
        "settled": bool(n >= 2 and (low > 0 or high < 0)),
        "seeds_needed": seeds_needed(mean, std, confidence),
    }


PAIR_COLUMNS = [
    "optimizer_a",
    "optimizer_b",
    "value",
    "n_seeds",
    "diff_mean",
    "diff_std",
    "ci_low",
    "ci_high",
    "settled",
    "favours",
    "seeds_needed",
]


def paired_comparison(
    values: pd.DataFrame, order: Sequence[str], metric: Metric, confidence: float = CONFIDENCE
) -> pd.DataFrame:
    """Every pair of optimizers at their best configurations, ``optimizer_a`` ranked above
    ``optimizer_b``: the per-seed differences a - b summarised with a paired t-interval.

    The differences are of the test metric when every seed of both configurations has one,
    else of the validation value they were chosen on; ``value`` names the column used.
    """
    rows = []
    for i, first in enumerate(order):
        for second in order[i + 1 :]:
            a = values[values["optimizer"] == first].set_index("seed")
            b = values[values["optimizer"] == second].set_index("seed")
            tested = TEST_OF.get(metric.name) is not None and not a.empty and not b.empty
            tested = tested and bool(a["test"].notna().all() and b["test"].notna().all())
            column = "test" if tested else "score"
            diffs = (a[column] - b[column]).dropna()  # aligned on seed: only seeds both have
            stats = paired_interval(diffs.to_numpy(), confidence)
            side = np.sign(stats["diff_mean"] * metric.sign)
            favours = first if side < 0 else second if side > 0 else "neither"
            name = TEST_OF[metric.name] if tested else metric.name
            rows.append({"optimizer_a": first, "optimizer_b": second, "value": name, **stats,
                         "favours": favours})  # fmt: skip
    return pd.DataFrame(rows, columns=PAIR_COLUMNS).astype({"n_seeds": np.int64})


# ---- tuning budget -----------------------------------------------------------------------


def expected_best(values: np.ndarray, k: int) -> tuple[float, float, float]:
    """Mean and sd of the best of k configurations drawn without replacement from a grid, and
    the probability that none of the k has a value; exact, no sampling.

    ``values`` is ordered worst first, configurations without a value (NaN) first of all. The
    best of k drawn is the one latest in that order: P(it is the i-th of N) = C(i-1, k-1) / C(N, k).
    Mean and sd are over the draws that hold a value.
    """
    values = np.asarray(values, dtype=float)
    total = math.comb(len(values), k)
    prob = np.array([math.comb(i - 1, k - 1) / total for i in range(1, len(values) + 1)])
    finite = np.isfinite(values)
    p_none = float(prob[~finite].sum())
    if not finite.any():
        return float("nan"), float("nan"), 1.0
    weights, kept = prob[finite] / prob[finite].sum(), values[finite]
    mean = float(weights @ kept)
    return mean, float(np.sqrt(max(float(weights @ (kept - mean) ** 2), 0.0))), p_none


def _best_first(configs: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """Configurations in best_configs' order (no divergence first, then the mean), unscored last."""
    keyed = configs.assign(
        _none=configs["score_mean"].isna(), _key=configs["score_mean"] * metric.sign
    )
    order = ["_none", "diverged_frac", "_key", "lr", "batch_size"]
    return keyed.sort_values(order, kind="stable").drop(columns=["_none", "_key"])


def budget_curves(configs: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """Per optimizer and k = 1..its grid size: expected best value (and sd) of k configurations
    drawn at random from its (lr x batch size) grid, each valued by its mean over seeds.

    The band, mean ± sd, is clipped to the grid's range of values: the best of k lies in it.
    """
    rows = []
    for optimizer, grid in configs.groupby("optimizer", sort=True):
        values = _best_first(grid, metric)["score_mean"].to_numpy(dtype=float)[::-1]
        finite = values[np.isfinite(values)]
        low, high = (finite.min(), finite.max()) if finite.size else (np.nan, np.nan)
        for k in range(1, len(values) + 1):
            mean, std, p_none = expected_best(values, k)
            band = np.clip([mean - std, mean + std], low, high)
            rows.append((optimizer, len(values), k, mean, std, *band, p_none))
    columns = ["optimizer", "n_configs", "k", "expected", "std", "band_low", "band_high", "p_none"]
    return pd.DataFrame(rows, columns=columns).astype({"n_configs": np.int64, "k": np.int64})


def budget_rankings(curves: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """Per k up to the smallest grid (equal budgets): the optimizers ranked by expected best."""
    common = int(curves.groupby("optimizer")["n_configs"].first().min())
    rows = curves[curves["k"] <= common]
    rows = rows.assign(_key=rows["expected"] * metric.sign)
    ranked = rows.sort_values(["k", "_key", "optimizer"], kind="stable")
    out = ranked.groupby("k", sort=True).agg(
        ranking=("optimizer", " > ".join), leader=("optimizer", "first")
    )
    return out.reset_index()


def value_rankings(configs: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """Each optimizer's best configuration and rank chosen on best-epoch and on final values."""
    parts = []
    for value in VALUES:
        best = best_configs(
            configs.assign(score_mean=configs[f"{value}_mean"]), metric, ["optimizer"]
        )
        best = best.assign(_key=best["score_mean"] * metric.sign).sort_values(["_key", "optimizer"])
        best = best.assign(rank=np.arange(1, len(best) + 1, dtype=np.int64))
        part = best[["optimizer", "lr", "batch_size", "score_mean", "rank"]]
        parts.append(part.rename(columns={"score_mean": "value"}).add_suffix(f"_{value}"))
    out = parts[0].merge(
        parts[1], left_on="optimizer_best", right_on="optimizer_final", how="outer"
    )
    out = out.rename(columns={"optimizer_best": "optimizer"}).drop(columns="optimizer_final")
    return out.sort_values(["rank_best", "optimizer"]).reset_index(drop=True)


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
            "budgets, which favours the one tuned more finely; figure 8 and the tuning-budget "
            "finding compare them at equal budgets.",
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


def model_epoch_checks(trials: pd.DataFrame, select: str) -> list[Check]:
    """Test metrics measured on another epoch than train.select picks, or on an unknown one."""
    tested = trials[trials[[c for c in TEST_METRICS if c in trials]].notna().any(axis=1)]
    if tested.empty:
        return []
    recorded = tested["test_epoch"].notna() if "test_epoch" in tested else tested["seed"].isna()
    if not recorded.any():
        if select == "final":
            return []
        return [
            Check(
                "test_epoch",
                "trials.parquet does not say which epoch was tested (results written before "
                "train.select): their test metrics come from the last epoch, while the "
                "configurations are chosen on their best epoch, so the model chosen is not the "
                "model tested. Compare the final-epoch view (--value final).",
            )
        ]
    selected = tested["best_epoch"] if select == "best_epoch" else tested["epochs_run"]
    rows = tested[recorded]
    wrong = int((rows["test_epoch"].astype(float) != selected[recorded].astype(float)).sum())
    if not wrong:
        return []
    return [
        Check(
            "test_epoch",
            f"{wrong} of {len(rows)} tested trials were tested on another epoch than train.select "
            f"({select}) picks; their test metrics are not those of the chosen model.",
        )
    ]


def untested_checks(best: pd.DataFrame) -> list[Check]:
    """A chosen configuration whose test metrics come from only some of its seeds."""
    return [
        Check(
            "untested_seeds",
            f"{r.optimizer}: its chosen configuration (lr {_fmt(r.lr)}, batch size "
            f"{r.batch_size}) has test metrics for {missing_test_note(r)}; its test numbers "
            "are not comparable with those of a full set of seeds.",
        )
        for r in best.itertuples()
        if r.n_tested < r.n_trials
    ]


def missing_test_note(row: object) -> str:
    """'1 of 3 seeds (2 stopped early by ASHA)': how many seeds of a configuration were tested."""
    text = f"{row.n_tested} of {row.n_trials} seeds"
    reasons = [
        f"{count} {why}"
        for count, why in (
            (row.n_early_stopped, "stopped early by ASHA"),
            (row.n_diverged, "diverged"),
            (row.n_error, "failed"),
        )
        if count
    ]
    return text + (f" ({', '.join(reasons)})" if reasons else "")


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything the figures, tables and findings show, computed once from a Results."""

    results: Results
    metric: Metric
    value: str  # best | final: the values figures 1 and 3 show (--value)
    scored: pd.DataFrame  # score_trials
    configs: pd.DataFrame  # config_summary
    best: pd.DataFrame  # best_table: one row per optimizer, ranked
    best_per_batch: pd.DataFrame  # best_configs by (optimizer, batch_size)
    shown_per_batch: pd.DataFrame  # the same, chosen on the --value view (figure 3's outlines)
    divergence: pd.DataFrame
    curves: pd.DataFrame  # learning_curves
    target: float
    to_target: pd.DataFrame
    finals: pd.DataFrame  # final_distribution
    robustness: pd.DataFrame  # lr_robustness
    trend: pd.DataFrame  # batch_size_trend
    pairs: pd.DataFrame  # paired_comparison of the best configurations
    budget: pd.DataFrame  # budget_curves
    budget_ranks: pd.DataFrame  # budget_rankings
    rankings: pd.DataFrame  # value_rankings: best-epoch vs final-epoch choices
    checks: tuple[Check, ...]

    @property
    def study(self) -> StudyInfo:
        return self.results.study

    @property
    def optimizers(self) -> tuple[str, ...]:
        """Optimizers present in the results, in the study's order (fixes their colours)."""
        present = set(self.scored["optimizer"])
        return tuple(opt for opt in self.study.optimizers if opt in present)


def resolve_value(study: StudyInfo, value: str | None = None) -> str:
    """The --value choice: best or final, defaulting to what train.select tests."""
    if value is None:
        return "best" if study.select == "best_epoch" else "final"
    if value not in VALUES:
        raise ResultsError(f"--value: unknown value {value!r} (valid: {', '.join(VALUES)})")
    return value


def analyze(
    results: Results,
    metric: str | None = None,
    target: float | None = None,
    value: str | None = None,
) -> Analysis:
    """Compute every summary of a results set; raises ResultsError for an unusable metric."""
    study = results.study
    chosen, shown = resolve_metric(study, metric), resolve_value(study, value)
    if results.epochs[chosen.name].notna().sum() == 0:
        raise ResultsError(
            f"{results.location}: metric {chosen.name} has no values (task: {study.task})"
        )
    scored = score_trials(
        results.trials, results.epochs, chosen, study_metric=study.metric, select=study.select
    )
    configs = config_summary(scored)
    best = best_configs(configs, chosen, ["optimizer"])
    if best.empty:
        raise ResultsError(f"{results.location}: no trial has a finite {chosen.name}")
    per_batch = best_configs(configs, chosen, ["optimizer", "batch_size"])
    view = configs.assign(score_mean=configs[f"{shown}_mean"])
    table = best_table(scored, best, chosen, test_columns(study.task))
    goal = default_target(configs, chosen) if target is None else float(target)
    budget = budget_curves(configs, chosen)
    return Analysis(
        results=results,
        metric=chosen,
        value=shown,
        scored=scored,
        configs=configs,
        best=table,
        best_per_batch=per_batch,
        shown_per_batch=best_configs(view, chosen, ["optimizer", "batch_size"]),
        divergence=divergence_table(scored),
        curves=learning_curves(results.epochs, scored, best),
        target=goal,
        to_target=time_to_target(results.epochs, scored, per_batch, chosen, goal),
        finals=final_distribution(scored),
        robustness=lr_robustness(configs, best, chosen),
        trend=batch_size_trend(per_batch),
        pairs=paired_comparison(seed_values(scored, best, chosen), table["optimizer"], chosen),
        budget=budget,
        budget_ranks=budget_rankings(budget, chosen),
        rankings=value_rankings(configs, chosen),
        checks=tuple(all_checks(results, scored, per_batch, table)),
    )


def all_checks(
    results: Results, scored: pd.DataFrame, per_batch: pd.DataFrame, best: pd.DataFrame
) -> list[Check]:
    """Every check of the tuning playbook and of the test protocol, in report order."""
    study = results.study
    present = set(scored["optimizer"])
    return [
        *model_epoch_checks(results.trials, study.select),
        *untested_checks(best),
        *lr_edge_checks(per_batch, dict(study.lr_grids)),
        *seed_checks(scored),
        *asha_checks(study, scored),
        *grid_size_checks(dict(study.lr_grids), [o for o in study.optimizers if o in present]),
        *divergence_checks(divergence_table(scored)),
        *hp_checks(results.trials, results.hp_columns),
    ]
