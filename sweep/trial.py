"""The Ray Tune trial function: a thin adapter from a Tune config to ``model.train.PackTrainer``.

A trial's config holds ``pack`` (``{"id", "members"}``, each member a grid point with its
``trial_id``) and ``fixed`` (model section, epochs, selection, checkpoint period, resources, early
stopping), both plain data. The dataset arrives once through Ray's object store as NumPy arrays
(zero-copy on the node), sent by ``sweep.trainable``: the torch-free side the driver imports.
Each Tune result's ``members`` list holds one record per configuration and epoch, with ``end``
set when that configuration stopped. A result holds one epoch, or several where epochs are quick:
a pack reports at most every REPORT_INTERVAL_S, and at every checkpoint and at its end.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping

import ray
import torch
from ray import tune

from model.data import Arrays, Dataset
from model.errors import ConfigError
from model.mlp import MLPConfig
from model.train import PackTrainer, TrainConfig
from sweep.space import PACK_KEY

CHECKPOINT_FILE = "trainer.pt"
# A pack's epochs wait at most this long to be reported together: each report is a handoff to
# the driver (about 4 ms; 12 ms with a checkpoint), and a default-study pack's epoch can take
# less. Reported at once, the digits grid's 9 packs spent 0.07 s each in reports, 7-20 % of their
# time. Epochs after the last report are not lost on a crash: the retry trains them again.
REPORT_INTERVAL_S = 1.0


def dataset_from_payload(payload: Mapping) -> Dataset:
    """The Dataset of sweep.trainable.payload_of, sharing the object store's (read-only) arrays."""
    return Arrays(**payload).tensors()


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


def train_config(point: Mapping, fixed: Mapping, data: Dataset, device: str) -> TrainConfig:
    """The TrainConfig of one configuration (ConfigError if a value is bad)."""
    model = MLPConfig(
        input_size=data.n_features, output_size=data.n_outputs, task=data.task, **fixed["model"]
    )
    return TrainConfig(
        model=model,
        optimizer=point["optimizer"],
        lr=point["lr"],
        batch_size=point["batch_size"],
        epochs=int(fixed["epochs"]),
        seed=point["seed"],
        optimizer_params=dict(point["optimizer_params"]),
        device=device,
        num_threads=max(1, int(fixed["cpus_per_trial"])),
        select=fixed["select"],
        metric=fixed["metric"],
    )


def _build(members: list[Mapping], fixed: Mapping, data: Dataset, device: str):
    """The members' TrainConfigs; a member whose values are bad becomes an error of its own."""
    good, errors = [], []
    for point in members:
        try:
            good.append((point["trial_id"], train_config(point, fixed, data, device)))
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            errors.append({"trial_id": point["trial_id"], "end": "error", "error": message})
    return good, errors


def run_pack(config: dict, payload: dict | None = None) -> None:
    """Train one pack of configurations, reporting every epoch of every member to Tune (see
    REPORT_INTERVAL_S) and checkpointing the whole pack periodically."""
    data = dataset_from_payload(payload)
    fixed, pack = config["fixed"], config[PACK_KEY]
    gpu_fraction = float(fixed["gpus_per_trial"])
    device = pick_device(gpu_fraction)
    good, errors = _build(pack["members"], fixed, data, device)
    static = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "device": device,
        "gpu_fraction": gpu_fraction,
        "pid": os.getpid(),
        "pack_size": len(pack["members"]),
    }
    if not good:
        tune.report({"epoch": 0, "members": errors, **static})
        return
    ids = [trial_id for trial_id, _ in good]
    trainer = PackTrainer([cfg for _, cfg in good], data)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=True)
        trainer.load_state_dict(state)
        errors = []  # reported before the checkpoint was taken
    rungs = EarlyStopping.from_fixed(fixed)
    if rungs is not None:
        trainer.stop(rungs.already_stopped(ids, trainer.active), "early_stopped")
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)  # an actor reused from another trial
    every = int(fixed["checkpoint_every"])
    waiting: list[dict] = []  # member records not reported yet
    reported = time.monotonic()
    for records in trainer.run():
        members = [{**record.as_dict(), "trial_id": ids[m], "end": None} for m, record in records]
        for (_, record), member in zip(records, members, strict=True):
            if record.status in ("completed", "diverged"):
                member["end"] = record.status
        if rungs is not None:
            stopped = rungs.decide(records, ids, fixed["metric"])
            trainer.stop(stopped, "early_stopped")
            for (m, _), member in zip(records, members, strict=True):
                if m in stopped:
                    member["end"] = member["status"] = "early_stopped"
        waiting += errors + members
        errors = []
        epoch = records[0][1].epoch
        due = bool(trainer.active) and epoch % every == 0  # a checkpoint
        if trainer.active and not due and time.monotonic() - reported < REPORT_INTERVAL_S:
            continue
        result = {"epoch": epoch, "members": waiting, **static}
        waiting = []
        if cuda:
            result["gpu_peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        if due:
            with tempfile.TemporaryDirectory() as directory:
                torch.save(trainer.state_dict(), os.path.join(directory, CHECKPOINT_FILE))
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report(result)
        reported = time.monotonic()


class EarlyStopping:
    """The pack's side of per-configuration ASHA: asks the study's shared rung record (a Ray
    actor, sweep.asha) at rung epochs only, one round trip for the whole pack."""

    def __init__(self, actor_name: str, rungs: list[int]) -> None:
        self.actor = ray.get_actor(actor_name)
        self.rungs = set(rungs)

    @classmethod
    def from_fixed(cls, fixed: Mapping) -> EarlyStopping | None:
        asha = fixed.get("asha")
        return None if not asha else cls(asha["actor"], asha["rungs"])

    def already_stopped(self, ids: list[str], active: list[int]) -> list[int]:
        """Members the record stopped before this pack's checkpoint was written (a retry)."""
        stopped = ray.get(self.actor.stopped.remote([ids[m] for m in active]))
        return [m for m, gone in zip(active, stopped, strict=True) if gone]

    def decide(self, records, ids: list[str], metric: str) -> set[int]:
        """The members to stop at this epoch. A member that diverged at a rung is recorded too
        (its non-finite value counts in the rung's cutoff, as in Ray's ASHA)."""
        asking = [
            (m, r)
            for m, r in records
            if r.status in ("running", "diverged") and r.epoch in self.rungs
        ]
        if not asking:
            return set()
        items = [(ids[m], r.epoch, getattr(r, metric)) for m, r in asking]
        keep = ray.get(self.actor.decide_many.remote(items))
        return {
            m
            for (m, r), go_on in zip(asking, keep, strict=True)
            if not go_on and r.status == "running"
        }
