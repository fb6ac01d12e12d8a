"""Packed training: K configurations in one PackTrainer equal K runs of their own on torch.optim."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch
from test_train import make_cfg, make_data, without_timing

from model.data import Dataset
from model.errors import ConfigError
from model.mlp import ACTIVATIONS, MLPConfig, build_mlp, loss_function, prepare_targets
from model.packed import StackedMLP, StackedOptimizer, loss_count
from model.train import EpochMetrics, PackTrainer, StackedEngine, TrainConfig, Trainer

RTOL = 1e-4


@pytest.fixture(autouse=True)
def restore_num_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_pack(cfgs, data, **kwargs) -> dict[int, list[EpochMetrics]]:
    got: dict[int, list[EpochMetrics]] = {m: [] for m in range(len(cfgs))}
    for records in PackTrainer(cfgs, data, **kwargs).run():
        for member, record in records:
            got[member].append(record)
    return got


def assert_like_solo(got: list[EpochMetrics], solo: list[EpochMetrics], rtol=RTOL) -> None:
    assert [r.epoch for r in got] == [r.epoch for r in solo]
    assert [r.status for r in got] == [r.status for r in solo]
    for a, b in zip(got, solo, strict=True):
        for name in ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None), name
            if x is not None:
                assert x == pytest.approx(y, rel=rtol, nan_ok=True), (name, a.epoch)
        assert (a.steps, a.test_epoch) == (b.steps, b.test_epoch)


# Each setting: optimizer, per-member (lr, seed, hyperparameters). Mixed hyperparameters in one
# pack exercise the per-member masks (nesterov, amsgrad, centered) and momentum 0 beside > 0.
# RMSprop's first steps divide by sqrt(0.01 g^2): where g is ~0 a rounding difference becomes a
# step of 10 x lr, so its settings keep lr <= 0.01, where the arithmetic is not chaotic.
SETTINGS = {
    "sgd-plain": ("sgd", [(0.1, 0, {}), (0.03, 1, {}), (0.01, 2, {})]),
    # one lr and one weight decay: every coefficient is a Python float, as in torch.optim
    "sgd-shared": ("sgd", [(0.1, s, {"weight_decay": 0.01}) for s in range(3)]),
    "sgd-mixed": (
        "sgd",
        [
            (0.05, 0, {"momentum": 0.9}),
            (0.05, 1, {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
            (0.1, 2, {"momentum": 0.5, "dampening": 0.3}),
            (0.1, 3, {}),
            (0.1, 4, {"dampening": 0.5}),  # torch ignores dampening without momentum
        ],
    ),
    "adam-shared": ("adam", [(0.01, s, {"weight_decay": 1.0}) for s in range(3)]),
    "adam": ("adam", [(0.01, 0, {}), (0.003, 1, {}), (0.001, 2, {"beta1": 0.8, "eps": 1e-6})]),
    "adam-mixed": (
        "adam",
        [
            (0.01, 0, {"amsgrad": True, "weight_decay": 0.01}),
            (0.003, 1, {}),
            (0.01, 2, {}),
            (0.01, 3, {"beta2": 0.99}),
        ],
    ),
    "adamw": ("adamw", [(0.01, 0, {}), (0.003, 1, {"amsgrad": True}), (0.001, 2, {})]),
    # Adam(W) members are grouped by equal hyperparameters for torch's fused kernel: groups of
    # one and of two, and values far enough from the defaults that a wrong one shows
    "adam-groups": (
        "adam",
        [
            (0.01, 0, {"eps": 0.1}),
            (0.01, 1, {"eps": 0.1}),
            (0.01, 2, {"eps": 1e-3, "beta2": 0.9}),
            (0.003, 3, {"beta1": 0.5, "weight_decay": 0.1}),
        ],
    ),
    "adamw-groups": (
        "adamw",
        [
            (0.01, 0, {"weight_decay": 0.5, "eps": 0.01}),
            (0.01, 1, {"weight_decay": 0.5, "eps": 0.01}),
            (0.003, 2, {"weight_decay": 0.0, "beta1": 0.5, "beta2": 0.9}),
        ],
    ),
    "rmsprop": ("rmsprop", [(0.01, 0, {}), (0.003, 1, {}), (0.001, 2, {"alpha": 0.9})]),
    "rmsprop-mixed": (
        "rmsprop",
        [
            (0.003, 0, {"centered": True, "momentum": 0.9}),
            (0.01, 1, {"momentum": 0.5, "weight_decay": 0.01}),
            (0.001, 2, {}),
        ],
    ),
    # Plain RMSprop members are stepped by torch's fused Adam kernel on a CPU, grouped by equal
    # hyperparameters. alpha = 1 keeps the square average at 0 (the kernel would divide by
    # 1 - alpha^t = 0), so that member takes the element-wise ops; eps = 1 makes it plain SGD.
    "rmsprop-groups": (
        "rmsprop",
        [
            (0.01, 0, {"eps": 1e-3}),
            (0.01, 1, {"eps": 1e-3}),
            (0.003, 2, {"alpha": 0.5, "weight_decay": 0.1}),
            (0.1, 3, {"alpha": 1.0, "eps": 1.0}),
        ],
    ),
    "adagrad": (
        "adagrad",
        [
            (0.1, 0, {}),
            (0.05, 1, {"lr_decay": 0.01, "initial_accumulator_value": 0.1}),
            (0.01, 2, {"weight_decay": 1e-3, "eps": 1e-6}),
        ],
    ),
    # torch's fused Adagrad kernel steps a CPU pack, grouped by equal hyperparameters
    "adagrad-groups": (
        "adagrad",
        [
            (0.05, 0, {"lr_decay": 0.1, "eps": 0.01}),
            (0.05, 1, {"lr_decay": 0.1, "eps": 0.01}),
            (0.05, 2, {"weight_decay": 0.1, "initial_accumulator_value": 0.5}),
        ],
    ),
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_pack_equals_each_member_trained_alone_with_torch_optim(setting):
    optimizer, members = SETTINGS[setting]
    data = make_data()
    cfgs = [
        make_cfg(optimizer=optimizer, lr=lr, seed=seed, optimizer_params=hp, batch_size=16)
        for lr, seed, hp in members
    ]
    got = run_pack(cfgs, data)
    for member, cfg in enumerate(cfgs):
        assert_like_solo(got[member], list(Trainer(cfg, data).run()))


@pytest.mark.parametrize(
    ("setting", "groups"),
    [
        ("adam-groups", {"cpu": 3, "cuda": 3}),
        ("adamw-groups", {"cpu": 2, "cuda": 2}),
        ("rmsprop-groups", {"cpu": 2, "cuda": None}),  # the alpha = 1 member takes no kernel
        ("rmsprop-mixed", {"cpu": 1, "cuda": None}),
        ("adagrad-groups", {"cpu": 2, "cuda": None}),
        ("sgd-mixed", {"cpu": None, "cuda": None}),
    ],
)
def test_which_packs_take_a_fused_kernel_on_which_device(setting, groups):
    """The kernel calls a step makes (None: element-wise ops only). torch has no fused Adagrad
    kernel for CUDA, and on a GPU RMSprop's element-wise step launches a fixed six kernels,
    where the fused one launches once per group of learning rates."""
    optimizer, members = SETTINGS[setting]
    lrs, hps = [lr for lr, _, _ in members], [hp for _, _, hp in members]
    stacked = StackedOptimizer(optimizer, torch.zeros(len(members), 4), lrs, hps)
    for device, count in groups.items():
        got = stacked._fused_groups(torch.device(device))
        assert (None if got is None else len(got)) == count, device


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_fused_steps_advance_one_step_tensor_in_place(optimizer, monkeypatch):
    """A CUDA graph replays the kernels a step launched, not its Python: the step count the
    fused kernel reads is one device tensor that every step advances in place."""
    seen = []
    kernel = torch._fused_adam_

    def spy(*args, **kwargs):
        seen.append([(step, step.item()) for step in args[5]])  # the tensor kept: no id reuse
        return kernel(*args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", spy)
    stacked = StackedOptimizer(optimizer, torch.zeros(3, 4), [0.1, 0.1, 0.01], [{}] * 3)
    param, grad = torch.zeros(3, 4), torch.ones(3, 4)
    for _ in range(3):
        stacked.step(param, grad)
    assert len(seen) == 6  # two groups of equal learning rates, three steps
    first = seen[0][0][0]
    assert all(step is first for call in seen for step, _ in call)
    assert [call[0][1] for call in seen] == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("setting", SETTINGS)
def test_a_training_epoch_reads_nothing_back_from_the_device(setting):
    """On a GPU every value read back (bool(), float(), .item(), .tolist()) waits for all the
    kernels queued before it, so a pack's steps (forward, loss, backward, optimizer) decide from
    host values only. Tensors on the meta device hold no values: reading one raises."""
    optimizer, members = SETTINGS[setting]
    cfgs = [
        make_cfg(optimizer=optimizer, lr=lr, seed=seed, optimizer_params=hp, batch_size=16)
        for lr, seed, hp in members
    ]
    meta = torch.device("meta")
    engine = StackedEngine(cfgs, meta)
    x = torch.zeros(40, cfgs[0].model.input_size, device=meta)
    labels = torch.zeros(40, dtype=torch.long, device=meta)
    orders = torch.zeros(len(cfgs), 40, dtype=torch.long, device=meta)
    assert engine.train_epoch(x, labels, orders, 16).shape == (len(cfgs),)  # 3 steps
    engine.keep(torch.tensor([0, len(cfgs) - 1]))  # reads the rows kept: done rarely
    assert engine.train_epoch(x, labels, orders[:2], 16).shape == (2,)


# Every hidden activation, with and without bias, and every (task, loss, output activation).
MODELS = [
    *({"activation": name, "bias": bias} for name in ACTIVATIONS for bias in (True, False)),
    {"activation": ("tanh", "gelu"), "hidden": (7, 5)},
    {"loss": "mse"},
    {"loss": "mse", "output_activation": "softmax", "activation": "leaky_relu"},
    {"loss": "mse", "output_activation": "sigmoid", "activation": "sigmoid"},
    {"task": "regression", "loss": "mse", "output_size": 2, "hidden": (6, 4)},
    {"task": "regression", "loss": "mse", "output_size": 1, "output_activation": "sigmoid"},
]


@pytest.mark.parametrize("members", [3, 1])
@pytest.mark.parametrize("model", MODELS, ids=str)
def test_the_hand_written_passes_give_autograds_loss_and_gradients(model, members):
    """loss_and_grad against each member as an nn.Module with autograd: the same batch losses
    and gradients, every element of flat_grad written (NaN before the call)."""
    cfg = MLPConfig(**{"input_size": 9, "hidden": (8,), "output_size": 4, **model})
    modules = []
    for seed in range(members):
        torch.manual_seed(seed)
        modules.append(build_mlp(cfg))
    net = StackedMLP(cfg, modules, torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    rows = 6
    x = torch.randn(members, rows, 9, generator=gen)
    labels = torch.randint(0, cfg.output_size, (members, rows), generator=gen)
    if cfg.task == "regression":
        labels = torch.randn(members, rows, cfg.output_size, generator=gen)
    targets = torch.stack([prepare_targets(cfg, y) for y in labels])
    net.flat_grad.fill_(float("nan"))
    losses = net.loss_and_grad(x, targets, loss_count(cfg, rows))
    assert losses.shape == (members,)
    for k, module in enumerate(modules):
        loss = loss_function(cfg)(module(x[k]), targets[k])
        loss.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in module.parameters()])
        assert losses[k].item() == pytest.approx(loss.item(), rel=1e-6)
        torch.testing.assert_close(net.flat_grad[k], grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "model",
    [
        {"bias": False},
        {"loss": "mse", "output_activation": "softmax"},
        {"loss": "mse", "output_activation": "sigmoid"},
        *({"activation": name} for name in ("tanh", "sigmoid", "leaky_relu", "gelu")),
    ],
)
def test_packs_of_other_activations_outputs_or_no_bias_match_their_solo_runs(model):
    data = make_data()
    cfgs = [make_cfg(model=model, lr=lr, seed=s) for lr, s in ((0.01, 0), (0.003, 1))]
    got = run_pack(cfgs, data)
    for member, cfg in enumerate(cfgs):
        assert_like_solo(got[member], list(Trainer(cfg, data).run()))


def test_an_rmsprop_member_without_momentum_ignores_a_neighbour_with_momentum():
    data = make_data()
    plain = make_cfg(optimizer="rmsprop", lr=0.003, seed=1)
    with_momentum = replace(plain, seed=0, optimizer_params={"momentum": 0.9})
    beside = run_pack([with_momentum, plain], data)[1]
    assert_like_solo(beside, run_pack([plain], data, engine="stacked")[0], rtol=0)


def test_members_of_one_seed_share_each_batch_and_train_as_beside_another_seed(monkeypatch):
    """One seed, one batch order: the pack gathers each batch once for all its members, and
    their numbers are bit for bit those they have beside a member of another seed."""
    data = make_data()
    same = [make_cfg(lr=lr, seed=3, batch_size=16) for lr in (0.01, 0.003)]
    gathered = []
    step = StackedEngine._step

    def counting(self, x, targets, idx):
        gathered.append(len(idx))
        return step(self, x, targets, idx)

    monkeypatch.setattr(StackedEngine, "_step", counting)
    apart = run_pack([*same, make_cfg(lr=0.005, seed=4, batch_size=16)], data)
    assert set(gathered) == {3}
    gathered.clear()
    together = run_pack(same, data)
    assert set(gathered) == {1}
    for member in range(2):
        assert without_timing(together[member]) == without_timing(apart[member])


def test_member_k_starts_from_the_weights_and_batches_of_its_own_run():
    data = make_data()
    cfgs = [make_cfg(lr=0.01, seed=seed, epochs=1) for seed in (3, 7)]
    pack = PackTrainer(cfgs, data, engine="stacked")
    first_layer = pack.engine.net.weights[0]
    for member, cfg in enumerate(cfgs):
        solo = Trainer(cfg, data)
        torch.testing.assert_close(first_layer[member], solo.model.linears[0].weight.detach())
    orders = [torch.randperm(len(data.x_train), generator=g) for g in pack._generators]
    fresh = [torch.Generator().manual_seed(cfg.seed) for cfg in cfgs]
    for order, generator in zip(orders, fresh, strict=True):
        assert torch.equal(order, torch.randperm(len(data.x_train), generator=generator))


def test_a_diverging_member_is_frozen_and_leaves_the_others_unchanged():
    data = make_data()
    good = [make_cfg(optimizer="sgd", lr=lr, seed=s, epochs=3) for lr, s in ((0.1, 0), (0.05, 1))]
    bad = make_cfg(optimizer="sgd", lr=1000.0, seed=2, epochs=3)
    pack = PackTrainer([good[0], bad, good[1]], data)
    got: dict[int, list[EpochMetrics]] = {0: [], 1: [], 2: []}
    sizes = []
    for records in pack.run():
        for member, record in records:
            got[member].append(record)
        sizes.append(pack.engine.net.weights[0].shape[0])
    statuses = [r.status for r in got[1]]
    assert statuses[-1] == "diverged" and statuses == [r.status for r in Trainer(bad, data).run()]
    assert sizes[len(statuses) - 1 :] == [2] * (4 - len(statuses))  # it left the stack at once
    assert pack.statuses == ["completed", "diverged", "completed"]
    assert_like_solo(got[0], list(Trainer(good[0], data).run()))
    assert_like_solo(got[2], list(Trainer(good[1], data).run()))
    alone = run_pack(good, data)
    assert_like_solo(got[0], alone[0], rtol=1e-6)
    assert_like_solo(got[2], alone[1], rtol=1e-6)


def test_the_same_diverged_epoch_as_a_run_of_its_own():
    data = make_data()
    cfgs = [make_cfg(optimizer="sgd", lr=lr, seed=0, epochs=4) for lr in (0.1, 40.0, 1e4)]
    got = run_pack(cfgs, data)
    for member, cfg in enumerate(cfgs):
        solo = list(Trainer(cfg, data).run())
        assert [r.status for r in got[member]] == [r.status for r in solo]


def test_stopped_members_leave_the_stack_and_the_rest_go_on():
    data = make_data()
    cfgs = [make_cfg(lr=lr, seed=0, epochs=3) for lr in (0.01, 0.003, 0.001)]
    pack = PackTrainer(cfgs, data)
    runs = pack.run()
    first = next(runs)
    assert [m for m, _ in first] == [0, 1, 2]
    pack.stop([1], "early_stopped")
    assert pack.engine.net.weights[0].shape[0] == 2
    assert pack.engine.optimizer.state["exp_avg"].shape[0] == 2
    rest = list(runs)
    assert [[m for m, _ in records] for records in rest] == [[0, 2], [0, 2]]
    assert pack.statuses == ["completed", "early_stopped", "completed"]
    solo = list(Trainer(cfgs[2], data).run())
    assert_like_solo([first[2][1], *(r[1][1] for r in rest)], solo)


def test_a_member_left_alone_goes_on_exactly_as_beside_its_neighbour():
    # torch's bmm computes a batch of one on another path than a pack's batch of several,
    # rounded differently for shapes like these: 64 features into 10 units, one row per batch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 64, generator=gen)
    y = (x @ torch.randn(64, 3, generator=gen)).argmax(dim=1)
    data = Dataset("wide", "classification", x[:120], y[:120], x[120:160], y[120:160],
                   x[160:], y[160:], ("a", "b", "c"))  # fmt: skip
    model = {"input_size": 64, "hidden": (10,), "output_size": 3}
    cfgs = [
        make_cfg(optimizer="sgd", lr=lr, batch_size=1, epochs=2, model=model) for lr in (0.01, 0.03)
    ]
    together = run_pack(cfgs, data)
    pack = PackTrainer(cfgs, data)
    alone = [record for member, record in next(pack.run()) if member == 1]
    pack.stop([0], "early_stopped")
    alone += [record for records in pack.run() for member, record in records if member == 1]
    assert_like_solo(alone, together[1], rtol=0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop", "adagrad"])
def test_resumed_pack_ends_where_an_uninterrupted_one_ends(optimizer):
    data = make_data()
    hp = {"momentum": 0.9} if optimizer in ("sgd", "rmsprop") else {}
    cfgs = [
        make_cfg(optimizer=optimizer, lr=lr, seed=s, epochs=4, optimizer_params=hp)
        for lr, s in ((0.01, 0), (0.003, 1), (1e5, 2))
    ]
    straight = run_pack(cfgs, data)
    first = PackTrainer(cfgs, data)
    runs = first.run()
    early = [next(runs), next(runs)]
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    got = resume_and_finish(cfgs, data, early, torch.load(buffer, weights_only=True))
    for member in range(3):
        assert_like_solo(got[member], straight[member], rtol=0)


def resume_and_finish(cfgs, data, early, state) -> dict[int, list[EpochMetrics]]:
    """Each member's records: those of the early epochs, then a pack resumed from state's."""
    resumed = PackTrainer(cfgs, data)
    resumed.load_state_dict(state)
    got = {m: [r for records in early for mm, r in records if mm == m] for m in range(len(cfgs))}
    for records in resumed.run():
        for member, record in records:
            got[member].append(record)
    return got


def _batch_major(t: torch.Tensor, cfg) -> torch.Tensor:
    """A (K, P) tensor in the layout of checkpoints before format 2: each layer's weights as
    (fan_in, fan_out), the transpose of nn.Linear's, then its bias."""
    parts, at = [], 0
    for fan_in, fan_out in zip(cfg.layer_sizes[:-1], cfg.layer_sizes[1:], strict=True):
        weight = t[:, at : at + fan_in * fan_out].view(len(t), fan_out, fan_in)
        parts += [
            weight.transpose(1, 2).reshape(len(t), -1),
            t[:, at + fan_in * fan_out :][:, :fan_out],
        ]
        at += fan_in * fan_out + fan_out
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_a_checkpoint_of_the_batch_major_format_resumes(optimizer):
    data = make_data()
    hp = {"momentum": 0.5} if optimizer == "rmsprop" else {}
    cfgs = [
        make_cfg(optimizer=optimizer, lr=lr, seed=s, epochs=4, select="best_epoch",
                 model={"hidden": (16, 8)}, optimizer_params=hp)
        for lr, s in ((0.01, 0), (0.003, 1))
    ]  # fmt: skip
    straight = run_pack(cfgs, data)
    first = PackTrainer(cfgs, data)
    runs = first.run()
    early = [next(runs), next(runs)]
    state = first.state_dict()
    model = cfgs[0].model
    engine, optimizer_state = state["engine"], state["engine"]["optimizer"]
    old = {
        **{k: v for k, v in state.items() if k != "format"},
        "engine": {
            "flat": _batch_major(engine["flat"], model),
            "optimizer": {
                **optimizer_state,
                "state": {k: _batch_major(t, model) for k, t in optimizer_state["state"].items()},
            },
        },
        "best_weights": [_batch_major(w, model) for w in state["best_weights"]],
    }
    got = resume_and_finish(cfgs, data, early, old)
    for member in range(2):
        assert_like_solo(got[member], straight[member], rtol=0)


