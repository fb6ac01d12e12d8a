"""Runs a study on Ray Tune: resources, scheduler, callbacks, Parquet streaming, resume.

Used by ``python -m sweep run STUDY.yaml`` and ``python -m sweep resume DIR``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata

# First: sweep.launch sets Ray's environment (every process on 127.0.0.1) before ray is imported.
from sweep.launch import (  # what runs before Tune
    Prepared,
    RunOptions,
    journal_path,
    load_saved_study,
    loaded,
    lock_path,
    prepare,
    ray_session,
)

# isort: split
import pyarrow.fs as pafs
import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from model.errors import ConfigError, first_line
from sweep import signals, storage, tune_fixes
from sweep.asha import AshaRungs, start_rung_record
from sweep.config import StudyConfig, dump_study
from sweep.lock import results_lock
from sweep.pending import PendingWatch
from sweep.results import RAY_DIR, RUN_FILE, STUDY_FILE, TERMINAL_STATUSES, ResultsWriter
from sweep.space import PACK_KEY, hyperparameter_columns, param_space, trial_count
from sweep.tracking import MlflowTracker
from sweep.trainable import payload_of, run_pack

log = logging.getLogger(__name__)
SPACE_FILE = "param_space.json"  # the packs and fixed part, as given to Tune


@dataclass(frozen=True)
class RunSummary:
    """What a finished (or interrupted) run leaves behind."""

    out: str
    total: int
    statuses: dict[str, int]
    interrupted: bool

    @property
    def done(self) -> int:
        return sum(n for s, n in self.statuses.items() if s in TERMINAL_STATUSES)


def _check_cluster_gpus(study: StudyConfig, opts: RunOptions) -> None:
    if opts.address is not None:
        return  # an autoscaler may add GPU nodes: PendingWatch says so while trials wait
    if study.resources.gpus_per_trial > 0 and ray.cluster_resources().get("GPU", 0) <= 0:
        raise ConfigError(
            f"resources.gpus_per_trial: {study.resources.gpus_per_trial} GPUs asked, "
            "but the Ray cluster has no GPU"
        )


# ---- the run --------------------------------------------------------------------------------
@contextmanager
def _loaded_then_locked(loading: Future, study: StudyConfig, out: str) -> Iterator:
    """The loaded dataset, inside the results directory's lock (the lock file is the first
    thing written, so bad data stops the run before it)."""
    dataset = loaded(loading, study)
    with results_lock(lock_path(out), out):
        yield dataset


def run_study(
    study: StudyConfig,
    opts: RunOptions,
    *,
    callbacks: Sequence[tune.Callback] = (),
    prepared: Prepared | None = None,
) -> RunSummary:
    """Validate, then run the whole grid on Ray Tune, streaming results into Parquet.
    ``prepared``: what ``sweep.launch.prepare(study, opts)`` returned, when the caller ran it."""
    prepared = prepared or prepare(study, opts)
    out = prepared.out
    with (
        ray_session(opts, prepared.ray_start),
        _loaded_then_locked(prepared.loading, study, out) as dataset,
    ):
        _check_cluster_gpus(study, opts)
        storage.makedirs(out)
        storage.write_bytes_atomic(storage.join(out, STUDY_FILE), dump_study(study).encode())
        _write_run_info(out, study, opts, start=True)
        writer_cb = _writer_callback(study, out, fresh=True)
        watch = _pending_watch(study, opts)
        every = [writer_cb, watch, *_progress(study, opts, writer_cb, watch), *callbacks]
        space = param_space(
            study,
            input_size=dataset.n_features,
            output_size=dataset.n_outputs,
            slots=_trial_slots(study),
        )
        space = {**space, "fixed": fixed_params(study, out)}
        # Tuner.restore (Ray 2.60) forgets the param space unless it is given again: keep it.
        storage.write_bytes_atomic(storage.join(out, SPACE_FILE), json.dumps(space).encode())
        tuner = tune.Tuner(
            _trainable(study, dataset),
            param_space=space,
            tune_config=_tune_config(),
            run_config=_run_config(study, out, opts, every),
        )
        return _fit(tuner, study, out, opts, writer_cb, watch)


def resume_study(
    out: str,
    opts: RunOptions,
    *,
    callbacks: Sequence[tune.Callback] = (),
    prepared: Prepared | None = None,
) -> RunSummary:
    """Finish an interrupted run from its results directory, with Ray's own Tuner.restore.
    ``prepared``: what ``prepare(load_saved_study(out), opts, resume=True)`` returned."""
    study = load_saved_study(out)
    prepared = prepared or prepare(study, opts, resume=True)
    experiment = storage.join(out, RAY_DIR)
    with (
        ray_session(opts, prepared.ray_start),
        _loaded_then_locked(prepared.loading, study, out) as dataset,
    ):
        fs, path = storage.resolve(experiment)
        if not tune.Tuner.can_restore(path, storage_filesystem=_fs_or_none(experiment)):
            raise ConfigError(f"results: no Ray experiment to resume in {experiment}")
        tune_fixes.apply()  # before restore, which reads the trials' result files (no longer)
        tuner = tune.Tuner.restore(
            experiment if storage.is_local(experiment) else path,
            trainable=_trainable(study, dataset),
            param_space=_saved_space(out),
            resume_unfinished=True,
            resume_errored=False,
            storage_filesystem=_fs_or_none(experiment),
        )
        # Tuner.restore takes no run config: re-arm the callbacks of the restored one in place.
        writer_cb = _writer_callback(study, out)
        watch = _pending_watch(study, opts)
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = [
            writer_cb,
            watch,
            *_progress(study, opts, writer_cb, watch),
            *callbacks,
        ]
        return _fit(tuner, study, out, opts, writer_cb, watch, resumed=True)


def _saved_space(out: str) -> dict | None:
    """The param space run_study gave Tune (restore loses it otherwise: its trials not yet
    created would come without their fixed part); None for results written before it was kept."""
    path = storage.join(out, SPACE_FILE)
    return json.loads(storage.read_bytes(path)) if storage.exists(path) else None


def _fit(tuner, study, out, opts, writer_cb, watch, *, resumed: bool = False) -> RunSummary:
    total = trial_count(study)
    if opts.progress is not None:
        verb = "resuming" if resumed else "running"
        line = f"{verb} {study.name}: {total} configurations -> {out}"
        print(line, file=opts.progress, flush=True)
    tune_fixes.apply()
    tracker = _start_tracker(study, out, opts, writer_cb)
    signals.at_forced_exit(lambda: _forced_stop(writer_cb, out, opts))
    rungs = _start_rung_record(study, out, writer_cb)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        tuner.fit()
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)  # Tune leaves its own behind (Ray 2.60)
        if rungs is not None:
            ray.kill(rungs)
        writer_cb.close()
        counts = writer_cb.counts()
        _write_run_info(out, study, opts, start=False, counts=counts)
        if tracker is not None:
            tracker.close(interrupted=sum(counts.get(s, 0) for s in TERMINAL_STATUSES) < total)
    if watch.timed_out:
        raise watch.error(out)
    summary = RunSummary(out=out, total=total, statuses=counts, interrupted=False)
    if summary.done >= total:
        _prune_checkpoints(out)
    return dataclasses.replace(summary, interrupted=summary.done < total)


def _start_tracker(study, out: str, opts: RunOptions, writer_cb) -> MlflowTracker | None:
    """The MLflow tracker of --mlflow, caught up with the results and fed by writer_cb."""
    if not opts.mlflow:
        return None
    tags = {f"mlp_sweep.version.{name}": v for name, v in _versions().items()}
    commit = _git_commit()
    if commit:
        tags["mlp_sweep.git_commit"] = commit
    train = study.train
    params = {
        "metric": train.metric,
        "mode": train.mode,
        "select": train.select,
        "epochs": train.epochs,
        "scheduler": study.scheduler.type,
        "configurations": trial_count(study),
    }
    tracker = MlflowTracker(
        opts.mlflow,
        study_name=study.name,
        out=out,
        study_text=dump_study(study),
        tags=tags,
        params=params,
    )
    try:
        tracker.start(writer_cb.ensure().configurations())
    except Exception as exc:  # gone since the check before launch: one line, exit 2
        first = first_line(exc)
        raise ConfigError(f"--mlflow: cannot log to {opts.mlflow} ({first})") from exc
    writer_cb.listeners.append(tracker)
    return tracker


def _prune_checkpoints(out: str) -> None:
    """Keep only the last checkpoint of each trial (nothing will resume from the others)."""
    fs, root = storage.resolve(storage.join(out, RAY_DIR))
    selector = pafs.FileSelector(root, allow_not_found=True)
    for trial_dir in (i for i in fs.get_file_info(selector) if i.type == pafs.FileType.Directory):
        found = fs.get_file_info(pafs.FileSelector(trial_dir.path, allow_not_found=True))
        checkpoints = sorted(
            i.path
            for i in found
            if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")
        )
        for path in checkpoints[:-1]:
            fs.delete_dir(path)


def _forced_stop(writer_cb: ResultsCallback, out: str, opts: RunOptions) -> None:
    """A stop signal's grace period ran out (Ray's own processes got it too): flush, say so."""
    writer_cb.close()
    if opts.progress is not None:
        print(
            f"stopped by {signals.describe()} (Ray did not stop within {signals.GRACE_S:g}s); "
            f"finish with: python -m sweep resume {out}",
            file=opts.progress,
            flush=True,
        )


def fixed_params(study: StudyConfig, out: str) -> dict:
    """The part of every trial's config that the grid does not vary."""
    asha = None
    if study.scheduler.type == "asha":
        asha = {"actor": rung_record_name(out), "rungs": list(_asha_rungs(study).rungs)}
    return {
        "model": dataclasses.asdict(study.model),  # the MLPConfig fields besides the data's sizes
        "epochs": study.train.epochs,
        "select": study.train.select,
        "metric": study.train.metric,
        "checkpoint_every": study.train.checkpoint_every,
        "cpus_per_trial": study.resources.cpus_per_trial,
        "gpus_per_trial": study.resources.gpus_per_trial,
        "asha": asha,
    }


