"""sweep.space: the grid of trials and the Tune param_space, as plain data (no Ray here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.config import load_study, parse_study
from sweep.space import (
    POINT_KEY,
    expand_grid,
    hyperparameter_columns,
    param_space,
    point_key,
    trial_count,
)

CONFIGS = Path(__file__).resolve().parent.parent / "sweep" / "configs"


def _study(**search):
    raw = {
        "name": "grid",
        "train": {"epochs": 4},
        "search": {
            "batch_size": [32, 8],
            "seeds": 2,
            "optimizers": {
                "sgd": {"lr": [0.1, 0.01, 0.001], "momentum": 0.9, "nesterov": True},
                "adam": {"lr": [0.003, 0.0003], "weight_decay": 0.01},
            },
            **search,
        },
    }
    return parse_study(raw)


def _product(study) -> int:
    lrs = sum(len(opt.lrs) for opt in study.search.optimizers)
    return lrs * len(study.search.batch_sizes) * len(study.search.seeds)


@pytest.mark.parametrize("name", ["default", "smoke"])
def test_trial_count_is_the_product_for_shipped_studies(name: str) -> None:
    study = load_study(CONFIGS / f"{name}.yaml")
    points = expand_grid(study)
    assert trial_count(study) == len(points) == _product(study)
    assert len({point_key(p) for p in points}) == len(points)


def test_default_study_has_153_trials() -> None:
    # (5 sgd + 5 adam + 7 rmsprop learning rates) x 3 batch sizes x 3 seeds
    assert trial_count(load_study(CONFIGS / "default.yaml")) == 17 * 3 * 3


def test_grid_is_every_combination_once() -> None:
    study = _study()
    points = expand_grid(study)
    assert len(points) == trial_count(study) == (3 + 2) * 2 * 2
    combos = {(p["optimizer"], p["lr"], p["batch_size"], p["seed"]) for p in points}
    expected = {
        (opt.name, lr, bs, seed)
        for opt in study.search.optimizers
        for lr in opt.lrs
        for bs in study.search.batch_sizes
        for seed in study.search.seeds
    }
    assert combos == expected and len(combos) == len(points)


def test_grid_order_is_optimizer_lr_batch_seed_as_written() -> None:
    points = expand_grid(_study())
    assert points[0] == {
        "optimizer": "sgd",
        "lr": 0.1,
        "batch_size": 32,
        "seed": 0,
        "optimizer_params": {"momentum": 0.9, "nesterov": True},
    }
    head = [(p["optimizer"], p["lr"], p["batch_size"], p["seed"]) for p in points[:5]]
    assert head == [
        ("sgd", 0.1, 32, 0),
        ("sgd", 0.1, 32, 1),
        ("sgd", 0.1, 8, 0),
        ("sgd", 0.1, 8, 1),
        ("sgd", 0.01, 32, 0),
    ]
    assert points[-1] == {
        "optimizer": "adam",
        "lr": 0.0003,
        "batch_size": 8,
        "seed": 1,
        "optimizer_params": {"weight_decay": 0.01},
    }
    assert expand_grid(_study()) == points


def test_points_do_not_share_the_study_params() -> None:
    study = _study()
    points = expand_grid(study)
    points[0]["optimizer_params"]["momentum"] = 0.0
    assert study.search.optimizers[0].params["momentum"] == 0.9
    assert points[1]["optimizer_params"]["momentum"] == 0.9


def test_param_space_is_one_plain_grid_of_all_points() -> None:
    study = _study()
    space = param_space(study)
    assert list(space) == [POINT_KEY]
    assert space[POINT_KEY] == {"grid_search": expand_grid(study)}
    assert len(space[POINT_KEY]["grid_search"]) == trial_count(study)
    assert json.loads(json.dumps(space)) == space  # plain data: nothing for Tune to resample


def test_hyperparameter_columns_are_the_union_with_types() -> None:
    assert hyperparameter_columns(_study()) == {
        "momentum": float,
        "nesterov": bool,
        "weight_decay": float,
    }
    plain = _study(optimizers={"adam": {"lr": [0.001]}})
    assert hyperparameter_columns(plain) == {}


def test_point_key_reads_well() -> None:
    point = expand_grid(_study())[0]
    assert point_key(point) == "sgd-lr0.1-bs32-seed0"


def test_logspace_and_seed_list_feed_the_grid() -> None:
    study = _study(seeds=[5, 9], optimizers={"rmsprop": {"lr": {"logspace": [1e-4, 1e-1, 4]}}})
    points = expand_grid(study)
    assert len(points) == 4 * 2 * 2
    assert {p["seed"] for p in points} == {5, 9}
    assert [p["lr"] for p in points[::4]] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert all(math.isfinite(p["lr"]) for p in points)


def test_config_and_space_do_not_import_ray() -> None:
    code = "import sys, sweep.config, sweep.space; print('ray' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False"