def test_best_epoch_selection_tests_the_weights_of_the_best_epoch():
    data = make_data()
    # a learning rate high enough that validation loss rises again after its best epoch
    cfg = make_cfg(optimizer="sgd", lr=2.0, seed=0, epochs=6, select="best_epoch")
    records = list(Trainer(cfg, data).run())
    best = min(records, key=lambda r: r.val_loss)
    last = records[-1]
    assert last.status == "completed" and last.test_epoch == best.epoch
    assert best.epoch < cfg.epochs, "the case needs a best epoch before the last"
    # the same run stopped at its best epoch, tested there, measures the same test loss
    until_best = list(Trainer(replace(cfg, epochs=best.epoch, select="final"), data).run())
    assert until_best[-1].test_epoch == best.epoch
    assert last.test_loss == until_best[-1].test_loss
    final = list(Trainer(replace(cfg, select="final"), data).run())[-1]
    assert final.test_epoch == cfg.epochs and final.test_loss != last.test_loss


def test_stopping_a_member_keeps_the_best_epoch_weights_of_the_others():
    data = make_data()
    # member 0's best epoch comes before the stop; nothing improves after it
    cfgs = [
        make_cfg(optimizer="sgd", lr=lr, seed=0, epochs=6, select="best_epoch") for lr in (2.0, 0.1)
    ]
    solo = list(Trainer(cfgs[0], data).run())
    assert solo[-1].test_epoch < 5
    pack = PackTrainer(cfgs, data)
    got = []
    for records in pack.run():
        got.append(records[0][1])
        if records[0][1].epoch == 5:
            pack.stop([1], "early_stopped")
    assert_like_solo(got, solo)


