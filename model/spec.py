"""What a network and a data set are, as plain validated values: no torch, no NumPy.

``MLPConfig`` (re-exported by ``model.mlp``) and ``DataSpec`` (by ``model.data``) live here so
that a study file is checked without importing torch: ``python -m sweep run`` validates the
study in a fraction of a second and starts Ray at once, while torch loads.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

from model.errors import ConfigError

# Hidden-layer activations (model.mlp.ACTIVATIONS maps each name to its torch module).
ACTIVATION_NAMES = ("relu", "tanh", "sigmoid", "leaky_relu", "gelu")
OUTPUT_ACTIVATIONS = ("none", "sigmoid", "softmax")
INITS = (
    "default",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "uniform",
    "normal",
)
LOSSES = ("cross_entropy", "mse")
TASKS = ("classification", "regression")
# init_scale when left None: a for uniform(-a, a), s for normal(0, s) (Keras' defaults).
DEFAULT_INIT_SCALE = {"uniform": 0.05, "normal": 0.05}
# Output activations each (task, loss) pair allows. cross_entropy takes logits, so its output
# activation must be none; regression has no classes to cross-entropy over, nor to softmax over.
VALID_OUTPUTS = {
    ("classification", "cross_entropy"): ("none",),
    ("classification", "mse"): ("none", "sigmoid", "softmax"),
    ("regression", "mse"): ("none", "sigmoid"),
}


def _choice(field: str, value: object, valid: tuple[str, ...] | list[str], what: str) -> None:
    if not isinstance(value, str) or value not in valid:
        raise ConfigError(f"{field}: unknown {what} {value!r} (valid: {', '.join(valid)})")


def positive_int(field: str, value: object) -> int:
    """value as an int (NumPy integers included); ConfigError unless it is >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{field}: {value!r} is not a positive integer")
    return int(value)


