"""The study file: YAML -> a validated, frozen StudyConfig (no Ray, no data needed).

Used by ``python -m sweep validate STUDY.yaml`` and ``python -m sweep run STUDY.yaml --set k=v``.
Every problem is a ``model.errors.ConfigError`` with one line naming the dotted field and the value,
e.g. ``search.optimizers.sgd.lr[2]: learning rate must be > 0, got -0.1``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from model.errors import ConfigError
from model.optim import OPTIMIZERS, validate_optimizer
from model.spec import (  # plain data: a study is checked without importing torch
    ACTIVATION_NAMES,
    BUILTIN_SOURCES,
    INITS,
    LOSSES,
    OUTPUT_ACTIVATIONS,
    SCALES,
    TASKS,
    DataSpec,
    MLPConfig,
)

# metric -> (the mode that makes sense for it, the task it needs or None for any task)
METRICS: dict[str, tuple[str, str | None]] = {
    "val_loss": ("min", None),
    "val_acc": ("max", "classification"),
    "val_rmse": ("min", "regression"),
    "train_loss": ("min", None),
}
MODES = ("min", "max")
SCHEDULERS = ("asha", "none")
SELECTS = ("best_epoch", "final")
DEFAULT_LOSS = {"classification": "cross_entropy", "regression": "mse"}

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_MAX_SEED = 2**32 - 1  # numpy's seed range
_MAX_SEED_COUNT = 100_000  # a count, expanded to a list of seeds
_MAX_LOGSPACE = 100_000  # learning rates of one {logspace: [low, high, n]}


@dataclass(frozen=True)
class ModelSection:
    """The network: hidden layer widths, activations, initialisation, loss."""

    hidden: tuple[int, ...] = (128, 64)
    activation: str | tuple[str, ...] = "relu"  # one name, or one per hidden layer
    output_activation: str = "none"
    init: str = "default"
    init_scale: float | None = None
    bias: bool = True
    loss: str = "cross_entropy"


@dataclass(frozen=True)
class TrainSection:
    """How long each trial trains and what "best" means (ASHA uses the same metric and mode)."""

    epochs: int
    metric: str = "val_loss"
    mode: str = "min"
    checkpoint_every: int = 5
    max_failures: int = 2
    # which weights the test metrics are measured on: the best epoch's by metric, or the last's
    select: str = "best_epoch"


@dataclass(frozen=True)
class OptimizerGrid:
    """One optimizer, its learning rates, and its fixed hyperparameters other than lr."""

    name: str
    lrs: tuple[float, ...]
    # hash=False: a dict is unhashable, and the study stays hashable and picklable without it
    params: Mapping[str, float | bool] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class SearchSection:
    """The grid: every (optimizer, lr) pair x batch size x seed is one trial."""

    batch_sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    optimizers: tuple[OptimizerGrid, ...]


@dataclass(frozen=True)
class SchedulerSection:
    """Early stopping: ASHA (max_t = train.epochs) or none (every trial runs all its epochs)."""

    type: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 3


@dataclass(frozen=True)
class ResourcesSection:
    """What one trial asks of Ray; a fractional gpus_per_trial packs several trials on a GPU."""

    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    # configurations trained together by one Tune trial: "auto" (see sweep.space.pack_grid) or N
    models_per_trial: int | str = "auto"


@dataclass(frozen=True)
class StudyConfig:
    """A whole study, validated; ``to_dict`` gives the resolved study written as study.yaml."""

    name: str
    data: DataSpec
    model: ModelSection
    train: TrainSection
    search: SearchSection
    scheduler: SchedulerSection
    resources: ResourcesSection
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The resolved study as plain YAML-able data, every default filled, same keys as input."""
        return _plain(
            {
                "name": self.name,
                "description": self.description,
                "data": dataclasses.asdict(self.data),
                "model": {
                    **dataclasses.asdict(self.model),
                },
                "train": dataclasses.asdict(self.train),
                "search": {
                    "batch_size": list(self.search.batch_sizes),
                    "seeds": list(self.search.seeds),
                    "optimizers": {
                        opt.name: {"lr": list(opt.lrs), **opt.params}
                        for opt in self.search.optimizers
                    },
                },
                "scheduler": dataclasses.asdict(self.scheduler),
                "resources": dataclasses.asdict(self.resources),
            }
        )

    def mlp_config(self, input_size: int, output_size: int) -> MLPConfig:
        """The model.mlp.MLPConfig for this study's network on data of the given shape."""
        return MLPConfig(
            input_size=input_size,
            output_size=output_size,
            task=self.data.task,
            **dataclasses.asdict(self.model),
        )


