"""A study's results as an Optuna study, and optuna-dashboard serving it.

    python -m analysis optuna results/digits-optimizers --storage sqlite:///study.db
    python -m analysis dashboard results/digits-optimizers --port 8080

One Optuna trial per configuration: params optimizer (categorical), lr (log float), batch_size
(log int), seed and the optimizer's hyperparameters; one intermediate value per epoch of the
study's metric (step = epoch); value = the metric as train.select chooses it (best epoch or last
epoch); state COMPLETE (completed), PRUNED (early_stopped), FAIL (diverged, error) or RUNNING;
user_attrs trial_id, status, test metrics. Exporting again updates: a configuration is found by
its trial_id, a running one gets its new epochs and its end, nothing is added twice.
Needs the ``dashboard`` extra (``pip install 'mlp-sweep[dashboard]'``).
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
import signal
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import ResultsError
from analysis.load import Results, load_results, open_location
from model.errors import first_line
from sweep.results import EPOCHS_FILE, HP_PREFIX, TRIALS_FILE

log = logging.getLogger(__name__)

EXTRA = "pip install 'mlp-sweep[dashboard]'"
# status in trials.parquet -> Optuna TrialState name
STATES = {
    "completed": "COMPLETE",
    "early_stopped": "PRUNED",
    "diverged": "FAIL",
    "error": "FAIL",
    "running": "RUNNING",
}
# trials.parquet columns kept as user_attrs (when not null)
USER_ATTRS = (
    "trial_id", "status", "epochs_run", "best_epoch", "test_loss", "test_acc", "test_rmse",
    "test_epoch", "error", "pack_id",
)  # fmt: skip
RESULTS_ATTR = "mlp_sweep_results"  # the study's user attr naming the results it came from


def require(module: str, extra: str = EXTRA) -> Any:
    """Import an optional dependency, or raise ResultsError naming the install command."""
    try:
        return import_module(module)
    except ImportError as exc:
        raise ResultsError(f"{module} is not installed: {extra}") from exc


@dataclass(frozen=True)
class ExportSummary:
    """What one export did to the Optuna storage."""

    study_name: str
    added: int
    updated: int
    unchanged: int


def export_study(
    location: str, storage_url: str, *, study_name: str | None = None
) -> ExportSummary:
    """Write (or update) the results at location as an Optuna study in storage_url."""
    optuna = require("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = load_results(location, keep_running=True)
    name = study_name or results.study.name
    study, storage = _open_study(optuna, storage_url, name, results)
    existing = {t.user_attrs.get("trial_id"): t for t in study.get_trials(deepcopy=False)}
    distributions = _distributions(optuna, results)
    curves = {tid: frame for tid, frame in results.epochs.groupby("trial_id", sort=False)}
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    new = []
    for row in results.trials.to_dict("records"):
        want = _frozen_trial(optuna, results, row, curves.get(row["trial_id"]), distributions)
        have = existing.get(row["trial_id"])
        if have is None:
            new.append(want)
            counts["added"] += 1
        elif _same(have, want):
            counts["unchanged"] += 1
        elif have.state == optuna.trial.TrialState.RUNNING:
            _update(storage, have, want)
            counts["updated"] += 1
        else:
            raise ResultsError(
                f"--storage: trial {row['trial_id']!r} of Optuna study {name!r} ended as "
                f"{have.state.name} there but is {want.state.name} in {location}; "
                "export into a new storage or another --study-name"
            )
    study.add_trials(new)
    return ExportSummary(study_name=name, **counts)


def _open_study(optuna, storage_url: str, name: str, results: Results):
    direction = "maximize" if results.study.mode == "max" else "minimize"
    try:
        storage = optuna.storages.get_storage(storage_url)
        study = optuna.create_study(
            storage=storage, study_name=name, direction=direction, load_if_exists=True
        )
    except Exception as exc:  # sqlalchemy, OS and URL errors alike: one line, exit 2
        first = first_line(exc)
        raise ResultsError(f"--storage: cannot open {storage_url} ({first})") from exc
    owner = study.user_attrs.get(RESULTS_ATTR)
    here = _canonical(results.location)
    if owner is not None and owner != here:
        raise ResultsError(
            f"--storage: Optuna study {name!r} in {storage_url} holds {owner}, "
            "not these results; choose another --study-name"
        )
    if study.direction.name.lower() != direction:
        raise ResultsError(
            f"--storage: Optuna study {name!r} in {storage_url} is to "
            f"{study.direction.name.lower()}, these results {direction}"
        )
    if owner is None:
        study.set_user_attr(RESULTS_ATTR, here)
        study.set_user_attr("metric", results.study.metric)
        study.set_user_attr("select", results.study.select)
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and still there
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([results.study.metric])  # the dashboard's axis label
    return study, storage


def _canonical(location: str) -> str:
    return location if "://" in location else os.path.abspath(location)


def _distributions(optuna, results: Results) -> dict:
    dist, trials = optuna.distributions, results.trials
    info = results.study
    optimizers = list(info.optimizers) + sorted(set(trials["optimizer"]) - set(info.optimizers))
    lrs = [lr for grid in info.lr_grids.values() for lr in grid] + list(trials["lr"])
    batch_sizes = list(info.batch_sizes) + list(trials["batch_size"])
    out = {
        "optimizer": dist.CategoricalDistribution(optimizers),
        "lr": dist.FloatDistribution(min(lrs), max(lrs), log=True),
        "batch_size": dist.IntDistribution(int(min(batch_sizes)), int(max(batch_sizes)), log=True),
        "seed": dist.IntDistribution(int(trials["seed"].min()), int(trials["seed"].max())),
    }
    for column in results.hp_columns:
        values = trials[column].dropna()
        if values.empty:
            continue
        if all(isinstance(v, bool | np.bool_) for v in values):
            out[column[len(HP_PREFIX) :]] = dist.CategoricalDistribution([False, True])
        else:
            out[column[len(HP_PREFIX) :]] = dist.FloatDistribution(
                float(values.min()), float(values.max())
            )
    return out


def trial_value(results: Results, row: dict) -> float | None:
    """The value Optuna ranks by: the study's metric at the epoch train.select picks."""
    metric = results.study.metric
    column = f"best_{metric}" if results.study.select == "best_epoch" else f"final_{metric}"
    value = row.get(column, row.get(f"final_{metric}"))
    return float(value) if _finite(value) else None


