"""The MLP of model/mlp.py in NumPy float64, with hand-written forward and backward passes.

It is the oracle of tests/test_reference.py: for the same weights and batch, the torch model's
outputs, loss and gradients must match these. Weights use the .npz orientation of model/mlp.py:
``W_k`` is ``(fan_in, fan_out)`` and a layer computes ``x @ W + b``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import erf as _erf

import numpy as np

from model.mlp import MLP, MLPConfig

LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default
# Elementwise erf from the standard library (exact gelu needs it; no scipy dependency).
erf = np.vectorize(_erf, otypes=[np.float64])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)) without overflow


def _gelu(z: np.ndarray) -> np.ndarray:
    return 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))


def _gelu_grad(z: np.ndarray) -> np.ndarray:
    cdf = 0.5 * (1.0 + erf(z / np.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    return cdf + z * pdf


@dataclass(frozen=True)
class Activation:
    """f(z) and its derivative f'(z), both elementwise on the pre-activation z."""

    f: Callable[[np.ndarray], np.ndarray]
    df: Callable[[np.ndarray], np.ndarray]


ACTIVATIONS: dict[str, Activation] = {
    # The derivative at exactly 0 follows torch: relu' = 0, leaky_relu' = slope.
    "relu": Activation(lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
    "tanh": Activation(np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": Activation(_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "leaky_relu": Activation(
        lambda z: np.where(z > 0, z, LEAKY_SLOPE * z), lambda z: np.where(z > 0, 1.0, LEAKY_SLOPE)
    ),
    "gelu": Activation(_gelu, _gelu_grad),
}


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row max for stability."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class ReferenceMLP:
    """A float64 NumPy MLP with the layers, activations, output and loss of an MLPConfig."""

    def __init__(self, cfg: MLPConfig, weights: Mapping[str, np.ndarray]) -> None:
        self.cfg = cfg
        n_layers = len(cfg.hidden) + 1
        self.W = [np.asarray(weights[f"W{k}"], dtype=np.float64) for k in range(1, n_layers + 1)]
        self.b = [
            np.asarray(weights[f"b{k}"], dtype=np.float64) if cfg.bias else None
            for k in range(1, n_layers + 1)
        ]

    @classmethod
    def from_torch(cls, model: MLP) -> ReferenceMLP:
        """A reference network holding a copy of model's weights."""
        weights: dict[str, np.ndarray] = {}
        for k, layer in enumerate(model.linears, start=1):
            weights[f"W{k}"] = layer.weight.detach().double().cpu().numpy().T.copy()
            if layer.bias is not None:
                weights[f"b{k}"] = layer.bias.detach().double().cpu().numpy().copy()
        return cls(model.cfg, weights)

    def targets(self, y: np.ndarray) -> np.ndarray:
        """Targets in the loss's form: indices (cross_entropy), one-hot or (n, k) floats (mse)."""
        cfg = self.cfg
        if cfg.task == "classification":
            y = np.asarray(y, dtype=np.int64)
            return y if cfg.loss == "cross_entropy" else np.eye(cfg.output_size)[y]
        return np.asarray(y, dtype=np.float64).reshape(len(y), cfg.output_size)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Output, plus each layer's input a_k and pre-activation z_k for the backward pass."""
        a = np.asarray(x, dtype=np.float64)
        inputs, pre = [], []
        acts = self.cfg.activations
        for k, (W, b) in enumerate(zip(self.W, self.b, strict=True)):
            inputs.append(a)
            z = a @ W + (b if b is not None else 0.0)
            pre.append(z)
            a = ACTIVATIONS[acts[k]].f(z) if k < len(acts) else z
        if self.cfg.output_activation == "sigmoid":
            a = _sigmoid(a)
        elif self.cfg.output_activation == "softmax":
            a = softmax(a)
        return a, inputs, pre

    def loss(self, output: np.ndarray, y: np.ndarray) -> float:
        """Batch-mean loss: cross-entropy of logits, or MSE averaged over every element."""
        t = self.targets(y)
        if self.cfg.loss == "cross_entropy":
            z = output - output.max(axis=1, keepdims=True)
            log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            return float(-log_p[np.arange(len(t)), t].mean())
        return float(((output - t) ** 2).mean())

    def output_grad(self, output: np.ndarray, y: np.ndarray) -> np.ndarray:
        """dLoss/dz of the last layer's pre-activation, through the output activation."""
        t = self.targets(y)
        if self.cfg.loss == "cross_entropy":  # softmax + cross-entropy: (p - onehot) / n
            p = softmax(output)
            p[np.arange(len(t)), t] -= 1.0
            return p / len(t)
        d_out = 2.0 * (output - t) / output.size
        if self.cfg.output_activation == "sigmoid":
            return d_out * output * (1.0 - output)
        if self.cfg.output_activation == "softmax":  # Jacobian-vector product of softmax
            return output * (d_out - (d_out * output).sum(axis=1, keepdims=True))
        return d_out

    def loss_and_grads(
        self, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        """Output, loss and the gradient of every parameter, named W1, b1, W2, b2, ..."""
        output, inputs, pre = self.forward(x)
        loss = self.loss(output, y)
        grads: dict[str, np.ndarray] = {}
        dz = self.output_grad(output, y)
        acts = self.cfg.activations
        for k in reversed(range(len(self.W))):
            grads[f"W{k + 1}"] = inputs[k].T @ dz
            if self.b[k] is not None:
                grads[f"b{k + 1}"] = dz.sum(axis=0)
            if k > 0:
                dz = (dz @ self.W[k].T) * ACTIVATIONS[acts[k - 1]].df(pre[k - 1])
        return output, loss, grads

    def sgd_step(self, grads: Mapping[str, np.ndarray], lr: float) -> None:
        """Plain gradient descent in place: p <- p - lr * grad."""
        for k in range(len(self.W)):
            self.W[k] = self.W[k] - lr * grads[f"W{k + 1}"]
            if self.b[k] is not None:
                self.b[k] = self.b[k] - lr * grads[f"b{k + 1}"]
