"""Optimizers by name: an explicit table of torch.optim classes and their hyperparameters.

Every hyperparameter other than lr is a flat scalar (adam's betas are beta1 and beta2), so each
becomes one Parquet column (``hp_<name>``). Example: ``python -m model train --optimizer sgd
--opt momentum=0.9 --opt nesterov=true``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from model.errors import ConfigError

if TYPE_CHECKING:  # torch is imported when an optimizer is built, so that a study file is
    import torch  # checked against this table without loading torch (see model.spec)


@dataclass(frozen=True)
class Interval:
    """A range of allowed values, each end open or closed."""

    low: float
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = False

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        high = "inf" if math.isinf(self.high) else f"{self.high:g}"
        left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"{left}{self.low:g}, {high}{right}"


NON_NEGATIVE = Interval(0.0)
POSITIVE = Interval(0.0, low_closed=False)
UNIT_OPEN = Interval(0.0, 1.0)  # [0, 1)
UNIT_CLOSED = Interval(0.0, 1.0, high_closed=True)  # [0, 1]


@dataclass(frozen=True)
class OptimizerSpec:
    """How to build one optimizer: its factory and the hyperparameters it takes besides lr."""

    factory: Callable[..., torch.optim.Optimizer]
    hyperparams: Mapping[str, type]  # name -> float | bool
    defaults: Mapping[str, float | bool]
    ranges: Mapping[str, Interval] = field(default_factory=dict)  # float hyperparams only
    fused_on: frozenset[str] = frozenset()  # device types with a fused kernel (one call per step)

    def __post_init__(self) -> None:
        for name in ("hyperparams", "defaults", "ranges"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


def _sgd(params, lr, momentum, dampening, nesterov, weight_decay, **fast):
    import torch

    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=weight_decay,
        **fast,
    )


def _adam_like(name: str):
    def build(params, lr, beta1, beta2, eps, weight_decay, amsgrad, **fast):
        import torch

        return getattr(torch.optim, name)(
            params,
            lr=lr,
            betas=(beta1, beta2),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            **fast,
        )

    return build


def _rmsprop(params, lr, alpha, eps, momentum, centered, weight_decay, **fast):
    import torch

    return torch.optim.RMSprop(
        params,
        lr=lr,
        alpha=alpha,
        eps=eps,
        momentum=momentum,
        centered=centered,
        weight_decay=weight_decay,
        **fast,
    )


def _adagrad(params, lr, lr_decay, eps, weight_decay, initial_accumulator_value, **fast):
    import torch

    return torch.optim.Adagrad(
        params,
        lr=lr,
        lr_decay=lr_decay,
        eps=eps,
        weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator_value,
        **fast,
    )


_ADAM_TYPES = {"beta1": float, "beta2": float, "eps": float, "weight_decay": float, "amsgrad": bool}
_ADAM_RANGES = {
    "beta1": UNIT_OPEN,
    "beta2": UNIT_OPEN,
    "eps": POSITIVE,
    "weight_decay": NON_NEGATIVE,
}
_ADAM_DEFAULTS = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}

CPU_CUDA = frozenset({"cpu", "cuda"})
# Defaults are torch's, so a study that sets nothing gets what torch.optim gives.
OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(
        _sgd,
        {"momentum": float, "dampening": float, "nesterov": bool, "weight_decay": float},
        {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0},
        {"momentum": UNIT_OPEN, "dampening": UNIT_CLOSED, "weight_decay": NON_NEGATIVE},
        fused_on=CPU_CUDA,
    ),
    "adam": OptimizerSpec(
        _adam_like("Adam"), _ADAM_TYPES, _ADAM_DEFAULTS, _ADAM_RANGES, fused_on=CPU_CUDA
    ),
    "adamw": OptimizerSpec(
        _adam_like("AdamW"),
        _ADAM_TYPES,
        {**_ADAM_DEFAULTS, "weight_decay": 0.01},
        _ADAM_RANGES,
        fused_on=CPU_CUDA,
    ),
    "rmsprop": OptimizerSpec(
        _rmsprop,
        {"alpha": float, "eps": float, "momentum": float, "centered": bool, "weight_decay": float},
        {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False, "weight_decay": 0.0},
        {
            "alpha": UNIT_CLOSED,
            "eps": POSITIVE,
            "momentum": UNIT_OPEN,
            "weight_decay": NON_NEGATIVE,
        },
    ),
    "adagrad": OptimizerSpec(
        _adagrad,
        {
            "lr_decay": float,
            "eps": float,
            "weight_decay": float,
            "initial_accumulator_value": float,
        },
        {"lr_decay": 0.0, "eps": 1e-10, "weight_decay": 0.0, "initial_accumulator_value": 0.0},
        {
            "lr_decay": NON_NEGATIVE,
            "eps": POSITIVE,
            "weight_decay": NON_NEGATIVE,
            "initial_accumulator_value": NON_NEGATIVE,
        },
        fused_on=frozenset({"cpu"}),  # torch's fused adagrad has no CUDA kernel
    ),
}


def hyperparameter_types(optimizers: Iterable[str] | None = None) -> dict[str, type]:
    """Name -> type (float or bool) of every hyperparameter of the given optimizers (default:
    all), sorted by name; the sweep makes one ``hp_<name>`` Parquet column of each."""
    names = list(OPTIMIZERS) if optimizers is None else list(optimizers)
    merged: dict[str, type] = {}
    for name in names:
        _check_name(name)
        merged.update(OPTIMIZERS[name].hyperparams)
    return dict(sorted(merged.items()))


def _check_name(name: object) -> OptimizerSpec:
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ConfigError(f"optimizer: unknown optimizer {name!r} (valid: {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[name]


def _check_value(opt: str, spec: OptimizerSpec, key: str, value: object) -> float | bool:
    where = f"optimizer.{opt}.{key}"
    if spec.hyperparams[key] is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where}: {value!r} is not a number")
    number = float(value)
    interval = spec.ranges.get(key)
    if not math.isfinite(number) or (interval is not None and number not in interval):
        raise ConfigError(f"{where}: {value!r} is out of range {interval or '(finite)'}")
    return number


def resolve_optimizer(name: str, params: Mapping[str, object]) -> dict[str, float | bool]:
    """Every hyperparameter of optimizer name: the given ones, checked, over the defaults."""
    spec = _check_name(name)
    if not isinstance(params, Mapping):
        raise ConfigError(f"optimizer.{name}: {params!r} is not a mapping of hyperparameters")
    resolved: dict[str, float | bool] = dict(spec.defaults)
    for key, value in params.items():
        if key == "lr":
            raise ConfigError(f"optimizer.{name}.lr: the learning rate is given on its own")
        if key not in spec.hyperparams:
            raise ConfigError(
                f"optimizer.{name}: unknown hyperparameter {key!r} "
                f"(valid: {', '.join(spec.hyperparams)})"
            )
        resolved[key] = _check_value(name, spec, key, value)
    if resolved.get("nesterov") and (resolved["momentum"] <= 0 or resolved["dampening"] != 0):
        raise ConfigError(
            f"optimizer.{name}.nesterov: true needs momentum > 0 and dampening 0 "
            f"(got momentum {resolved['momentum']:g}, dampening {resolved['dampening']:g})"
        )
    return resolved


def validate_optimizer(name: str, params: Mapping[str, object]) -> None:
    """Raise ConfigError if name or any hyperparameter (name, type, range) is invalid."""
    resolve_optimizer(name, params)


def validate_lr(lr: object) -> float:
    """The learning rate as a float; ConfigError unless it is a finite number > 0."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < lr < math.inf:
        raise ConfigError(f"lr: {lr!r} is not a finite number > 0")
    return float(lr)


def build_optimizer(
    name: str,
    model_params: Iterable[torch.nn.Parameter],
    lr: float,
    params: Mapping[str, object] | None = None,
    *,
    fast: bool = True,
) -> torch.optim.Optimizer:
    """The optimizer name over model_params with lr and the given hyperparameters.

    fast=True uses torch's fused kernel where the table has one and the parameters' device
    supports it (one kernel per step instead of a Python loop over tensors), else the foreach
    implementation; fast=False gives torch's default (per-tensor loop on CPU).
    """
    spec = _check_name(name)
    resolved = resolve_optimizer(name, params or {})
    model_params = list(model_params)
    impl: dict[str, bool] = {}
    if fast:
        devices = {p.device.type for p in model_params}
        impl = {"fused": True} if devices <= spec.fused_on else {"foreach": True}
    return spec.factory(model_params, validate_lr(lr), **resolved, **impl)
