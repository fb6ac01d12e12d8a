"""Everything a run does before Ray Tune: checks, loading the data, starting Ray.

Light on purpose (no Ray Tune import): ``python -m sweep run`` validates the study, calls
:func:`prepare` (checks; then the data loads and Ray starts, each in a background thread) and
only then imports the Tune side (``sweep.runner``), so those imports overlap Ray's start-up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

# Every Ray process of a local run stays on 127.0.0.1 (must be set before ray is imported).
if "RAY_ADDRESS" not in os.environ:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# A local Ray starts no idle workers for the driver: Tune's trial actors never take one (they
# carry a runtime env of Tune's own, so they need a worker of another runtime-env hash), so they
# only cost CPU while Ray starts (Ray 2.60; ~1 s of the default study on 2 cores).
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Tune's experiment snapshot (what resume restores) at most every 2 s, not "auto" (10 s or more):
# with every checkpoint kept, no checkpoint forces one, and a killed driver's resume starts from
# the checkpoints its last snapshot names.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")

import ray  # noqa: E402

from model.errors import ConfigError  # noqa: E402
from sweep import signals, storage  # noqa: E402
from sweep.cluster import check_address  # noqa: E402
from sweep.config import StudyConfig, check_study_against_data, parse_study  # noqa: E402
from sweep.lock import results_lock  # noqa: E402
from sweep.results import STUDY_FILE  # noqa: E402
from sweep.tracking import check_tracking_uri  # noqa: E402

if TYPE_CHECKING:
    from model.data import Arrays

JOURNAL_FILE = "journal.jsonl"
DEFAULT_PENDING_TIMEOUT_S = 900.0  # an autoscaler needs a few minutes to start a node


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
class Prepared:
    """A run that passed its checks: where it writes, its data loading and Ray starting."""

    out: str
    loading: Future  # the data, as model.data.Arrays
    ray_start: RayStart | None  # ray.init in progress; None: the caller's Ray session


def study_dir(study: StudyConfig, opts: RunOptions) -> str:
    """Where a study's results go: <storage or results>/<name>."""
    root = opts.storage or os.path.abspath(opts.results)
    return storage.join(root, study.name)


# ---- checks before anything starts ------------------------------------------------------------
def prepare(study: StudyConfig, opts: RunOptions, *, resume: bool = False) -> Prepared:
    """Run every check that needs neither Ray nor the data (nothing is started or written
    before they pass), then start loading the data and starting Ray, each in a background
    thread, while the caller goes on (the CLI imports Ray Tune meanwhile; the driver never needs
    torch).

    Starting Ray writes nothing into the results directory, so a bad data file still ends the
    run with nothing written (``loaded`` raises it inside ``ray_session``, which stops Ray)."""
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
    starting = start_ray(opts)  # first: an unreachable address fails before any data loads
    return Prepared(out, _in_background("data", _load_dataset, study.data), starting)


def _load_dataset(spec):
    from model.data import load_arrays  # pandas: imported off the main thread

    return load_arrays(spec)


def loaded(loading: Future, study: StudyConfig) -> Arrays:
    """The data prepare() started loading, checked against the study (DataError or
    ConfigError as if it had been loaded here; nothing has been written yet)."""
    dataset = loading.result()
    check_study_against_data(study, dataset.n_train)
    return dataset