def test_best_epoch_selection_in_a_pack_matches_the_solo_runs():
    data = make_data()
    cfgs = [
        make_cfg(optimizer="sgd", lr=lr, seed=s, epochs=5, select="best_epoch", metric="val_acc")
        for lr, s in ((2.0, 0), (0.1, 1), (0.5, 2))
    ]
    got = run_pack(cfgs, data)
    for member, cfg in enumerate(cfgs):
        assert_like_solo(got[member], list(Trainer(cfg, data).run()))


def test_pack_members_must_share_all_but_lr_seed_and_hyperparameters():
    data = make_data()
    with pytest.raises(ConfigError, match=r"pack\[1\]\.batch_size: 64 differs"):
        PackTrainer([make_cfg(), make_cfg(batch_size=64)], data)
    with pytest.raises(ConfigError, match=r"pack\[1\]\.optimizer: 'sgd' differs"):
        PackTrainer([make_cfg(), make_cfg(optimizer="sgd")], data)
    with pytest.raises(ConfigError, match="pack: no configurations"):
        PackTrainer([], data)
    with pytest.raises(ConfigError, match=r"^pack\[1\]: 'adam' is not a TrainConfig"):
        PackTrainer([make_cfg(), "adam"], data)


@pytest.mark.parametrize(("engine", "members"), [("torch", 2), ("numpy", 1)])
def test_unknown_engine_or_a_pack_on_the_torch_engine_is_a_config_error(engine, members):
    message = rf"^engine: '{engine}' for {members} members \(torch takes one\)"
    with pytest.raises(ConfigError, match=message):
        PackTrainer([make_cfg(seed=s) for s in range(members)], make_data(), engine=engine)