def _trial_slots(study: StudyConfig) -> int:
    """How many trials the Ray cluster can run at once (what auto packing splits groups for)."""
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 1) / study.resources.cpus_per_trial
    if study.resources.gpus_per_trial > 0:
        slots = min(slots, resources.get("GPU", 0) / study.resources.gpus_per_trial)
    return max(1, int(slots))


def _trainable(study: StudyConfig, dataset):
    resources = {"cpu": study.resources.cpus_per_trial, "gpu": study.resources.gpus_per_trial}
    trainable = tune.with_parameters(run_pack, payload=payload_of(dataset))
    return tune.with_resources(trainable, resources)


def _tune_config() -> tune.TuneConfig:
    # Early stopping is decided per configuration inside the packs (sweep.asha), so Tune itself
    # runs every trial to its end and needs no metric.
    return tune.TuneConfig(scheduler=FIFOScheduler(), reuse_actors=True)


# ---- per-configuration ASHA: one rung record per study ------------------------------------
def rung_record_name(out: str) -> str:
    """The name of the study's rung-record actor (unique per results location)."""
    return "mlp-sweep-asha-" + hashlib.sha256(out.encode()).hexdigest()[:16]


def _asha_rungs(study: StudyConfig) -> AshaRungs:
    """The study's ASHA: max_t the epochs, its grace period, reduction factor and mode."""
    sched = study.scheduler
    return AshaRungs(
        max_t=study.train.epochs,
        grace_period=sched.grace_period,
        reduction_factor=sched.reduction_factor,
        mode=study.train.mode,
    )


