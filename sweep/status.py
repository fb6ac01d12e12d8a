"""How far a study has got, read from its results directory: ``python -m sweep status DIR``.

Reads study.yaml, run.json and trials.parquet through sweep.storage; no Ray.
"""

from __future__ import annotations

import json
import math

import pyarrow as pa
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
    study = parse_study(_damaged_if_fails(study_file, lambda: _mapping(study_file)))
    run_file = storage.join(out, RUN_FILE)
    run = {}
    if storage.exists(run_file):
        run = _damaged_if_fails(run_file, lambda: dict(json.loads(storage.read_bytes(run_file))))
    trials_file = storage.join(out, TRIALS_FILE)
    rows = []
    if storage.exists(trials_file):
        table = _damaged_if_fails(trials_file, lambda: storage.read_parquet(trials_file))
        rows = table.to_pylist()
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


def _mapping(path: str) -> dict:
    raw = yaml.safe_load(storage.read_bytes(path))
    if not isinstance(raw, dict):
        raise ValueError("not a mapping")
    return raw


def _damaged_if_fails(path: str, read):
    """read(), with a damaged file as one ConfigError line that says what rebuilds it."""
    try:
        return read()
    except (ValueError, TypeError, UnicodeDecodeError, yaml.YAMLError, pa.ArrowException) as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        hint = "" if path.endswith(STUDY_FILE) else "; `python -m sweep resume` rebuilds it"
        raise ConfigError(f"status: {path} is damaged ({reason}){hint}") from None


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
