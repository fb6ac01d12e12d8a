"""Training: TrainConfig -> one EpochMetrics per epoch, for one run or a pack of K runs at once.

Pure torch; knows nothing of Ray. Example: ``python -m model train --optimizer sgd --opt
momentum=0.9 --lr 0.05 --epochs 10``.

One training core, ``PackTrainer``, serves one member and many. Its members share the network,
the optimizer's name, the batch size and the epoch count; each has its own learning rate, seed
and optimizer hyperparameters. The core owns the loop: each member's batch order (its own
generator, as a run of its own would draw it), divergence, evaluation, best-epoch selection,
statuses, checkpoints. An engine owns the arithmetic: ``TorchEngine`` is one nn.Module with its
torch.optim optimizer (the reference), ``StackedEngine`` (model.packed) is K members as stacked
tensors with vectorised optimizer steps. ``Trainer`` is the one-member view on torch.optim.

The loop is built for many small runs: the data goes to the device once; each epoch draws one
permutation per member and slices it into batches (no DataLoader); the loss is summed on the
device and read once per epoch; evaluation runs once per epoch under ``torch.inference_mode``.
"""

from __future__ import annotations

import logging
import math
import numbers
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from model.errors import ConfigError
from model.mlp import MLPConfig, build_mlp, loss_function, prepare_targets
from model.optim import build_optimizer, validate_lr, validate_optimizer
from model.packed import (
    StackedMLP,
    StackedOptimizer,
    columns_from_batch_major,
    loss_count,
    stacked_loss,
)
from model.spec import positive_int

if TYPE_CHECKING:
    from model.data import Dataset

logger = logging.getLogger(__name__)

# 2: a pack's (K, P) tensors are feature-major (model.packed); format 1 checkpoints are converted.
CHECKPOINT_FORMAT = 2
EVAL_CHUNK = 8192  # rows per forward pass when evaluating; bounds memory on large splits
STATUSES = ("running", "completed", "diverged")
# Which weights are tested: those of the best epoch by the selection metric, or the last epoch's.
SELECTS = ("best_epoch", "final")
# Selection metric -> mode (accuracy is maximised, everything else minimised).
SELECT_METRICS = {"val_loss": "min", "val_acc": "max", "val_rmse": "min", "train_loss": "min"}


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
    select: str = "final"  # which epoch's weights the test metrics are measured on (SELECTS)
    metric: str = "val_loss"  # what "best epoch" means (SELECT_METRICS)

    def __post_init__(self) -> None:
        if not isinstance(self.model, MLPConfig):
            raise ConfigError(f"model: {self.model!r} is not an MLPConfig")
        validate_optimizer(self.optimizer, self.optimizer_params)
        object.__setattr__(self, "optimizer_params", dict(self.optimizer_params))
        object.__setattr__(self, "lr", validate_lr(self.lr))
        object.__setattr__(self, "batch_size", positive_int("batch_size", self.batch_size))
        object.__setattr__(self, "epochs", positive_int("epochs", self.epochs))
        seed = self.seed
        if (
            isinstance(seed, bool)
            or not isinstance(seed, numbers.Integral)
            or not 0 <= seed < 2**32
        ):
            raise ConfigError(f"seed: {seed!r} is not an integer in [0, 2**32)")
        object.__setattr__(self, "seed", int(seed))
        if self.num_threads is not None:
            object.__setattr__(self, "num_threads", positive_int("num_threads", self.num_threads))
        if self.select not in SELECTS:
            raise ConfigError(f"select: {self.select!r} is not one of {', '.join(SELECTS)}")
        if self.metric not in SELECT_METRICS:
            raise ConfigError(f"metric: {self.metric!r} is not one of {', '.join(SELECT_METRICS)}")
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
    test_epoch: int | None = None  # the epoch whose weights the test metrics were measured on

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


