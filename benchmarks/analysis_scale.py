"""Time ``python -m analysis report`` on a synthetic 10,000-trial x 50-epoch results set.

    .venv/bin/python benchmarks/analysis_scale.py            # in-process, target < 60 s
    .venv/bin/python benchmarks/analysis_scale.py --subprocess --keep /tmp/scale

The set is 5 optimizers x 10 learning rates x 10 batch sizes x 20 seeds; every trial runs all
50 epochs unless it diverges (~433,000 epoch rows). Its study.yaml says ASHA so figure 9 draws all
10,000 curves too: the worst case for every figure. Prints the times; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from analysis.report import write_report
from analysis.synthetic import SyntheticSpec, make_results, write_frames

BASE_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 2e-3, "rmsprop": 1e-3, "adagrad": 3e-2}


def scale_spec(n_lrs: int, n_batch_sizes: int, n_seeds: int, epochs: int) -> SyntheticSpec:
    """optimizers x n_lrs x n_batch_sizes x n_seeds trials of the given epochs."""
    grids = {
        opt: tuple(float(x) for x in base * np.logspace(-2, 1.5, n_lrs))
        for opt, base in BASE_LR.items()
    }
    return SyntheticSpec(
        name="scale",
        optimizers=grids,
        batch_sizes=tuple(2 ** (3 + k) for k in range(n_batch_sizes)),
        seeds=tuple(range(n_seeds)),
        epochs=epochs,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="10,000 trials with 20 (default)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--subprocess", action="store_true", help="time python -m analysis")
    parser.add_argument("--keep", help="write the results set here instead of a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="analysis-scale-") as scratch:
        root = args.keep or scratch
        start = time.perf_counter()
        trials, epochs, study = make_results(scale_spec(10, 10, args.seeds, args.epochs))
        study["scheduler"] = {"type": "asha", "grace_period": 5, "reduction_factor": 3}
        path = write_frames(os.path.join(root, "scale"), trials, epochs, study)
        print(
            f"wrote {len(trials):,} trials, {len(epochs):,} epoch rows "
            f"in {time.perf_counter() - start:.1f} s"
        )
        start = time.perf_counter()
        if args.subprocess:
            command = [sys.executable, "-m", "analysis", "report", path]
            subprocess.run(command, check=True)
        else:
            report = write_report(path)
            print(f"wrote {len(report.files)} files to {report.out}")
        elapsed = time.perf_counter() - start
        print(f"report: {elapsed:.1f} s (target < 60 s)")


if __name__ == "__main__":
    main()
