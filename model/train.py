"""One training run: TrainConfig -> one EpochMetrics per epoch. Pure torch; knows nothing of Ray.

Example: ``python -m model train --optimizer sgd --opt momentum=0.9 --lr 0.05 --epochs 10``.

The loop is built for many small runs: the data goes to the run's device once; each epoch draws
one permutation from the run's own generator and slices it into batches (no DataLoader, which
indexes and collates sample by sample); the loss is summed on the device and read once per epoch;
evaluation runs once per epoch under ``torch.inference_mode``.
"""

from __future__ import annotations

import logging
import math
import numbers
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from model.errors import ConfigError
from model.mlp import MLPConfig, build_mlp, loss_function, prepare_targets
from model.optim import build_optimizer, validate_lr, validate_optimizer

if TYPE_CHECKING:
    from model.data import Dataset

logger = logging.getLogger(__name__)

EVAL_CHUNK = 8192  # rows per forward pass when evaluating; bounds memory on large splits
STATUSES = ("running", "completed", "diverged")


def _positive_int(name: str, value: object) -> int:
    """value as an int (NumPy integers included); ConfigError unless it is >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name}: {value!r} is not a positive integer")
    return int(value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs besides the data; validated on construction."""

    model: MLPConfig
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    seed: int = 0
    optimizer_params: Mapping[str, float | bool] = field(default_factory=dict)
    device: str = "cpu"
    num_threads: int | None = None  # torch.set_num_threads; None leaves it

    def __post_init__(self) -> None:
        if not isinstance(self.model, MLPConfig):
            raise ConfigError(f"model: {self.model!r} is not an MLPConfig")
        validate_optimizer(self.optimizer, self.optimizer_params)
        object.__setattr__(self, "optimizer_params", dict(self.optimizer_params))
        object.__setattr__(self, "lr", validate_lr(self.lr))
        object.__setattr__(self, "batch_size", _positive_int("batch_size", self.batch_size))
        object.__setattr__(self, "epochs", _positive_int("epochs", self.epochs))
        seed = self.seed
        if (
            isinstance(seed, bool)
            or not isinstance(seed, numbers.Integral)
            or not 0 <= seed < 2**32
        ):
            raise ConfigError(f"seed: {seed!r} is not an integer in [0, 2**32)")
        object.__setattr__(self, "seed", int(seed))
        if self.num_threads is not None:
            object.__setattr__(self, "num_threads", _positive_int("num_threads", self.num_threads))
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ConfigError(
                f"device: {self.device!r} is not a torch device (cpu, cuda, cuda:0)"
            ) from None


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured; the last record of a full run adds the test metrics."""

    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches
    val_loss: float
    val_acc: float | None  # classification
    val_rmse: float | None  # regression
    epoch_time_s: float  # training + validation of this epoch
    samples_per_s: float  # training samples / training time of this epoch
    steps: int  # cumulative optimizer steps
    elapsed_s: float  # cumulative epoch_time_s
    status: str  # "running" | "completed" (last epoch) | "diverged" (non-finite loss; run stops)
    test_loss: float | None = None
    test_acc: float | None = None
    test_rmse: float | None = None

    def as_dict(self) -> dict:
        """The record as a plain dict (one row of epochs.parquet plus status and test metrics)."""
        return asdict(self)


class _Split(NamedTuple):
    x: torch.Tensor  # float32 features on the run's device
    targets: torch.Tensor  # in the loss's form (see model.mlp.prepare_targets)
    labels: torch.Tensor | None  # class indices (classification) for accuracy


class _Scores(NamedTuple):
    loss: float
    acc: float | None
    rmse: float | None


def to_features(x: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """Features as a contiguous float32 tensor on device.

    NumPy defaults to float64 and torch.from_numpy keeps it, but the model's weights are
    float32: matmul of the two fails. Everything entering the model passes through here.
    """
    return torch.as_tensor(x).to(device=device, dtype=torch.float32).contiguous()


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random from one seed."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _check_fits(cfg: TrainConfig, data: Dataset) -> None:
    model = cfg.model
    if data.task != model.task:
        raise ConfigError(f"model.task: {model.task!r} but data {data.name!r} is {data.task!r}")
    if data.n_features != model.input_size:
        raise ConfigError(
            f"model.input_size: {model.input_size} but data {data.name!r} has "
            f"{data.n_features} features"
        )
    if data.n_outputs != model.output_size:
        raise ConfigError(
            f"model.output_size: {model.output_size} but data {data.name!r} has "
            f"{data.n_outputs} outputs"
        )
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {cfg.device!r} but no CUDA device is available")


class Trainer:
    """One training run that can be checkpointed (state_dict) and resumed bitwise identically."""

    def __init__(self, cfg: TrainConfig, data: Dataset) -> None:
        _check_fits(cfg, data)
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        seed_everything(cfg.seed)
        self.model = build_mlp(cfg.model).to(self.device)
        self.optimizer = build_optimizer(
            cfg.optimizer, self.model.parameters(), cfg.lr, cfg.optimizer_params
        )
        self._loss = loss_function(cfg.model)
        # Shuffling has its own generator so nothing else that draws random numbers shifts it.
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(cfg.seed)
        self._train = self._split(data.x_train, data.y_train)
        self._val = self._split(data.x_val, data.y_val)
        self._test = self._split(data.x_test, data.y_test)
        self.epochs_done = 0
        self.steps = 0
        self.elapsed_s = 0.0
        self.status = "running"

    def _split(self, x: torch.Tensor, y: torch.Tensor) -> _Split:
        targets = prepare_targets(self.cfg.model, torch.as_tensor(y)).to(self.device).contiguous()
        labels = None
        if self.cfg.model.task == "classification":
            labels = torch.as_tensor(y).to(self.device, torch.int64)
        return _Split(to_features(x, self.device), targets, labels)

    def state_dict(self) -> dict:
        """A copy of everything resuming needs; loads with torch.load(weights_only=True)."""
        np_state = np.random.get_state()
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epochs_done": self.epochs_done,
            "steps": self.steps,
            "elapsed_s": self.elapsed_s,
            "status": self.status,
            "rng": {
                "shuffle": self._generator.get_state(),
                "torch": torch.get_rng_state(),
                "numpy": {
                    "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                    "pos": int(np_state[2]),
                    "has_gauss": int(np_state[3]),
                    "cached_gaussian": float(np_state[4]),
                },
                "random": random.getstate(),
            },
        }
        return _clone(state)

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a state from state_dict(); the next run() continues where that one stopped."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epochs_done = int(state["epochs_done"])
        self.steps = int(state["steps"])
        self.elapsed_s = float(state["elapsed_s"])
        self.status = str(state["status"])
        rng = state["rng"]
        self._generator.set_state(rng["shuffle"].cpu())
        torch.set_rng_state(rng["torch"].cpu())
        np_rng = rng["numpy"]
        np.random.set_state(
            (
                "MT19937",
                np_rng["keys"].numpy().astype(np.uint32),
                np_rng["pos"],
                np_rng["has_gauss"],
                np_rng["cached_gaussian"],
            )
        )
        version, internal, gauss_next = rng["random"]
        random.setstate((version, tuple(internal), gauss_next))

    def run(self) -> Iterator[EpochMetrics]:
        """Train epochs epochs_done+1 .. cfg.epochs, yielding each epoch's metrics; stops after
        a diverged epoch."""
        for epoch in range(self.epochs_done + 1, self.cfg.epochs + 1):
            if self.status != "running":
                return
            yield self._run_epoch(epoch)

    def _run_epoch(self, epoch: int) -> EpochMetrics:
        start = time.perf_counter()
        train_loss = self._train_epoch()
        train_time = time.perf_counter() - start
        val = self._evaluate(self._val)
        epoch_time = time.perf_counter() - start
        self.epochs_done = epoch
        self.elapsed_s += epoch_time
        if not (math.isfinite(train_loss) and math.isfinite(val.loss)):
            self.status = "diverged"
            logger.info(
                "diverged at epoch %d (train_loss %s, val_loss %s)", epoch, train_loss, val.loss
            )
        elif epoch == self.cfg.epochs:
            self.status = "completed"
        test = self._evaluate(self._test) if self.status == "completed" else None
        return EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val.loss,
            val_acc=val.acc,
            val_rmse=val.rmse,
            epoch_time_s=epoch_time,
            samples_per_s=len(self._train.x) / train_time,
            steps=self.steps,
            elapsed_s=self.elapsed_s,
            status=self.status,
            test_loss=test.loss if test else None,
            test_acc=test.acc if test else None,
            test_rmse=test.rmse if test else None,
        )

    def _train_epoch(self) -> float:
        """One pass over the training split; the mean batch loss, read from the device once."""
        x, targets = self._train.x, self._train.targets
        model, optimizer, loss_fn = self.model, self.optimizer, self._loss
        order = torch.randperm(len(x), generator=self._generator, device=self.device)
        batches = order.split(self.cfg.batch_size)
        total = torch.zeros((), device=self.device)
        model.train()
        for idx in batches:
            loss = loss_fn(model(x.index_select(0, idx)), targets.index_select(0, idx))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        self.steps += len(batches)
        return (total / len(batches)).item()

    def _evaluate(self, split: _Split) -> _Scores:
        """Loss and accuracy or RMSE of the current model on a split, in chunks."""
        model, cfg = self.model, self.cfg.model
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(split.x), EVAL_CHUNK):
                rows = slice(start, start + EVAL_CHUNK)
                out = model(split.x[rows])
                loss_sum += self._loss(out, split.targets[rows], reduction="sum").double()
                if split.labels is not None:
                    correct += (out.argmax(dim=1) == split.labels[rows]).sum()
        # cross_entropy averages over rows; mse over every element (as the training loss does)
        count = len(split.x) if cfg.loss == "cross_entropy" else split.targets.numel()
        loss = loss_sum.item() / count
        if split.labels is not None:
            return _Scores(loss, correct.item() / len(split.x), None)
        return _Scores(loss, None, math.sqrt(loss))


def _clone(value):
    """A deep copy of a state tree, so later training does not change a saved state."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_clone(item) for item in value)
    return value


def fit(cfg: TrainConfig, data: Dataset) -> Iterator[EpochMetrics]:
    """Train one model on data; yields one EpochMetrics per epoch (Trainer(cfg, data).run())."""
    return Trainer(cfg, data).run()
