"""MLPConfig validation, build_mlp, and .npz weight exchange."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from model.errors import ConfigError, DataError
from model.mlp import (
    ACTIVATIONS,
    INITS,
    MLPConfig,
    build_mlp,
    load_npz_weights,
    save_npz_weights,
)


def n_weights(sizes: tuple[int, ...], bias: bool = True) -> int:
    return sum(a * b + (b if bias else 0) for a, b in zip(sizes[:-1], sizes[1:], strict=False))


@pytest.mark.parametrize(
    ("kwargs", "field", "names"),
    [
        ({"activation": "relux"}, "model.activation", "relu, tanh, sigmoid, leaky_relu, gelu"),
        ({"output_activation": "tanh"}, "model.output_activation", "none, sigmoid, softmax"),
        ({"init": "he"}, "model.init", "xavier_uniform"),
        ({"loss": "hinge"}, "model.loss", "cross_entropy, mse"),
        ({"task": "ranking"}, "model.task", "classification, regression"),
    ],
)
def test_unknown_names_are_errors_listing_the_valid_ones(kwargs, field, names):
    with pytest.raises(ConfigError) as err:
        MLPConfig(4, (8,), 3, **kwargs)
    message = str(err.value)
    assert message.startswith(field + ":")
    assert repr(next(iter(kwargs.values()))) in message
    assert names in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input_size": 0}, "model.input_size"),
        ({"hidden": (8, -1)}, "model.hidden[1]"),
        ({"hidden": (8, 2.5)}, "model.hidden[1]"),
        ({"output_size": True}, "model.output_size"),
        ({"activation": ("relu",), "hidden": (8, 8)}, "model.activation"),
        ({"activation": ("relu", "nope"), "hidden": (8, 8)}, "model.activation[1]"),
        ({"init": "xavier_uniform", "init_scale": 0.1}, "model.init_scale"),
        ({"init": "uniform", "init_scale": -0.1}, "model.init_scale"),
        ({"bias": "yes"}, "model.bias"),
        ({"output_size": 1}, "model.output_size"),
    ],
)
def test_bad_values_name_their_field(kwargs, field):
    base = {"input_size": 4, "hidden": (8,), "output_size": 3}
    with pytest.raises(ConfigError, match="^" + re.escape(field) + ":"):
        MLPConfig(**{**base, **kwargs})


@pytest.mark.parametrize(
    ("task", "loss", "output", "why"),
    [
        ("classification", "cross_entropy", "softmax", "cross_entropy takes logits"),
        ("classification", "cross_entropy", "sigmoid", "cross_entropy takes logits"),
        ("regression", "mse", "softmax", "valid: none, sigmoid"),
        ("regression", "cross_entropy", "none", "regression needs loss mse"),
    ],
)
def test_invalid_combinations_are_clear_errors(task, loss, output, why):
    with pytest.raises(ConfigError, match=why):
        MLPConfig(4, (8,), 3, task=task, loss=loss, output_activation=output)


def test_lists_become_tuples_so_configs_from_yaml_are_hashable():
    cfg = MLPConfig(4, [8, 8], 3, activation=["relu", "tanh"])
    assert cfg.hidden == (8, 8) and cfg.activation == ("relu", "tanh")
    assert hash(cfg) == hash(MLPConfig(4, (8, 8), 3, activation=("relu", "tanh")))


class ListMLP(nn.Module):
    """The trap: layers kept in a plain Python list are invisible to nn.Module."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.layers = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=False)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def test_layers_in_a_plain_list_are_not_registered_but_build_mlps_are():
    sizes = (5, 7, 6, 3)
    trap = ListMLP(sizes)
    assert list(trap.parameters()) == []  # an optimizer over these would train nothing
    assert trap.state_dict() == {}
    model = build_mlp(MLPConfig(5, (7, 6), 3))
    assert sum(p.numel() for p in model.parameters()) == n_weights(sizes)
    assert len(model.state_dict()) == 6
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(4, 5)).sum().backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("hidden", [(), (6,), (6, 5, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_any_number_of_hidden_layers_with_or_without_bias(hidden, bias):
    cfg = MLPConfig(3, hidden, 2, bias=bias, activation="tanh")
    model = build_mlp(cfg)
    assert len(model.linears) == len(hidden) + 1
    assert sum(p.numel() for p in model.parameters()) == n_weights(cfg.layer_sizes, bias)
    assert model(torch.randn(7, 3)).shape == (7, 2)


def test_per_layer_activations_are_placed_in_order():
    model = build_mlp(MLPConfig(3, (4, 4, 4), 2, activation=("tanh", "gelu", "leaky_relu")))
    kinds = [type(m) for m in model.net if not isinstance(m, nn.Linear)]
    assert kinds == [nn.Tanh, nn.GELU, nn.LeakyReLU]


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_output_activation_bounds_the_output(output):
    cfg = MLPConfig(3, (4,), 5, output_activation=output, loss="mse")
    out = build_mlp(cfg)(torch.randn(10, 3) * 10)
    assert bool(((out > 0) & (out < 1)).all())
    if output == "softmax":
        torch.testing.assert_close(out.sum(dim=1), torch.ones(10))


@pytest.mark.parametrize("init", INITS)
def test_every_init_builds_and_follows_the_seed(init):
    cfg = MLPConfig(200, (100,), 10, init=init, activation="relu")
    torch.manual_seed(0)
    a = build_mlp(cfg)
    torch.manual_seed(0)
    b = build_mlp(cfg)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    weight = a.linears[0].weight.detach()
    if init == "uniform":
        assert weight.abs().max() <= 0.05 and weight.abs().max() > 0.04
    if init == "normal":
        assert weight.std().item() == pytest.approx(0.05, rel=0.05)
    if init == "kaiming_normal":  # std = sqrt(2 / fan_in) for relu
        assert weight.std().item() == pytest.approx((2 / 200) ** 0.5, rel=0.05)
    if init == "xavier_uniform":  # bound = sqrt(6 / (fan_in + fan_out))
        assert weight.abs().max() <= (6 / 300) ** 0.5
    if init != "default":
        assert bool((a.linears[0].bias == 0).all())


def test_init_scale_sets_the_range():
    torch.manual_seed(0)
    model = build_mlp(MLPConfig(50, (50,), 3, init="uniform", init_scale=0.5))
    weight = model.linears[0].weight
    assert 0.45 < weight.abs().max().item() <= 0.5


def test_calling_the_model_equals_forward_and_runs_hooks():
    model = build_mlp(MLPConfig(4, (8,), 3))
    x = torch.randn(5, 4)
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(output))
    direct = model.forward(x)
    assert calls == []  # forward() skips hooks; model(x) is the way to call a module
    called = model(x)
    torch.testing.assert_close(called, direct, rtol=0, atol=0)
    assert len(calls) == 1


def test_activation_table_matches_the_documented_names():
    assert list(ACTIVATIONS) == ["relu", "tanh", "sigmoid", "leaky_relu", "gelu"]


# --- weight exchange --------------------------------------------------------------------------


def test_npz_weights_round_trip_in_x_at_w_orientation(tmp_path):
    torch.manual_seed(1)
    model = build_mlp(MLPConfig(4, (6, 5), 3))
    path = tmp_path / "w.npz"
    save_npz_weights(model, path)
    with np.load(path) as npz:
        arrays = dict(npz)
    assert sorted(arrays) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert arrays["W1"].shape == (4, 6) and arrays["b1"].shape == (6,)
    # A hand-written net computes relu(x @ W + b): the file must reproduce the model exactly.
    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    h = np.maximum(x @ arrays["W1"] + arrays["b1"], 0)
    h = np.maximum(h @ arrays["W2"] + arrays["b2"], 0)
    by_hand = h @ arrays["W3"] + arrays["b3"]
    np.testing.assert_allclose(
        by_hand, model(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6
    )

    torch.manual_seed(2)
    other = build_mlp(MLPConfig(4, (6, 5), 3))
    load_npz_weights(other, path)
    for pa, pb in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_npz_without_bias(tmp_path):
    model = build_mlp(MLPConfig(4, (6,), 3, bias=False))
    path = tmp_path / "w.npz"
    rng = np.random.default_rng(0)
    np.savez(path, W1=rng.normal(size=(4, 6)), W2=rng.normal(size=(6, 3)))
    load_npz_weights(model, path)
    np.testing.assert_allclose(
        model.linears[1].weight.detach().numpy().T, np.load(path)["W2"], rtol=1e-6
    )


def test_npz_shape_mismatch_names_layer_and_both_shapes(tmp_path):
    model = build_mlp(MLPConfig(4, (6,), 3))
    path = tmp_path / "w.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path, W1=rng.normal(size=(4, 6)), b1=np.zeros(6), W2=rng.normal(size=(6, 5)), b2=np.zeros(5)
    )
    with pytest.raises(
        ConfigError,
        match=r"W2 \(layer 2\) has shape \(6, 5\), model expects "
        r"\(6, 3\)",
    ):
        load_npz_weights(model, path)


def test_npz_transposed_weights_get_a_hint(tmp_path):
    model = build_mlp(MLPConfig(4, (6,), 3))
    path = tmp_path / "w.npz"
    np.savez(path, W1=np.zeros((6, 4)), b1=np.zeros(6), W2=np.zeros((6, 3)), b2=np.zeros(3))
    with pytest.raises(ConfigError, match=r"W1 .*\(6, 4\).*\(4, 6\) \(transposed\?"):
        load_npz_weights(model, path)


def test_npz_missing_and_extra_arrays(tmp_path):
    model = build_mlp(MLPConfig(4, (6,), 3))
    path = tmp_path / "w.npz"
    np.savez(path, W1=np.zeros((4, 6)), b1=np.zeros(6), W2=np.zeros((6, 3)), W3=np.zeros(1))
    with pytest.raises(ConfigError, match=r"missing \['b2'\]; unexpected \['W3'\]"):
        load_npz_weights(model, path)


def test_npz_missing_or_unreadable_file_is_a_data_error(tmp_path):
    model = build_mlp(MLPConfig(4, (6,), 3))
    with pytest.raises(DataError, match="not found"):
        load_npz_weights(model, tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(DataError, match="bad.npz: not a readable .npz"):
        load_npz_weights(model, bad)