def trial_params(row: dict, distributions: dict) -> dict:
    """The configuration's params, as Optuna stores them (hyperparameters it has, by name)."""
    params = {
        "optimizer": row["optimizer"],
        "lr": float(row["lr"]),
        "batch_size": int(row["batch_size"]),
        "seed": int(row["seed"]),
    }
    for name in distributions:
        value = row.get(HP_PREFIX + name)
        if name in params or pd.isna(value):
            continue
        is_bool = distributions[name].__class__.__name__ == "CategoricalDistribution"
        params[name] = bool(value) if is_bool else float(value)
    return params


def _frozen_trial(optuna, results: Results, row: dict, curve, distributions: dict):
    states = optuna.trial.TrialState
    state = states[STATES[row["status"]]]
    value = trial_value(results, row) if state in (states.COMPLETE, states.PRUNED) else None
    if state == states.COMPLETE and value is None:
        state = states.FAIL  # Optuna keeps no COMPLETE trial without a finite value
    params = trial_params(row, distributions)
    steps = {}
    if curve is not None:
        metric = results.study.metric
        steps = {int(e): float(v) for e, v in zip(curve["epoch"], curve[metric], strict=True)}
    return optuna.trial.create_trial(
        state=state,
        value=value,
        params=params,
        distributions={name: distributions[name] for name in params},
        user_attrs=_user_attrs(row),
        intermediate_values=steps,
    )


