"""Read a study's results (trials.parquet, epochs.parquet, study.yaml) and check their schema.

``load_results("results/digits-optimizers")`` or ``load_results("s3://bucket/results/name")``;
``python -m analysis summary RESULTS_DIR`` uses it.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from analysis.errors import ResultsError
from sweep import storage
from sweep.results import (
    EPOCHS_FILE,
    EPOCHS_SCHEMA,
    HP_PREFIX,
    STUDY_FILE,
    TRIAL_STATUSES,
    TRIALS_FILE,
    TRIALS_SCHEMA,
)
from sweep.storage import StorageError

log = logging.getLogger(__name__)

METRICS = ("val_loss", "val_acc", "val_rmse", "train_loss")
MAX_METRICS = frozenset({"val_acc"})
SELECTS = ("best_epoch", "final")
# trials.parquet columns added with train.select and packed trials: results written before
# them lack these columns, which then read as nulls.
OPTIONAL_TRIAL_FIELDS = (
    pa.field("test_epoch", pa.int64()),  # the epoch whose weights the test metrics came from
    pa.field("pack_id", pa.string()),  # the Ray Tune trial that trained this configuration
    pa.field("pack_size", pa.int64()),  # configurations trained in that pack
)


@dataclass(frozen=True)
class StudyInfo:
    """What the analysis needs from the resolved study.yaml (or inferred from the trials)."""

    name: str
    task: str  # classification | regression
    loss: str  # cross_entropy | mse
    epochs: int
    metric: str
    mode: str  # min | max
    scheduler: str  # asha | none
    grace_period: int
    reduction_factor: int
    optimizers: tuple[str, ...]  # in the study's order: fixes each optimizer's colour
    lr_grids: Mapping[str, tuple[float, ...]]
    batch_sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    from_yaml: bool = True
    # train.select: test metrics measured on the best-validation epoch's weights or the last's
    select: str = "best_epoch"

    @property
    def rungs(self) -> tuple[int, ...]:
        """ASHA milestones: grace_period * reduction_factor**k below the epoch budget."""
        if self.scheduler != "asha" or self.grace_period < 1 or self.reduction_factor < 2:
            return ()
        rungs, epoch = [], self.grace_period
        while epoch < self.epochs:
            rungs.append(epoch)
            epoch *= self.reduction_factor
        return tuple(rungs)


@dataclass(frozen=True, eq=False)
class Results:
    """A study's terminal trials and their epochs; trials still running are dropped."""

    location: str
    study: StudyInfo
    trials: pd.DataFrame  # TRIALS_SCHEMA columns + hp_<name>, one row per finished trial
    epochs: pd.DataFrame  # EPOCHS_SCHEMA columns, sorted by (trial_id, epoch)
    n_running: int  # trials in flight when the files were written (ignored)

    @property
    def hp_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.trials.columns if c.startswith(HP_PREFIX))


