"""GPU check: the MNIST-shaped study with gpus_per_trial 1, 0.5 and 0.25 on one GPU, packed.

    python benchmarks/gpu_check.py [--epochs 3] [--models-per-trial auto] [--seeds 1]

Run by benchmarks/gpu_check.sh. For each fraction it runs ``python -m sweep run`` (local Ray,
ASHA off) and prints configurations per hour, the devices the configurations recorded, the peak
CUDA memory per pack (from trials.parquet) and the sweep's training samples/s two ways: the
whole sweep's (configurations x epochs x training rows / wall time, Ray start-up included), and
while it trains (one pack's samples/s x the packs that run at once, as issue #8 counted "4
trials x 152,569"). Target on one H200, with packing: >= 12,000,000. At that rate the default
grid (27 configurations, 3 epochs) trains in under half a second, so give it ``--seeds 30`` or
more for the whole sweep's figure to measure training rather than Ray's start-up.
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
    # One pack's training samples/s (its members' epochs summed; each member's samples_per_s is
    # its rows / the pack's epoch training time), times the packs a run holds at once: the
    # issue's "4 trials x 152,569" for one configuration per trial.
    per_epoch = epochs_df.merge(trials[["trial_id", "pack_id"]], on="trial_id")
    pack_rate = (
        per_epoch.groupby(["pack_id", "epoch"]).samples_per_s.sum().groupby("pack_id").mean()
    )
    slots = (
        int(1 / fraction + 1e-9) if fraction > 0 else (os.cpu_count() or 1) // args.cpus_per_trial
    )
    at_once = max(1, min(trials.pack_id.nunique(), slots))
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
        "pack_samples_per_s": pack_rate.mean(),
        "packs_at_once": at_once,
        "train_samples_per_s": pack_rate.mean() * at_once,
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
          f"{'peak MiB max':>14}{'sweep samples/s':>16}{'pack samples/s':>16}{'at once':>8}"
          f"{'training samples/s':>20}  devices")  # fmt: skip
    for r in rows:
        print(
            f"{r['fraction']:>10g}{r['trials']:>8}{r['packs']:>6}{r['wall_s']:>8.1f}"
            f"{r['per_hour']:>10.0f}{r['peak_mb_max']:>14.1f}{r['sweep_samples_per_s']:>16.0f}"
            f"{r['pack_samples_per_s']:>16.0f}{r['packs_at_once']:>8}"
            f"{r['train_samples_per_s']:>20.0f}  {r['devices']}"
        )
    print(
        "sweep samples/s: every configuration's training samples / the whole run's wall time "
        "(Ray start-up included); training samples/s: one pack's samples/s x packs at once"
    )


if __name__ == "__main__":
    main()