def _user_attrs(row: dict) -> dict:
    attrs = {}
    for key in USER_ATTRS:
        value = row.get(key)
        if pd.isna(value) or (isinstance(value, float) and not math.isfinite(value)):
            continue
        attrs[key] = value.item() if hasattr(value, "item") else value
    return attrs


def _same(have, want) -> bool:
    return (
        have.state == want.state
        and _same_float(have.value, want.value)
        and have.user_attrs == want.user_attrs
        and have.intermediate_values.keys() == want.intermediate_values.keys()
        and all(
            _same_float(have.intermediate_values[k], v) for k, v in want.intermediate_values.items()
        )
    )


def _same_float(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def _update(storage, have, want) -> None:
    """Bring a RUNNING Optuna trial up to what the results now say (epochs, attrs, its end)."""
    trial_id = have._trial_id
    for step, value in want.intermediate_values.items():
        if not _same_float(have.intermediate_values.get(step), value):
            storage.set_trial_intermediate_value(trial_id, step, value)
    for key, value in want.user_attrs.items():
        if have.user_attrs.get(key) != value:
            storage.set_trial_user_attr(trial_id, key, value)
    if want.state.is_finished():
        values = None if want.value is None else [want.value]
        storage.set_trial_state_values(trial_id, want.state, values)


def _finite(value) -> bool:
    return value is not None and not pd.isna(value) and math.isfinite(float(value))


# ---- the dashboard ------------------------------------------------------------------------
def serve_dashboard(
    location: str,
    *,
    port: int = 8080,
    host: str = "127.0.0.1",
    storage_url: str | None = None,
    study_name: str | None = None,
    refresh_s: float = 10.0,
    announce: Callable[[str], None] = print,
) -> None:
    """Export the study, then serve optuna-dashboard on it until interrupted, exporting again
    whenever the Parquet tables change (a study still running fills in as it goes)."""
    optuna_dashboard = require("optuna_dashboard")
    with tempfile.TemporaryDirectory(prefix="mlp-sweep-optuna-") as scratch:
        url = storage_url or f"sqlite:///{os.path.join(scratch, 'optuna.db')}"
        summary = export_study(location, url, study_name=study_name)
        server = _make_server(host, port, optuna_dashboard.wsgi(url))
        stop = threading.Event()
        refresher = threading.Thread(
            target=_refresh_loop,
            args=(location, url, summary.study_name, refresh_s, stop),
            daemon=True,
        )
        refresher.start()
        announce(
            f"optuna-dashboard for {summary.study_name} ({summary.added + summary.unchanged} "
            f"configurations) at http://{host}:{server.server_port}/dashboard/ "
            f"(storage {url}; Ctrl-C stops)"
        )
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            stop.set()
            server.server_close()
            refresher.join(timeout=refresh_s + 5)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _make_server(host: str, port: int, app):
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            log.debug(format, *args)

    try:
        return make_server(host, port, app, server_class=Server, handler_class=QuietHandler)
    except OSError as exc:
        raise ResultsError(f"--port: cannot listen on {host}:{port} ({exc.strerror})") from exc


def _refresh_loop(location: str, url: str, name: str, every_s: float, stop) -> None:
    seen = _tables_stamp(location)
    while not stop.wait(every_s):
        stamp = _tables_stamp(location)
        if stamp == seen:
            continue
        try:
            export_study(location, url, study_name=name)
            seen = stamp
        except ResultsError as exc:  # a table being replaced, a storage hiccup: try again
            log.warning("refresh of the dashboard's study failed: %s", exc)


def _tables_stamp(location: str) -> tuple:
    """When and how big the two tables are (changes whenever the sweep rewrites them)."""
    try:
        fs, root = open_location(location)
        infos = fs.get_file_info([posixpath.join(root, n) for n in (TRIALS_FILE, EPOCHS_FILE)])
        return tuple((i.mtime_ns, i.size) for i in infos)
    except (ResultsError, OSError):
        return ()
