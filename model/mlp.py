"""The multilayer perceptron: MLPConfig, build_mlp(), its loss, and weight exchange with .npz files.

Example: ``python -m model train --hidden 128 64 --activation tanh`` builds one through this module.

Weight files (``save_npz_weights`` / ``load_npz_weights``) hold ``W1, b1, W2, b2, ...`` in the
orientation of a hand-written network that computes ``x @ W + b``: ``W_k`` has shape
``(fan_in, fan_out)`` and ``b_k`` shape ``(fan_out,)``. ``nn.Linear`` stores the transpose
(``weight`` is ``(fan_out, fan_in)``); the functions here transpose on the way in and out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model.errors import ConfigError, DataError
from model.spec import (  # noqa: F401 - re-exported: MLPConfig is plain data (no torch), in model.spec
    ACTIVATION_NAMES,
    DEFAULT_INIT_SCALE,
    INITS,
    LOSSES,
    OUTPUT_ACTIVATIONS,
    TASKS,
    VALID_OUTPUTS,
    MLPConfig,
)

# Name -> module factory. leaky_relu uses torch's default slope (0.01), gelu the exact erf form;
# model/reference.py implements the same functions by hand.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = dict(
    zip(ACTIVATION_NAMES, (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.GELU), strict=True)
)
# Nonlinearity names torch.nn.init.calculate_gain knows; gelu is treated like relu.
_KAIMING_NONLINEARITY = {
    "relu": "relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "leaky_relu": "leaky_relu",
    "gelu": "relu",
}


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
