"""MLflow tracking of a study, written by the driver from the results stream.

    python -m sweep run sweep/configs/default.yaml --mlflow sqlite:///mlflow.db
    python -m sweep resume results/digits-optimizers --mlflow http://127.0.0.1:5000

One parent run per study (experiment = the study's name; the resolved study file as an artifact,
package versions as tags), one child run per configuration (params, every epoch's metrics with
step = epoch, a ``status`` tag, test metrics, FINISHED or FAILED at its end). The runner feeds
the tracker every event the ResultsWriter records, so packed trials and object-store results
need nothing more; a background thread logs them in batches, so Tune never waits for MLflow.
``mlflow.json`` in the results directory names the parent run: a resumed run (and
``python -m analysis report --mlflow``) goes on with it. On resume, whatever the results hold
and MLflow lacks (a killed driver's last events) is logged first.
Needs the ``mlflow`` extra (``pip install 'mlp-sweep[mlflow]'``).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from model.errors import ConfigError, first_line
from sweep import storage
from sweep.results import finite

log = logging.getLogger(__name__)

EXTRA = "pip install 'mlp-sweep[mlflow]'"
RUN_FILE = "mlflow.json"  # in the results directory: the tracking URI and the parent run
TRIAL_TAG = "mlp_sweep.trial_id"
RESULTS_TAG = "mlp_sweep.results"
# per-epoch values logged with step = epoch; test values once, at the configuration's end
EPOCH_METRICS = ("train_loss", "val_loss", "val_acc", "val_rmse", "epoch_time_s", "samples_per_s")
TEST_METRICS = ("test_loss", "test_acc", "test_rmse", "test_epoch")
RUN_STATUS = {  # configuration status -> MLflow run status
    "completed": "FINISHED",
    "early_stopped": "FINISHED",
    "diverged": "FAILED",
    "error": "FAILED",
}
MAX_BATCH = 1000  # MLflow's limit on metrics, params and tags together per log_batch
# close(): how long to wait for the logging thread to make progress; an interrupted sweep waits
# this long in all (then says what was not logged), a finished one as long as MLflow keeps up.
CLOSE_STALL_S = 60.0
CHECK_TIMEOUT_S = 5.0


def import_mlflow():
    """mlflow, or ConfigError naming the install command (exit 2 before anything starts)."""
    try:
        import mlflow
    except ImportError as exc:
        raise ConfigError(f"--mlflow: MLflow is not installed: {EXTRA}") from exc
    for name in ("mlflow", "alembic"):  # schema migrations and store notes: not for the console
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow


def check_tracking_uri(uri: str) -> None:
    """Raise ConfigError unless the tracking URI answers (within seconds, not MLflow's minutes
    of retries): an HTTP server's /health, or a store that opens."""
    import_mlflow()
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(
                f"{uri.rstrip('/')}/health", timeout=CHECK_TIMEOUT_S
            ) as answer:
                if answer.status == 200:
                    return
                reason = f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = str(getattr(exc, "reason", exc))
        raise ConfigError(f"--mlflow: cannot reach the tracking server at {uri} ({reason})")
    folder = _sqlite_folder(uri)
    if folder is not None:
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise ConfigError(f"--mlflow: {uri}: folder {folder!r} does not exist or is read-only")
    try:
        _client(uri).search_experiments(max_results=1)
    except Exception as exc:  # any store error: one line, exit 2
        first = first_line(exc)
        raise ConfigError(f"--mlflow: cannot open tracking URI {uri} ({first})") from exc


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _sqlite_folder(uri: str) -> str | None:
    """The folder of a sqlite:/// store's database file, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return os.path.dirname(os.path.abspath(uri[len("sqlite:///") :]))


def _artifact_location(uri: str) -> str | None:
    """Beside the database for sqlite:/// (else MLflow writes into the working directory)."""
    folder = _sqlite_folder(uri)
    return None if folder is None else "file://" + os.path.join(folder, "mlartifacts")


def read_run_file(out: str) -> dict | None:
    """The results directory's mlflow.json, or None."""
    path = storage.join(out, RUN_FILE)
    if not storage.exists(path):
        return None
    try:
        found = json.loads(storage.read_bytes(path))
    except (ValueError, UnicodeDecodeError):
        return None
    return found if isinstance(found, dict) else None


def find_parent_run(uri: str, out: str) -> str | None:
    """The parent run of the study in out, as mlflow.json names it, if it is in uri."""
    saved = read_run_file(out)
    if not saved or saved.get("tracking_uri") != uri:
        return None
    try:
        _client(uri).get_run(saved["run_id"])
    except Exception:  # deleted, or another store at the same address
        return None
    return saved["run_id"]