def _start_rung_record(study: StudyConfig, out: str, writer_cb: ResultsCallback):
    """Start the study's rung record, holding what earlier runs recorded (resume)."""
    if study.scheduler.type != "asha":
        return None
    rungs = _asha_rungs(study)
    writer = writer_cb.ensure()
    history = writer.rung_values(study.train.metric, rungs.rungs)
    stopped = [tid for tid, status in writer.statuses().items() if status == "early_stopped"]
    return start_rung_record(rung_record_name(out), rungs, history=history, stopped=stopped)


def _run_config(study, out: str, opts: RunOptions, callbacks) -> tune.RunConfig:
    if opts.tensorboard:
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0"
    fs = _fs_or_none(out)
    return tune.RunConfig(
        name=RAY_DIR,
        storage_path=out if fs is None else storage.resolve(out)[1],
        storage_filesystem=fs,
        callbacks=callbacks,
        verbose=1 if opts.verbose else 0,
        failure_config=tune.FailureConfig(max_failures=study.train.max_failures),
        # Every checkpoint is kept while the run goes on: Tune deletes the one before as soon as
        # a new one registers, but its experiment snapshot reaches storage later, so a killed
        # driver's snapshot can name a deleted checkpoint and its trial could never resume.
        # _prune_checkpoints keeps only the last of each trial once the run is complete.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
    )


def _fs_or_none(uri: str):
    return None if storage.is_local(uri) else storage.resolve(uri)[0]


def _pending_watch(study: StudyConfig, opts: RunOptions) -> PendingWatch:
    need = {"CPU": study.resources.cpus_per_trial, "GPU": study.resources.gpus_per_trial}
    return PendingWatch(need, opts.pending_timeout_s, stream=opts.progress)