def open_location(location: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a local directory or a URI (file://, s3://, gs://),
    resolved as the sweep wrote it (sweep.storage: same endpoint rules, short timeouts)."""
    try:
        return storage.resolve(location)
    except (StorageError, pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise ResultsError(f"{location}: cannot open results location ({exc})") from exc


def load_results(location: str, *, keep_running: bool = False) -> Results:
    """Read and check a results directory; raises ResultsError naming the file and the problem.

    Trials still running are dropped (and a study needs a completed trial), unless keep_running:
    then they stay, with status "running" (exporting a study in flight)."""
    fs, root = open_location(location)
    info = _file_info(fs, root, location)
    if info.type != pafs.FileType.Directory:
        kind = "not found" if info.type == pafs.FileType.NotFound else "not a directory"
        raise ResultsError(f"{location}: results directory {kind}")
    trials_table = _read_parquet(fs, root, TRIALS_FILE, location)
    epochs_table = _read_parquet(fs, root, EPOCHS_FILE, location)
    hp_fields = [f for f in trials_table.schema if f.name.startswith(HP_PREFIX)]
    trials_table = _with_optional_columns(trials_table)
    trials_schema = pa.schema(
        list(full_trials_schema()) + [_hp_field(f, location) for f in hp_fields]
    )
    trials = _conform(trials_table, trials_schema, f"{location}/{TRIALS_FILE}").to_pandas()
    epochs = _conform(epochs_table, EPOCHS_SCHEMA, f"{location}/{EPOCHS_FILE}").to_pandas()
    trials, epochs, n_running = _drop_running(trials, epochs, location, keep_running)
    study = _read_study(fs, root, location, trials)
    return Results(
        location=location, study=study, trials=trials, epochs=epochs, n_running=n_running
    )


def full_trials_schema() -> pa.Schema:
    """TRIALS_SCHEMA with the optional columns (test_epoch, pack_id, pack_size) it may lack."""
    extra = [f for f in OPTIONAL_TRIAL_FIELDS if f.name not in TRIALS_SCHEMA.names]
    return pa.schema(list(TRIALS_SCHEMA) + extra)


def _with_optional_columns(table: pa.Table) -> pa.Table:
    """Add the optional columns an older trials.parquet lacks, as nulls."""
    for field in OPTIONAL_TRIAL_FIELDS:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table


def _file_info(fs: pafs.FileSystem, path: str, location: str) -> pafs.FileInfo:
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise ResultsError(f"{location}: cannot read ({exc})") from exc


def _read_parquet(fs: pafs.FileSystem, root: str, name: str, location: str) -> pa.Table:
    path = posixpath.join(root, name)
    info = _file_info(fs, path, location)
    if info.type == pafs.FileType.NotFound:
        raise ResultsError(f"{location}/{name}: file not found")
    if info.size == 0:
        raise ResultsError(f"{location}/{name}: file is empty")
    try:
        table = pq.read_table(path, filesystem=fs)
    except (pa.ArrowException, OSError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ResultsError(
            f"{location}/{name}: not a readable Parquet file ({first_line})"
        ) from exc
    if table.num_rows == 0:
        raise ResultsError(f"{location}/{name}: has no rows")
    return table


def _family(dtype: pa.DataType) -> str:
    if pa.types.is_null(dtype):
        return "null"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype):
        return "floating"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    return str(dtype)


# Which stored type families each declared type accepts (an all-null column may be typed null).
_ACCEPTS = {
    "integer": {"integer", "null"},
    "floating": {"floating", "integer", "null"},
    "string": {"string", "null"},
    "bool": {"bool", "null"},
}


def _hp_field(stored: pa.Field, location: str) -> pa.Field:
    family = _family(stored.type)
    if family in ("bool", "null"):
        return pa.field(stored.name, pa.bool_() if family == "bool" else pa.float64())
    if family in ("floating", "integer"):
        return pa.field(stored.name, pa.float64())
    raise ResultsError(
        f"{location}/{TRIALS_FILE}: column {stored.name!r} has type {stored.type}, "
        "expected float64 or bool"
    )


def _conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """Check every declared column is present with a compatible type; cast to the schema."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ResultsError(f"{where}: missing column(s) {', '.join(missing)}")
    columns = []
    for field in schema:
        column = table.column(field.name)
        if _family(column.type) not in _ACCEPTS[_family(field.type)]:
            raise ResultsError(
                f"{where}: column {field.name!r} has type {column.type}, expected {field.type}"
            )
        if not field.nullable and column.null_count:
            raise ResultsError(f"{where}: column {field.name!r} has {column.null_count} null(s)")
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _drop_running(
    trials: pd.DataFrame, epochs: pd.DataFrame, location: str, keep_running: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    unknown = sorted(set(trials["status"].unique()) - set(TRIAL_STATUSES))
    if unknown:
        raise ResultsError(
            f"{location}/{TRIALS_FILE}: unknown status {unknown[0]!r} "
            f"(valid: {', '.join(TRIAL_STATUSES)})"
        )
    duplicated = trials["trial_id"].duplicated()
    if duplicated.any():
        trial_id = trials.loc[duplicated, "trial_id"].iloc[0]
        raise ResultsError(f"{location}/{TRIALS_FILE}: trial_id {trial_id!r} appears twice")
    running = trials["status"] == "running"
    if not keep_running:
        trials = trials.loc[~running].reset_index(drop=True)
        if not (trials["status"] == "completed").any():
            raise ResultsError(
                f"{location}: no completed trial ({int(running.sum())} still running)"
            )
    epochs = epochs.loc[epochs["trial_id"].isin(trials["trial_id"])]
    # a trial resumed from a checkpoint may have re-reported epochs: keep the last report
    epochs = epochs.drop_duplicates(["trial_id", "epoch"], keep="last")
    epochs = epochs.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)
    return trials, epochs, int(running.sum())


def _read_study(fs: pafs.FileSystem, root: str, location: str, trials: pd.DataFrame) -> StudyInfo:
    path = posixpath.join(root, STUDY_FILE)
    if _file_info(fs, path, location).type == pafs.FileType.NotFound:
        log.warning("%s/%s not found; the grid is inferred from the trials", location, STUDY_FILE)
        return study_from_trials(posixpath.basename(root.rstrip("/")), trials)
    try:
        with fs.open_input_stream(path) as stream:
            raw = yaml.safe_load(stream.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ResultsError(f"{location}/{STUDY_FILE}: cannot parse ({first_line})") from exc
    if not isinstance(raw, Mapping):
        raise ResultsError(f"{location}/{STUDY_FILE}: expected a mapping at the top level")
    return parse_study(raw, trials, where=f"{location}/{STUDY_FILE}")


def study_from_trials(name: str, trials: pd.DataFrame) -> StudyInfo:
    """A StudyInfo for results without a study.yaml: grids from the trials, metric val_loss."""
    return parse_study({"name": name}, trials, where=STUDY_FILE, from_yaml=False)


def parse_study(
    raw: Mapping, trials: pd.DataFrame, *, where: str, from_yaml: bool = True
) -> StudyInfo:
    """Read the keys the analysis uses; anything absent falls back to what the trials show."""
    try:
        data, model, train = (dict(raw.get(k) or {}) for k in ("data", "model", "train"))
        search, scheduler = dict(raw.get("search") or {}), dict(raw.get("scheduler") or {})
        spaces = dict(search.get("optimizers") or {})
        optimizers = tuple(spaces) or tuple(sorted(trials["optimizer"].unique()))
        extra = sorted(set(trials["optimizer"].unique()) - set(optimizers))
        lr_grids = {}
        for opt in (*optimizers, *extra):
            grid = (spaces.get(opt) or {}).get("lr")
            if grid is None:
                grid = trials.loc[trials["optimizer"] == opt, "lr"].unique()
            grid = [grid] if isinstance(grid, int | float) else grid
            lr_grids[opt] = tuple(sorted(float(x) for x in grid))
        batch_sizes = search.get("batch_size") or trials["batch_size"].unique()
        seeds = search.get("seeds") or trials["seed"].unique()
        seeds = range(seeds) if isinstance(seeds, int) else seeds  # a count, before resolving
        task = str(data.get("task", "classification"))
        metric = str(train.get("metric", "val_loss"))
        select = str(train.get("select") or "best_epoch")  # absent in results before the field
        if select not in SELECTS:
            raise ResultsError(
                f"{where}: train.select: unknown value {select!r} (valid: {', '.join(SELECTS)})"
            )
        return StudyInfo(
            name=str(raw.get("name") or posixpath.basename(where)),
            task=task,
            loss=str(model.get("loss", "cross_entropy" if task == "classification" else "mse")),
            epochs=int(train.get("epochs") or trials["epochs_run"].max()),
            metric=metric,
            mode=str(train.get("mode", "max" if metric in MAX_METRICS else "min")),
            scheduler=str(scheduler.get("type", "none")),
            grace_period=int(scheduler.get("grace_period", 1)),
            reduction_factor=int(scheduler.get("reduction_factor", 4)),
            optimizers=(*optimizers, *extra),
            lr_grids=lr_grids,
            batch_sizes=tuple(sorted(int(b) for b in _as_list(batch_sizes))),
            seeds=tuple(sorted(int(s) for s in _as_list(seeds))),
            from_yaml=from_yaml,
            select=select,
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise ResultsError(f"{where}: unexpected structure ({exc})") from exc


def _as_list(value: object) -> list:
    if isinstance(value, int | float):
        return [value]
    return list(value)  # type: ignore[arg-type]
