"""The study's grid: one plain dict per trial, and the Ray Tune param_space that runs them.

Plain Python (no ray import): a Tune grid is just ``{"grid_search": [...]}``. Used by
``python -m sweep run STUDY.yaml``, which prints ``trial_count(study)`` before launch.
"""

from __future__ import annotations

from typing import Any

from sweep.config import StudyConfig

# The key of the one grid dimension in the Tune param_space; a trial's config[POINT_KEY] is its
# point from expand_grid().
POINT_KEY = "point"


def expand_grid(study: StudyConfig) -> list[dict[str, Any]]:
    """One dict per trial, in a fixed order: optimizer, then lr, then batch size, then seed.

    Each is ``{"optimizer", "lr", "batch_size", "seed", "optimizer_params"}``; the order follows
    the study file (optimizers and lrs as listed), so the same study always gives the same list.
    """
    return [
        {
            "optimizer": opt.name,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "optimizer_params": dict(opt.params),
        }
        for opt in study.search.optimizers
        for lr in opt.lrs
        for batch_size in study.search.batch_sizes
        for seed in study.search.seeds
    ]


def trial_count(study: StudyConfig) -> int:
    """The number of trials: sum over optimizers of len(lrs), x batch sizes x seeds."""
    pairs = sum(len(opt.lrs) for opt in study.search.optimizers)
    return pairs * len(study.search.batch_sizes) * len(study.search.seeds)


def param_space(study: StudyConfig) -> dict[str, Any]:
    """The Tune param_space: a single grid_search over the points, so Tune makes exactly
    trial_count(study) trials (run it with num_samples=1)."""
    return {POINT_KEY: {"grid_search": expand_grid(study)}}


def point_key(point: dict[str, Any]) -> str:
    """A readable, stable key of a grid point, e.g. ``sgd-lr0.1-bs64-seed0`` (unique in a study)."""
    return f"{point['optimizer']}-lr{point['lr']!r}-bs{point['batch_size']}-seed{point['seed']}"


def hyperparameter_columns(study: StudyConfig) -> dict[str, type]:
    """Optimizer hyperparameter names set anywhere in the study (sorted) -> float or bool.

    Names are bare (``momentum``); the Parquet column is ``sweep.results.HP_PREFIX + name``.
    Trials whose optimizer does not set a name get null there.
    """
    columns: dict[str, type] = {}
    for opt in study.search.optimizers:
        for name, value in opt.params.items():
            kind = bool if isinstance(value, bool) else float
            if columns.setdefault(name, kind) is not kind:
                # Only reachable if model.optim's table types one name differently per optimizer.
                raise TypeError(f"hyperparameter {name!r} is both bool and float in this study")
    return dict(sorted(columns.items()))


__all__ = [
    "POINT_KEY",
    "expand_grid",
    "hyperparameter_columns",
    "param_space",
    "point_key",
    "trial_count",
]