class MlflowTracker:
    """Mirrors a study's results stream into MLflow (see the module docstring)."""

    def __init__(
        self,
        uri: str,
        *,
        study_name: str,
        out: str,
        study_text: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any] | None = None,
    ) -> None:
        import_mlflow()
        self.uri = uri
        self.study_name = study_name
        self.out = out
        self.study_text = study_text
        self.tags = dict(tags)
        self.params = dict(params or {})
        self.client = _client(uri)
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self._children: dict[str, str] = {}  # trial_id -> run id
        self._open: set[str] = set()  # run ids of children not ended yet
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._queued = self._logged = 0  # events given to the thread, and those it has done
        self._calls = 0  # MLflow calls made by the thread: close() waits while this moves
        self.failures = 0

    # ---- start: the parent run, and what the results hold that MLflow lacks -------------------
    def start(self, configurations: Iterable[tuple]) -> None:
        """Open (or reopen) the parent run, log what is missing of each configuration the
        results already hold, then log new events from a background thread."""
        self.parent_id = find_parent_run(self.uri, self.out) or self._new_parent()
        self.client.update_run(self.parent_id, status="RUNNING")
        self.experiment_id = self.client.get_run(self.parent_id).info.experiment_id
        children = self._existing_children()
        self._children = {tid: run.info.run_id for tid, run in children.items()}
        for trial_id, point, epochs, status, error, last in configurations:
            run = children.get(trial_id)
            if run is not None and run.info.status in ("FINISHED", "FAILED"):
                continue  # ended there as here: nothing to add
            if run is not None:  # KILLED with the run that was stopped: it goes on now
                self.client.update_run(run.info.run_id, status="RUNNING")
                self._open.add(run.info.run_id)
            logged = self._logged_epochs(run) if run is not None else set()
            self._log(
                [("result", trial_id, point, row) for row in epochs if row["epoch"] not in logged]
                + ([("end", trial_id, point, status, error, last)] if status != "running" else [])
            )
        self._thread = threading.Thread(target=self._work, name="mlp-sweep-mlflow", daemon=True)
        self._thread.start()

    def _new_parent(self) -> str:
        from mlflow.entities import Param

        experiment = self.client.get_experiment_by_name(self.study_name)
        if experiment is None:
            experiment_id = self.client.create_experiment(
                self.study_name, artifact_location=_artifact_location(self.uri)
            )
        else:
            experiment_id = experiment.experiment_id
        run = self.client.create_run(
            experiment_id,
            run_name=self.study_name,
            tags={**self.tags, RESULTS_TAG: self.out},
        )
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in self.params.items()])
        self.client.log_text(run_id, self.study_text, "study.yaml")
        record = {"tracking_uri": self.uri, "experiment_id": experiment_id, "run_id": run_id}
        storage.write_bytes_atomic(storage.join(self.out, RUN_FILE), json.dumps(record).encode())
        return run_id

    def _existing_children(self) -> dict:
        found, token = {}, None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'",
                max_results=1000,
                page_token=token,
            )
            for run in page:
                found[run.data.tags.get(TRIAL_TAG)] = run
            token = page.token
            if not token:
                return found

    def _logged_epochs(self, run) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run.info.run_id, "train_loss")}

    # ---- the stream -------------------------------------------------------------------------
    def on_result(self, trial_id: str, point: Mapping, metrics: Mapping) -> None:
        self._queued += 1
        self._queue.put(("result", trial_id, dict(point), dict(metrics)))

    def on_end(self, trial_id: str, point: Mapping, status: str, error: str | None, last) -> None:
        self._queued += 1
        self._queue.put(("end", trial_id, dict(point), status, error, dict(last)))

    def close(self, *, interrupted: bool, stall_s: float = CLOSE_STALL_S) -> None:
        """Log what is queued, then end the parent run (KILLED when the sweep was stopped).

        A finished sweep waits for as long as the logging thread makes progress (each MLflow
        call within ``stall_s``; a big study's last events can take MLflow minutes); an
        interrupted one at most ``stall_s`` in all. Events left then are counted in the closing
        warning (a resume logs them)."""
        if self._thread is None:
            return
        self._queue.put(None)
        start = progress_at = time.monotonic()
        calls = self._calls
        while self._thread.is_alive():
            self._thread.join(0.1)
            now = time.monotonic()
            if self._calls != calls:
                calls, progress_at = self._calls, now
            if now - (start if interrupted else progress_at) >= stall_s:
                break
        if self._thread.is_alive():
            self.failures += 1
            log.warning(
                "MLflow: gave up waiting for %s after %.0f s with %d event(s) not logged",
                self.uri, time.monotonic() - start, self._queued - self._logged,
            )  # fmt: skip
        self._thread = None
        status = "KILLED" if interrupted else "FINISHED"
        try:
            for run_id in sorted(self._open):  # configurations the stop cut short
                self.client.set_terminated(run_id, status="KILLED")
            self.client.set_terminated(self.parent_id, status=status)
        except Exception as exc:
            self._failed(exc)
        if self.failures:
            log.warning(
                "MLflow: %d batch(es) could not be logged to %s; the results hold them, and "
                "`python -m sweep resume %s --mlflow %s` logs what is missing",
                self.failures, self.uri, self.out, self.uri,
            )  # fmt: skip

    def _work(self) -> None:
        done = False
        while not done:
            events = [self._queue.get()]
            while True:  # everything queued since: one batch per run
                try:
                    events.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            done = None in events
            events = [e for e in events if e is not None]
            self._log(events)
            self._logged += len(events)
            if not done:
                time.sleep(0.5)  # let events gather (a pack reports all its members at once)

    def _log(self, events: list[tuple]) -> None:
        """One log_batch per run for all its events here (a new run's params, its epochs, its
        end's test metrics and tags), then set_terminated for each run that ended: three MLflow
        calls for a configuration that starts and ends within one batch, five before."""
        from mlflow.entities import Metric, RunTag

        batches: dict[str, dict[str, list]] = {}
        ends: list[tuple[str, str]] = []
        now = int(time.time() * 1000)
        for event in events:
            try:
                run_id, params = self._child(event[1], event[2])
            except Exception as exc:
                self._failed(exc)
                continue
            batch = batches.setdefault(run_id, {"metrics": [], "params": [], "tags": []})
            batch["params"].extend(params)
            if event[0] == "result":
                row = event[3]
                batch["metrics"].extend(
                    Metric(key, float(row[key]), now, int(row["epoch"]))
                    for key in EPOCH_METRICS
                    if finite(row.get(key))
                )
                continue
            status, error, last = event[3:]
            batch["metrics"].extend(
                Metric(k, float(last[k]), now, 0) for k in TEST_METRICS if finite(last.get(k))
            )
            batch["tags"].append(RunTag("status", status))
            if error:
                batch["tags"].append(RunTag("error", error[:5000]))
            ends.append((run_id, RUN_STATUS[status]))
        unlogged = set()
        for run_id, batch in batches.items():
            for chunk in _chunks(**batch):
                if not self._try(self.client.log_batch, run_id, **chunk):
                    unlogged.add(run_id)
        for run_id, status in ends:
            # A run whose values did not all go in stays open (KILLED at close): a resume
            # logs what it lacks, where it would skip a run that ended.
            if run_id not in unlogged and self._try(
                self.client.set_terminated, run_id, status=status
            ):
                self._open.discard(run_id)

    def _child(self, trial_id: str, point: Mapping) -> tuple[str, list]:
        """The configuration's run id, and the params still to log (a run created here)."""
        run_id = self._children.get(trial_id)
        if run_id is not None:
            return run_id, []
        from mlflow.entities import Param

        run = self.client.create_run(
            self.experiment_id,
            run_name=trial_id,
            tags={"mlflow.parentRunId": self.parent_id, TRIAL_TAG: trial_id, "status": "running"},
        )
        self._calls += 1
        run_id = run.info.run_id
        self._children[trial_id] = run_id
        self._open.add(run_id)
        return run_id, [Param(key, str(value)) for key, value in point_params(point).items()]

    def _try(self, call, *args, **kwargs) -> bool:
        try:
            call(*args, **kwargs)
        except Exception as exc:  # the sweep goes on; the results keep everything
            self._failed(exc)
            return False
        finally:
            self._calls += 1
        return True

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.failures == 1:
            log.warning("MLflow: logging to %s failed (%s)", self.uri, first_line(exc))


