"""Mutation testing: how many deliberate bugs (mutants) the tests catch, per module.

    .venv/bin/python benchmarks/mutation.py                       # every module below
    .venv/bin/python benchmarks/mutation.py sweep/results.py      # one module

For each module, copies the tracked files of this checkout into a temporary directory, points
mutmut (``pip install mutmut``) at that one module and the tests that cover it, runs it, and
prints killed / survived / timed out / total and the killed rate. ``mutmut results`` inside the
printed directory (kept with --keep) lists the survivors; each survivor that changes behaviour
deserves a test. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# module -> the tests that exercise it (fast ones: each mutant runs the tests that cover it)
MODULES: dict[str, list[str]] = {
    "sweep/results.py": ["tests/test_results.py", "tests/test_status.py"],
    "sweep/config.py": ["tests/test_config.py", "tests/test_space.py"],
    "model/optim.py": ["tests/test_optim.py"],
    # PackTrainer lives in model/train.py; test_packed.py drives it with the stacked engine
    "model/train.py": ["tests/test_train.py", "tests/test_packed.py"],
    # not test_packed_properties.py: its ~10 s per run would be paid by every mutant
    "model/packed.py": ["tests/test_packed.py", "tests/test_train.py"],
}


def copy_checkout(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def configure(dest: Path, module: str, tests: list[str]) -> None:
    package = module.split("/")[0]
    lines = [
        "[mutmut]",
        f"source_paths={package}",
        f"only_mutate={module}",
        "also_copy=model\n    sweep\n    analysis\n    tests",
        "pytest_add_cli_args_test_selection=" + "\n    ".join(tests),
        "pytest_add_cli_args=-p no:cacheprovider\n    -m\n    not slow",
    ]
    (dest / "setup.cfg").write_text("\n".join(lines) + "\n")


def mutate(module: str, tests: list[str], keep: bool, children: int) -> dict | None:
    """Run mutmut on one module; returns its stats, or None when it could not run."""
    if not (REPO / module).exists() or not all((REPO / t).exists() for t in tests):
        print(f"{module}: skipped (module or its tests not in this checkout)")
        return None
    dest = Path(tempfile.mkdtemp(prefix="mutation-"))
    copy_checkout(dest)
    configure(dest, module, tests)
    # One torch thread: mutmut forks a child per mutant, and a child of a process whose OpenMP
    # pool has run spins until mutmut's CPU limit kills it (every mutant would time out).
    env = {**os.environ, "FUZZ_EXAMPLES": "60", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # mutmut puts its mutants first itself
    mutmut = [sys.executable, "-m", "mutmut"]
    start = time.perf_counter()
    run = subprocess.run(
        [*mutmut, "run", "--max-children", str(children)],
        cwd=dest,
        env=env,
        capture_output=True,
        text=True,
    )
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=dest, env=env, capture_output=True)
    stats_file = dest / "mutants" / "mutmut-cicd-stats.json"
    if not stats_file.exists():
        print(f"{module}: mutmut failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
        return None
    stats = json.loads(stats_file.read_text())
    stats["seconds"] = time.perf_counter() - start
    if keep:
        stats["dir"] = str(dest)
    else:
        shutil.rmtree(dest, ignore_errors=True)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES))
    parser.add_argument("--keep", action="store_true", help="keep the directories (survivors)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    print("| module | killed | survived | timeout | no tests | total | killed rate | time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for module in args.modules:
        stats = mutate(module, MODULES.get(module, []), args.keep, args.max_children)
        if stats is None:
            continue
        total = stats.get("total", 0)
        killed = stats.get("killed", 0)
        rate = killed / total if total else float("nan")
        print(
            f"| {module} | {killed} | {stats.get('survived', 0)} | {stats.get('timeout', 0)} | "
            f"{stats.get('no_tests', 0)} | {total} | {rate:.0%} | {stats['seconds']:.0f} s |"
            + (f" {stats['dir']}" if "dir" in stats else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
