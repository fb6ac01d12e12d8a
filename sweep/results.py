"""Parquet schemas of a study's results, declared once, and the writer that streams them.

Layout of ``<results>/<name>/``: ``trials.parquet`` (one row per trial), ``epochs.parquet``
(one row per trial x epoch), ``study.yaml`` (the resolved study), ``run.json`` (run metadata),
``ray/`` (Ray Tune's experiment directory, restorable with ``Tuner.restore``).
"""

from __future__ import annotations

import pyarrow as pa

TRIAL_STATUSES = ("completed", "early_stopped", "diverged", "error", "running")
TERMINAL_STATUSES = ("completed", "early_stopped", "diverged", "error")

# Optimizer hyperparameters other than lr get one column each, named HP_PREFIX + name
# (e.g. hp_momentum); which ones exist depends on the study. Types: float64 or bool.
HP_PREFIX = "hp_"

TRIALS_SCHEMA = pa.schema(
    [
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("optimizer", pa.string(), nullable=False),
        pa.field("lr", pa.float64(), nullable=False),
        pa.field("batch_size", pa.int64(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("epochs_run", pa.int64(), nullable=False),
        # epoch (1-based) at which the study's selection metric (train.metric) was best
        pa.field("best_epoch", pa.int64()),
        # best over epochs: min for losses and rmse, max for accuracy
        pa.field("best_val_loss", pa.float64()),
        pa.field("best_val_acc", pa.float64()),
        pa.field("best_val_rmse", pa.float64()),
        # values at the last epoch run
        pa.field("final_train_loss", pa.float64()),
        pa.field("final_val_loss", pa.float64()),
        pa.field("final_val_acc", pa.float64()),
        pa.field("final_val_rmse", pa.float64()),
        # test metrics of the final model (only for trials that ran all their epochs)
        pa.field("test_loss", pa.float64()),
        pa.field("test_acc", pa.float64()),
        pa.field("test_rmse", pa.float64()),
        pa.field("steps", pa.int64()),
        pa.field("train_time_s", pa.float64()),
        pa.field("samples_per_s", pa.float64()),
        pa.field("node_id", pa.string()),
        pa.field("device", pa.string()),
        pa.field("gpu_fraction", pa.float64()),
    ]
)

EPOCHS_SCHEMA = pa.schema(
    [
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("epoch", pa.int64(), nullable=False),
        pa.field("train_loss", pa.float64()),
        pa.field("val_loss", pa.float64()),
        pa.field("val_acc", pa.float64()),
        pa.field("val_rmse", pa.float64()),
        pa.field("epoch_time_s", pa.float64()),
        pa.field("samples_per_s", pa.float64()),
        pa.field("steps", pa.int64()),  # cumulative optimizer steps at the end of this epoch
        pa.field("elapsed_s", pa.float64()),  # cumulative training time of the trial
    ]
)

TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
STUDY_FILE = "study.yaml"
RUN_FILE = "run.json"
RAY_DIR = "ray"