def _check_fits_locally(study: StudyConfig, opts: RunOptions) -> None:
    """A trial that asks for more CPUs or GPUs than the local Ray will have could never start."""
    res = study.resources
    if ray.is_initialized():  # a session started by the caller (tests): its resources count
        have = ray.cluster_resources()
        cpus, gpus, where = have.get("CPU", 0), have.get("GPU", 0), "the running Ray session"
    else:
        cpus = opts.num_cpus if opts.num_cpus is not None else _local_cpu_count()
        gpus = opts.num_gpus
        if gpus is None:  # counting GPUs imports torch: only when a trial asks for one
            gpus = _local_gpu_count() if res.gpus_per_trial > 0 else 0
        where = "this machine"
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
def start_ray(opts: RunOptions) -> RayStart | None:
    """Begin joining the cluster at opts.address, or starting a private local Ray, in a
    background thread; None when the caller already has a Ray session (tests), which is used."""
    if opts.verbose:
        logging.getLogger("ray._private.worker").addFilter(_not_main_thread_note)
    else:  # Tune logs every retried or failed trial with a traceback; the tables keep it
        logging.getLogger("ray").setLevel(logging.CRITICAL)
    if ray.is_initialized():
        return None
    if opts.address:
        check_address(opts.address)  # an unreachable address is one line at once
    return RayStart(opts)


class RayStart:
    """``ray.init`` in a thread of its own, which lives until the session ends: Ray ties the
    lives of the processes it starts (GCS, raylet) to the thread that started them (Linux's
    PR_SET_PDEATHSIG), so a thread that returned would take the local Ray down with it."""

    def __init__(self, opts: RunOptions) -> None:
        self._started: Future = Future()
        self._ended = threading.Event()
        thread = threading.Thread(target=self._run, args=(opts,), name="mlp-sweep-ray")
        thread.daemon = True  # never holds up the exit of a driver that stopped early
        thread.start()

    def _run(self, opts: RunOptions) -> None:
        try:
            _init_ray(opts)
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
            self._started.set_exception(exc)
            return
        self._started.set_result(None)
        self._ended.wait()

    def wait(self) -> None:
        """Until Ray is up; raises what ray.init raised."""
        self._started.result()

    def release(self) -> None:
        """Let the thread end (after ray.shutdown)."""
        self._ended.set()


def _init_ray(opts: RunOptions) -> None:
    common = dict(
        include_dashboard=opts.dashboard,
        log_to_driver=opts.verbose,
        logging_level=logging.INFO if opts.verbose else logging.ERROR,
    )
    if opts.address:
        ray.init(address=opts.address, **common)
    else:
        with signals.ray_out_of_reach(), _lean_local_node(opts):
            ray.init(
                address="local",
                num_cpus=opts.num_cpus,
                num_gpus=opts.num_gpus,
                _system_config=local_system_config(opts),
                **common,
            )


# The raylet's first connection to its own object store retries once a second, ten times (Ray
# 2.60). On a busy 2-core machine the store is often not up at the first try, which held a
# sweep's start-up back by a whole second in about half the runs. Ten times as often, ten
# times as many tries: the same patience.
LOCAL_SYSTEM_CONFIG = {
    "raylet_client_connect_timeout_milliseconds": 100,
    "raylet_client_num_connect_attempts": 100,
}


def local_system_config(opts: RunOptions) -> dict:
    """Ray's system config for a local Ray: LOCAL_SYSTEM_CONFIG, and without a dashboard no
    task events (the task list and timeline only the dashboard and Ray's state API show). The
    driver's shutdown waits for its last task events to reach the GCS: 0.25 s in most runs on a
    2-core machine, 0.005 s without them (Ray 2.60)."""
    if opts.dashboard:
        return dict(LOCAL_SYSTEM_CONFIG)
    return {**LOCAL_SYSTEM_CONFIG, "task_events_report_interval_ms": 0}


@contextmanager
def _lean_local_node(opts: RunOptions) -> Iterator[None]:
    """While a local Ray starts, leave out the processes a sweep never uses: the dashboard's
    head process when there is no dashboard (ray.init waits ~0.6 s for it, and then it runs only
    Ray's usage statistics), the autoscaler monitor (a local Ray has nothing to scale) and, when
    no worker output goes to the driver, the log monitor that would carry it there. Each is a
    Python process importing Ray on the same cores as the start-up. Then wait for the raylet
    more often than Ray does (_await_raylet). ``--dashboard`` starts Ray as plain ``ray.init``
    does."""
    from ray._private import node

    if opts.dashboard:
        yield
        return
    original = node.Node

    class _LeanNode(original):
        def __init__(self, ray_params, *args, **kwargs):
            ray_params.no_monitor = True
            ray_params.include_log_monitor = opts.verbose
            super().__init__(ray_params, *args, **kwargs)

        def start_api_server(self, *args, **kwargs) -> None:
            return None

        def start_ray_processes(self) -> None:
            super().start_ray_processes()
            _await_raylet(self)

    node.Node = _LeanNode
    try:
        yield
    finally:
        node.Node = original