def test_one_member_pack_trains_on_torch_optim_by_default():
    data = make_data()
    cfg = make_cfg(optimizer="adamw", lr=0.01, epochs=3)
    assert_like_solo(run_pack([cfg], data)[0], list(Trainer(cfg, data).run()), rtol=0)


def test_a_checkpoint_of_another_pack_size_is_a_config_error():
    data = make_data()
    state = PackTrainer([make_cfg(seed=0), make_cfg(seed=1)], data).state_dict()
    with pytest.raises(ConfigError, match="^checkpoint: 2 members, this pack has 1"):
        PackTrainer([make_cfg()], data).load_state_dict(state)


def test_train_config_validates_select_and_metric():
    with pytest.raises(ConfigError, match="select: 'last'"):
        make_cfg(select="last")
    with pytest.raises(ConfigError, match="metric: 'val_f1'"):
        make_cfg(metric="val_f1")


def test_regression_and_mse_packs_match_their_solo_runs():
    data = make_data("regression")
    base = make_cfg(optimizer="adam", lr=0.01)
    model = replace(base.model, output_size=1, task="regression", loss="mse")
    cfgs = [replace(base, model=model, lr=lr, seed=s) for lr, s in ((0.01, 0), (0.003, 1))]
    got = run_pack(cfgs, data)
    for member, cfg in enumerate(cfgs):
        solo = list(Trainer(cfg, data).run())
        assert_like_solo(got[member], solo)
        assert got[member][-1].val_rmse == pytest.approx(solo[-1].val_rmse, rel=RTOL)


def test_one_member_pack_on_the_stacked_engine_equals_torch_optim():
    data = make_data()
    cfg = make_cfg(optimizer="adamw", lr=0.01, epochs=3)
    stacked = run_pack([cfg], data, engine="stacked")[0]
    assert_like_solo(stacked, list(Trainer(cfg, data).run()))


def test_train_config_default_select_is_final_for_single_runs():
    assert TrainConfig.__dataclass_fields__["select"].default == "final"