# ---- engines: the arithmetic of one training step and one forward pass ------------------------
class TorchEngine:
    """One member as an nn.Module with its torch.optim optimizer: the reference implementation."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        seed_everything(cfg.seed)
        self.model = build_mlp(cfg.model).to(device)
        self.optimizer = build_optimizer(
            cfg.optimizer, self.model.parameters(), cfg.lr, cfg.optimizer_params
        )
        self._loss = loss_function(cfg.model)

    def train_epoch(
        self, x: torch.Tensor, targets: torch.Tensor, orders: torch.Tensor, batch_size: int
    ) -> torch.Tensor:
        """One pass in the batch order orders[0]; the mean batch loss, shape (1,)."""
        model, optimizer, loss_fn = self.model, self.optimizer, self._loss
        batches = orders[0].split(batch_size)
        total = torch.zeros((), device=x.device)
        model.train()
        for idx in batches:
            loss = loss_fn(model(x.index_select(0, idx)), targets.index_select(0, idx))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        return (total / len(batches)).view(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs for a shared input, feature-major as a pack's: (1, out, rows)."""
        self.model.eval()
        return self.model(x).t().unsqueeze(0)

    def weights(self) -> list[torch.Tensor]:
        return [p.detach().unsqueeze(0) for p in self.model.parameters()]

    def load_weights(self, tensors: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, t in zip(self.model.parameters(), tensors, strict=True):
                p.copy_(t[0])

    def keep(self, rows: torch.Tensor) -> None:
        """A single member has nowhere to shrink to; once it stops the core stops calling."""

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class StackedEngine:
    """K members as stacked tensors (model.packed): one batched matmul per layer, one vectorised
    optimizer step per parameter tensor, whatever K is."""

    def __init__(self, cfgs: Sequence[TrainConfig], device: torch.device) -> None:
        members = []
        for cfg in cfgs:  # member k starts from the weights a run of its own would build
            seed_everything(cfg.seed)
            members.append(build_mlp(cfg.model))
        self.cfg = cfgs[0].model
        self.net = StackedMLP(self.cfg, members, device)
        self.optimizer = StackedOptimizer(
            cfgs[0].optimizer,
            self.net.flat,
            [cfg.lr for cfg in cfgs],
            [cfg.optimizer_params for cfg in cfgs],
        )

    def train_epoch(
        self, x: torch.Tensor, targets: torch.Tensor, orders: torch.Tensor, batch_size: int
    ) -> torch.Tensor:
        """One pass, member k in the batch order orders[k], or every member in orders[0] when
        orders has one row; the mean batch losses, shape (K,)."""
        k, n = len(self.net.flat), orders.shape[1]
        total = torch.zeros(k, device=x.device)
        batches = 0
        for start in range(0, n, batch_size):
            total += self._step(x, targets, orders[:, start : start + batch_size])
            batches += 1
        return total / batches

    def _step(self, x: torch.Tensor, targets: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """One optimizer step of every member on its batch idx[k], or of all on idx[0] when idx
        has one row (gathered once, each member's batch a view of it: bit for bit the numbers
        of a batch of its own); the batch losses (K,)."""
        net = self.net
        k, (batches, rows) = len(net.flat), idx.shape
        idx = idx.reshape(-1)
        xb = x.index_select(0, idx).view(batches, rows, -1).expand(k, -1, -1)
        tb = targets.index_select(0, idx).view(batches, rows, *targets.shape[1:])
        tb = tb.expand(k, *tb.shape[1:])
        losses = net.loss_and_grad(xb, tb, loss_count(self.cfg, rows))
        self.optimizer.step(net.flat, net.flat_grad)
        return losses

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def weights(self) -> list[torch.Tensor]:
        return [self.net.flat]

    def load_weights(self, tensors: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            self.net.flat.copy_(tensors[0])

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the members at rows: the stack, and so each step's compute, shrinks."""
        self.net.keep(rows)
        self.optimizer.keep(rows)

    def state_dict(self) -> dict:
        return {"flat": self.net.flat, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        self.net.load_flat(state["flat"])
        self.optimizer.load_state_dict(state["optimizer"])


ENGINES = ("auto", "torch", "stacked")
# Fields every member of a pack shares (the rest, lr, seed and optimizer_params, are per member).
_SHARED = (
    "model", "optimizer", "batch_size", "epochs", "device", "num_threads", "select", "metric",
)  # fmt: skip


def _check_pack(cfgs: Sequence[TrainConfig]) -> None:
    if not cfgs:
        raise ConfigError("pack: no configurations")
    base = cfgs[0]
    for i, cfg in enumerate(cfgs[1:], start=1):
        if not isinstance(cfg, TrainConfig):
            raise ConfigError(f"pack[{i}]: {cfg!r} is not a TrainConfig")
        for name in _SHARED:
            if getattr(cfg, name) != getattr(base, name):
                raise ConfigError(
                    f"pack[{i}].{name}: {getattr(cfg, name)!r} differs from the pack's "
                    f"{getattr(base, name)!r} (members share everything but lr, seed and "
                    "optimizer hyperparameters)"
                )


# ---- the training core -------------------------------------------------------------------------
class PackTrainer:
    """K training runs trained together; checkpointable (state_dict) and resumable.

    ``run()`` yields, per epoch, ``(member, EpochMetrics)`` for each member still running.
    A member stops when its loss is non-finite (``diverged``), when it completes, or when the
    caller stops it (``stop``, e.g. early stopping); a stopped member leaves the stack.
    """

    def __init__(self, cfgs: Sequence[TrainConfig], data: Dataset, *, engine: str = "auto"):
        cfgs = list(cfgs)
        _check_pack(cfgs)
        base = cfgs[0]
        _check_fits(base, data)
        if engine not in ENGINES or (engine == "torch" and len(cfgs) != 1):
            raise ConfigError(f"engine: {engine!r} for {len(cfgs)} members (torch takes one)")
        if base.num_threads is not None:
            torch.set_num_threads(base.num_threads)
        self.cfgs, self.cfg = cfgs, base
        self.device = torch.device(base.device)
        stacked = engine == "stacked" or (engine == "auto" and len(cfgs) > 1)
        self.engine = (
            StackedEngine(cfgs, self.device) if stacked else TorchEngine(base, self.device)
        )
        # Each member's shuffling has its own generator, so nothing else shifts its batch order.
        self._generators = []
        for cfg in cfgs:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(cfg.seed)
            self._generators.append(generator)
        self._train = self._split(data.x_train, data.y_train)
        self._val = self._split(data.x_val, data.y_val)
        self._test = self._split(data.x_test, data.y_test)
        self.active = list(range(len(cfgs)))  # members in the engine's stack order
        self.statuses = ["running"] * len(cfgs)
        self.best_values: list[float | None] = [None] * len(cfgs)
        self.best_epochs: list[int | None] = [None] * len(cfgs)
        self._best_weights: list[torch.Tensor] | None = None  # stacked like the engine's
        self.epochs_done = 0
        self.steps = 0
        self.elapsed_s = 0.0

    def _split(self, x: torch.Tensor, y: torch.Tensor) -> _Split:
        targets = prepare_targets(self.cfg.model, torch.as_tensor(y)).to(self.device).contiguous()
        labels = None
        if self.cfg.model.task == "classification":
            labels = torch.as_tensor(y).to(self.device, torch.int64)
        return _Split(to_features(x, self.device), targets, labels)

    # ---- running -----------------------------------------------------------------------------
    def run(self) -> Iterator[list[tuple[int, EpochMetrics]]]:
        """Train epochs epochs_done+1 .. epochs; yields the records of each epoch's members."""
        for epoch in range(self.epochs_done + 1, self.cfg.epochs + 1):
            if not self.active:
                return
            yield self._run_epoch(epoch)

    def stop(self, members: Iterable[int], status: str) -> None:
        """End running members with status (e.g. early_stopped); they leave the stack."""
        for member in members:
            if self.statuses[member] == "running":
                self.statuses[member] = status
        self._drop_stopped()

    def _drop_stopped(self) -> None:
        keep = [pos for pos, m in enumerate(self.active) if self.statuses[m] == "running"]
        if len(keep) == len(self.active):
            return
        self.active = [self.active[pos] for pos in keep]
        if not keep:
            return
        rows = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.engine.keep(rows)
        if self._best_weights is not None:
            self._best_weights = [w.index_select(0, rows) for w in self._best_weights]

    def _run_epoch(self, epoch: int) -> list[tuple[int, EpochMetrics]]:
        start = time.perf_counter()
        n = len(self._train.x)
        orders = torch.stack(
            [
                torch.randperm(n, generator=self._generators[m], device=self.device)
                for m in self.active
            ]
        )
        if len({self.cfgs[m].seed for m in self.active}) == 1:
            # One seed, one order: each batch is gathered once for every member (one random
            # gather instead of K: the MNIST-shaped grid's packs of 3 train 2-4 % quicker).
            orders = orders[:1]
        losses = self.engine.train_epoch(
            self._train.x, self._train.targets, orders, self.cfg.batch_size
        )
        train_losses = losses.tolist()  # the one read from the device per epoch
        self.steps += math.ceil(n / self.cfg.batch_size)
        train_time = time.perf_counter() - start
        val = self._evaluate(self._val)
        epoch_time = time.perf_counter() - start
        self.epochs_done = epoch
        self.elapsed_s += epoch_time
        for pos, member in enumerate(self.active):
            if not (math.isfinite(train_losses[pos]) and math.isfinite(val[pos].loss)):
                self.statuses[member] = "diverged"
                logger.info("member %d diverged at epoch %d", member, epoch)
            elif epoch == self.cfg.epochs:
                self.statuses[member] = "completed"
        self._track_best(epoch, train_losses, val)
        tests = self._test_completed(epoch)
        records = []
        for pos, member in enumerate(self.active):
            test, test_epoch = tests.get(pos, (None, None))
            record = EpochMetrics(
                epoch=epoch,
                train_loss=train_losses[pos],
                val_loss=val[pos].loss,
                val_acc=val[pos].acc,
                val_rmse=val[pos].rmse,
                epoch_time_s=epoch_time,
                samples_per_s=n / train_time,
                steps=self.steps,
                elapsed_s=self.elapsed_s,
                status=self.statuses[member],
                test_loss=test.loss if test else None,
                test_acc=test.acc if test else None,
                test_rmse=test.rmse if test else None,
                test_epoch=test_epoch,
            )
            records.append((member, record))
        self._drop_stopped()
        return records

    def _track_best(self, epoch: int, train_losses: list[float], val: list[_Scores]) -> None:
        """Remember each member's best epoch by cfg.metric (ties: the earliest) and, with
        select best_epoch, its weights."""
        metric, maximize = self.cfg.metric, SELECT_METRICS[self.cfg.metric] == "max"
        improved = []
        for pos, member in enumerate(self.active):
            value = train_losses[pos] if metric == "train_loss" else getattr(val[pos], metric[4:])
            best = self.best_values[member]
            better = (
                value is not None
                and math.isfinite(value)
                and (best is None or (value > best if maximize else value < best))
            )
            if better:
                self.best_values[member], self.best_epochs[member] = value, epoch
            improved.append(better)
        if self.cfg.select != "best_epoch" or not any(improved):
            return
        weights = self.engine.weights()
        if self._best_weights is None:
            self._best_weights = [w.clone() for w in weights]
            return
        mask = torch.tensor(improved, device=self.device)
        self._best_weights = [
            torch.where(mask.view(-1, *[1] * (w.dim() - 1)), w, best)
            for w, best in zip(weights, self._best_weights, strict=True)
        ]

    def _test_completed(self, epoch: int) -> dict[int, tuple[_Scores, int]]:
        """Test metrics of the members that completed at this epoch, on the selected weights."""
        done = [pos for pos, m in enumerate(self.active) if self.statuses[m] == "completed"]
        if not done:
            return {}
        if self.cfg.select == "best_epoch" and self._best_weights is not None:
            self.engine.load_weights(self._best_weights)  # every member still here ends now
        scores = self._evaluate(self._test)
        best_epoch = self.cfg.select == "best_epoch"
        return {
            pos: (scores[pos], self.best_epochs[self.active[pos]] if best_epoch else epoch)
            for pos in done
        }

    def _evaluate(self, split: _Split) -> list[_Scores]:
        """Loss and accuracy or RMSE of every active member on a split, in chunks."""
        cfg = self.cfg.model
        k = len(self.active)
        loss_sum = torch.zeros(k, dtype=torch.float64, device=self.device)
        correct = torch.zeros(k, dtype=torch.int64, device=self.device)
        with torch.inference_mode():
            for start in range(0, len(split.x), EVAL_CHUNK):
                rows = slice(start, start + EVAL_CHUNK)
                out = self.engine.forward(split.x[rows])
                loss_sum += stacked_loss(cfg, out, split.targets[rows]).double()
                if split.labels is not None:
                    correct += (out.argmax(dim=1) == split.labels[rows]).sum(dim=1)
        losses = (loss_sum / loss_count(cfg, len(split.x))).tolist()
        if split.labels is None:
            return [_Scores(loss, None, math.sqrt(loss)) for loss in losses]
        accs = (correct.double() / len(split.x)).tolist()
        return [_Scores(loss, acc, None) for loss, acc in zip(losses, accs, strict=True)]

    # ---- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """A copy of everything resuming needs; loads with torch.load(weights_only=True)."""
        np_state = np.random.get_state()
        state = {
            "format": CHECKPOINT_FORMAT,
            "engine": self.engine.state_dict(),
            "active": list(self.active),
            "statuses": list(self.statuses),
            "best_values": list(self.best_values),
            "best_epochs": list(self.best_epochs),
            "best_weights": self._best_weights,
            "epochs_done": self.epochs_done,
            "steps": self.steps,
            "elapsed_s": self.elapsed_s,
            "rng": {
                "shuffle": [g.get_state() for g in self._generators],
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
        if len(state["statuses"]) != len(self.cfgs):
            raise ConfigError(
                f"checkpoint: {len(state['statuses'])} members, this pack has {len(self.cfgs)}"
            )
        if state.get("format", 1) < 2 and isinstance(self.engine, StackedEngine):
            state = _stacked_from_format_1(state, self.cfg.model)
        self.engine.load_state_dict(state["engine"])
        self.active = [int(m) for m in state["active"]]
        self.statuses = [str(s) for s in state["statuses"]]
        self.best_values = list(state["best_values"])
        self.best_epochs = list(state["best_epochs"])
        best = state["best_weights"]
        self._best_weights = None if best is None else [w.to(self.device) for w in best]
        self.epochs_done = int(state["epochs_done"])
        self.steps = int(state["steps"])
        self.elapsed_s = float(state["elapsed_s"])
        rng = state["rng"]
        for generator, shuffle in zip(self._generators, rng["shuffle"], strict=True):
            generator.set_state(shuffle.cpu())
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


class Trainer:
    """One training run on torch.optim (a pack of one); checkpointable and resumable bitwise."""

    def __init__(self, cfg: TrainConfig, data: Dataset) -> None:
        self.cfg = cfg
        self.pack = PackTrainer([cfg], data, engine="torch")
        self.device = self.pack.device
        self.model = self.pack.engine.model
        self.optimizer = self.pack.engine.optimizer

    @property
    def status(self) -> str:
        return self.pack.statuses[0]

    @property
    def epochs_done(self) -> int:
        return self.pack.epochs_done

    @property
    def steps(self) -> int:
        return self.pack.steps

    @property
    def elapsed_s(self) -> float:
        return self.pack.elapsed_s

    def state_dict(self) -> dict:
        return self.pack.state_dict()

    def load_state_dict(self, state: Mapping) -> None:
        self.pack.load_state_dict(state)

    def run(self) -> Iterator[EpochMetrics]:
        """Train epochs epochs_done+1 .. cfg.epochs, yielding each epoch's metrics; stops after
        a diverged epoch."""
        for records in self.pack.run():
            yield records[0][1]


def _stacked_from_format_1(state: Mapping, cfg: MLPConfig) -> dict:
    """A pack's checkpoint from before format 2 (weights batch-major, model.packed), converted."""
    columns = columns_from_batch_major(cfg)

    def convert(t: torch.Tensor) -> torch.Tensor:
        return t[:, columns.to(t.device)]

    engine = state["engine"]
    optimizer = engine["optimizer"]
    best = state["best_weights"]
    return {
        **state,
        "engine": {
            **engine,
            "flat": convert(engine["flat"]),
            "optimizer": {
                **optimizer,
                "state": {k: convert(t) for k, t in optimizer["state"].items()},
            },
        },
        "best_weights": None if best is None else [convert(w) for w in best],
    }


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
