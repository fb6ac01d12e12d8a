"""The optimizer table: names, hyperparameters, validation, and what gets built."""

from __future__ import annotations

import re

import pytest
import torch

from model.errors import ConfigError
from model.optim import (
    OPTIMIZERS,
    build_optimizer,
    hyperparameter_types,
    resolve_optimizer,
    validate_optimizer,
)

EXPECTED = {
    "sgd": {"momentum", "dampening", "nesterov", "weight_decay"},
    "adam": {"beta1", "beta2", "eps", "weight_decay", "amsgrad"},
    "adamw": {"beta1", "beta2", "eps", "weight_decay", "amsgrad"},
    "rmsprop": {"alpha", "eps", "momentum", "centered", "weight_decay"},
    "adagrad": {"lr_decay", "eps", "weight_decay", "initial_accumulator_value"},
}
TORCH_CLASS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


def params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


def test_table_has_the_documented_optimizers_and_hyperparameters():
    assert {name: set(spec.hyperparams) for name, spec in OPTIMIZERS.items()} == EXPECTED
    for spec in OPTIMIZERS.values():
        assert set(spec.defaults) == set(spec.hyperparams)
        assert set(spec.hyperparams.values()) <= {float, bool}


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        validate_optimizer("sgdd", {})
    assert str(err.value) == (
        "optimizer: unknown optimizer 'sgdd' (valid: sgd, adam, adamw, rmsprop, adagrad)"
    )


def test_unknown_hyperparameter_lists_that_optimizers_names():
    valid = r"\(valid: beta1, beta2, eps, weight_decay, amsgrad\)"
    with pytest.raises(
        ConfigError, match=r"optimizer.adam: unknown hyperparameter 'betas' " + valid
    ):
        validate_optimizer("adam", {"betas": (0.9, 0.99)})
    with pytest.raises(ConfigError, match="momentum"):  # adam has no momentum
        validate_optimizer("adam", {"momentum": 0.9})


