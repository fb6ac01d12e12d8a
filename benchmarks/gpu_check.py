"""GPU check: the MNIST-shaped study with gpus_per_trial 1, 0.5 and 0.25 on one GPU, packed.

    python benchmarks/gpu_check.py [--epochs 3] [--models-per-trial auto] [--seeds 1]

Run by benchmarks/gpu_check.sh. For each fraction it runs ``python -m sweep run`` (local Ray,
ASHA off) and prints configurations per hour, the devices the configurations recorded, the peak
CUDA memory per pack (from trials.parquet) and the total training samples/s of the whole sweep:
configurations x epochs x training rows / wall time, Ray start-up included (target on one H200:
>= 12,000,000 with packing).
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

MNIST_ROWS = 60_000  # mnist_study's training file (a validation split is taken from it)


def run(study_path: Path, fraction: float, args, results: Path) -> dict:
    raw = yaml.safe_load(study_path.read_text())
    raw["name"] = f"gpu-{fraction:g}"
    raw["train"]["epochs"] = args.epochs
    raw["search"]["seeds"] = args.seeds
    raw["resources"] = {
        "cpus_per_trial": args.cpus_per_trial,
        "gpus_per_trial": fraction,
        "models_per_trial": args.models_per_trial,
    }
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
    n_train = round(MNIST_ROWS * (1 - raw["data"]["val_fraction"]))
    return {
        "fraction": fraction,
        "trials": len(trials),
        "packs": trials.pack_id.nunique(),
        "wall_s": wall,
        "per_hour": len(trials) / wall * 3600,
        "sweep_samples_per_s": trials.epochs_run.sum() * n_train / wall,
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
    parser.add_argument("--models-per-trial", default="auto", help="auto, or N (1: no packing)")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args(argv)
    if args.models_per_trial != "auto":
        args.models_per_trial = int(args.models_per_trial)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        study_path = mnist_study(tmp)
        for fraction in (float(f) for f in args.fractions.split(",")):
            print(f"gpus_per_trial={fraction:g} ...", flush=True)
            rows.append(run(study_path, fraction, args, tmp / "results"))
            print(rows[-1], flush=True)
    print(f"\n{'gpus/trial':>10}{'configs':>8}{'packs':>6}{'wall s':>8}{'configs/h':>10}"
          f"{'peak MiB max':>14}{'sweep samples/s':>16}  devices")  # fmt: skip
    for r in rows:
        print(
            f"{r['fraction']:>10g}{r['trials']:>8}{r['packs']:>6}{r['wall_s']:>8.1f}"
            f"{r['per_hour']:>10.0f}{r['peak_mb_max']:>14.1f}{r['sweep_samples_per_s']:>16.0f}"
            f"  {r['devices']}"
        )


if __name__ == "__main__":
    main()
