"""How far a study has got, read from its results directory: ``python -m sweep status DIR``.

Reads study.yaml, run.json and trials.parquet through sweep.storage; no Ray.
"""

from __future__ import annotations

import json
import math

import yaml

from model.errors import ConfigError
from sweep import storage
from sweep.config import parse_study
from sweep.results import RUN_FILE, STUDY_FILE, TERMINAL_STATUSES, TRIALS_FILE
from sweep.space import trial_count


def study_status(out: str) -> dict:
    """Counts per status, pending trials, the best trial so far, and the run's start and end."""
    study_file = storage.join(out, STUDY_FILE)
    if not storage.exists(study_file):
        raise ConfigError(f"status: {out} holds no {STUDY_FILE} (not a sweep results directory)")
    study = parse_study(yaml.safe_load(storage.read_bytes(study_file)))
    run_file = storage.join(out, RUN_FILE)
    run = json.loads(storage.read_bytes(run_file)) if storage.exists(run_file) else {}
    trials_file = storage.join(out, TRIALS_FILE)
    rows = storage.read_parquet(trials_file).to_pylist() if storage.exists(trials_file) else []
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    done = sum(n for s, n in statuses.items() if s in TERMINAL_STATUSES)
    total = trial_count(study)
    return {
        "name": study.name,
        "dir": out,
        "total": total,
        "done": done,
        "pending": total - len(rows),
        "statuses": statuses,
        "best": _best(rows, study.train.metric, study.train.mode),
        "started": run.get("started"),
        "ended": run.get("ended"),
    }


def _best(rows: list[dict], metric: str, mode: str) -> str | None:
    column = f"best_{metric}" if metric != "train_loss" else "final_train_loss"
    scored = [r for r in rows if r.get(column) is not None and math.isfinite(r[column])]
    if not scored:
        return None
    pick = min if mode == "min" else max
    row = pick(scored, key=lambda r: r[column])
    return (
        f"{metric} {row[column]:.4g}: {row['optimizer']} lr={row['lr']:g} "
        f"batch_size={row['batch_size']} seed={row['seed']} ({row['status']})"
    )