def _plain(value: Any) -> Any:
    """Tuples -> lists and mappings -> dicts, all the way down (what yaml.safe_dump can write)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _whole(value: float) -> float:
    """1.0 -> 1 so that equal studies have equal resolved dicts (and fingerprints)."""
    return int(value) if float(value).is_integer() else float(value)


# --------------------------------------------------------------------------------------------
# YAML in and out


class _StudyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads 1e-3 as a float (YAML 1.1 wants 1.0e-3)."""


def _construct_mapping(loader: _StudyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StudyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StudyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_StudyLoader)  # a SafeLoader subclass: safe


class _StudyDumper(yaml.SafeDumper):
    """Block-style sections with lists on one line, like the shipped study files."""


_StudyDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True)
)


def dump_study(study: StudyConfig) -> str:
    """The resolved study as YAML text (what the runner writes as study.yaml)."""
    return yaml.dump(study.to_dict(), Dumper=_StudyDumper, sort_keys=False, width=10**6)


def study_fingerprint(study: StudyConfig) -> str:
    """A hash of the resolved study; two studies are the same study iff their fingerprints match.

    Key order is ignored; everything else (including description and resources) counts.
    """
    canonical = json.dumps(study.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_study(path: str | os.PathLike, overrides: Sequence[str] = ()) -> StudyConfig:
    """Read a study YAML file, apply ``--set a.b.c=value`` overrides, validate, and return it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: study file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read study file ({exc})") from None
    try:
        raw = _yaml_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_one_line(exc)}") from None
    if raw is None:
        raise ConfigError(f"{path}: the study file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study must be a mapping of sections, got {_show(raw)}")
    return _absolute_paths(parse_study(apply_overrides(raw, overrides)), path.parent)


def _absolute_paths(study: StudyConfig, study_dir: Path) -> StudyConfig:
    """Make a relative data path absolute (the saved study.yaml must work from any directory):
    relative to the current directory when it exists there, else to the study file's folder."""
    source = study.data.source
    if source in BUILTIN_SOURCES or "://" in source or os.path.isabs(source):
        return study
    here = Path(source)
    found = here if here.exists() else study_dir / source
    data = dataclasses.replace(study.data, source=str(found.resolve()))
    return dataclasses.replace(study, data=data)


def _one_line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``a.b.c=value`` set (value parsed as YAML; path checked)."""
    result = copy.deepcopy(dict(raw))
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. train.epochs=5")
        _check_override_path(override, parts)
        try:
            value = _yaml_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {override!r}: invalid YAML value: {_one_line(exc)}") from None
        node = result
        for depth, part in enumerate(parts[:-1]):
            if node.get(part) is None:  # absent, or an empty section (``model:`` with nothing)
                node[part] = {}
            child = node[part]
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {override!r}: {where} is {_show(child)}, not a mapping")
            node = child
        node[parts[-1]] = value
    return result


def _check_override_path(override: str, parts: list[str]) -> None:
    """Reject a --set path that names no field of the study, listing the valid names."""
    allowed: Sequence[str] | None = _TOP_KEYS
    for depth, part in enumerate(parts):
        if allowed is not None and part not in allowed:  # None: any name (an optimizer's)
            where = ".".join(parts[:depth]) or "the study"
            hint = f" (valid: {_valid(allowed)})" if allowed else ""
            raise ConfigError(f"--set {override!r}: {where} has no field {part!r}{hint}")
        allowed = _override_children(parts[: depth + 1])


def _override_children(path: list[str]) -> Sequence[str] | None:
    """The keys allowed below ``path``: () for a leaf, None where any name may follow."""
    if len(path) == 1:
        return _SECTION_KEYS.get(path[0], ())
    if path[:2] != ["search", "optimizers"]:
        return ()
    if len(path) == 2:
        return None  # optimizer names
    if len(path) == 3:
        spec = OPTIMIZERS.get(path[2])
        return ("lr", *spec.hyperparams) if spec is not None else None
    return ("logspace",) if path[3:] == ["lr"] else ()


# --------------------------------------------------------------------------------------------
# Validation helpers: each raises ConfigError("<field>: <problem>, got <value>")


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML (true, null, 'text', 0.1, [1, 2])."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {_show(item)}" for key, item in value.items()) + "}"
    return " ".join(repr(value).split())


def _key(key: Any) -> str:
    """A mapping key as written, quoted when it is not a plain printable name."""
    plain = isinstance(key, str) and key.isprintable() and key.strip() == key != ""
    return key if plain else repr(key)


def _fail(where: str, problem: str, value: Any = ...) -> NoReturn:
    got = "" if value is ... else f", got {_show(value)}"
    raise ConfigError(f"{where}: {problem}{got}")


def _valid(names: Any) -> str:
    return ", ".join(names)


def _mapping(where: str, value: Any, keys: Sequence[str], required: Sequence[str] = ()) -> dict:
    """``value`` as a dict (None -> {}) with only ``keys`` and every ``required`` key.

    ``where`` is the section's dotted name, or "" for the top level of the study.
    """
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        _fail(where or "study", "expected a mapping", value)
    prefix = f"{where}." if where else ""
    for key in value:
        if key not in keys:
            _fail(f"{prefix}{_key(key)}", f"unknown key (valid: {_valid(keys)})")
    for key in required:
        if key not in value:
            _fail(f"{prefix}{key}", "required field missing")
    return dict(value)


def _int(where: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(where, "expected an integer", value)
    if minimum is not None and value < minimum:
        _fail(where, f"must be >= {minimum}", value)
    return value


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(where, "expected a number", value)
    if not math.isfinite(value):
        _fail(where, "must be finite", value)
    return value


def _str(where: str, value: Any, choices: Sequence[str] | None = None, what: str = "") -> str:
    if not isinstance(value, str):
        _fail(where, "expected a string", value)
    if choices is not None and value not in choices:
        _fail(where, f"unknown {what} {value!r} (valid: {_valid(choices)})")
    return value


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _fail(where, "expected true or false", value)
    return value


def _list(where: str, value: Any) -> list:
    if not isinstance(value, list):
        _fail(where, "expected a list", value)
    if not value:
        _fail(where, "must not be empty", value)
    return value


def _items(where: str, value: Any) -> list[tuple[str, Any]]:
    """(field label, item) pairs of a non-empty list, or of a single scalar standing for one."""
    if isinstance(value, dict):
        _fail(where, "expected a list", value)
    if not isinstance(value, list):
        return [(where, value)]
    return [(f"{where}[{i}]", item) for i, item in enumerate(_list(where, value))]


def _no_duplicates(where: str, values: Sequence[Any], what: str) -> None:
    for i, value in enumerate(values):
        if value in values[:i]:
            _fail(f"{where}[{i}]", f"duplicate {what}", value)


# --------------------------------------------------------------------------------------------
# Sections

_DATA_KEYS = tuple(f.name for f in dataclasses.fields(DataSpec))
_MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelSection))
_TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainSection))
_SEARCH_KEYS = ("batch_size", "seeds", "optimizers")
_SCHEDULER_KEYS = tuple(f.name for f in dataclasses.fields(SchedulerSection))
_RESOURCES_KEYS = tuple(f.name for f in dataclasses.fields(ResourcesSection))
_SECTION_KEYS = {
    "data": _DATA_KEYS,
    "model": _MODEL_KEYS,
    "train": _TRAIN_KEYS,
    "search": _SEARCH_KEYS,
    "scheduler": _SCHEDULER_KEYS,
    "resources": _RESOURCES_KEYS,
}
_TOP_KEYS = ("name", "description", *_SECTION_KEYS)


def parse_study(d: Mapping[str, Any]) -> StudyConfig:
    """Validate a study mapping (as read from YAML) and return the frozen StudyConfig."""
    d = _mapping("", d, _TOP_KEYS, required=("name", "train", "search"))
    name = _str("name", d["name"])
    if not _SAFE_NAME.fullmatch(name):
        _fail(
            "name",
            "must be a safe directory name (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit; at most 100 characters)",
            name,
        )
    description = d.get("description")
    description = "" if description is None else _str("description", description)
    data = _parse_data(d.get("data"))
    train = _parse_train(d.get("train"), data.task)
    return StudyConfig(
        name=name,
        description=description,
        data=data,
        model=_parse_model(d.get("model"), data.task),
        train=train,
        search=_parse_search(d.get("search")),
        scheduler=_parse_scheduler(d.get("scheduler"), train.epochs),
        resources=_parse_resources(d.get("resources")),
    )


def _parse_data(raw: Any) -> DataSpec:
    d = _mapping("data", raw, _DATA_KEYS)
    values = {**dataclasses.asdict(DataSpec()), **d}
    source = _str("data.source", values["source"])
    if not _looks_like_source(source):
        _fail(
            "data.source",
            f"unknown source {source!r} (valid: {_valid(BUILTIN_SOURCES)}, "
            "or a path to a .csv / .parquet / .npz file or an IDX directory)",
        )
    for key in ("target", "cache_dir"):
        if values.get(key) is not None:
            _str(f"data.{key}", values[key])
    _str("data.task", values["task"], TASKS, "task")
    _str("data.scale", values["scale"], SCALES, "scale")
    val_fraction = _number("data.val_fraction", values["val_fraction"])
    test_fraction = _number("data.test_fraction", values["test_fraction"])
    if not 0 < val_fraction < 1:
        _fail("data.val_fraction", "must be between 0 and 1 (exclusive)", val_fraction)
    if not 0 < test_fraction < 1:
        _fail("data.test_fraction", "must be between 0 and 1 (exclusive)", test_fraction)
    if val_fraction + test_fraction >= 1:
        _fail(
            "data.test_fraction",
            f"val_fraction + test_fraction must be < 1 to leave training data "
            f"(val_fraction is {val_fraction!r})",
            test_fraction,
        )
    values["val_fraction"], values["test_fraction"] = float(val_fraction), float(test_fraction)
    _int("data.split_seed", values["split_seed"], minimum=0)
    try:
        return DataSpec(**values)
    except ConfigError as exc:
        raise ConfigError(_prefixed("data", exc)) from None


def _looks_like_source(source: str) -> bool:
    """A built-in name or something that looks like a path; a bare word that is neither is most
    likely a misspelt built-in. Whether the path holds usable data is load_dataset's to say."""
    if source in BUILTIN_SOURCES:
        return True
    path = Path(os.path.expanduser(source))
    return bool(path.suffix) or len(path.parts) > 1 or path.exists()


def _prefixed(section: str, exc: ConfigError) -> str:
    message = str(exc)
    return message if message.startswith(f"{section}.") else f"{section}.{message}"


def _parse_model(raw: Any, task: str) -> ModelSection:
    d = _mapping("model", raw, _MODEL_KEYS)
    hidden_raw = d.get("hidden", list(ModelSection.hidden))
    if not isinstance(hidden_raw, list):
        _fail("model.hidden", "expected a list of layer widths", hidden_raw)
    hidden = tuple(_int(f"model.hidden[{i}]", w, minimum=1) for i, w in enumerate(hidden_raw))
    activation = _parse_activation(d.get("activation", ModelSection.activation), len(hidden))
    output_activation = d.get("output_activation", ModelSection.output_activation)
    _str("model.output_activation", output_activation, OUTPUT_ACTIVATIONS, "output activation")
    init = _str("model.init", d.get("init", ModelSection.init), INITS, "init")
    init_scale = d.get("init_scale")
    if init_scale is not None:
        if _number("model.init_scale", init_scale) <= 0:
            _fail("model.init_scale", "must be > 0", init_scale)
        init_scale = float(init_scale)
    loss = _str("model.loss", d.get("loss", DEFAULT_LOSS[task]), LOSSES, "loss")
    if task == "regression" and loss == "cross_entropy":
        _fail(
            "model.loss",
            "'cross_entropy' needs data.task: classification (task is regression; use mse)",
        )
    section = ModelSection(
        hidden=hidden,
        activation=activation,
        output_activation=output_activation,
        init=init,
        init_scale=init_scale,
        bias=_bool("model.bias", d.get("bias", ModelSection.bias)),
        loss=loss,
    )
    # MLPConfig checks the combinations (loss vs task vs output activation, init_scale vs init);
    # its messages already name model.<field>. The sizes are placeholders until the data is read.
    MLPConfig(input_size=1, output_size=2, task=task, **dataclasses.asdict(section))
    return section


def _parse_activation(raw: Any, n_hidden: int) -> str | tuple[str, ...]:
    """One activation name for every hidden layer, or a list with one per layer."""
    if not isinstance(raw, list):
        return _str("model.activation", raw, ACTIVATION_NAMES, "activation")
    if len(raw) != n_hidden:
        _fail("model.activation", f"a list needs one activation per hidden layer ({n_hidden})", raw)
    for i, name in enumerate(raw):
        _str(f"model.activation[{i}]", name, ACTIVATION_NAMES, "activation")
    return tuple(raw)


def _parse_train(raw: Any, task: str) -> TrainSection:
    d = _mapping("train", raw, _TRAIN_KEYS, required=("epochs",))
    epochs = _int("train.epochs", d["epochs"], minimum=1)
    metric = _str("train.metric", d.get("metric", "val_loss"), tuple(METRICS), "metric")
    natural_mode, needs_task = METRICS[metric]
    if needs_task is not None and needs_task != task:
        _fail("train.metric", f"{metric!r} needs data.task: {needs_task} (task is {task})")
    mode = _str("train.mode", d.get("mode", natural_mode), MODES, "mode")
    if mode != natural_mode:
        _fail("train.mode", f"{mode!r} does not fit metric {metric} (use {natural_mode})")
    return TrainSection(
        epochs=epochs,
        metric=metric,
        mode=mode,
        checkpoint_every=_int("train.checkpoint_every", d.get("checkpoint_every", 5), minimum=1),
        max_failures=_int("train.max_failures", d.get("max_failures", 2), minimum=0),
        select=_str("train.select", d.get("select", "best_epoch"), SELECTS, "selection rule"),
    )


def _parse_search(raw: Any) -> SearchSection:
    d = _mapping("search", raw, _SEARCH_KEYS, required=("batch_size", "optimizers"))
    sizes = []
    for where, size in _items("search.batch_size", d["batch_size"]):
        if _int(where, size) <= 0:
            _fail(where, "batch size must be > 0", size)
        sizes.append(size)
    _no_duplicates("search.batch_size", sizes, "batch size")
    optimizers_raw = d["optimizers"]
    if not isinstance(optimizers_raw, dict):
        _fail(
            "search.optimizers", "expected a mapping of optimizer name -> {lr: ...}", optimizers_raw
        )
    if not optimizers_raw:
        _fail(
            "search.optimizers", f"must name at least one optimizer (valid: {_valid(OPTIMIZERS)})"
        )
    return SearchSection(
        batch_sizes=tuple(sizes),
        seeds=_parse_seeds(d.get("seeds", 1)),
        optimizers=tuple(_parse_optimizer(name, spec) for name, spec in optimizers_raw.items()),
    )


def _parse_seeds(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, list):
        _list("search.seeds", raw)
        for i, seed in enumerate(raw):
            _int(f"search.seeds[{i}]", seed, minimum=0)
            if seed > _MAX_SEED:
                _fail(f"search.seeds[{i}]", f"must be <= {_MAX_SEED}", seed)
        _no_duplicates("search.seeds", raw, "seed")
        return tuple(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        _fail("search.seeds", "expected a count or a list of seeds", raw)
    if raw < 1:
        _fail("search.seeds", "the number of seeds must be >= 1", raw)
    if raw > _MAX_SEED_COUNT:
        _fail("search.seeds", f"the number of seeds must be <= {_MAX_SEED_COUNT}", raw)
    return tuple(range(raw))


def _parse_optimizer(name: Any, spec: Any) -> OptimizerGrid:
    if name not in OPTIMIZERS:
        _fail("search.optimizers", f"unknown optimizer {name!r} (valid: {_valid(OPTIMIZERS)})")
    where = f"search.optimizers.{name}"
    if not isinstance(spec, dict):
        _fail(where, "expected a mapping like {lr: [0.1, 0.01]}", spec)
    if "lr" not in spec:
        _fail(f"{where}.lr", "required field missing")
    hyperparams = OPTIMIZERS[name].hyperparams
    params: dict[str, float | bool] = {}
    for key, value in spec.items():
        if key == "lr":
            continue
        if key not in hyperparams:
            valid = _valid(["lr", *hyperparams])
            _fail(f"{where}.{key}", f"unknown hyperparameter of {name} (valid: {valid})")
        if hyperparams[key] is bool:
            params[key] = _bool(f"{where}.{key}", value)
        elif hyperparams[key] is int:
            params[key] = _int(f"{where}.{key}", value)
        else:
            params[key] = float(_number(f"{where}.{key}", value))
    try:  # ranges and combinations (e.g. nesterov needs momentum), on the values as written
        validate_optimizer(name, {key: value for key, value in spec.items() if key != "lr"})
    except ConfigError as exc:
        message = str(exc)
        if message.startswith("optimizer."):  # model.optim names fields optimizer.<name>.<key>
            raise ConfigError("search." + message.replace("optimizer.", "optimizers.", 1)) from None
        raise ConfigError(f"{where}: {message}") from None
    return OptimizerGrid(name=name, lrs=_parse_lrs(f"{where}.lr", spec["lr"]), params=params)


def _parse_lrs(where: str, raw: Any) -> tuple[float, ...]:
    if isinstance(raw, dict):
        return _logspace(where, raw)
    lrs = []
    for label, lr in _items(where, raw):
        if _number(label, lr) <= 0:
            _fail(label, "learning rate must be > 0", lr)
        lrs.append(float(lr))
    _no_duplicates(where, lrs, "learning rate")
    return tuple(lrs)


def logspace(low: float, high: float, n: int) -> tuple[float, ...]:
    """n values from low to high, evenly spaced in log10, rounded to 12 significant digits."""
    step = (math.log10(high) - math.log10(low)) / (n - 1)
    inner = (float(f"{10 ** (math.log10(low) + i * step):.12g}") for i in range(1, n - 1))
    return (float(low), *inner, float(high))


def _logspace(where: str, raw: dict) -> tuple[float, ...]:
    _mapping(where, raw, ("logspace",), required=("logspace",))
    spec = raw["logspace"]
    where = f"{where}.logspace"
    if not isinstance(spec, list) or len(spec) != 3:
        _fail(where, "expected [low, high, n]", spec)
    low = _number(f"{where}[0]", spec[0])
    high = _number(f"{where}[1]", spec[1])
    n = _int(f"{where}[2]", spec[2])
    if low <= 0:
        _fail(f"{where}[0]", "learning rate must be > 0", low)
    if high <= low:
        _fail(f"{where}[1]", f"high must be > low ({low!r})", high)
    if n < 2:
        _fail(f"{where}[2]", "n must be >= 2", n)
    if n > _MAX_LOGSPACE:  # expanded to a list: a huge n would fill the memory
        _fail(f"{where}[2]", f"n must be <= {_MAX_LOGSPACE}", n)
    return logspace(low, high, n)


def _parse_scheduler(raw: Any, epochs: int) -> SchedulerSection:
    d = _mapping("scheduler", raw, _SCHEDULER_KEYS)
    kind = _str("scheduler.type", d.get("type", "asha"), SCHEDULERS, "scheduler type")
    grace_period = _int("scheduler.grace_period", d.get("grace_period", 1), minimum=1)
    reduction_factor = _number("scheduler.reduction_factor", d.get("reduction_factor", 3))
    if kind == "asha" and grace_period > epochs:
        _fail("scheduler.grace_period", f"must be <= train.epochs ({epochs})", grace_period)
    if reduction_factor < 2:
        _fail("scheduler.reduction_factor", "must be >= 2", reduction_factor)
    return SchedulerSection(
        type=kind, grace_period=grace_period, reduction_factor=_whole(reduction_factor)
    )


def _parse_resources(raw: Any) -> ResourcesSection:
    d = _mapping("resources", raw, _RESOURCES_KEYS)
    cpus = _number("resources.cpus_per_trial", d.get("cpus_per_trial", 1))
    if cpus <= 0:
        _fail("resources.cpus_per_trial", "must be > 0", cpus)
    gpus = _number("resources.gpus_per_trial", d.get("gpus_per_trial", 0))
    if gpus < 0:
        _fail("resources.gpus_per_trial", "must be >= 0", gpus)
    if gpus > 1 and gpus != int(gpus):
        _fail(
            "resources.gpus_per_trial",
            "must be a fraction <= 1 (several trials share a GPU) or a whole number",
            gpus,
        )
    return ResourcesSection(
        cpus_per_trial=_whole(cpus),
        gpus_per_trial=_whole(gpus),
        models_per_trial=_parse_models_per_trial(d.get("models_per_trial", "auto")),
    )


def _parse_models_per_trial(raw: Any) -> int | str:
    where = "resources.models_per_trial"
    if raw == "auto":
        return "auto"
    if isinstance(raw, bool) or not isinstance(raw, int):
        _fail(where, "expected auto or a whole number >= 1", raw)
    if raw < 1:
        _fail(where, "must be >= 1 (or auto)", raw)
    return raw


def check_study_against_data(study: StudyConfig, n_train: int) -> None:
    """Checks that need the data: every batch size must fit in the training split."""
    for i, size in enumerate(study.search.batch_sizes):
        if size > n_train:
            _fail(
                f"search.batch_size[{i}]",
                f"batch size {size} is larger than the training split ({n_train} rows)",
            )
