"""analysis.summarize on hand-built frames: summaries compared exactly, checks fire both ways."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.errors import ResultsError
from analysis.load import StudyInfo
from analysis.summarize import (
    Metric,
    asha_checks,
    batch_size_trend,
    best_configs,
    budget_curves,
    budget_rankings,
    config_summary,
    default_target,
    divergence_checks,
    divergence_table,
    expected_best,
    grid_size_checks,
    hp_checks,
    learning_curves,
    lr_edge_checks,
    lr_robustness,
    model_epoch_checks,
    paired_comparison,
    paired_interval,
    resolve_metric,
    resolve_value,
    score_trials,
    seed_checks,
    seed_values,
    seeds_needed,
    t_quantile,
    time_to_target,
    untested_checks,
    value_rankings,
)

NAN = float("nan")
MIN = Metric("val_loss", "min")


def make_trials(rows: list[tuple]) -> pd.DataFrame:
    """rows: (trial_id, optimizer, lr, batch_size, seed, status, best_val_loss, final_val_loss)."""
    columns = ["trial_id", "optimizer", "lr", "batch_size", "seed", "status"]
    frame = pd.DataFrame([r[:6] for r in rows], columns=columns).astype(
        {"batch_size": "int64", "seed": "int64"}
    )
    frame["best_val_loss"] = [r[6] for r in rows]
    frame["final_val_loss"] = [r[7] for r in rows]
    frame["best_epoch"] = 2.0
    frame["epochs_run"] = np.int64(2)
    frame["steps"] = np.int64(20)
    frame["train_time_s"] = 1.0
    completed = frame["status"] == "completed"  # only trials that ran all epochs are tested
    frame["test_loss"] = (frame["final_val_loss"] + 0.01).where(completed)
    frame["test_acc"] = pd.Series(0.9, frame.index).where(completed)
    frame["test_epoch"] = frame["best_epoch"].where(completed)
    return frame


TRIALS = make_trials(
    [
        ("a", "sgd", 0.1, 16, 0, "completed", 0.2, 0.3),
        ("b", "sgd", 0.1, 16, 1, "completed", 0.4, 0.5),
        ("c", "sgd", 1.0, 16, 0, "diverged", 0.1, NAN),
        ("d", "sgd", 1.0, 16, 1, "completed", 0.1, 0.1),
        ("e", "adam", 0.01, 16, 0, "early_stopped", 0.9, 0.9),
        ("f", "adam", 0.01, 16, 1, "error", NAN, NAN),
    ]
)


def scored() -> pd.DataFrame:
    return score_trials(TRIALS, pd.DataFrame(), MIN, study_metric="val_loss")


def test_score_trials_drops_values_of_diverged_and_failed_trials():
    out = scored()
    assert out["score"].tolist()[:2] == [0.2, 0.4]
    assert np.isnan(out.loc[out["trial_id"] == "c", "score"]).all()  # diverged: finite best ignored
    assert np.isnan(out.loc[out["trial_id"] == "f", "final"]).all()
    assert out.loc[out["trial_id"] == "e", "score"].item() == 0.9  # early-stopped keeps its value


def test_score_trials_for_another_metric_reads_the_epochs():
    epochs = pd.DataFrame(
        {
            "trial_id": ["a", "a", "a", "b"],
            "epoch": [1, 2, 3, 1],
            "train_loss": [0.5, 0.2, 0.3, 0.7],
        }
    )
    trials = TRIALS[TRIALS["trial_id"].isin(["a", "b"])].assign(final_train_loss=[0.3, 0.7])
    out = score_trials(trials, epochs, Metric("train_loss", "min"), study_metric="val_loss")
    assert out["score"].tolist() == [0.2, 0.7]
    assert out["best_epoch"].tolist() == [2.0, 1.0]
    assert out["final"].tolist() == [0.3, 0.7]


def test_config_summary_counts_and_averages_over_seeds():
    expected = pd.DataFrame(
        {
            "optimizer": ["adam", "sgd", "sgd"],
            "batch_size": np.array([16, 16, 16], dtype=np.int64),
            "lr": [0.01, 0.1, 1.0],
            "n_trials": np.array([2, 2, 2], dtype=np.int64),
            "n_scored": np.array([1, 2, 1], dtype=np.int64),
            "n_diverged": np.array([0, 0, 1], dtype=np.int64),
            "n_early_stopped": np.array([1, 0, 0], dtype=np.int64),
            "n_error": np.array([1, 0, 0], dtype=np.int64),
            "n_tested": np.array([0, 2, 1], dtype=np.int64),
            "score_mean": [0.9, 0.3, 0.1],
            "score_std": [NAN, np.std([0.2, 0.4], ddof=1), NAN],
            "best_mean": [0.9, 0.3, 0.1],
            "best_std": [NAN, np.std([0.2, 0.4], ddof=1), NAN],
            "final_mean": [0.9, 0.4, 0.1],
            "final_std": [NAN, np.std([0.3, 0.5], ddof=1), NAN],
            "best_epoch_mean": [2.0, 2.0, 2.0],
            "test_epoch_mean": [NAN, 2.0, 2.0],
            "epochs_run_mean": [2.0, 2.0, 2.0],
            "train_time_mean": [1.0, 1.0, 1.0],
            "diverged_frac": [0.0, 0.0, 0.5],
        }
    )
    pd.testing.assert_frame_equal(config_summary(scored()), expected, check_dtype=False)


def test_best_config_prefers_no_divergence_then_the_better_mean():
    best = best_configs(config_summary(scored()), MIN, ["optimizer"])
    # sgd lr 1.0 has the lower mean (0.1) but one of its seeds diverged: lr 0.1 wins
    assert best[["optimizer", "lr"]].values.tolist() == [["adam", 0.01], ["sgd", 0.1]]


def test_best_config_maximizes_a_max_metric():
    configs = pd.DataFrame(
        {
            "optimizer": ["sgd", "sgd"],
            "batch_size": [16, 16],
            "lr": [0.1, 0.3],
            "score_mean": [0.8, 0.9],
            "diverged_frac": [0.0, 0.0],
        }
    )
    assert best_configs(configs, Metric("val_acc", "max"), ["optimizer"])["lr"].item() == 0.3
    assert best_configs(configs, MIN, ["optimizer"])["lr"].item() == 0.1


def test_divergence_table():
    expected = pd.DataFrame(
        {
            "optimizer": ["adam", "sgd"],
            "n_trials": np.array([2, 4], dtype=np.int64),
            "n_completed": np.array([0, 3], dtype=np.int64),
            "n_early_stopped": np.array([1, 0], dtype=np.int64),
            "n_diverged": np.array([0, 1], dtype=np.int64),
            "n_error": np.array([1, 0], dtype=np.int64),
            "diverged_frac": [0.0, 0.25],
        }
    )
    pd.testing.assert_frame_equal(divergence_table(scored()), expected, check_dtype=False)


EPOCHS = pd.DataFrame(
    {
        "trial_id": ["a", "a", "b", "b", "d", "d"],
        "epoch": np.array([1, 2, 1, 2, 1, 2], dtype=np.int64),
        "train_loss": [1.0, 0.5, 3.0, 1.5, 1.0, 1.0],
        "val_loss": [1.0, 0.2, 3.0, 0.4, 1.0, 0.1],
        "val_acc": [0.5, 0.7, 0.1, 0.3, 0.5, 0.9],
        "val_rmse": [NAN] * 6,
        "steps": np.array([10, 20, 10, 20, 10, 20], dtype=np.int64),
        "elapsed_s": [1.0, 2.0, 1.5, 3.0, 1.0, 2.0],
    }
)


def test_learning_curves_average_the_seeds_of_the_best_configuration():
    best = best_configs(config_summary(scored()), MIN, ["optimizer"])
    out = learning_curves(EPOCHS, scored(), best[best["optimizer"] == "sgd"])
    expected = pd.DataFrame(
        {
            "optimizer": ["sgd", "sgd"],
            "epoch": np.array([1, 2], dtype=np.int64),
            "n_seeds": np.array([2, 2], dtype=np.int64),
            "train_loss_mean": [2.0, 1.0],
            "train_loss_std": [np.sqrt(2.0), np.sqrt(0.5)],
            "val_loss_mean": [2.0, 0.3],
            "val_loss_std": [np.sqrt(2.0), np.std([0.2, 0.4], ddof=1)],
            "val_acc_mean": [0.3, 0.5],
            "val_acc_std": [np.std([0.5, 0.1], ddof=1), np.std([0.7, 0.3], ddof=1)],
            "val_rmse_mean": [NAN, NAN],
            "val_rmse_std": [NAN, NAN],
        }
    )
    pd.testing.assert_frame_equal(out, expected, check_dtype=False)


def test_time_to_target_takes_the_first_epoch_at_or_below_target():
    per_batch = pd.DataFrame({"optimizer": ["sgd"], "batch_size": [16], "lr": [0.1]})
    out = time_to_target(EPOCHS, scored(), per_batch, MIN, target=0.3)
    expected = pd.DataFrame(
        {
            "optimizer": ["sgd"],
            "batch_size": np.array([16], dtype=np.int64),
            "n_seeds": np.array([2], dtype=np.int64),
            "n_reached": np.array([1], dtype=np.int64),  # seed 1 ends at 0.4
            "epoch_mean": [2.0],
            "steps_mean": [20.0],
            "steps_std": [NAN],
            "time_mean": [2.0],
            "time_std": [NAN],
        }
    )
    pd.testing.assert_frame_equal(out, expected, check_dtype=False)


def test_default_target_is_95_percent_of_the_best_final_value():
    configs = pd.DataFrame({"final_mean": [0.5, 0.19, NAN]})
    assert default_target(configs, MIN) == pytest.approx(0.2)
    configs = pd.DataFrame({"final_mean": [0.5, 0.8]})
    assert default_target(configs, Metric("val_acc", "max")) == pytest.approx(0.76)


def test_lr_robustness_counts_lrs_within_tolerance_at_the_best_batch_size():
    configs = pd.DataFrame(
        {
            "optimizer": ["sgd"] * 4,
            "batch_size": [16, 16, 16, 64],
            "lr": [0.01, 0.1, 1.0, 0.1],
            "score_mean": [0.105, 0.1, 0.2, 0.1],
        }
    )
    best = pd.DataFrame({"optimizer": ["sgd"], "batch_size": [16], "score_mean": [0.1]})
    out = lr_robustness(configs, best, MIN)
    expected = pd.DataFrame(
        {"optimizer": ["sgd"], "batch_size": [16], "n_lrs": [3], "n_within": [2]}
    )
    pd.testing.assert_frame_equal(out, expected, check_dtype=False)


def test_batch_size_trend_slope_of_linear_scaling_is_one():
    per_batch = pd.DataFrame(
        {
            "optimizer": ["sgd"] * 3,
            "batch_size": [16, 32, 64],
            "lr": [0.1, 0.2, 0.4],
            "score_mean": [0.1, 0.2, 0.3],
        }
    )
    expected = pd.DataFrame(
        {
            "optimizer": ["sgd"],
            "n_batch_sizes": [3],
            "bs_small": [16],
            "bs_large": [64],
            "score_small": [0.1],
            "score_large": [0.3],
            "lr_small": [0.1],
            "lr_large": [0.4],
            "lr_slope": [1.0],
        }
    )
    pd.testing.assert_frame_equal(batch_size_trend(per_batch), expected, check_dtype=False)


def test_resolve_metric_defaults_to_the_study_and_maximizes_accuracy(study_info):
    assert resolve_metric(study_info) == Metric("val_loss", "min")
    assert resolve_metric(study_info, "val_acc") == Metric("val_acc", "max")
    with pytest.raises(ResultsError, match="unknown metric 'acc'"):
        resolve_metric(study_info, "acc")


@pytest.fixture
def study_info() -> StudyInfo:
    return StudyInfo(
        name="s",
        task="classification",
        loss="cross_entropy",
        epochs=10,
        metric="val_loss",
        mode="min",
        scheduler="none",
        grace_period=1,
        reduction_factor=4,
        optimizers=("sgd", "adam"),
        lr_grids={"sgd": (0.01, 0.1, 1.0), "adam": (1e-4, 1e-3, 1e-2)},
        batch_sizes=(16, 64),
        seeds=(0, 1, 2),
    )


# ---- the tuning playbook's checks: each fires on constructed data and stays silent otherwise


def test_lr_edge_check_names_the_optimizer_and_the_edge():
    grids = {"sgd": (0.01, 0.1, 1.0), "adam": (1e-4, 1e-3, 1e-2)}
    per_batch = pd.DataFrame(
        {"optimizer": ["sgd", "sgd", "adam"], "batch_size": [16, 64, 16], "lr": [0.1, 1.0, 1e-4]}
    )
    checks = lr_edge_checks(per_batch, grids)
    assert [c.kind for c in checks] == ["lr_edge", "lr_edge"]
    adam, sgd = (c.message for c in checks)
    assert "adam" in adam and "smallest" in adam and "below 0.0001" in adam
    assert "sgd" in sgd and "largest" in sgd and "above 1" in sgd and "batch size 64" in sgd
    inside = per_batch.assign(lr=[0.1, 0.1, 1e-3])
    assert lr_edge_checks(inside, grids) == []


def test_seed_check_fires_below_three_seeds():
    two = scored()
    assert [c.kind for c in seed_checks(two)] == ["few_seeds"]
    three = pd.concat([two, two.assign(seed=2)])
    assert seed_checks(three) == []


def test_asha_check_fires_only_for_asha(study_info):
    from dataclasses import replace

    asha = replace(study_info, scheduler="asha", grace_period=2, reduction_factor=3)
    (check,) = asha_checks(asha, scored())
    assert check.kind == "asha" and "1 of 6 trials were stopped early" in check.message
    assert "epochs 2, 6" in check.message
    assert asha_checks(study_info, scored()) == []


def test_grid_size_check_fires_on_unequal_lr_grids():
    (check,) = grid_size_checks({"sgd": (0.1, 1.0), "adam": (1e-3,)}, ["adam", "sgd"])
    assert check.kind == "unequal_lr_grids" and "adam 1, sgd 2" in check.message
    assert grid_size_checks({"sgd": (0.1, 1.0), "adam": (1e-3, 1e-2)}, ["adam", "sgd"]) == []


def test_divergence_check_fires_above_half():
    table = pd.DataFrame(
        {
            "optimizer": ["adam", "sgd"],
            "n_trials": [4, 4],
            "n_diverged": [2, 3],
            "n_error": [0, 0],
            "diverged_frac": [0.5, 0.75],
        }
    )
    (check,) = divergence_checks(table)
    assert check.kind == "mostly_diverged" and "sgd: 3 of 4 trials diverged" in check.message
    assert divergence_checks(table.assign(n_diverged=[2, 2], diverged_frac=[0.5, 0.5])) == []


def test_hp_check_fires_when_a_hyperparameter_varies_within_an_optimizer():
    trials = pd.DataFrame({"optimizer": ["sgd", "sgd", "adam"], "hp_momentum": [0.9, 0.0, NAN]})
    (check,) = hp_checks(trials, ["hp_momentum"])
    assert check.kind == "hp_varies" and check.message.startswith("sgd: hp_momentum")
    assert hp_checks(trials.assign(hp_momentum=[0.9, 0.9, NAN]), ["hp_momentum"]) == []


# ---- selection rule: best epoch or final epoch


def test_score_follows_train_select():
    best = score_trials(TRIALS, pd.DataFrame(), MIN, study_metric="val_loss")
    final = score_trials(TRIALS, pd.DataFrame(), MIN, study_metric="val_loss", select="final")
    np.testing.assert_array_equal(best["score"], best["best"])
    np.testing.assert_array_equal(final["score"], final["final"])
    np.testing.assert_array_equal(final["best"], best["best"])  # both views are always kept
    assert best["tested"].tolist() == [True, True, False, True, False, False]


def test_value_rankings_differ_when_the_best_epoch_and_final_winners_differ():
    configs = pd.DataFrame(
        {
            "optimizer": ["adam", "sgd", "sgd"],
            "batch_size": [16, 16, 16],
            "lr": [1e-3, 0.01, 0.1],
            "best_mean": [0.12, 0.15, 0.10],  # sgd lr 0.1 has the best epoch ...
            "final_mean": [0.14, 0.16, 0.30],  # ... but overfits: final values favour adam
            "diverged_frac": [0.0, 0.0, 0.0],
        }
    )
    expected = pd.DataFrame(
        {
            "optimizer": ["sgd", "adam"],
            "lr_best": [0.1, 1e-3],
            "batch_size_best": [16, 16],
            "value_best": [0.10, 0.12],
            "rank_best": [1, 2],
            "lr_final": [0.01, 1e-3],
            "batch_size_final": [16, 16],
            "value_final": [0.16, 0.14],
            "rank_final": [2, 1],
        }
    )
    pd.testing.assert_frame_equal(value_rankings(configs, MIN), expected, check_dtype=False)


def test_resolve_value_defaults_to_train_select(study_info):
    from dataclasses import replace

    assert resolve_value(study_info) == "best"
    assert resolve_value(replace(study_info, select="final")) == "final"
    assert resolve_value(study_info, "final") == "final"
    with pytest.raises(ResultsError, match="--value: unknown value 'last'"):
        resolve_value(study_info, "last")


# ---- paired comparison over seeds

T_975_2 = 4.302652729749462  # Student t, 97.5 % quantile, 2 degrees of freedom (from tables: 4.303)


def test_paired_interval_that_excludes_zero():
    out = paired_interval(np.array([-0.10, -0.12, -0.11]))
    half = T_975_2 * 0.01 / np.sqrt(3)
    assert out["n_seeds"] == 3
    assert out["diff_mean"] == pytest.approx(-0.11)
    assert out["diff_std"] == pytest.approx(0.01)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((-0.11 - half, -0.11 + half))
    assert out["settled"] is True
    assert out["seeds_needed"] == 2  # t(1) x 0.01 / sqrt(2) = 0.090 < 0.11 already


def test_paired_interval_that_includes_zero_says_how_many_seeds_would_settle_it():
    diffs = np.array([-0.10, 0.05, -0.02])
    out = paired_interval(diffs)
    mean, std = diffs.mean(), diffs.std(ddof=1)
    half = T_975_2 * std / np.sqrt(3)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((mean - half, mean + half))
    assert out["ci_low"] < 0 < out["ci_high"] and out["settled"] is False
    n = int(out["seeds_needed"])
    # by hand: the normal approximation (1.96 sd / |mean|)^2 = 39.8; t's wider tails add a few
    assert (1.96 * std / abs(mean)) ** 2 < n < (1.96 * std / abs(mean)) ** 2 + 6
    # and n is the first count at which t(n-1) x sd / sqrt(n) drops below |mean|
    assert t_quantile(0.95, n - 1) * std / np.sqrt(n) < abs(mean)
    assert t_quantile(0.95, n - 2) * std / np.sqrt(n - 1) >= abs(mean)


def test_paired_interval_with_one_seed_compares_nothing():
    out = paired_interval(np.array([-0.5]))
    assert out["settled"] is False and out["n_seeds"] == 1
    assert np.isnan(out["ci_low"]) and np.isnan(out["seeds_needed"])
    assert seeds_needed(0.0, 0.1) == float("inf")  # no difference: no number of seeds settles it


def test_paired_comparison_uses_test_metrics_only_where_every_seed_has_them():
    values = pd.DataFrame(
        {
            "optimizer": ["adam"] * 3 + ["sgd"] * 3 + ["rmsprop"] * 3,
            "seed": [0, 1, 2] * 3,
            "score": [0.10, 0.11, 0.12, 0.20, 0.21, 0.22, 0.15, 0.15, 0.15],
            "test": [0.13, 0.14, 0.15, 0.23, 0.25, 0.27, 0.18, NAN, NAN],  # rmsprop: 1 of 3
        }
    )
    out = paired_comparison(values, ["adam", "rmsprop", "sgd"], MIN)
    assert out[["optimizer_a", "optimizer_b", "value"]].values.tolist() == [
        ["adam", "rmsprop", "val_loss"],
        ["adam", "sgd", "test_loss"],
        ["rmsprop", "sgd", "val_loss"],
    ]
    adam_sgd = out.iloc[1]  # test differences -0.10, -0.11, -0.12
    assert adam_sgd["diff_mean"] == pytest.approx(-0.11) and adam_sgd["favours"] == "adam"
    assert adam_sgd["settled"]
    adam_rmsprop = out.iloc[0]  # validation differences -0.05, -0.04, -0.03
    assert adam_rmsprop["diff_mean"] == pytest.approx(-0.04) and adam_rmsprop["n_seeds"] == 3


def test_paired_comparison_of_a_maximized_metric_favours_the_higher_value():
    values = pd.DataFrame(
        {
            "optimizer": ["a", "a", "b", "b"],
            "seed": [0, 1, 0, 1],
            "score": [0.90, 0.91, 0.95, 0.97],
            "test": [NAN] * 4,
        }
    )
    out = paired_comparison(values, ["a", "b"], Metric("val_acc", "max"))
    assert out["value"].item() == "val_acc" and out["favours"].item() == "b"
    assert out["diff_mean"].item() == pytest.approx(-0.055)


def test_seed_values_pairs_the_seeds_of_each_best_configuration():
    best = best_configs(config_summary(scored()), MIN, ["optimizer"])
    out = seed_values(scored(), best, MIN)
    expected = pd.DataFrame(
        {
            "optimizer": ["adam", "adam", "sgd", "sgd"],
            "seed": np.array([0, 1, 0, 1], dtype=np.int64),
            "score": [0.9, NAN, 0.2, 0.4],
            "test": [NAN, NAN, 0.31, 0.51],
        }
    )
    pd.testing.assert_frame_equal(out, expected)


# ---- tuning budget: expected best of k configurations, computed by hand on tiny grids


def test_expected_best_by_hand():
    values = np.array([4.0, 3.0, 1.0])  # worst first (a loss)
    # k=1: the mean of all; k=2: subsets {4,3} {4,1} {3,1} give 3, 1, 1; k=3: always 1
    assert expected_best(values, 1) == pytest.approx((8 / 3, np.sqrt(14) / 3, 0.0))
    assert expected_best(values, 2) == pytest.approx((5 / 3, np.sqrt(8) / 3, 0.0))
    assert expected_best(values, 3) == pytest.approx((1.0, 0.0, 0.0))


def test_expected_best_leaves_out_draws_without_a_value():
    values = np.array([NAN, 4.0, 3.0, 1.0])  # one configuration diverged on every seed
    mean, _, p_none = expected_best(values, 1)
    assert (mean, p_none) == pytest.approx((8 / 3, 0.25))
    # k=2: 6 subsets; the best is 4 in 1, 3 in 2 and 1 in 3 of them
    assert expected_best(values, 2)[:2] == pytest.approx((13 / 6, np.sqrt(53 / 36)))


def test_budget_curves_of_a_small_grid():
    configs = pd.DataFrame(
        {
            "optimizer": ["sgd"] * 3,
            "batch_size": [16, 16, 64],
            "lr": [0.1, 1.0, 0.1],
            "score_mean": [3.0, 1.0, 4.0],
            "diverged_frac": [0.0, 0.0, 0.0],
        }
    )
    mean = [8 / 3, 5 / 3, 1.0]
    std = [np.sqrt(14) / 3, np.sqrt(8) / 3, 0.0]
    expected = pd.DataFrame(
        {
            "optimizer": ["sgd"] * 3,
            "n_configs": np.array([3, 3, 3], dtype=np.int64),
            "k": np.array([1, 2, 3], dtype=np.int64),
            "expected": mean,
            "std": std,
            "band_low": [mean[0] - std[0], 1.0, 1.0],  # clipped to the grid's best value
            "band_high": [mean[0] + std[0], mean[1] + std[1], 1.0],
            "p_none": [0.0, 0.0, 0.0],
        }
    )
    pd.testing.assert_frame_equal(budget_curves(configs, MIN), expected)
    maximized = budget_curves(configs, Metric("val_acc", "max"))  # higher is better now
    assert maximized["expected"].tolist() == pytest.approx([8 / 3, (4 + 4 + 3) / 3, 4.0])


def test_budget_rankings_say_where_the_order_changes():
    curves = pd.DataFrame(
        {
            "optimizer": ["adam"] * 3 + ["sgd"] * 2,
            "n_configs": [3, 3, 3, 2, 2],
            "k": [1, 2, 3, 1, 2],
            "expected": [0.5, 0.4, 0.3, 0.6, 0.35],
        }
    )
    expected = pd.DataFrame(
        {
            "k": np.array([1, 2], dtype=np.int64),  # equal budgets only: up to sgd's 2
            "ranking": ["adam > sgd", "sgd > adam"],
            "leader": ["adam", "sgd"],
        }
    )
    pd.testing.assert_frame_equal(budget_rankings(curves, MIN), expected)


# ---- the test protocol's checks


def test_tested_epoch_check_fires_for_old_results_and_mismatches():
    old = TRIALS.assign(test_epoch=NAN)
    (check,) = model_epoch_checks(old, "best_epoch")
    assert check.kind == "test_epoch" and "come from the last epoch" in check.message
    assert model_epoch_checks(old, "final") == []
    assert model_epoch_checks(TRIALS, "best_epoch") == []  # test_epoch == best_epoch
    (check,) = model_epoch_checks(TRIALS.assign(epochs_run=np.int64(5)), "final")
    assert check.message.startswith("3 of 3 tested trials were tested on another epoch")


def test_untested_seeds_are_named_with_their_reason():
    best = pd.DataFrame(
        {
            "optimizer": ["rmsprop", "sgd"],
            "lr": [1e-3, 0.1],
            "batch_size": [16, 16],
            "n_trials": [3, 3],
            "n_tested": [1, 3],
            "n_early_stopped": [2, 0],
            "n_diverged": [0, 0],
            "n_error": [0, 0],
        }
    )
    (check,) = untested_checks(best)
    assert check.kind == "untested_seeds"
    assert "rmsprop" in check.message and "1 of 3 seeds (2 stopped early by ASHA)" in check.message
