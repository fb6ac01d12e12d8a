"""Scale of the driver: a study of N configurations (tiny network, 1 epoch) end to end, and how long
a 10,000-configuration study takes to validate.

    .venv/bin/python benchmarks/driver_scale.py                   # 2,000 configurations
    .venv/bin/python benchmarks/driver_scale.py --configs 500 --set resources.models_per_trial=1

Prints the run's wall time, configurations per second and the driver's peak resident memory
(VmHWM of the ``python -m sweep run`` process, read from /proc while it runs), then the time of
``python -m sweep validate`` on 10,000 configurations (process start included) and of
``load_study`` + grid expansion alone. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def study(configs: int, name: str) -> dict:
    """A grid of exactly ``configs`` configurations: 10 seeds x 5 batch sizes x configs/50 LRs."""
    if configs % 50:
        raise SystemExit("--configs must be a multiple of 50")
    n_lr = configs // 50
    half = n_lr // 2
    return {
        "name": name,
        "data": {"source": "digits"},
        "model": {"hidden": [8]},
        "train": {"epochs": 1},
        "search": {
            "batch_size": [32, 64, 128, 256, 512],
            "seeds": 10,
            "optimizers": {
                "sgd": {"lr": {"logspace": [1e-3, 1.0, n_lr - half]}, "momentum": 0.9},
                "adam": {"lr": {"logspace": [1e-4, 1e-1, half]}},
            },
        },
        "scheduler": {"type": "none"},
        "resources": {"cpus_per_trial": 1},
    }


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(path: Path, results: Path, extra: list[str]) -> tuple[float, float, int]:
    """Wall time, the driver's peak RSS in MiB, and the exit code of one sweep."""
    argv = [sys.executable, "-m", "sweep", "run", str(path), "--results", str(results), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, peak_rss_mib(proc.pid) or 0.0)
        time.sleep(0.5)
    wall = time.perf_counter() - start
    if proc.returncode:
        print(proc.stderr.read().decode()[-2000:], file=sys.stderr)
    return wall, peak, proc.returncode


def validate_times(tmp: Path) -> tuple[float, float]:
    """(seconds for `python -m sweep validate`, seconds for load_study + expand_grid)."""
    path = tmp / "validate.yaml"
    path.write_text(yaml.safe_dump(study(10_000, "validate-10k")))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sweep", "validate", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    cli = time.perf_counter() - start
    if done.returncode or "10000 trials" not in done.stdout:
        raise SystemExit(f"validate failed: {done.stdout}{done.stderr}")
    sys.path.insert(0, str(REPO))
    from sweep.config import load_study
    from sweep.space import expand_grid

    start = time.perf_counter()
    points = expand_grid(load_study(path))
    library = time.perf_counter() - start
    assert len(points) == 10_000
    return cli, library


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--num-cpus", default=str(os.cpu_count() or 2))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cli, library = validate_times(tmp)
        print(
            f"validate, 10,000 configurations: {cli:.2f} s (CLI, process start included), "
            f"{library:.2f} s (load_study + expand_grid)"
        )
        path = tmp / "scale.yaml"
        path.write_text(yaml.safe_dump(study(args.configs, f"scale-{args.configs}")))
        extra = ["--num-cpus", args.num_cpus] + [f"--set={o}" for o in args.overrides]
        wall, peak, code = run(path, tmp / "results", extra)
        print(
            f"run, {args.configs:,} configurations x 1 epoch ({' '.join(extra)}): "
            f"exit {code}, {wall:.1f} s wall, {args.configs / wall:.1f} configurations/s, "
            f"driver peak RSS {peak:.0f} MiB"
        )


if __name__ == "__main__":
    main()
