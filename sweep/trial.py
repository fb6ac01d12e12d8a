"""The Ray Tune trial function: a thin adapter from a Tune config to ``model.train.Trainer``.

A trial's config holds ``point`` (optimizer, lr, batch_size, seed, optimizer_params) from the
grid and ``fixed`` (model section, epochs, checkpoint period, resources), both plain data. The
dataset arrives once through Ray's object store as NumPy arrays (zero-copy on the node).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping

import numpy as np
import ray
import torch
from ray import tune

from model.data import Dataset
from model.mlp import MLPConfig
from model.train import TrainConfig, Trainer

CHECKPOINT_FILE = "trainer.pt"
_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def dataset_to_payload(data: Dataset) -> dict:
    """A Dataset as plain NumPy arrays and scalars, for Ray's object store."""
    payload = {name: getattr(data, name).numpy() for name in _ARRAYS}
    payload.update(name=data.name, task=data.task, classes=tuple(data.classes))
    return payload


def dataset_from_payload(payload: Mapping) -> Dataset:
    """Rebuild the Dataset without copying the arrays (they are read-only in the object store)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": never written to
        tensors = {name: torch.from_numpy(np.asarray(payload[name])) for name in _ARRAYS}
    return Dataset(
        name=payload["name"], task=payload["task"], classes=payload["classes"], **tensors
    )


def pick_device(gpu_fraction: float) -> str:
    """The device Ray assigned to this trial: a CUDA device only if Ray gave it a GPU.

    On a GPU node a trial that asked for no GPU still sees every GPU, so CUDA availability
    alone says nothing; a trial given a logical GPU on a machine without CUDA runs on the CPU.
    """
    if gpu_fraction <= 0 or not torch.cuda.is_available():
        return "cpu"
    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    if not gpu_ids:
        return "cpu"
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    index = visible.index(gpu_ids[0]) if gpu_ids[0] in visible else int(gpu_ids[0])
    if gpu_fraction < 1:
        torch.cuda.set_per_process_memory_fraction(gpu_fraction, index)
    return f"cuda:{index}"


def train_config(config: Mapping, data: Dataset, device: str) -> TrainConfig:
    """The TrainConfig of one grid point."""
    point, fixed = config["point"], config["fixed"]
    model = MLPConfig(
        input_size=data.n_features, output_size=data.n_outputs, task=data.task, **fixed["model"]
    )
    return TrainConfig(
        model=model,
        optimizer=point["optimizer"],
        lr=float(point["lr"]),
        batch_size=int(point["batch_size"]),
        epochs=int(fixed["epochs"]),
        seed=int(point["seed"]),
        optimizer_params=dict(point["optimizer_params"]),
        device=device,
        num_threads=max(1, int(fixed["cpus_per_trial"])),
    )


def run_trial(config: dict, payload: dict | None = None) -> None:
    """Train one grid point, reporting every epoch to Tune and checkpointing periodically."""
    data = dataset_from_payload(payload)
    fixed = config["fixed"]
    gpu_fraction = float(fixed["gpus_per_trial"])
    device = pick_device(gpu_fraction)
    trainer = Trainer(train_config(config, data, device), data)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=True)
        trainer.load_state_dict(state)
    static = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "device": device,
        "gpu_fraction": gpu_fraction,
        "pid": os.getpid(),
    }
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)  # an actor reused from another trial
    every = int(fixed["checkpoint_every"])
    for record in trainer.run():
        metrics = {**record.as_dict(), **static}
        if cuda:
            metrics["gpu_peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        if record.status == "running" and every > 0 and record.epoch % every == 0:
            with tempfile.TemporaryDirectory() as directory:
                torch.save(trainer.state_dict(), os.path.join(directory, CHECKPOINT_FILE))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report(metrics)
