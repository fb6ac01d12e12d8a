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
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import TextIO

# Every Ray process of a local run stays on 127.0.0.1 (must be set before ray is imported).
if "RAY_ADDRESS" not in os.environ:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Tune's experiment snapshot (what resume restores) at most every 2 s, not "auto" (10 s or more):
# with every checkpoint kept, no checkpoint forces one, and a killed driver's resume starts from
# the checkpoints its last snapshot names.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")

import pyarrow.fs as pafs  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import FIFOScheduler  # noqa: E402

from model.data import load_dataset  # noqa: E402
from model.errors import ConfigError, first_line  # noqa: E402
from sweep import signals, storage, tune_fixes  # noqa: E402
from sweep.asha import AshaRungs, start_rung_record  # noqa: E402
from sweep.cluster import check_address  # noqa: E402
from sweep.config import StudyConfig, check_study_against_data, dump_study, parse_study  # noqa: E402
from sweep.lock import results_lock  # noqa: E402
from sweep.pending import DEFAULT_PENDING_TIMEOUT_S, PendingWatch  # noqa: E402
from sweep.results import RAY_DIR, RUN_FILE, STUDY_FILE, TERMINAL_STATUSES, ResultsWriter  # noqa: E402
from sweep.space import PACK_KEY, hyperparameter_columns, param_space, trial_count  # noqa: E402
from sweep.tracking import MlflowTracker, check_tracking_uri  # noqa: E402
from sweep.trial import dataset_to_payload, run_pack  # noqa: E402

log = logging.getLogger(__name__)
JOURNAL_FILE = "journal.jsonl"
SPACE_FILE = "param_space.json"  # the packs and fixed part, as given to Tune


@dataclass(frozen=True)
class RunOptions:
    """How and where to run a study (everything the study file does not say)."""

    results: str = "results"  # local directory holding <name>/
    storage: str | None = None  # local path or URI (file://, s3://, gs://); overrides results
    address: str | None = None  # an existing Ray cluster; None starts a local one
    dashboard: bool = False
    tensorboard: bool = False
    verbose: bool = False
    num_cpus: int | None = None  # local Ray only
    num_gpus: float | None = None  # local Ray only; logical GPUs work without CUDA
    progress: TextIO | None = None  # where the live progress line goes (None: silent)
    pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S  # no node can hold a trial: stop (0: wait)
    mlflow: str | None = None  # MLflow tracking URI: parent run per study, child per configuration


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


def study_dir(study: StudyConfig, opts: RunOptions) -> str:
    """Where a study's results go: <storage or results>/<name>."""
    root = opts.storage or os.path.abspath(opts.results)
    return storage.join(root, study.name)


# ---- checks before anything starts ------------------------------------------------------------
def prepare(study: StudyConfig, opts: RunOptions, *, resume: bool = False):
    """Run every check that needs neither Ray nor the data, then start loading the data in a
    background thread (while Ray starts: see ``loaded``). Nothing is started or written."""
    out = study_dir(study, opts)
    if opts.address is None:
        _check_fits_locally(study, opts)
    if opts.storage:
        storage.check_reachable(opts.storage)
    elif not resume:
        _check_writable(out)
    if not resume:
        _check_fresh(out, study)
    if opts.mlflow:
        check_tracking_uri(opts.mlflow)
    if os.path.exists(lock_path(out)):  # refuse a directory in use before Ray starts
        with results_lock(lock_path(out), out):
            pass
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlp-sweep-data")
    loading = loader.submit(load_dataset, study.data)
    loader.shutdown(wait=False)
    return loading, out


def loaded(loading: Future, study: StudyConfig):
    """The dataset prepare() started loading, checked against the study (DataError or
    ConfigError as if it had been loaded here; nothing has been written yet)."""
    dataset = loading.result()
    check_study_against_data(study, dataset.n_train)
    return dataset


def _check_fits_locally(study: StudyConfig, opts: RunOptions) -> None:
    """A trial that asks for more CPUs or GPUs than the local Ray will have could never start."""
    if ray.is_initialized():  # a session started by the caller (tests): its resources count
        have = ray.cluster_resources()
        cpus, gpus, where = have.get("CPU", 0), have.get("GPU", 0), "the running Ray session"
    else:
        cpus = opts.num_cpus if opts.num_cpus is not None else _local_cpu_count()
        gpus = opts.num_gpus if opts.num_gpus is not None else _local_gpu_count()
        where = "this machine"
    res = study.resources
    if res.gpus_per_trial > 0 and gpus <= 0:
        raise ConfigError(
            f"resources.gpus_per_trial: {res.gpus_per_trial:g} GPUs asked, "
            f"but {where} has no GPU (set it to 0)"
        )
    for field, asked, has, flag in (
        ("cpus_per_trial", res.cpus_per_trial, cpus, "--num-cpus"),
        ("gpus_per_trial", res.gpus_per_trial, gpus, "--num-gpus"),
    ):
        if asked > has + 1e-9:
            kind = field[:3].upper()
            raise ConfigError(
                f"resources.{field}: a trial needs {asked:g} {kind}s, but {where} has {has:g} "
                f"(lower it, or give the local Ray more with {flag})"
            )