@dataclass(frozen=True)
class MLPConfig:
    """Architecture, init and loss of one MLP; validated on construction (ConfigError)."""

    input_size: int
    hidden: tuple[int, ...]
    output_size: int
    activation: str | tuple[str, ...] = "relu"  # one for all hidden layers, or one per layer
    output_activation: str = "none"
    init: str = "default"
    init_scale: float | None = None  # a for uniform(-a, a), s for normal(0, s)
    bias: bool = True
    task: str = "classification"
    loss: str = "cross_entropy"

    def __post_init__(self) -> None:
        # Lists (from YAML or argparse) become tuples so the config stays hashable.
        if isinstance(self.hidden, list):
            object.__setattr__(self, "hidden", tuple(self.hidden))
        if isinstance(self.activation, list):
            object.__setattr__(self, "activation", tuple(self.activation))
        object.__setattr__(self, "input_size", positive_int("model.input_size", self.input_size))
        object.__setattr__(self, "output_size", positive_int("model.output_size", self.output_size))
        if not isinstance(self.hidden, tuple):
            raise ConfigError(f"model.hidden: {self.hidden!r} is not a list of layer sizes")
        hidden = tuple(positive_int(f"model.hidden[{i}]", n) for i, n in enumerate(self.hidden))
        object.__setattr__(self, "hidden", hidden)
        self._validate_activation()
        _choice("model.output_activation", self.output_activation, OUTPUT_ACTIVATIONS, "output")
        _choice("model.init", self.init, INITS, "init")
        self._validate_init_scale()
        if not isinstance(self.bias, bool):
            raise ConfigError(f"model.bias: {self.bias!r} is not true or false")
        _choice("model.task", self.task, TASKS, "task")
        _choice("model.loss", self.loss, LOSSES, "loss")
        self._validate_combination()

    def _validate_activation(self) -> None:
        if isinstance(self.activation, tuple):
            if len(self.activation) != len(self.hidden):
                raise ConfigError(
                    f"model.activation: {len(self.activation)} activations "
                    f"{list(self.activation)} for {len(self.hidden)} hidden layers"
                )
            for i, name in enumerate(self.activation):
                _choice(f"model.activation[{i}]", name, ACTIVATION_NAMES, "activation")
        else:
            _choice("model.activation", self.activation, ACTIVATION_NAMES, "activation")

    def _validate_init_scale(self) -> None:
        if self.init_scale is None:
            return
        if self.init not in DEFAULT_INIT_SCALE:
            raise ConfigError(
                f"model.init_scale: {self.init_scale!r} is set but init {self.init!r} takes "
                "no scale (only uniform and normal do)"
            )
        scale = self.init_scale
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not scale > 0:
            raise ConfigError(f"model.init_scale: {scale!r} is not a positive number")
        if not math.isfinite(scale):
            raise ConfigError(f"model.init_scale: {scale!r} is not finite")

    def _validate_combination(self) -> None:
        if (self.task, self.loss) not in VALID_OUTPUTS:
            raise ConfigError(
                f"model.loss: {self.loss!r} does not fit task {self.task!r} "
                "(regression needs loss mse)"
            )
        outputs = VALID_OUTPUTS[(self.task, self.loss)]
        if self.output_activation not in outputs:
            why = (
                "cross_entropy takes logits"
                if self.loss == "cross_entropy"
                else f"{self.task} with {self.loss}"
            )
            raise ConfigError(
                f"model.output_activation: {self.output_activation!r} is not allowed with "
                f"task {self.task!r} and loss {self.loss!r}; {why} (valid: {', '.join(outputs)})"
            )
        if self.task == "classification" and self.output_size < 2:
            raise ConfigError(
                f"model.output_size: {self.output_size} for classification (needs >= 2 classes)"
            )

    @property
    def activations(self) -> tuple[str, ...]:
        """The activation of each hidden layer."""
        if isinstance(self.activation, tuple):
            return self.activation
        return (self.activation,) * len(self.hidden)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Input, hidden and output sizes in order."""
        return (self.input_size, *self.hidden, self.output_size)


# ---- data --------------------------------------------------------------------------------------
SCALES = ("standard", "minmax", "none")
# Built-in sources: sklearn's digits (offline) and the downloads of model.data.REMOTE_SOURCES.
BUILTIN_SOURCES = ("digits", "mnist", "fashion-mnist")


@dataclass(frozen=True)
class DataSpec:
    """The study YAML's ``data:`` section; invalid values raise ConfigError naming the field."""

    source: str = "digits"
    target: str | None = None
    task: str = "classification"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    scale: str = "standard"
    split_seed: int = 0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.source, os.PathLike):
            object.__setattr__(self, "source", os.fspath(self.source))
        if not isinstance(self.source, str) or not self.source:
            raise data_field_error(
                "source", f"must be a dataset name or a path (got {self.source!r})"
            )
        if self.target is not None and (not isinstance(self.target, str) or not self.target):
            raise data_field_error("target", f"must be a column name or null (got {self.target!r})")
        _choice("data.task", self.task, TASKS, "task")
        _choice("data.scale", self.scale, SCALES, "scale")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not _is_real(value):
                raise data_field_error(name, f"must be a number (got {value!r})")
            if not 0 < value < 1:
                raise data_field_error(name, f"{value!r} out of range (must be > 0 and < 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction: {self.val_fraction} + "
                f"{self.test_fraction} leaves no training rows (the sum must be < 1)"
            )
        if not isinstance(self.split_seed, numbers.Integral) or isinstance(self.split_seed, bool):
            raise data_field_error("split_seed", f"must be an integer (got {self.split_seed!r})")
        if not 0 <= self.split_seed < 2**32:
            raise data_field_error("split_seed", f"{self.split_seed} out of range (0 .. 2**32 - 1)")
        if self.cache_dir is not None and not isinstance(self.cache_dir, str | os.PathLike):
            raise data_field_error("cache_dir", f"must be a path or null (got {self.cache_dir!r})")


def data_field_error(field: str, problem: str) -> ConfigError:
    """The error for a bad ``data.<field>`` (model.data raises it too)."""
    return ConfigError(f"data.{field}: {problem}")


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
