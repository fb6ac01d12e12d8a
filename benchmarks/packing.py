"""Packed trials against one configuration per trial: the default study, both ways, one run.

    .venv/bin/python benchmarks/packing.py                  # the full default grid, 153 x 20 epochs
    .venv/bin/python benchmarks/packing.py --epochs 5       # quicker
    .venv/bin/python benchmarks/packing.py --rounds 3       # 3 pairs, alternating: the median

Runs ``python -m sweep run sweep/configs/default.yaml`` (full grid, no ASHA) with
``resources.models_per_trial: auto`` and then with ``1``, Ray start-up included in both, and
prints the wall times and their ratio (target: auto / 1 <= 0.3). Also compares what both runs
recorded per configuration (relative difference of the final validation loss), since a faster
sweep that computes something else is no gain: a pack's batched matmuls round differently from
one model's, which is invisible where training is stable (about 1e-6 after 20 epochs) and grows
without bound where it is chaotic (SGD with lr 0.1-0.3 and momentum 0.9 at batch 16, Adam at
lr 0.01); the script lists the configurations that differ by more than 1e-4. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
STUDY = REPO / "sweep" / "configs" / "default.yaml"


def run(models: str, results: Path, epochs: int | None, round_: int) -> tuple[float, Path]:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    name = f"bench-packing-{models}-{round_}"
    command = [sys.executable, "-m", "sweep", "run", str(STUDY), "--results", str(results)]
    command += ["--name", name, "--set", f"resources.models_per_trial={models}"]
    if epochs:
        command += ["--set", f"train.epochs={epochs}"]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, results / name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="override train.epochs (default: the study's)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="pairs of runs, alternated (a shared machine is noisy)",
    )
    args = parser.parse_args(argv)
    ratios = []
    with tempfile.TemporaryDirectory() as tmp_name:
        results = Path(tmp_name)
        for round_ in range(1, args.rounds + 1):
            timings = {}
            for models in ("auto", "1"):
                print(f"round {round_}: models_per_trial={models} ...", flush=True)
                timings[models] = run(models, results, args.epochs, round_)
                print(f"  {timings[models][0]:.1f}s", flush=True)
            ratios.append(timings["auto"][0] / timings["1"][0])
        tables = {  # the last round's
            m: pq.read_table(out / "trials.parquet").to_pandas().set_index("trial_id")
            for m, (_, out) in timings.items()
        }
    packed, single = tables["auto"], tables["1"].loc[tables["auto"].index]
    diff = (packed.final_val_loss - single.final_val_loss).abs() / single.final_val_loss
    packs = packed.pack_id.nunique()
    print(f"\n{len(packed)} configurations; auto made {packs} packs, 1 made {len(single)} trials")
    print(f"{'models_per_trial':>17}{'wall s':>9}")
    for models, (wall, _) in timings.items():
        print(f"{models:>17}{wall:>9.1f}")
    print(f"auto / 1 = {ratios[-1]:.3f}  (target <= 0.3)")
    if len(ratios) > 1:
        listed = ", ".join(f"{r:.3f}" for r in ratios)
        print(
            f"auto / 1 over {len(ratios)} rounds: {listed}; median {statistics.median(ratios):.3f}"
        )
    apart = diff[diff > 1e-4].sort_values(ascending=False)
    print(
        f"final_val_loss, auto vs 1: {len(diff) - len(apart)} of {len(diff)} configurations "
        f"within 1e-4 (median relative difference {diff.median():.1e})"
    )
    for trial_id, value in apart.items():
        print(
            f"  {trial_id}: {value:.1e} apart (final val loss {single.final_val_loss[trial_id]:.3g}"
            f" alone, {packed.final_val_loss[trial_id]:.3g} packed)"
        )


if __name__ == "__main__":
    main()
