"""fit's training loop vs the PyTorch tutorial loop: samples/s of each and the ratio.

Run: ``.venv/bin/python benchmarks/train_loop.py`` (about 10 minutes on one core; ``--quick``
for a rough number in under a minute).

Both loops train the same MLP (784 -> 128 -> 64 -> 10, relu), from the same initial weights, on the
same generated MNIST-shaped data (60,000 x 784, 10 classes) with the same optimizer and
hyperparameters, one torch thread. The tutorial loop is the one of the PyTorch tutorials: a
DataLoader over a TensorDataset, then zero_grad / forward / loss / backward / step per batch,
with ``running_loss += loss.item()``, and torch's default optimizer implementation. fit's loop is
model.train.Trainer as the sweep runs it (fused optimizer step where torch has one); its samples/s
is its own EpochMetrics.samples_per_s (training time only, as the tutorial loop has no
validation). A last column runs fit's loop with the tutorial's optimizer implementation, to
separate the loop's gain from the fused step's. Each cell is the best of --repeats epochs.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from model.data import Dataset
from model.mlp import MLPConfig, build_mlp
from model.optim import build_optimizer
from model.train import TrainConfig, Trainer

N_FEATURES, N_CLASSES, HIDDEN = 784, 10, (128, 64)


def make_data(n_train: int, n_eval: int, seed: int = 0) -> Dataset:
    """Random MNIST-shaped features with labels from a random linear map (learnable)."""
    gen = torch.Generator().manual_seed(seed)
    n = n_train + 2 * n_eval
    x = torch.randn(n, N_FEATURES, generator=gen)
    y = (x @ torch.randn(N_FEATURES, N_CLASSES, generator=gen)).argmax(dim=1)
    splits = (slice(0, n_train), slice(n_train, n_train + n_eval), slice(n_train + n_eval, n))
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = ((x[s], y[s]) for s in splits)
    classes = tuple(str(c) for c in range(N_CLASSES))
    return Dataset(
        "mnist-shaped", "classification", x_train, y_train, x_val, y_val, x_test, y_test, classes
    )


def fit_loop(cfg: TrainConfig, data: Dataset, fast_optimizer: bool = True) -> float:
    """Best training samples/s over cfg.epochs epochs of model.train.Trainer.

    fast_optimizer=False swaps in torch's default optimizer implementation (a Python loop over
    the parameters on CPU) to show how much of the gain is the loop and how much the fused step.
    """
    trainer = Trainer(cfg, data)
    if not fast_optimizer:
        trainer.optimizer = build_optimizer(
            cfg.optimizer, trainer.model.parameters(), cfg.lr, cfg.optimizer_params, fast=False
        )
    return max(m.samples_per_s for m in trainer.run())


def tutorial_loop(cfg: TrainConfig, data: Dataset, repeats: int) -> float:
    """Best samples/s over repeats epochs of the PyTorch tutorial loop."""
    torch.manual_seed(cfg.seed)  # same initial weights as the Trainer builds
    model = build_mlp(cfg.model)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr, fast=False)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = DataLoader(
        TensorDataset(data.x_train, data.y_train), batch_size=cfg.batch_size, shuffle=True
    )
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        running_loss = 0.0
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        best = max(best, len(data.x_train) / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 samples, 1 epoch each")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=None, help="epochs per cell (default 3)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    n_train = 10_000 if args.quick else 60_000
    torch.set_num_threads(1)
    data = make_data(n_train, n_eval=2_000)
    model_cfg = MLPConfig(N_FEATURES, HIDDEN, N_CLASSES)
    print(
        f"{n_train} x {N_FEATURES}, hidden {HIDDEN}, {args.optimizer} lr {args.lr}, "
        f"1 thread, best of {repeats} epoch(s), torch {torch.__version__}"
    )
    header = (
        "batch",
        "tutorial samples/s",
        "fit samples/s",
        "ratio",
        "fit, unfused optimizer",
        "ratio",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for batch_size in args.batch_sizes:
        cfg = TrainConfig(model_cfg, args.optimizer, args.lr, batch_size, repeats, num_threads=1)
        tutorial = tutorial_loop(cfg, data, repeats)
        fit = fit_loop(cfg, data)
        unfused = fit_loop(cfg, data, fast_optimizer=False)
        cells = (
            f"{batch_size}",
            f"{tutorial:,.0f}",
            f"{fit:,.0f}",
            f"{fit / tutorial:.2f}x",
            f"{unfused:,.0f}",
            f"{unfused / tutorial:.2f}x",
        )
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
