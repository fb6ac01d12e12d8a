"""One pack's training step on its own: eager, and on a CUDA device replayed from a CUDA graph.

    .venv/bin/python benchmarks/pack_step.py                 # CPU: eager only
    python benchmarks/pack_step.py --device cuda             # a GPU: eager and CUDA graph
    python benchmarks/pack_step.py --device cuda --members 8 64 256 --batch 32 512

For issue #8, item 6. On a GPU a pack's step is bound by its kernel launches (a few dozen a
step, however many members the pack has); a CUDA graph replays them all in one launch. The step
is the sweep's own (``model.train.StackedEngine``) on MNIST-shaped random data (784-128-64-10,
10 classes, 60,000 rows on the device), each member with its own learning rate. For each
optimizer x members x batch it times ``--steps`` steps after ``--warmup`` steps: eager, then, on
CUDA, the same step captured once in a ``torch.cuda.CUDAGraph`` and replayed, each batch's row
indices copied into the graph's static input first. Both runs start from the same weights and
batches, and the script prints the largest difference between their final weights: where a
step keeps a per-step value on the host (a Python float it computes each step), the graph
replays the value it captured, and this shows it. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from model.mlp import MLPConfig  # noqa: E402
from model.train import StackedEngine, TrainConfig  # noqa: E402

ROWS, FEATURES, CLASSES = 60_000, 784, 10
LRS = {"sgd": (0.1, {"momentum": 0.9}), "adam": (0.001, {}), "rmsprop": (0.0003, {})}


def make_engine(optimizer: str, members: int, batch: int, device: torch.device) -> StackedEngine:
    model = MLPConfig(input_size=FEATURES, hidden=(128, 64), output_size=CLASSES)
    lr, params = LRS[optimizer]
    cfgs = [
        # learning rates spread over a decade, one per member, as a study's grid would
        TrainConfig(model, optimizer, lr * 10 ** (-k / max(members, 1)), batch, 1, seed=k,
                    optimizer_params=params)
        for k in range(members)
    ]  # fmt: skip
    return StackedEngine(cfgs, device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eager(engine, x, y, batches, warmup: int, device) -> tuple[float, torch.Tensor]:
    """Seconds per step over batches[warmup:], and the final weights."""
    for idx in batches[:warmup]:
        engine._step(x, y, idx)
    synchronize(device)
    start = time.perf_counter()
    for idx in batches[warmup:]:
        engine._step(x, y, idx)
    synchronize(device)
    return (time.perf_counter() - start) / (len(batches) - warmup), engine.net.flat.clone()


def graphed(engine, x, y, batches, warmup: int, device) -> tuple[float, torch.Tensor]:
    """As eager, the warm-up steps run eagerly on a side stream (as torch's CUDA graph recipe
    asks), then one step is captured and replayed for the rest."""
    static_idx = batches[0].clone()
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for idx in batches[: warmup - 1]:
            engine._step(x, y, idx)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    static_idx.copy_(batches[warmup - 1])
    # captured on the warm-up's stream: libraries that set up per stream did so while warming up
    with torch.cuda.graph(graph, stream=stream):  # recorded, not run: the replay below runs it
        engine._step(x, y, static_idx)
    graph.replay()  # the last warm-up step
    synchronize(device)
    start = time.perf_counter()
    for idx in batches[warmup:]:
        static_idx.copy_(idx)
        graph.replay()
    synchronize(device)
    return (time.perf_counter() - start) / (len(batches) - warmup), engine.net.flat.clone()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--optimizer", nargs="+", default=["adam", "sgd", "rmsprop"], choices=LRS)
    parser.add_argument("--members", nargs="+", type=int, default=[3, 51])
    parser.add_argument("--batch", nargs="+", type=int, default=[32, 512])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.warmup < 2:
        parser.error("--warmup: at least 2 (one eager step on a side stream, then the capture)")
    if device.type == "cpu":
        torch.set_num_threads(1)  # as a sweep trial with cpus_per_trial 1
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, FEATURES, generator=gen).to(device)
    y = torch.randint(0, CLASSES, (ROWS,), generator=gen).to(device)
    print(f"device {device}, torch {torch.__version__}", flush=True)
    header = f"{'optimizer':<9}{'members':>8}{'batch':>6}{'eager steps/s':>15}{'samples/s':>14}"
    if device.type == "cuda":
        header += f"{'graph steps/s':>15}{'samples/s':>14}{'speed-up':>9}{'max |diff|':>12}"
    print(header)
    for optimizer in args.optimizer:
        for members in args.members:
            for batch in args.batch:
                count = args.warmup + args.steps
                batches = [
                    torch.randint(0, ROWS, (members, batch), generator=gen).to(device)
                    for _ in range(count)
                ]
                engine = make_engine(optimizer, members, batch, device)
                start = copy.deepcopy(engine.state_dict())
                eager_s, eager_w = eager(engine, x, y, batches, args.warmup, device)
                rate = members * batch / eager_s
                line = f"{optimizer:<9}{members:>8}{batch:>6}{1 / eager_s:>15,.0f}{rate:>14,.0f}"
                if device.type == "cuda":
                    engine.load_state_dict(start)  # the same weights, optimizer state and step
                    graph_s, graph_w = graphed(engine, x, y, batches, args.warmup, device)
                    diff = (graph_w - eager_w).abs().max().item()
                    graph_rate = members * batch / graph_s
                    line += f"{1 / graph_s:>15,.0f}{graph_rate:>14,.0f}"
                    line += f"{eager_s / graph_s:>8.1f}x{diff:>12.2e}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
