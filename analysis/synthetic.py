"""Synthetic results sets with the sweep's exact Parquet schema, for tests and benchmarks.

``write_results(SyntheticSpec(scheduler="asha"), "results")`` writes ``results/synthetic/``
with trials.parquet, epochs.parquet and study.yaml; ``benchmarks/analysis_scale.py`` uses it.
Curves follow a simple model: each optimizer has a best LR that grows with sqrt(batch size), the
loss floor rises quadratically in log10(lr / best lr), and LRs far above the best diverge.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from analysis.load import full_trials_schema
from sweep.results import EPOCHS_FILE, EPOCHS_SCHEMA, STUDY_FILE, TRIALS_FILE

# Best LR at batch size 64 and the loss floor of each optimizer in the synthetic model.
_BEST_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 2e-3, "rmsprop": 1e-3, "adagrad": 3e-2}
_FLOOR = {"sgd": 0.12, "adam": 0.09, "adamw": 0.095, "rmsprop": 0.11, "adagrad": 0.14}
_N_TRAIN = 1257  # digits' training split


def _default_optimizers() -> dict[str, tuple[float, ...]]:
    return {"sgd": (1.0, 0.3, 0.1, 0.03, 0.01), "adam": (1e-2, 3e-3, 1e-3, 3e-4, 1e-4)}


@dataclass(frozen=True)
class SyntheticSpec:
    """The grid and knobs of a synthetic study; trials = optimizers x lrs x batch sizes x seeds."""

    name: str = "synthetic"
    optimizers: Mapping[str, tuple[float, ...]] = field(default_factory=_default_optimizers)
    batch_sizes: tuple[int, ...] = (16, 64, 256)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 10
    scheduler: str = "none"  # none | asha
    grace_period: int = 2
    reduction_factor: int = 3
    task: str = "classification"
    metric: str = "val_loss"
    mode: str = "min"
    n_running: int = 0  # trials left in flight (status running)
    n_error: int = 0  # trials that failed before their first epoch
    random_seed: int = 0
    select: str = "best_epoch"  # train.select: which epoch's weights the test metrics come from
    pack_size: int = 1  # configurations per pack (same batch size and seed), as packed trials
    # per optimizer: validation loss added per epoch after the middle of training (overfitting),
    # so its best-epoch and final values differ
    overfit: Mapping[str, float] = field(default_factory=dict)


def study_dict(spec: SyntheticSpec) -> dict:
    """The resolved study.yaml of a synthetic study (same keys as the sweep writes)."""
    loss = "cross_entropy" if spec.task == "classification" else "mse"
    spaces = {opt: {"lr": list(map(float, lrs))} for opt, lrs in spec.optimizers.items()}
    if "sgd" in spaces:
        spaces["sgd"].update(momentum=0.9, nesterov=False)
    scheduler = {"type": spec.scheduler}
    if spec.scheduler == "asha":
        scheduler.update(grace_period=spec.grace_period, reduction_factor=spec.reduction_factor)
    return {
        "name": spec.name,
        "data": {
            "source": "digits",
            "target": None,
            "task": spec.task,
            "val_fraction": 0.15,
            "test_fraction": 0.15,
            "scale": "standard",
            "split_seed": 0,
        },
        "model": {
            "hidden": [128, 64],
            "activation": "relu",
            "output_activation": "none",
            "init": "default",
            "init_scale": None,
            "bias": True,
            "loss": loss,
        },
        "train": {
            "epochs": spec.epochs,
            "metric": spec.metric,
            "mode": spec.mode,
            "select": spec.select,
            "checkpoint_every": 5,
            "max_failures": 2,
        },
        "search": {
            "batch_size": list(spec.batch_sizes),
            "seeds": list(spec.seeds),
            "optimizers": spaces,
        },
        "scheduler": scheduler,
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    }


def _grid(spec: SyntheticSpec) -> pd.DataFrame:
    rows = [
        (opt, float(lr), int(bs), int(seed))
        for opt, lrs in spec.optimizers.items()
        for bs in spec.batch_sizes
        for lr in lrs
        for seed in spec.seeds
    ]
    grid = pd.DataFrame(rows, columns=["optimizer", "lr", "batch_size", "seed"])
    grid.insert(0, "trial_id", [f"t{i:06d}" for i in range(len(grid))])
    return grid


def _curves(spec: SyntheticSpec, grid: pd.DataFrame, rng: np.random.Generator) -> dict:
    """val_loss per (trial, epoch), the epoch each trial diverges at (0: never), as arrays."""
    opt = grid["optimizer"].to_numpy()
    geo = {o: float(np.exp(np.mean(np.log(lrs)))) for o, lrs in spec.optimizers.items()}
    base = np.array([_BEST_LR.get(o, geo[o]) for o in opt])
    best_lr = base * np.sqrt(grid["batch_size"].to_numpy() / 64)
    off = np.log10(grid["lr"].to_numpy() / best_lr)
    floor = np.array([_FLOOR.get(o, 0.1) for o in opt]) + 0.2 * off**2
    floor += 0.01 * np.log2(grid["batch_size"].to_numpy() / 16)
    floor *= np.exp(rng.normal(0, 0.04, len(grid)))
    tau = 1.5 * (1 + np.abs(off)) * (grid["batch_size"].to_numpy() / 16) ** 0.3
    epoch = np.arange(1, spec.epochs + 1)
    start = 2.3 if spec.task == "classification" else 1.0
    val = floor[:, None] + (start - floor[:, None]) * np.exp(-epoch[None, :] / tau[:, None])
    val *= np.exp(rng.normal(0, 0.01, val.shape))
    rise = np.array([spec.overfit.get(o, 0.0) for o in opt])
    val += rise[:, None] * np.maximum(0, epoch - spec.epochs // 2)[None, :]
    diverges = off > math.log10(8)
    diverge_epoch = np.where(diverges, rng.integers(1, min(3, spec.epochs) + 1, len(grid)), 0)
    return {"val_loss": val, "diverge_epoch": diverge_epoch}


def _epochs_run(spec: SyntheticSpec, val: np.ndarray, diverge_epoch: np.ndarray) -> np.ndarray:
    """Epochs each trial ran; ASHA stops all but the best 1/reduction_factor at each rung."""
    run = np.where(diverge_epoch > 0, diverge_epoch, spec.epochs)
    if spec.scheduler != "asha":
        return run
    rung = spec.grace_period
    while rung < spec.epochs:
        alive = run > rung
        if alive.sum() > 1:
            cut = np.quantile(val[alive, rung - 1], 1 / spec.reduction_factor)
            run = np.where(alive & (val[:, rung - 1] > cut), rung, run)
        rung *= spec.reduction_factor
    return run


def make_results(spec: SyntheticSpec) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(trials, epochs, study) frames of a synthetic study, columns as in sweep.results."""
    rng = np.random.default_rng(spec.random_seed)
    grid = _grid(spec)
    curves = _curves(spec, grid, rng)
    val, diverge_epoch = curves["val_loss"], curves["diverge_epoch"]
    run = _epochs_run(spec, val, diverge_epoch)
    status = np.where(
        diverge_epoch > 0, "diverged", np.where(run < spec.epochs, "early_stopped", "completed")
    )
    n = len(grid)
    picked = rng.permutation(n)
    error_idx, running_idx = (
        picked[: spec.n_error],
        picked[spec.n_error : spec.n_error + spec.n_running],
    )
    status[error_idx], run[error_idx] = "error", 0
    status[running_idx] = "running"
    run[running_idx] = np.maximum(1, run[running_idx] // 2)
    epoch = np.arange(1, spec.epochs + 1)
    ran = epoch[None, :] <= run[:, None]
    val = np.where(ran, val, np.nan)
    val[diverge_epoch > 0, :] = np.where(
        epoch[None, :] >= diverge_epoch[diverge_epoch > 0, None], np.nan, val[diverge_epoch > 0]
    )
    train = val * 0.8
    acc = (
        np.clip(1 - 0.35 * val, 0, 1)
        if spec.task == "classification"
        else np.full_like(val, np.nan)
    )
    rmse = np.sqrt(val) if spec.task == "regression" else np.full_like(val, np.nan)
    steps_per_epoch = np.ceil(_N_TRAIN / grid["batch_size"].to_numpy())
    epoch_time = steps_per_epoch * (0.002 + grid["batch_size"].to_numpy() * 2e-5)
    epochs = _epoch_frame(grid, ran, epoch, train, val, acc, rmse, steps_per_epoch, epoch_time)
    trials = _trial_frame(
        spec, grid, status, run, train, val, acc, rmse, steps_per_epoch, epoch_time
    )
    return trials, epochs, study_dict(spec)


def _epoch_frame(
    grid, ran, epoch, train, val, acc, rmse, steps_per_epoch, epoch_time
) -> pd.DataFrame:
    rows, cols = np.nonzero(ran)
    return pd.DataFrame(
        {
            "trial_id": grid["trial_id"].to_numpy()[rows],
            "epoch": epoch[cols].astype(np.int64),
            "train_loss": train[rows, cols],
            "val_loss": val[rows, cols],
            "val_acc": acc[rows, cols],
            "val_rmse": rmse[rows, cols],
            "epoch_time_s": epoch_time[rows],
            "samples_per_s": _N_TRAIN / epoch_time[rows],
            "steps": (steps_per_epoch[rows] * epoch[cols]).astype(np.int64),
            "elapsed_s": epoch_time[rows] * epoch[cols],
        }
    )


def _last(values: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Each row's value at its epoch ``run`` (1-based); NaN where run is 0."""
    out = np.full(len(run), np.nan)
    has = run > 0
    out[has] = values[np.nonzero(has)[0], run[has] - 1]
    return out


def _packs(grid: pd.DataFrame, pack_size: int) -> np.ndarray:
    """A pack id per configuration: chunks of pack_size sharing batch size and seed."""
    order = grid.groupby(["batch_size", "seed"], sort=False).cumcount().to_numpy() // pack_size
    keys = grid["batch_size"].astype(str) + "-" + grid["seed"].astype(str) + "-" + order.astype(str)
    return ("p" + pd.Series(pd.factorize(keys)[0]).map("{:05d}".format)).to_numpy()


def _trial_frame(spec, grid, status, run, train, val, acc, rmse, steps_per_epoch, epoch_time):
    metric = {"val_loss": val, "val_acc": acc, "val_rmse": rmse}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: diverged at epoch 1
        key = metric.get(spec.metric, val) * (-1 if spec.mode == "max" else 1)
        key = np.where(np.isnan(key), np.inf, key)
        best_epoch = np.where((run > 0) & np.isfinite(key).any(axis=1), key.argmin(axis=1) + 1, 0)
        done = status == "completed"
        tested = np.where(done, best_epoch if spec.select == "best_epoch" else run, 0)
        frame = grid.assign(
            status=status,
            error=np.where(status == "error", "RuntimeError: synthetic failure", None),
            epochs_run=run.astype(np.int64),
            best_epoch=pd.array(np.where(best_epoch > 0, best_epoch, None), dtype="Int64"),
            best_val_loss=np.nanmin(val, axis=1),
            best_val_acc=np.nanmax(acc, axis=1),
            best_val_rmse=np.nanmin(rmse, axis=1),
            final_train_loss=_last(train, run),
            final_val_loss=_last(val, run),
            final_val_acc=_last(acc, run),
            final_val_rmse=_last(rmse, run),
            test_loss=_last(val, tested) * 1.05,
            test_acc=_last(acc, tested) - 0.01,
            test_rmse=_last(rmse, tested) * 1.02,
            test_epoch=pd.array(np.where(tested > 0, tested, None), dtype="Int64"),
            steps=(steps_per_epoch * run).astype(np.int64),
            train_time_s=epoch_time * run,
            samples_per_s=np.where(run > 0, _N_TRAIN / epoch_time, np.nan),
            node_id="node-0",
            device="cpu",
            gpu_fraction=0.0,
            pack_id=_packs(grid, spec.pack_size),
            pack_size=np.int64(spec.pack_size),
        )
    frame.insert(5, "hp_momentum", np.where(frame["optimizer"] == "sgd", 0.9, np.nan))
    nesterov = pd.array(np.where(frame["optimizer"] == "sgd", False, None), dtype="boolean")
    frame.insert(6, "hp_nesterov", nesterov)
    return frame


def trials_schema(hp_fields: list[pa.Field]) -> pa.Schema:
    """The trials schema (optional columns included) with the hp_<name> columns after seed."""
    schema = full_trials_schema()
    at = schema.get_field_index("seed") + 1
    fields = list(schema)
    return pa.schema(fields[:at] + hp_fields + fields[at:])


def write_frames(directory: str, trials: pd.DataFrame, epochs: pd.DataFrame, study: dict) -> str:
    """Write trials/epochs Parquet and study.yaml into directory, with the sweep's schema."""
    os.makedirs(directory, exist_ok=True)
    hp = [
        pa.field(c, pa.bool_() if trials[c].dtype == "boolean" else pa.float64())
        for c in trials.columns
        if c.startswith("hp_")
    ]
    schema = trials_schema(hp)
    # columns the schema gained that this generator does not model are written as nulls
    missing = [f.name for f in schema if f.name not in trials]
    trials = trials.assign(**dict.fromkeys(missing, None))
    pq.write_table(
        pa.Table.from_pandas(trials[schema.names], schema=schema, preserve_index=False),
        os.path.join(directory, TRIALS_FILE),
    )
    pq.write_table(
        pa.Table.from_pandas(
            epochs[EPOCHS_SCHEMA.names], schema=EPOCHS_SCHEMA, preserve_index=False
        ),
        os.path.join(directory, EPOCHS_FILE),
    )
    with open(os.path.join(directory, STUDY_FILE), "w", encoding="utf-8") as handle:
        yaml.safe_dump(study, handle, sort_keys=False)
    return directory


def write_results(spec: SyntheticSpec, root: str) -> str:
    """Write a synthetic study into root/<spec.name>/ and return that directory."""
    trials, epochs, study = make_results(spec)
    return write_frames(os.path.join(root, spec.name), trials, epochs, study)
