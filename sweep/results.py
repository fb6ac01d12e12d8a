"""Parquet schemas of a study's results, declared once, and the writer that streams them.

Layout of ``<results>/<name>/``: ``trials.parquet`` (one row per configuration; the columns say
"trial" for it), ``epochs.parquet`` (one row per configuration x epoch), ``study.yaml`` (the
resolved study), ``run.json`` (run metadata), ``ray/`` (Ray Tune's experiment directory,
restorable with ``Tuner.restore``; one Tune trial per pack of configurations).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pyarrow as pa

log = logging.getLogger(__name__)

TRIAL_STATUSES = ("completed", "early_stopped", "diverged", "error", "running")
TERMINAL_STATUSES = ("completed", "early_stopped", "diverged", "error")

# Optimizer hyperparameters other than lr get one column each, named HP_PREFIX + name
# (e.g. hp_momentum); which ones exist depends on the study. Types: float64 or bool.
HP_PREFIX = "hp_"

TRIALS_SCHEMA = pa.schema(
    [
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("optimizer", pa.string(), nullable=False),
        pa.field("lr", pa.float64(), nullable=False),
        pa.field("batch_size", pa.int64(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("epochs_run", pa.int64(), nullable=False),
        # epoch (1-based) at which the study's selection metric (train.metric) was best
        pa.field("best_epoch", pa.int64()),
        # best over epochs: min for losses and rmse, max for accuracy
        pa.field("best_val_loss", pa.float64()),
        pa.field("best_val_acc", pa.float64()),
        pa.field("best_val_rmse", pa.float64()),
        # values at the last epoch run
        pa.field("final_train_loss", pa.float64()),
        pa.field("final_val_loss", pa.float64()),
        pa.field("final_val_acc", pa.float64()),
        pa.field("final_val_rmse", pa.float64()),
        # test metrics of the selected model (train.select: the best epoch's weights or the
        # last epoch's), only for trials that ran all their epochs; test_epoch says which epoch
        pa.field("test_loss", pa.float64()),
        pa.field("test_acc", pa.float64()),
        pa.field("test_rmse", pa.float64()),
        pa.field("test_epoch", pa.int64()),
        pa.field("steps", pa.int64()),
        pa.field("train_time_s", pa.float64()),
        pa.field("samples_per_s", pa.float64()),
        pa.field("node_id", pa.string()),
        pa.field("device", pa.string()),
        pa.field("gpu_fraction", pa.float64()),
        pa.field("gpu_peak_mem_mb", pa.float64()),  # peak CUDA memory allocated by the trial
        pa.field("pack_id", pa.string()),  # the Ray Tune trial that trained this configuration
        pa.field("pack_size", pa.int64()),  # configurations in that pack
    ]
)

EPOCHS_SCHEMA = pa.schema(
    [
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("epoch", pa.int64(), nullable=False),
        pa.field("train_loss", pa.float64()),
        pa.field("val_loss", pa.float64()),
        pa.field("val_acc", pa.float64()),
        pa.field("val_rmse", pa.float64()),
        pa.field("epoch_time_s", pa.float64()),
        pa.field("samples_per_s", pa.float64()),
        pa.field("steps", pa.int64()),  # cumulative optimizer steps at the end of this epoch
        pa.field("elapsed_s", pa.float64()),  # cumulative training time of the trial
    ]
)

TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
STUDY_FILE = "study.yaml"
RUN_FILE = "run.json"
RAY_DIR = "ray"
# The tables are rewritten whole; the next rewrite waits at least this many times as long as the
# last one took (besides flush_interval_s), which bounds the rewrites' share of the driver's time.
FLUSH_COST_FACTOR = 10


def trials_schema(hp_columns: Mapping[str, type]) -> pa.Schema:
    """TRIALS_SCHEMA with one ``hp_<name>`` column per optimizer hyperparameter, after ``seed``."""
    fields = list(TRIALS_SCHEMA)
    at = TRIALS_SCHEMA.get_field_index("seed") + 1
    extra = [
        pa.field(HP_PREFIX + name, pa.bool_() if kind is bool else pa.float64())
        for name, kind in sorted(hp_columns.items())
    ]
    return pa.schema(fields[:at] + extra + fields[at:])


_ENDS_IN_RESULT = ("completed", "diverged", "early_stopped")
_BEST = {"val_loss": min, "val_acc": max, "val_rmse": min}


class ResultsWriter:
    """Keeps a study's trial and epoch rows, journals every event, and rewrites the Parquet files.

    Every reported epoch and every end is appended to a JSON-lines journal at once (a killed
    driver loses nothing: a resume replays it), and the Parquet files are replaced atomically
    with everything recorded: at the first event, then at most every ``flush_interval_s`` (and
    never more often than every ``FLUSH_COST_FACTOR`` times the last rewrite took, so a big
    study's rewrites stay a small share of the driver's time), at the close of a ``batch()`` of
    events (never in the middle of one), on ``maybe_flush()`` once the interval has passed
    (the sweep calls it every step of Tune's loop, so an end reaches the tables within about
    the interval), and on ``flush()`` and ``close()``. Each rewrite holds every row, so ending
    a trial does not rewrite the tables by itself: with one configuration per trial that made a
    2,000-configuration study's driver spend 49 s of its 132 s rewriting them. Epoch rows are
    keyed by (trial_id, epoch), so a trial that is retried from a checkpoint overwrites its
    re-run epochs instead of duplicating them.
    """

    def __init__(
        self,
        out: str,
        *,
        hp_columns: Mapping[str, type],
        metric: str,
        mode: str,
        journal: str | None = None,
        flush_interval_s: float = 2.0,
    ) -> None:
        self.out = out
        self.hp_columns = dict(hp_columns)
        self.metric = metric
        self.mode = mode
        self.journal_path = journal
        self.flush_interval_s = flush_interval_s
        self._trials: dict[str, dict] = {}
        self._points: dict[str, dict] = {}
        self._epochs: dict[str, dict[int, dict]] = {}
        self._journal = None
        self._dirty = False
        self._replaying = False
        self._batching = False
        self._next_flush = -math.inf  # monotonic time from which maybe_flush rewrites the tables

    # ---- events ---------------------------------------------------------------------------
    def on_result(self, trial_id: str, point: Mapping, metrics: Mapping) -> None:
        """Record one reported epoch of a trial."""
        self._log({"kind": "result", "trial_id": trial_id, "point": point, "metrics": metrics})
        self._points[trial_id] = dict(point)
        row = {name: _float_or_none(metrics.get(name)) for name in _EPOCH_FLOATS}
        row.update(
            trial_id=trial_id, epoch=int(metrics["epoch"]), steps=_int_or_none(metrics.get("steps"))
        )
        self._epochs.setdefault(trial_id, {})[row["epoch"]] = row
        trial = self._trials.setdefault(trial_id, {"status": "running", "error": None})
        trial["last"] = dict(metrics)
        if trial["status"] != "error":
            # A configuration's last result says how it ended (completed, diverged or
            # early_stopped), so a journal whose end line was cut short still knows.
            status = metrics.get("status")
            trial["status"] = status if status in _ENDS_IN_RESULT else "running"
        self._dirty = True
        self.maybe_flush()

    def on_end(self, trial_id: str, point: Mapping, status: str, error: str | None = None) -> None:
        """Record how a trial ended: completed, early_stopped, diverged or error."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"not a terminal status: {status!r}")
        self._log(
            {"kind": "end", "trial_id": trial_id, "point": point, "status": status, "error": error}
        )
        self._points[trial_id] = dict(point)
        trial = self._trials.setdefault(trial_id, {"last": {}})
        trial.update(status=status, error=error)
        self._dirty = True
        self.maybe_flush()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Events that arrive together (one pack's epoch: a result and maybe an end for each
        member): each is journaled at once, and the tables see all of them or none (a rewrite
        waits for the batch's close, then follows the interval as any event does)."""
        outer = self._batching
        self._batching = True
        try:
            yield
        finally:
            self._batching = outer
            if not outer:
                self.maybe_flush()

    def status_of(self, trial_id: str) -> str | None:
        trial = self._trials.get(trial_id)
        return trial["status"] if trial else None

    def last_metrics(self, trial_id: str) -> dict:
        return dict(self._trials.get(trial_id, {}).get("last", {}))

    def best(self, metric: str, mode: str) -> str | None:
        """'metric value (optimizer lr=.. bs=..)' of the best epoch recorded so far, or None."""
        scored = [
            (row[metric], tid)
            for tid, rows in self._epochs.items()
            for row in rows.values()
            if finite(row.get(metric))
        ]
        if not scored:
            return None
        value, tid = (min if mode == "min" else max)(scored)
        p = self._points[tid]
        return f"{metric} {value:.4g} ({p['optimizer']} lr={p['lr']:g} bs={p['batch_size']})"

    def configurations(self) -> list[tuple]:
        """(trial_id, point, epoch rows in order, status, error, last metrics) of every
        configuration recorded, in trial_id order (what a tracker needs to catch up)."""
        return [
            (
                tid,
                dict(self._points.get(tid, {})),
                [dict(row) for _, row in sorted(self._epochs.get(tid, {}).items())],
                trial["status"],
                trial.get("error"),
                dict(trial.get("last", {})),
            )
            for tid, trial in sorted(self._trials.items())
        ]

    def statuses(self) -> dict[str, str]:
        return {tid: t["status"] for tid, t in self._trials.items()}

    def rung_values(self, metric: str, rungs: tuple[int, ...]) -> list[tuple[str, int, float]]:
        """(trial_id, epoch, value of metric) of every recorded epoch that is a rung."""
        wanted = set(rungs)
        return [
            (tid, epoch, row.get(metric))
            for tid in sorted(self._epochs)
            for epoch, row in sorted(self._epochs[tid].items())
            if epoch in wanted
        ]

    # ---- persistence ------------------------------------------------------------------------
    def replay_journal(self) -> int:
        """Reload the events of an earlier run from the journal; returns how many were read."""
        if not self.journal_path or not os.path.exists(self.journal_path):
            return 0
        journal, self.journal_path = self.journal_path, None  # do not re-append while replaying
        self._replaying = True
        count = skipped = 0
        try:
            with open(journal, encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        skipped += 1  # a line cut short by a kill or a power loss
                        continue
                    if event["kind"] == "result":
                        self.on_result(event["trial_id"], event["point"], event["metrics"])
                    else:
                        self.on_end(
                            event["trial_id"], event["point"], event["status"], event["error"]
                        )
                    count += 1
        finally:
            self.journal_path = journal
            self._replaying = False
        if skipped:
            log.warning("%s: skipped %d damaged line(s) (cut short by a kill?)", journal, skipped)
        return count

    def load_parquet(self) -> int:
        """Reload an earlier run's rows from its Parquet files; returns the number of trials."""
        from sweep import storage

        trials_uri = storage.join(self.out, TRIALS_FILE)
        epochs_uri = storage.join(self.out, EPOCHS_FILE)
        if not (storage.exists(trials_uri) and storage.exists(epochs_uri)):
            return 0
        for row in _read_rows(epochs_uri):
            self._epochs.setdefault(row["trial_id"], {})[row["epoch"]] = row
        trials = _read_rows(trials_uri)
        for row in trials:
            params = {
                key[len(HP_PREFIX) :]: value
                for key, value in row.items()
                if key.startswith(HP_PREFIX) and value is not None
            }
            self._points[row["trial_id"]] = {
                "optimizer": row["optimizer"],
                "lr": row["lr"],
                "batch_size": row["batch_size"],
                "seed": row["seed"],
                "optimizer_params": params,
            }
            last = {key: row.get(key) for key in _LAST_KEYS}
            self._trials[row["trial_id"]] = {
                "status": row["status"],
                "error": row["error"],
                "last": last,
            }
        return len(trials)

    def maybe_flush(self) -> None:
        """Rewrite the tables if something changed and the interval since the last rewrite has
        passed (not inside a batch, nor while replaying the journal)."""
        if (
            self._dirty
            and not self._batching
            and not self._replaying
            and time.monotonic() >= self._next_flush
        ):
            self.flush()

    def flush(self) -> None:
        """Replace trials.parquet and epochs.parquet atomically with everything recorded."""
        from sweep import storage

        start = time.monotonic()
        storage.write_parquet_atomic(self.trials_table(), storage.join(self.out, TRIALS_FILE))
        storage.write_parquet_atomic(self.epochs_table(), storage.join(self.out, EPOCHS_FILE))
        self._dirty = False
        end = time.monotonic()
        self._next_flush = end + max(self.flush_interval_s, FLUSH_COST_FACTOR * (end - start))

    def close(self) -> None:
        self.flush()
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _log(self, event: dict) -> None:
        if not self.journal_path:
            return
        if self._journal is None:
            self._journal = open(self.journal_path, "a", encoding="utf-8")  # noqa: SIM115
            if _ends_mid_line(self.journal_path):  # else the next event joins a cut-short line
                self._journal.write("\n")
        self._journal.write(json.dumps(event, default=_json_default) + "\n")
        self._journal.flush()

    # ---- tables -------------------------------------------------------------------------------
    def epochs_table(self) -> pa.Table:
        rows = [row for tid in sorted(self._epochs) for _, row in sorted(self._epochs[tid].items())]
        return pa.Table.from_pylist(rows, schema=EPOCHS_SCHEMA)

    def trials_table(self) -> pa.Table:
        rows = [self._trial_row(tid) for tid in sorted(self._trials)]
        return pa.Table.from_pylist(rows, schema=trials_schema(self.hp_columns))

    def _trial_row(self, trial_id: str) -> dict:
        trial, point = self._trials[trial_id], self._points[trial_id]
        epochs = [row for _, row in sorted(self._epochs.get(trial_id, {}).items())]
        last = trial.get("last", {})
        final = epochs[-1] if epochs else {}
        params = point.get("optimizer_params", {})
        row = {
            "trial_id": trial_id,
            "optimizer": point["optimizer"],
            "lr": float(point["lr"]),
            "batch_size": int(point["batch_size"]),
            "seed": int(point["seed"]),
            "status": trial["status"],
            "error": trial.get("error"),
            "epochs_run": len(epochs),
            "best_epoch": _best_epoch(epochs, self.metric, self.mode),
            "final_train_loss": final.get("train_loss"),
            "steps": final.get("steps"),
            "train_time_s": final.get("elapsed_s"),
            "samples_per_s": _mean([e["samples_per_s"] for e in epochs]),
            "node_id": last.get("node_id"),
            "device": last.get("device"),
            "gpu_fraction": _float_or_none(last.get("gpu_fraction")),
            "gpu_peak_mem_mb": _float_or_none(last.get("gpu_peak_mem_mb")),
            "pack_id": last.get("pack_id"),
            "pack_size": _int_or_none(last.get("pack_size")),
        }
        for name in self.hp_columns:
            value = params.get(name)
            row[HP_PREFIX + name] = (
                value if value is None or isinstance(value, bool) else float(value)
            )
        for name, best in _BEST.items():
            values = [e[name] for e in epochs if e[name] is not None and math.isfinite(e[name])]
            row[f"best_{name}"] = best(values) if values else None
            row[f"final_{name}"] = final.get(name)
        completed = trial["status"] == "completed"
        for name in ("test_loss", "test_acc", "test_rmse"):
            row[name] = _float_or_none(last.get(name)) if completed else None
        row["test_epoch"] = _int_or_none(last.get("test_epoch")) if completed else None
        return row


_EPOCH_FLOATS = (
    "train_loss", "val_loss", "val_acc", "val_rmse", "epoch_time_s", "samples_per_s", "elapsed_s",
)  # fmt: skip


_LAST_KEYS = (
    "node_id", "device", "gpu_fraction", "gpu_peak_mem_mb", "test_loss", "test_acc", "test_rmse",
    "test_epoch", "pack_id", "pack_size",
)  # fmt: skip


def _best_epoch(epochs: list[dict], metric: str, mode: str) -> int | None:
    scored = [(e[metric], e["epoch"]) for e in epochs if finite(e.get(metric))]
    if not scored:
        return None
    if mode == "min":
        return min(scored, key=lambda pair: (pair[0], pair[1]))[1]
    return max(scored, key=lambda pair: (pair[0], -pair[1]))[1]  # ties: the earliest epoch


def finite(value) -> bool:
    """A number that is neither None, nan nor infinite."""
    return value is not None and math.isfinite(value)


def _mean(values: list) -> float | None:
    kept = [v for v in values if finite(v)]
    return sum(kept) / len(kept) if kept else None


def _float_or_none(value) -> float | None:
    return None if value is None else float(value)


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def _read_rows(uri: str) -> list[dict]:
    """The rows of a results table; a damaged one (with no journal to rebuild it) is an error."""
    from model.errors import ConfigError
    from sweep import storage

    try:
        return storage.read_parquet(uri).to_pylist()
    except (pa.ArrowException, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ConfigError(
            f"results: {uri} is damaged ({reason}) and there is no journal to rebuild it from"
        ) from None


def _ends_mid_line(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot journal {type(value).__name__}")
