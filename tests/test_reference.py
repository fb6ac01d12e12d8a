"""The torch MLP against its NumPy oracle: outputs, loss and every gradient, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.mlp import ACTIVATIONS, VALID_OUTPUTS, MLPConfig, build_mlp, loss_function
from model.mlp import prepare_targets as torch_targets
from model.optim import build_optimizer
from model.reference import ReferenceMLP

RTOL = 1e-5
N_IN, N_OUT, BATCH = 5, 4, 9

# Every (task, loss, output activation) the config allows.
COMBINATIONS = [
    (task, loss, output) for (task, loss), outputs in VALID_OUTPUTS.items() for output in outputs
]


def make_batch(cfg: MLPConfig, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, cfg.input_size))
    if cfg.task == "classification":
        y = rng.integers(0, cfg.output_size, size=BATCH)
    elif cfg.output_size == 1:
        y = rng.uniform(0.1, 0.9, size=BATCH)
    else:
        y = rng.uniform(0.1, 0.9, size=(BATCH, cfg.output_size))
    return x, y


def torch_pass(model, cfg: MLPConfig, x: np.ndarray, y: np.ndarray):
    """Output, loss and gradients (named W1, b1, ... in the reference's orientation)."""
    out = model(torch.from_numpy(x))
    target = torch_targets(cfg, torch.from_numpy(y), dtype=torch.float64)
    loss = loss_function(cfg)(out, target)
    model.zero_grad()
    loss.backward()
    grads = {}
    for k, layer in enumerate(model.linears, start=1):
        grads[f"W{k}"] = layer.weight.grad.numpy().T
        if layer.bias is not None:
            grads[f"b{k}"] = layer.bias.grad.numpy()
    return out.detach().numpy(), loss.item(), grads


def assert_matches(cfg: MLPConfig, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = build_mlp(cfg).double()
    reference = ReferenceMLP.from_torch(model)
    x, y = make_batch(cfg, seed)
    out, loss, grads = torch_pass(model, cfg, x, y)
    ref_out, ref_loss, ref_grads = reference.loss_and_grads(x, y)
    np.testing.assert_allclose(out, ref_out, rtol=RTOL, atol=1e-12)
    assert loss == pytest.approx(ref_loss, rel=RTOL)
    assert sorted(grads) == sorted(ref_grads)
    for name, grad in grads.items():
        assert np.abs(grad).max() > 0, name  # a zero gradient would make the check vacuous
        np.testing.assert_allclose(grad, ref_grads[name], rtol=RTOL, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize(("task", "loss", "output"), COMBINATIONS)
def test_torch_matches_reference(activation, task, loss, output):
    cfg = MLPConfig(
        N_IN, (7, 6), N_OUT, activation=activation, output_activation=output, task=task, loss=loss
    )
    assert_matches(cfg)


@pytest.mark.parametrize(
    "cfg",
    [
        MLPConfig(N_IN, (), N_OUT),  # no hidden layer: logistic regression
        MLPConfig(N_IN, (6, 6, 5), N_OUT, activation=("gelu", "sigmoid", "leaky_relu")),
        MLPConfig(N_IN, (6,), N_OUT, bias=False, activation="tanh"),
        MLPConfig(N_IN, (6,), 1, task="regression", loss="mse"),  # targets of shape (n,)
        MLPConfig(N_IN, (6,), 3, task="regression", loss="mse", output_activation="sigmoid"),
        MLPConfig(N_IN, (6,), 3, loss="mse", output_activation="softmax", init="xavier_normal"),
    ],
    ids=[
        "no-hidden",
        "per-layer-activations",
        "no-bias",
        "regression-1d",
        "regression-3d",
        "mse-softmax-xavier",
    ],
)
def test_torch_matches_reference_for_other_shapes(cfg):
    assert_matches(cfg, seed=3)


def test_reference_gradient_matches_finite_differences():
    """The oracle itself: its backward pass agrees with central differences of its loss."""
    cfg = MLPConfig(3, (4,), 3, activation="gelu", loss="mse", output_activation="softmax")
    torch.manual_seed(0)
    reference = ReferenceMLP.from_torch(build_mlp(cfg).double())
    x, y = make_batch(cfg)
    _, _, grads = reference.loss_and_grads(x, y)
    eps = 1e-6
    W = reference.W[0]
    numeric = np.zeros_like(W)
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            W[i, j] += eps
            up = reference.loss(reference.forward(x)[0], y)
            W[i, j] -= 2 * eps
            down = reference.loss(reference.forward(x)[0], y)
            W[i, j] += eps
            numeric[i, j] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grads["W1"], numeric, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_one_sgd_step_is_p_minus_lr_grad(loss):
    cfg = MLPConfig(N_IN, (7,), N_OUT, loss=loss)
    torch.manual_seed(0)
    model = build_mlp(cfg).double()
    reference = ReferenceMLP.from_torch(model)
    x, y = make_batch(cfg)
    lr = 0.1
    optimizer = build_optimizer("sgd", model.parameters(), lr, {"momentum": 0.0})
    torch_pass(model, cfg, x, y)
    optimizer.step()
    _, _, grads = reference.loss_and_grads(x, y)
    reference.sgd_step(grads, lr)
    for k, layer in enumerate(model.linears):
        np.testing.assert_allclose(layer.weight.detach().numpy().T, reference.W[k], rtol=RTOL)
        np.testing.assert_allclose(layer.bias.detach().numpy(), reference.b[k], rtol=RTOL)
    # and the step moved the weights by lr * grad, well beyond the tolerance
    assert np.abs(lr * grads["W1"]).max() > 1e-3