def _chunks(metrics: list, params: list, tags: list):
    """log_batch arguments within MLflow's limit: params and tags in the first call (a handful
    per configuration), metrics filling that call and as many more as they need."""
    first = max(0, MAX_BATCH - len(params) - len(tags))
    if metrics[:first] or params or tags:
        yield {"metrics": metrics[:first], "params": params, "tags": tags}
    for at in range(first, len(metrics), MAX_BATCH):
        yield {"metrics": metrics[at : at + MAX_BATCH]}


def point_params(point: Mapping) -> dict[str, Any]:
    """A configuration's params as MLflow shows them: optimizer, lr, batch_size, seed and the
    optimizer's hyperparameters by name."""
    params = {key: point[key] for key in ("optimizer", "lr", "batch_size", "seed") if key in point}
    params.update(point.get("optimizer_params") or {})
    return params


# ---- the report, attached to the parent run ----------------------------------------------------
def report_run(uri: str, out: str) -> str:
    """The parent run of the study in out at uri (ConfigError when there is none)."""
    check_tracking_uri(uri)
    run_id = find_parent_run(uri, out)
    if run_id is None:
        raise ConfigError(
            f"--mlflow: {uri} has no run of the study in {out} "
            f"(run or resume the sweep with --mlflow {uri} first)"
        )
    return run_id


def attach_report(uri: str, run_id: str, report_dir: str) -> None:
    """Log the report's files as the parent run's artifacts under report/."""
    import tempfile

    import pyarrow.fs as pafs

    fs, path = storage.resolve(report_dir)
    with tempfile.TemporaryDirectory(prefix="mlp-sweep-report-") as local:
        pafs.copy_files(
            path, local, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
        )
        _client(uri).log_artifacts(run_id, local, "report")
