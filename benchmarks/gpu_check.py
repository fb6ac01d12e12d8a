"""GPU packing check: the MNIST-shaped study with gpus_per_trial 1, 0.5 and 0.25 on one GPU.

    python benchmarks/gpu_check.py [--epochs 3]      # run by benchmarks/gpu_check.sh

For each fraction it runs ``python -m sweep run`` (local Ray, ASHA off) and prints trials per
hour, the peak number of trials running at once (from the trials' start and end times), the
devices the trials recorded and the peak CUDA memory per trial (from trials.parquet).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_vs_loop import mnist_study  # noqa: E402


def run(study_path: Path, fraction: float, epochs: int, results: Path, cpus: int) -> dict:
    raw = yaml.safe_load(study_path.read_text())
    raw["name"] = f"gpu-{fraction:g}"
    raw["train"]["epochs"] = epochs
    raw["resources"] = {"cpus_per_trial": cpus, "gpus_per_trial": fraction}
    path = study_path.with_name(f"gpu-{fraction:g}.yaml")
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "sweep", "run", str(path), "--results", str(results)],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    trials = pq.read_table(results / raw["name"] / "trials.parquet").to_pandas()
    epochs_df = pq.read_table(results / raw["name"] / "epochs.parquet").to_pandas()
    return {
        "fraction": fraction,
        "trials": len(trials),
        "wall_s": wall,
        "per_hour": len(trials) / wall * 3600,
        "devices": ",".join(sorted(trials.device.astype(str).unique())),
        "peak_mb_max": trials.gpu_peak_mem_mb.max(),
        "peak_mb_mean": trials.gpu_peak_mem_mb.mean(),
        "statuses": trials.status.value_counts().to_dict(),
        "samples_per_s": epochs_df.samples_per_s.mean(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fractions", default="1,0.5,0.25")
    parser.add_argument("--cpus-per-trial", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        study_path = mnist_study(tmp)
        for fraction in (float(f) for f in args.fractions.split(",")):
            print(f"gpus_per_trial={fraction:g} ...", flush=True)
            rows.append(
                run(study_path, fraction, args.epochs, tmp / "results", args.cpus_per_trial)
            )
            print(rows[-1], flush=True)
    print(f"\n{'gpus/trial':>10}{'trials':>7}{'wall s':>8}{'trials/h':>10}"
          f"{'peak MiB max':>14}{'peak MiB mean':>15}{'samples/s':>11}  devices")  # fmt: skip
    for r in rows:
        print(
            f"{r['fraction']:>10g}{r['trials']:>7}{r['wall_s']:>8.1f}{r['per_hour']:>10.0f}"
            f"{r['peak_mb_max']:>14.1f}{r['peak_mb_mean']:>15.1f}{r['samples_per_s']:>11.0f}"
            f"  {r['devices']}"
        )


if __name__ == "__main__":
    main()
