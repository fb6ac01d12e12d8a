"""The study's grid: one plain dict per configuration, packed into the Tune trials that run them.

Plain Python (no ray import): a Tune grid is just ``{"grid_search": [...]}``. Used by
``python -m sweep run STUDY.yaml``, which prints ``trial_count(study)`` before launch.

Packing (``resources.models_per_trial``): configurations that share the optimizer and the batch
size can train together in one Tune trial (model.train.PackTrainer). ``N`` caps a pack at N
configurations (1: one configuration per trial). ``auto`` packs each (optimizer, batch size)
group whole, capped by memory (``AUTO_PACK_BYTES`` of parameters, gradients, optimizer state,
best-epoch weights and activations, and at most ``AUTO_MAX_MEMBERS``), and splits the groups
evenly when there are fewer of them than trials that can run at once, so that no slot idles.
Either way the packs of one group differ in size by at most one.
"""

from __future__ import annotations

import math
from typing import Any

from sweep.config import StudyConfig

# The key of the one grid dimension in the Tune param_space; a trial's config[PACK_KEY] is
# {"id": pack number, "members": [point, ...]} with points from expand_grid().
PACK_KEY = "pack"
AUTO_PACK_BYTES = 2 * 2**30
AUTO_MAX_MEMBERS = 256


def expand_grid(study: StudyConfig) -> list[dict[str, Any]]:
    """One dict per trial, in a fixed order: optimizer, then lr, then batch size, then seed.

    Each is ``{"optimizer", "lr", "batch_size", "seed", "optimizer_params", "trial_id"}``, with
    ``trial_id`` = ``point_key(point)``, the configuration's id in the results; the order follows
    the study file (optimizers and lrs as listed), so the same study always gives the same list.
    """
    points = [
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
    for point in points:
        point["trial_id"] = point_key(point)
    return points


def trial_count(study: StudyConfig) -> int:
    """The number of trials: sum over optimizers of len(lrs), x batch sizes x seeds."""
    pairs = sum(len(opt.lrs) for opt in study.search.optimizers)
    return pairs * len(study.search.batch_sizes) * len(study.search.seeds)


def member_bytes(study: StudyConfig, input_size: int, output_size: int, batch_size: int) -> int:
    """Memory one member of a pack needs, roughly: float32 parameters x 6 (weights, gradients,
    up to three optimizer states, best-epoch weights) plus a batch's activations x 3."""
    sizes = (input_size, *study.model.hidden, output_size)
    layers = zip(sizes[:-1], sizes[1:], strict=True)
    bias = 1 if study.model.bias else 0
    params = sum((fan_in + bias) * fan_out for fan_in, fan_out in layers)
    activations = batch_size * sum(sizes)
    return 4 * (6 * params + 3 * activations)


def pack_cap(study: StudyConfig, input_size: int, output_size: int, batch_size: int) -> int:
    """The most configurations one pack of this batch size may hold."""
    wanted = study.resources.models_per_trial
    if wanted != "auto":
        return int(wanted)
    fits = AUTO_PACK_BYTES // member_bytes(study, input_size, output_size, batch_size)
    return max(1, min(AUTO_MAX_MEMBERS, fits))


def pack_grid(
    study: StudyConfig, *, input_size: int, output_size: int, slots: int = 1
) -> list[dict[str, Any]]:
    """The packs: ``{"id", "members"}`` each, members sharing optimizer and batch size.

    Longest first (smaller batches take more steps), so a slow pack does not start last.
    """
    groups: dict[tuple[str, int], list[dict]] = {}
    for point in expand_grid(study):
        groups.setdefault((point["optimizer"], point["batch_size"]), []).append(point)
    caps = [pack_cap(study, input_size, output_size, batch_size) for _, batch_size in groups]
    auto = study.resources.models_per_trial == "auto"
    counts = _pack_counts([len(points) for points in groups.values()], caps, slots if auto else 1)
    packs = []
    for points, count in zip(groups.values(), counts, strict=True):
        size, extra = divmod(len(points), count)  # count packs whose sizes differ by at most one
        bounds = [i * size + min(i, extra) for i in range(count + 1)]
        packs.extend(points[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    packs.sort(key=lambda members: (members[0]["batch_size"], -len(members)))
    return [{"id": i, "members": members} for i, members in enumerate(packs)]


def _pack_counts(sizes: list[int], caps: list[int], slots: int) -> list[int]:
    """How many packs each group becomes: as few as its cap allows, or ceil(slots / groups)
    when there are fewer groups than slots; if small groups leave slots idle even so, the
    largest packs split further while a configuration could fill a slot."""
    split = math.ceil(slots / len(sizes)) if len(sizes) < slots else 1
    counts = [min(n, max(split, math.ceil(n / cap))) for n, cap in zip(sizes, caps, strict=True)]
    for _ in range(slots):  # bounded: each pass adds a pack or stops
        if sum(counts) >= slots:
            break
        largest = max(range(len(sizes)), key=lambda g: sizes[g] / counts[g])
        if counts[largest] == sizes[largest]:
            break  # every pack holds one configuration
        counts[largest] += 1
    return counts


def param_space(
    study: StudyConfig, *, input_size: int, output_size: int, slots: int = 1
) -> dict[str, Any]:
    """The Tune param_space: one grid_search over the packs (run it with num_samples=1)."""
    packs = pack_grid(study, input_size=input_size, output_size=output_size, slots=slots)
    return {PACK_KEY: {"grid_search": packs}}


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
    "PACK_KEY",
    "expand_grid",
    "hyperparameter_columns",
    "pack_grid",
    "param_space",
    "point_key",
    "trial_count",
]
