"""Wall time of a grid run as (a) the PyTorch tutorial loop, one trial after another in one
process, and (b) ``python -m sweep run`` with ASHA off, Ray start-up included.

    .venv/bin/python benchmarks/sweep_vs_loop.py            # both grids
    .venv/bin/python benchmarks/sweep_vs_loop.py --grid digits

Grids: ``digits`` is the default study's shape with one seed (sweep/configs/default.yaml,
20 epochs); ``mnist`` is MNIST-shaped generated data (60,000 x 784, 10 classes), 3 optimizers x
3 learning rates x batch 32/128/512, 3 epochs. Targets on a 2-core machine: sweep/loop <= 0.3
on both. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from model.data import load_dataset  # noqa: E402
from model.mlp import MLPConfig, build_mlp, loss_function  # noqa: E402
from model.optim import build_optimizer  # noqa: E402
from sweep.config import load_study  # noqa: E402
from sweep.space import expand_grid  # noqa: E402

MNIST_OPTIMIZERS = {
    "sgd": {"lr": [0.1, 0.03, 0.01], "momentum": 0.9},
    "adam": {"lr": [0.003, 0.001, 0.0003]},
    "rmsprop": {"lr": [0.001, 0.0003, 0.0001]},
}


def tutorial_trial(point: dict, data, mlp: MLPConfig, epochs: int) -> None:
    """The PyTorch tutorial's loop: DataLoader, zero_grad/forward/loss/backward/step, and an
    evaluation pass on the validation split after every epoch (as each sweep trial does)."""
    torch.manual_seed(point["seed"])
    model = build_mlp(mlp)
    optimizer = build_optimizer(
        point["optimizer"], model.parameters(), point["lr"], point["optimizer_params"], fast=False
    )
    loss_fn = loss_function(mlp)
    loader = DataLoader(
        TensorDataset(data.x_train, data.y_train), batch_size=point["batch_size"], shuffle=True
    )
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(data.x_val)
            loss_fn(out, data.y_val).item()
            (out.argmax(1) == data.y_val).float().mean().item()


def run_loop(study_path: Path) -> float:
    study = load_study(study_path)
    data = load_dataset(study.data)
    mlp = study.mlp_config(data.n_features, data.n_outputs)
    start = time.perf_counter()
    for point in expand_grid(study):
        tutorial_trial(point, data, mlp, study.train.epochs)
    return time.perf_counter() - start


def run_sweep(study_path: Path, results: Path) -> float:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "sweep", "run", str(study_path), "--results", str(results)]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def digits_study(tmp: Path) -> Path:
    raw = yaml.safe_load((REPO / "sweep" / "configs" / "default.yaml").read_text())
    raw["search"]["seeds"] = 1
    raw["scheduler"] = {"type": "none"}
    raw["name"] = "bench-digits"
    path = tmp / "digits.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def mnist_study(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    n, d = 60_000, 784
    centers = rng.normal(0, 1, (10, d)).astype(np.float32)
    y = rng.integers(0, 10, n)
    x = (centers[y] + rng.normal(0, 3, (n, d))).astype(np.float32)
    x_test = (centers[y[:10_000]] + rng.normal(0, 3, (10_000, d))).astype(np.float32)
    np.savez(tmp / "mnist_like.npz", x_train=x, y_train=y, x_test=x_test, y_test=y[:10_000])
    raw = {
        "name": "bench-mnist",
        "data": {"source": str(tmp / "mnist_like.npz"), "val_fraction": 0.1},
        "model": {"hidden": [128, 64]},
        "train": {"epochs": 3, "checkpoint_every": 5},
        "search": {"batch_size": [32, 128, 512], "seeds": 1, "optimizers": MNIST_OPTIMIZERS},
        "scheduler": {"type": "none"},
        "resources": {"cpus_per_trial": 1},
    }
    path = tmp / "mnist.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=["digits", "mnist", "both"], default="both")
    args = parser.parse_args(argv)
    grids = ["digits", "mnist"] if args.grid == "both" else [args.grid]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for grid in grids:
            study_path = digits_study(tmp) if grid == "digits" else mnist_study(tmp)
            trials = len(expand_grid(load_study(study_path)))
            print(f"[{grid}] {trials} trials: tutorial loop ...", flush=True)
            loop_s = run_loop(study_path)
            print(f"[{grid}] loop {loop_s:.1f}s; python -m sweep run ...", flush=True)
            sweep_s = run_sweep(study_path, tmp / "results")
            rows.append((grid, trials, loop_s, sweep_s))
    print(f"\ntorch threads in the loop: {torch.get_num_threads()}, cores: {os.cpu_count()}")
    print(f"{'grid':<8}{'trials':>7}{'loop s':>9}{'sweep s':>9}{'sweep/loop':>12}")
    for grid, trials, loop_s, sweep_s in rows:
        print(f"{grid:<8}{trials:>7}{loop_s:>9.1f}{sweep_s:>9.1f}{sweep_s / loop_s:>12.3f}")


if __name__ == "__main__":
    main()
