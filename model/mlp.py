"""The multilayer perceptron: MLPConfig, build_mlp(), its loss, and weight exchange with .npz files.

Example: ``python -m model train --hidden 128 64 --activation tanh`` builds one through this module.

Weight files (``save_npz_weights`` / ``load_npz_weights``) hold ``W1, b1, W2, b2, ...`` in the
orientation of a hand-written network that computes ``x @ W + b``: ``W_k`` has shape
``(fan_in, fan_out)`` and ``b_k`` shape ``(fan_out,)``. ``nn.Linear`` stores the transpose
(``weight`` is ``(fan_out, fan_in)``); the functions here transpose on the way in and out.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model.errors import ConfigError, DataError

# Name -> module factory. leaky_relu uses torch's default slope (0.01), gelu the exact erf form;
# model/reference.py implements the same functions by hand.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}
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
# Nonlinearity names torch.nn.init.calculate_gain knows; gelu is treated like relu.
_KAIMING_NONLINEARITY = {
    "relu": "relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "leaky_relu": "leaky_relu",
    "gelu": "relu",
}
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


def _positive_int(field: str, value: object) -> int:
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
        object.__setattr__(self, "input_size", _positive_int("model.input_size", self.input_size))
        object.__setattr__(
            self, "output_size", _positive_int("model.output_size", self.output_size)
        )
        if not isinstance(self.hidden, tuple):
            raise ConfigError(f"model.hidden: {self.hidden!r} is not a list of layer sizes")
        hidden = tuple(_positive_int(f"model.hidden[{i}]", n) for i, n in enumerate(self.hidden))
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
                _choice(f"model.activation[{i}]", name, list(ACTIVATIONS), "activation")
        else:
            _choice("model.activation", self.activation, list(ACTIVATIONS), "activation")

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


class MLP(nn.Module):
    """An MLP whose layers live in an nn.Sequential, so parameters() sees every weight."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        modules: list[nn.Module] = []
        sizes = cfg.layer_sizes
        for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            modules.append(nn.Linear(fan_in, fan_out, bias=cfg.bias))
            if k < len(cfg.hidden):
                modules.append(ACTIVATIONS[cfg.activations[k]]())
        if cfg.output_activation == "sigmoid":
            modules.append(nn.Sigmoid())
        elif cfg.output_activation == "softmax":
            modules.append(nn.Softmax(dim=-1))
        self.net = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def linears(self) -> list[nn.Linear]:
        """The Linear layers in order: layer k (1-based) is linears[k - 1]."""
        return [m for m in self.net if isinstance(m, nn.Linear)]


def _init_layer(layer: nn.Linear, cfg: MLPConfig, nonlinearity: str) -> None:
    if cfg.init == "default":
        return  # nn.Linear's own init (kaiming_uniform with a=sqrt(5), bias uniform)
    weight = layer.weight
    if cfg.init == "xavier_uniform":
        nn.init.xavier_uniform_(weight)
    elif cfg.init == "xavier_normal":
        nn.init.xavier_normal_(weight)
    elif cfg.init == "kaiming_uniform":
        nn.init.kaiming_uniform_(weight, nonlinearity=nonlinearity)
    elif cfg.init == "kaiming_normal":
        nn.init.kaiming_normal_(weight, nonlinearity=nonlinearity)
    elif cfg.init == "uniform":
        scale = cfg.init_scale or DEFAULT_INIT_SCALE["uniform"]
        nn.init.uniform_(weight, -scale, scale)
    elif cfg.init == "normal":
        nn.init.normal_(weight, 0.0, cfg.init_scale or DEFAULT_INIT_SCALE["normal"])
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def build_mlp(cfg: MLPConfig) -> MLP:
    """Build the network described by cfg, initialised from torch's global RNG."""
    model = MLP(cfg)
    linears = model.linears
    for k, layer in enumerate(linears):
        # The gain follows the activation after the layer; the output layer is linear.
        is_hidden = k < len(cfg.hidden)
        nonlinearity = _KAIMING_NONLINEARITY[cfg.activations[k]] if is_hidden else "linear"
        _init_layer(layer, cfg, nonlinearity)
    return model


def loss_function(cfg: MLPConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The batch-mean loss of cfg, taking outputs and targets prepared by prepare_targets."""
    return F.cross_entropy if cfg.loss == "cross_entropy" else F.mse_loss


def prepare_targets(
    cfg: MLPConfig, y: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Targets in the form the loss takes: class indices for cross_entropy, one-hot for
    classification with mse, (n, output_size) floats for regression."""
    if cfg.task == "classification":
        y = y.long()
        if cfg.loss == "cross_entropy":
            return y
        return F.one_hot(y, cfg.output_size).to(dtype)
    return y.reshape(len(y), cfg.output_size).to(dtype)


def save_npz_weights(model: MLP, path: str | Path) -> None:
    """Write W1, b1, W2, b2, ... (W_k of shape (fan_in, fan_out), for x @ W + b) to path."""
    arrays: dict[str, np.ndarray] = {}
    for k, layer in enumerate(model.linears, start=1):
        arrays[f"W{k}"] = layer.weight.detach().cpu().numpy().T.copy()
        if layer.bias is not None:
            arrays[f"b{k}"] = layer.bias.detach().cpu().numpy().copy()
    np.savez(path, **arrays)


def expected_npz_shapes(model: MLP) -> dict[str, tuple[int, ...]]:
    """The array names and shapes an .npz needs to load into model."""
    shapes: dict[str, tuple[int, ...]] = {}
    for k, layer in enumerate(model.linears, start=1):
        shapes[f"W{k}"] = (layer.in_features, layer.out_features)
        if layer.bias is not None:
            shapes[f"b{k}"] = (layer.out_features,)
    return shapes


def load_npz_weights(model: MLP, path: str | Path) -> None:
    """Copy W1, b1, W2, b2, ... from an .npz (W_k shaped (fan_in, fan_out)) into model in place.

    Raises DataError for a missing or unreadable file and ConfigError naming the layer and both
    shapes when an array does not fit.
    """
    try:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise DataError(f"{path}: weight file not found") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None
    expected = expected_npz_shapes(model)
    missing = [name for name in expected if name not in arrays]
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ConfigError(
            f"{path}: arrays {sorted(arrays)} do not match the model's {list(expected)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
        )
    for name, shape in expected.items():
        got = tuple(arrays[name].shape)
        if got != shape:
            hint = " (transposed? W_k is (fan_in, fan_out))" if got == shape[::-1] else ""
            raise ConfigError(
                f"{path}: {name} (layer {name[1:]}) has shape {got}, model expects {shape}{hint}"
            )
    with torch.no_grad():
        for k, layer in enumerate(model.linears, start=1):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(arrays[f"W{k}"].T)))
            if layer.bias is not None:
                layer.bias.copy_(torch.from_numpy(arrays[f"b{k}"]))