def _writer_callback(study: StudyConfig, out: str, *, fresh: bool = False) -> ResultsCallback:
    journal = journal_path(out)
    if fresh and os.path.exists(journal):
        os.remove(journal)  # left by an earlier study at this address: not ours to replay
    return ResultsCallback(
        out=out,
        hp_columns=hyperparameter_columns(study),
        metric=study.train.metric,
        mode=study.train.mode,
        journal=journal,
    )


def _progress(study: StudyConfig, opts: RunOptions, results: ResultsCallback, watch=None) -> list:
    if opts.progress is None or opts.verbose:
        return []
    train = study.train
    progress = ProgressCallback(
        trial_count(study), train.metric, train.mode, results, opts.progress
    )
    progress.watch = watch
    return [progress]


def _write_run_info(out: str, study, opts: RunOptions, *, start: bool, counts=None) -> None:
    path = storage.join(out, RUN_FILE)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if start:
        info = {
            "study": study.name,
            "started": now,
            "ended": None,
            "host": platform.node(),
            "python": platform.python_version(),
            "packages": _versions(),
            "git_commit": _git_commit(),
            "address": opts.address,
            "trials": trial_count(study),
            "runs": [],
        }
        if storage.exists(path):  # a resumed run keeps the first start
            info = {**(_read_run_info(path) or info), "ended": None}
        info["runs"].append({"started": now, "ended": None})
    else:
        info = _read_run_info(path) or {"runs": [{}]}
        info["ended"] = now
        info["runs"][-1]["ended"] = now
        info["statuses"] = counts
    storage.write_bytes_atomic(path, json.dumps(info, indent=2).encode())


def _read_run_info(path: str) -> dict | None:
    """run.json, or None (with a warning) when it is damaged: it is rewritten, not needed."""
    try:
        info = json.loads(storage.read_bytes(path))
        if isinstance(info, dict) and isinstance(info.get("runs"), list) and info["runs"]:
            return info
    except (ValueError, UnicodeDecodeError):
        pass
    log.warning("%s is damaged; writing a new one", path)
    return None


def _versions() -> dict[str, str]:
    names = ("mlp-sweep", "torch", "ray", "numpy", "pandas", "pyarrow", "scikit-learn")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


# ---- callbacks (run in the driver) ------------------------------------------------------------
class ResultsCallback(tune.Callback):
    """Streams every reported epoch and every trial's end into the ResultsWriter."""

    def __init__(self, **writer_args) -> None:
        self._args = writer_args
        self.writer: ResultsWriter | None = None
        self.listeners: list = []  # told every event after the writer (the MLflow tracker)

    def setup(self, **info) -> None:
        self.ensure()

    def ensure(self) -> ResultsWriter:
        if self.writer is None:
            self.writer = ResultsWriter(**self._args)
            if not self.writer.replay_journal():  # a resumed run starts from what was reported
                self.writer.load_parquet()
        return self.writer

    def __getstate__(self) -> dict:  # Tune pickles its run config; the writer stays behind
        return {"_args": self._args, "writer": None, "listeners": []}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        """One epoch of a pack: a result and possibly an end for each member in it."""
        writer, points = self.ensure(), _points(trial)
        shared = {key: result.get(key) for key in _PACK_KEYS}
        shared["pack_id"] = trial.trial_id
        with writer.batch():  # the tables are rewritten once per pack result, not per member
            for member in result.get("members", []):
                tid = member["trial_id"]
                if member.get("epoch") is not None:
                    metrics = {**_plain(member), **shared}
                    writer.on_result(tid, points[tid], metrics)
                    for listener in self.listeners:
                        listener.on_result(tid, points[tid], metrics)
                if member.get("end"):
                    self._end(tid, points[tid], member["end"], member.get("error"))

    def on_step_end(self, iteration, trials, **info) -> None:
        """Every step of Tune's loop: rows waiting for the flush interval reach the tables."""
        if self.writer is not None:
            self.writer.maybe_flush()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end_unfinished(trial, "pack ended without a result for this configuration")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end_unfinished(trial, _error_text(trial))

    def _end_unfinished(self, trial, error: str) -> None:
        writer = self.ensure()
        with writer.batch():
            for tid, point in _points(trial).items():
                if writer.status_of(tid) not in TERMINAL_STATUSES:
                    self._end(tid, point, "error", error)

    def _end(self, tid: str, point: dict, status: str, error: str | None) -> None:
        writer = self.ensure()
        writer.on_end(tid, point, status, error)
        for listener in self.listeners:
            listener.on_end(tid, point, status, error, writer.last_metrics(tid))

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in self.ensure().statuses().values():
            counts[status] = counts.get(status, 0) + 1
        return counts

    def best(self, metric: str, mode: str) -> str | None:
        """The best value of metric reported so far, with its grid point."""
        return self.ensure().best(metric, mode)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