def _await_raylet(local_node, timeout_s: float = 30.0) -> None:
    """Until the raylet just started has registered with the GCS, asking every 20 ms. Ray's
    own wait, which comes next, asks once and then sleeps a whole second between tries (Ray
    2.60), while the raylet takes 0.6-1.1 s to register: up to a second lost per start. Gives
    up quietly when the raylet exits or after ``timeout_s``: Ray's own wait then decides, with
    its own error."""
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    gcs = local_node.get_gcs_client()
    raylet = local_node.all_processes["raylet"][0].process
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and raylet.poll() is None:
        try:
            nodes = gcs.get_all_node_info(timeout=1)
        except Exception:  # noqa: BLE001 - a GCS still starting; Ray's wait reports for real
            nodes = {}
        alive = (
            i.state == GcsNodeInfo.ALIVE for n, i in nodes.items() if n.hex() == local_node.node_id
        )
        if any(alive):
            return
        time.sleep(0.02)


def _not_main_thread_note(record: logging.LogRecord) -> bool:
    """Drop Ray's note that ray.init outside the main thread sets no SIGTERM handler: the
    sweep's own handlers are put back as soon as Ray is up (ray_session)."""
    return "SIGTERM handler is not set" not in record.getMessage()


@contextmanager
def ray_session(opts: RunOptions, starting: RayStart | None = None) -> Iterator[None]:
    """The Ray session ``starting`` (from ``start_ray``) brings up, stopped on the way out; with
    no ``starting``, the caller's session if Ray is initialized, else one started here."""
    if starting is None:
        if ray.is_initialized():
            yield
            return
        starting = start_ray(opts)
        if starting is None:  # initialized meanwhile by someone else
            yield
            return
    try:
        starting.wait()
        signals.rearm()  # ray.init installed SIGTERM handlers of its own (and a C++ stack dumper)
        yield
    finally:
        if ray.is_initialized():
            if not opts.address:
                _end_autoscaler_monitor()
            ray.shutdown()
        starting.release()


def _in_background(name: str, fn, *args) -> Future:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mlp-sweep-{name}")
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)


def _end_autoscaler_monitor() -> None:
    """End the local Ray's autoscaler monitor before ray.shutdown: shutdown stops the GCS
    first, and the monitor answers its SIGTERM by reporting to the GCS, so shutdown waits a full
    second for it and then kills it (Ray 2.60). A private local Ray has nothing to autoscale; only
    a ``--dashboard`` run starts the monitor (see _lean_local_node)."""
    node = getattr(ray._private.worker, "_global_node", None)
    for info in getattr(node, "all_processes", {}).get("monitor", []):
        process = getattr(info, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def journal_path(out: str) -> str:
    """The driver's append-only journal: beside the tables when they are local, else in the
    local cache (an object store cannot append), keyed by the results URI."""
    if storage.is_local(out):
        return storage.resolve(storage.join(out, JOURNAL_FILE))[1]
    cache = os.environ.get("MLP_SWEEP_CACHE") or os.path.expanduser("~/.cache/mlp-sweep")
    key = hashlib.sha256(out.encode()).hexdigest()[:16]
    os.makedirs(os.path.join(cache, "journals"), exist_ok=True)
    return os.path.join(cache, "journals", f"{key}.jsonl")


def lock_path(out: str) -> str:
    """The one-writer lock of a results directory: beside the driver's journal."""
    return os.path.splitext(journal_path(out))[0] + ".lock"