@pytest.mark.parametrize(
    ("name", "hp", "value", "message"),
    [
        ("sgd", "momentum", 1.0, r"out of range \[0, 1\)"),
        ("sgd", "momentum", -0.1, r"out of range \[0, 1\)"),
        ("sgd", "momentum", "0.9", "is not a number"),
        ("sgd", "nesterov", 1, "is not true or false"),
        ("sgd", "weight_decay", True, "is not a number"),
        ("adam", "eps", 0.0, r"out of range \(0, inf\)"),
        ("adam", "beta2", 1.0, r"out of range \[0, 1\)"),
        ("adamw", "weight_decay", float("nan"), "out of range"),
        ("rmsprop", "alpha", 1.5, r"out of range \[0, 1\]"),
        ("adagrad", "initial_accumulator_value", -1.0, r"out of range \[0, inf\)"),
    ],
)
def test_bad_hyperparameter_values_name_field_and_value(name, hp, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate_optimizer(name, {hp: value})
    assert str(err.value).startswith(f"optimizer.{name}.{hp}: {value!r}")


def test_nesterov_needs_momentum_and_no_dampening():
    with pytest.raises(ConfigError, match="nesterov: true needs momentum > 0"):
        validate_optimizer("sgd", {"nesterov": True})
    with pytest.raises(ConfigError, match="dampening 0"):
        validate_optimizer("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1})
    validate_optimizer("sgd", {"nesterov": True, "momentum": 0.9})


def test_lr_is_not_a_hyperparameter_and_must_be_positive():
    with pytest.raises(ConfigError, match="optimizer.sgd.lr"):
        validate_optimizer("sgd", {"lr": 0.1})
    with pytest.raises(ConfigError, match="^lr: 0 is not a finite number > 0"):
        build_optimizer("sgd", params(), 0, {})


@pytest.mark.parametrize("lr", [True, "0.1", float("inf"), float("nan"), -0.1])
def test_lr_that_is_not_a_finite_positive_number_is_a_config_error(lr):
    with pytest.raises(ConfigError, match=f"^lr: {re.escape(repr(lr))} is not a finite number"):
        build_optimizer("sgd", params(), lr, {})


def test_hyperparameters_that_are_not_a_mapping_are_named():
    with pytest.raises(ConfigError, match=r"^optimizer.sgd: \[0.9\] is not a mapping"):
        resolve_optimizer("sgd", [0.9])


def test_closed_ranges_accept_their_upper_end():
    assert resolve_optimizer("sgd", {"dampening": 1.0})["dampening"] == 1.0  # [0, 1]
    assert resolve_optimizer("rmsprop", {"alpha": 1.0})["alpha"] == 1.0  # [0, 1]


def test_ints_are_accepted_for_floats():
    assert resolve_optimizer("sgd", {"momentum": 0})["momentum"] == 0.0
    assert resolve_optimizer("adagrad", {"eps": 1})["eps"] == 1.0


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_hyperparameter_reaches_torch(name):
    """Non-default values for every hyperparameter show up in the optimizer's param group."""
    spec = OPTIMIZERS[name]
    values = {
        hp: (not spec.defaults[hp]) if kind is bool else spec.defaults[hp] * 0.5 + 0.01
        for hp, kind in spec.hyperparams.items()
    }
    if name == "sgd" and values["nesterov"]:
        values["dampening"] = 0.0
    optimizer = build_optimizer(name, params(), 0.02, values)
    assert type(optimizer) is TORCH_CLASS[name]
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.02
    for hp, value in values.items():
        if hp in ("beta1", "beta2"):
            assert group["betas"][hp == "beta2"] == value
        else:
            assert group[hp] == value, hp
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(name, model.parameters(), 0.02, values)
    before = model.weight.detach().clone()
    model(torch.randn(4, 3)).pow(2).sum().backward()
    optimizer.step()
    assert not torch.equal(before, model.weight)


def test_sgd_dampening_reaches_torch():
    """Not covered above: nesterov, flipped on there, needs dampening 0."""
    values = {"momentum": 0.9, "dampening": 0.3}
    optimizer = build_optimizer("sgd", params(), 0.02, values)
    assert optimizer.param_groups[0]["dampening"] == 0.3


def test_defaults_are_torchs():
    for name, cls in TORCH_CLASS.items():
        ours = build_optimizer(name, params(), 0.01, {}, fast=False).param_groups[0]
        theirs = cls(params(), lr=0.01).param_groups[0]
        for key in ours:
            if key not in ("params", "foreach", "fused"):
                assert ours[key] == theirs[key], (name, key)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fast_implementation_takes_the_same_steps(name):
    """fused/foreach change speed, not the result (up to float rounding)."""
    models = []
    for fast in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 3)
        optimizer = build_optimizer(name, model.parameters(), 0.01, {}, fast=fast)
        for step in range(3):
            x = torch.randn(8, 5, generator=torch.Generator().manual_seed(step))
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
        models.append(model)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fast_is_the_default_and_picks_the_fused_kernel_on_cpu(name):
    group = build_optimizer(name, params(), 0.01).param_groups[0]
    if name == "rmsprop":  # torch has no fused rmsprop
        assert group["foreach"] is True and not group.get("fused")
    else:
        assert group["fused"] is True
    slow = build_optimizer(name, params(), 0.01, fast=False).param_groups[0]
    assert not slow.get("fused") and not slow.get("foreach")


def test_hyperparameter_types_for_parquet_columns():
    assert hyperparameter_types(["sgd"]) == {
        "dampening": float,
        "momentum": float,
        "nesterov": bool,
        "weight_decay": float,
    }
    everything = hyperparameter_types()
    assert set(everything) == set().union(*EXPECTED.values())
    assert everything["amsgrad"] is bool and everything["eps"] is float
    with pytest.raises(ConfigError, match="unknown optimizer 'nope'"):
        hyperparameter_types(["nope"])