_MEMBER_KEYS = (
    "epoch", "train_loss", "val_loss", "val_acc", "val_rmse", "epoch_time_s", "samples_per_s",
    "steps", "elapsed_s", "status", "test_loss", "test_acc", "test_rmse", "test_epoch",
)  # fmt: skip
_PACK_KEYS = ("node_id", "device", "gpu_fraction", "gpu_peak_mem_mb", "pack_size")


def _plain(member: dict) -> dict:
    return {key: member.get(key) for key in _MEMBER_KEYS}


def _points(trial) -> dict[str, dict]:
    """trial_id -> grid point of every configuration in a Tune trial's pack."""
    members = (trial.config.get(PACK_KEY) or {}).get("members", [])  # never raise in a callback
    return {point["trial_id"]: point for point in members}


def _error_text(trial) -> str:
    """The trial's last error in one line: from the files Tune wrote in the driver's staging
    directory (the copies in storage are synced later), else from storage."""
    error = None
    try:
        if trial.pickled_error_file and os.path.exists(trial.pickled_error_file):
            import ray.cloudpickle  # Tune's own file in this driver's staging directory

            with open(trial.pickled_error_file, "rb") as f:
                error = ray.cloudpickle.load(f)
        elif trial.error_file and os.path.exists(trial.error_file):
            with open(trial.error_file, encoding="utf-8", errors="replace") as f:
                error = f.read().strip().splitlines()[-1]
        else:
            error = trial.get_pickled_error() or trial.get_error()
    except Exception as exc:  # noqa: BLE001 - the message is best effort, the status is not
        error = f"(could not read the trial's error: {exc})"
    if error is None:
        return "trial failed (no error recorded)"
    if isinstance(error, BaseException):
        cause = getattr(error, "cause", None) or error
        error = f"{type(cause).__name__}: {cause}"
    return " ".join(str(error).split())[:2000]


class ProgressCallback(tune.Callback):
    """One live progress line: done / running / pending / early-stopped / diverged / errored."""

    def __init__(self, total: int, metric: str, mode: str, results: ResultsCallback, stream):
        self.total, self.metric, self.mode = total, metric, mode
        self.results, self.stream = results, stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.monotonic()
        self.last = 0.0
        self.done_at_start: int | None = None
        self.watch = None  # a PendingWatch whose note joins the line

    def __getstate__(self) -> dict:
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, stream=sys.stderr)

    def on_step_end(self, iteration, trials, **info) -> None:
        now = time.monotonic()
        if now - self.last >= (1.0 if self.tty else 10.0):
            self.last = now
            self._show(trials)

    def on_experiment_end(self, trials, **info) -> None:
        self._show(trials)
        if self.tty:
            print(file=self.stream, flush=True)

    def _show(self, trials) -> None:
        counts = self.results.counts()
        done = sum(n for status, n in counts.items() if status in TERMINAL_STATUSES)
        if self.done_at_start is None:
            self.done_at_start = done  # a resumed run: ETA from this run's pace only
        statuses = self.results.ensure().statuses()
        running = sum(
            1
            for t in trials
            if t.status == "RUNNING"
            for tid in _points(t)
            if statuses.get(tid) not in TERMINAL_STATUSES
        )
        elapsed = time.monotonic() - self.start
        new = done - self.done_at_start
        eta = f"{elapsed / new * (self.total - done):.0f}s" if new else "?"
        best = self.results.best(self.metric, self.mode) or "-"
        line = (
            f"done {done}/{self.total}  running {running}  "
            f"pending {max(0, self.total - done - running)}  "
            f"early-stopped {counts.get('early_stopped', 0)}  "
            f"diverged {counts.get('diverged', 0)}  errored {counts.get('error', 0)}  "
            f"| best {best} | {elapsed:.0f}s elapsed, ETA {eta}"
        )
        if self.watch is not None and self.watch.note:
            line += f" | {self.watch.note}"
        end = "\r" if self.tty else "\n"
        print(("\x1b[2K" if self.tty else "") + line, end=end, file=self.stream, flush=True)