def _local_cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _check_writable(out: str) -> None:
    probe = out
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "."
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"results: directory {probe!r} is not writable")


def holds_study(out: str, study: StudyConfig) -> bool:
    """True when ``out`` already holds results of exactly this study."""
    return storage.exists(storage.join(out, STUDY_FILE)) and load_saved_study(out) == study


def _check_fresh(out: str, study: StudyConfig) -> None:
    if not storage.exists(storage.join(out, STUDY_FILE)):
        return
    previous = load_saved_study(out)
    if previous != study:
        raise ConfigError(f"results: {out} already holds a different study ({previous.name!r})")
    raise ConfigError(
        f"results: {out} already holds this study; finish it with `python -m sweep resume {out}`"
    )


def load_saved_study(out: str) -> StudyConfig:
    """The resolved study saved in a results directory."""
    import yaml

    path = storage.join(out, STUDY_FILE)
    if not storage.exists(path):
        raise ConfigError(f"results: {out} holds no {STUDY_FILE} (not a sweep results directory)")
    try:
        raw = yaml.safe_load(storage.read_bytes(path))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"results: {path} is damaged (not YAML: {reason})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"results: {path} is damaged (not a study)")
    return parse_study(raw)


# ---- Ray session ------------------------------------------------------------------------------
@contextmanager
def ray_session(opts: RunOptions) -> Iterator[None]:
    """Join the cluster at opts.address, reuse an initialized Ray, or start a private local one."""
    quiet = not opts.verbose
    if quiet:  # Tune logs every retried or failed trial with a traceback; the tables keep it
        logging.getLogger("ray").setLevel(logging.CRITICAL)
    if ray.is_initialized():
        yield
        return
    common = dict(
        include_dashboard=opts.dashboard,
        log_to_driver=not quiet,
        logging_level=logging.ERROR if quiet else logging.INFO,
    )
    if opts.address:
        check_address(opts.address)
        ray.init(address=opts.address, **common)
    else:
        with signals.ray_out_of_reach():
            ray.init(address="local", num_cpus=opts.num_cpus, num_gpus=opts.num_gpus, **common)
    signals.rearm()  # ray.init installed SIGTERM handlers of its own (and a C++ stack dumper)
    try:
        yield
    finally:
        ray.shutdown()


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
    study: StudyConfig, opts: RunOptions, *, callbacks: Sequence[tune.Callback] = ()
) -> RunSummary:
    """Validate, then run the whole grid on Ray Tune, streaming results into Parquet."""
    loading, out = prepare(study, opts)
    with ray_session(opts), _loaded_then_locked(loading, study, out) as dataset:
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
    out: str, opts: RunOptions, *, callbacks: Sequence[tune.Callback] = ()
) -> RunSummary:
    """Finish an interrupted run from its results directory, with Ray's own Tuner.restore."""
    study = load_saved_study(out)
    loading, _ = prepare(study, opts, resume=True)
    experiment = storage.join(out, RAY_DIR)
    with ray_session(opts), _loaded_then_locked(loading, study, out) as dataset:
        fs, path = storage.resolve(experiment)
        if not tune.Tuner.can_restore(path, storage_filesystem=_fs_or_none(experiment)):
            raise ConfigError(f"results: no Ray experiment to resume in {experiment}")
        tuner = tune.Tuner.restore(
            experiment if _is_local(experiment) else path,
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
    payload = dataset_to_payload(dataset)
    return tune.with_resources(tune.with_parameters(run_pack, payload=payload), resources)


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


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _fs_or_none(uri: str):
    return None if _is_local(uri) else storage.resolve(uri)[0]


def journal_path(out: str) -> str:
    """The driver's append-only journal: beside the tables when they are local, else in the
    local cache (an object store cannot append), keyed by the results URI."""
    if _is_local(out):
        return storage.resolve(storage.join(out, JOURNAL_FILE))[1]
    cache = os.environ.get("MLP_SWEEP_CACHE") or os.path.expanduser("~/.cache/mlp-sweep")
    key = hashlib.sha256(out.encode()).hexdigest()[:16]
    os.makedirs(os.path.join(cache, "journals"), exist_ok=True)
    return os.path.join(cache, "journals", f"{key}.jsonl")


def lock_path(out: str) -> str:
    """The one-writer lock of a results directory: beside the driver's journal."""
    return os.path.splitext(journal_path(out))[0] + ".lock"


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
        for member in result.get("members", []):
            tid = member["trial_id"]
            if member.get("epoch") is not None:
                metrics = {**_plain(member), **shared}
                writer.on_result(tid, points[tid], metrics)
                for listener in self.listeners:
                    listener.on_result(tid, points[tid], metrics)
            if member.get("end"):
                self._end(tid, points[tid], member["end"], member.get("error"))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end_unfinished(trial, "pack ended without a result for this configuration")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end_unfinished(trial, _error_text(trial))

    def _end_unfinished(self, trial, error: str) -> None:
        writer = self.ensure()
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
