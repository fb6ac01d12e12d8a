"""sweep.space: the grid of configurations, its packs and the Tune param_space (no Ray here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.config import load_study, parse_study
from sweep.space import (
    AUTO_MAX_MEMBERS,
    PACK_KEY,
    expand_grid,
    hyperparameter_columns,
    member_bytes,
    pack_cap,
    pack_grid,
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
        "trial_id": "sgd-lr0.1-bs32-seed0",
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
        "trial_id": "adam-lr0.0003-bs8-seed1",
    }
    assert expand_grid(_study()) == points


def test_points_do_not_share_the_study_params() -> None:
    study = _study()
    points = expand_grid(study)
    points[0]["optimizer_params"]["momentum"] = 0.0
    assert study.search.optimizers[0].params["momentum"] == 0.9
    assert points[1]["optimizer_params"]["momentum"] == 0.9


def _packed(models_per_trial, **search):
    study = _study(**search)
    resources = {"models_per_trial": models_per_trial}
    return parse_study({**_raw(study), "resources": resources})


def _raw(study) -> dict:
    raw = study.to_dict()
    raw.pop("resources")
    return raw


def _assert_partition(study, packs) -> None:
    """Every configuration in exactly one pack; a pack shares optimizer and batch size."""
    members = [p for pack in packs for p in pack["members"]]
    assert sorted(p["trial_id"] for p in members) == sorted(
        p["trial_id"] for p in expand_grid(study)
    )
    for pack in packs:
        assert len({(p["optimizer"], p["batch_size"]) for p in pack["members"]}) == 1
    assert [pack["id"] for pack in packs] == list(range(len(packs)))


def test_one_model_per_trial_is_one_configuration_per_pack() -> None:
    study = _packed(1)
    packs = pack_grid(study, input_size=64, output_size=10, slots=4)
    assert len(packs) == trial_count(study)
    assert all(len(pack["members"]) == 1 for pack in packs)
    _assert_partition(study, packs)


@pytest.mark.parametrize("cap", [2, 3, 5, 100])
def test_n_models_per_trial_caps_each_pack(cap: int) -> None:
    study = _packed(cap)
    packs = pack_grid(study, input_size=64, output_size=10, slots=64)  # N ignores the slots
    _assert_partition(study, packs)
    assert max(len(pack["members"]) for pack in packs) <= cap
    groups = 2 * 2  # (sgd, adam) x (32, 8), with 6 and 4 configurations
    assert len(packs) == sum(math.ceil(n / cap) for n in (6, 6, 4, 4)) >= groups


def test_auto_packs_each_optimizer_and_batch_size_whole_when_slots_are_few() -> None:
    study = _packed("auto")
    packs = pack_grid(study, input_size=64, output_size=10, slots=2)
    _assert_partition(study, packs)
    assert sorted(len(pack["members"]) for pack in packs) == [4, 4, 6, 6]
    # smaller batches take more steps: they start first
    assert [pack["members"][0]["batch_size"] for pack in packs] == [8, 8, 32, 32]


def test_auto_splits_groups_when_there_are_more_slots_than_groups() -> None:
    study = _packed("auto")
    packs = pack_grid(study, input_size=64, output_size=10, slots=8)
    _assert_partition(study, packs)
    assert len(packs) == 8 and sorted(len(p["members"]) for p in packs) == [2, 2, 2, 2, 3, 3, 3, 3]


def test_auto_caps_packs_by_memory() -> None:
    study = _packed("auto")
    wide = 100_000  # one member: ~13M parameters x 6 x 4 bytes, about 300 MB
    cap = pack_cap(study, wide, 10, 32)
    assert cap == 2**31 // member_bytes(study, wide, 10, 32) < 10
    packs = pack_grid(study, input_size=wide, output_size=10, slots=1)
    _assert_partition(study, packs)
    assert max(len(p["members"]) for p in packs) <= cap
    assert pack_cap(study, 4, 2, 8) == AUTO_MAX_MEMBERS  # tiny members: the count cap


def test_member_bytes_counts_parameters_and_activations() -> None:
    study = _study()  # hidden (128, 64) by default
    params = (10 + 1) * 128 + (128 + 1) * 64 + (64 + 1) * 3
    assert member_bytes(study, 10, 3, 16) == 4 * (6 * params + 3 * 16 * (10 + 128 + 64 + 3))


def test_param_space_is_one_plain_grid_of_packs() -> None:
    study = _packed(3)
    space = param_space(study, input_size=64, output_size=10, slots=2)
    assert list(space) == [PACK_KEY]
    assert space[PACK_KEY] == {"grid_search": pack_grid(study, input_size=64, output_size=10)}
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
