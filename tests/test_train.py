"""One training run: metrics, determinism, resume, divergence, the exercise's teaching points."""

from __future__ import annotations

import io
import json
import math
import random
import time
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import model.train as train_module
from model.data import Dataset
from model.errors import ConfigError
from model.mlp import MLPConfig, build_mlp
from model.train import (
    SELECT_METRICS,
    EpochMetrics,
    TrainConfig,
    Trainer,
    fit,
    seed_everything,
    to_features,
)

N_FEATURES, N_CLASSES = 6, 3
TIMING = ("epoch_time_s", "samples_per_s", "elapsed_s")


def make_data(task: str = "classification", n: int = 300, seed: int = 0) -> Dataset:
    """A small learnable problem: labels (or targets) from a fixed random linear map."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=gen)
    scores = x @ torch.randn(N_FEATURES, N_CLASSES, generator=gen)
    y = scores.argmax(dim=1) if task == "classification" else scores[:, 0].contiguous()
    a, b = int(n * 0.6), int(n * 0.8)
    classes = tuple("abc") if task == "classification" else ()
    return Dataset("tiny", task, x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], classes)


@pytest.fixture(autouse=True)
def restore_num_threads():
    """Trainer sets torch's (process-wide) thread count; leave it as other tests found it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def make_cfg(**changes) -> TrainConfig:
    model_fields = {"input_size": N_FEATURES, "hidden": (16,), "output_size": N_CLASSES}
    model = MLPConfig(**{**model_fields, **changes.pop("model", {})})
    # One thread, as a sweep trial runs: tiny matmuls only lose from threading on a busy machine.
    base = TrainConfig(model, "adam", 0.01, batch_size=32, epochs=3, seed=0, num_threads=1)
    return replace(base, **changes)


def without_timing(records: list[EpochMetrics]) -> list[dict]:
    return [{k: v for k, v in r.as_dict().items() if k not in TIMING} for r in records]


def test_fit_yields_one_record_per_epoch_and_learns():
    data = make_data()
    records = list(fit(make_cfg(epochs=4), data))
    assert [r.epoch for r in records] == [1, 2, 3, 4]
    assert [r.status for r in records] == ["running"] * 3 + ["completed"]
    steps_per_epoch = math.ceil(data.n_train / 32)  # the last, partial batch is kept
    assert [r.steps for r in records] == [steps_per_epoch * e for e in (1, 2, 3, 4)]
    assert all(r.test_loss is None and r.test_acc is None for r in records[:-1])
    final = records[-1]
    assert final.test_loss is not None and 0 <= final.test_acc <= 1 and final.test_rmse is None
    assert final.val_loss < records[0].val_loss
    assert final.val_acc > 0.6  # chance is 1/3
    assert all(r.val_rmse is None and r.samples_per_s > 0 and r.epoch_time_s > 0 for r in records)
    assert final.elapsed_s == pytest.approx(sum(r.epoch_time_s for r in records))
    assert set(final.as_dict()) >= {"train_loss", "val_loss", "val_acc", "steps", "status"}


def test_timings_fit_in_the_wall_clock_time_of_the_run():
    data = make_data()
    start = time.perf_counter()
    records = list(fit(make_cfg(epochs=2), data))
    wall = time.perf_counter() - start
    for record in records:
        assert 0 < record.epoch_time_s <= record.elapsed_s <= wall
        assert record.samples_per_s >= data.n_train / wall


def test_test_metrics_belong_to_the_final_model():
    data = make_data()
    trainer = Trainer(make_cfg(epochs=2), data)
    final = list(trainer.run())[-1]
    with torch.no_grad():
        out = trainer.model(data.x_test)
    assert final.test_loss == pytest.approx(F.cross_entropy(out, data.y_test).item(), rel=1e-5)
    assert final.test_acc == pytest.approx((out.argmax(1) == data.y_test).double().mean().item())


def test_train_loss_is_the_mean_batch_loss():
    """With one batch per epoch, the epoch's train loss is the loss before its single step."""
    data = make_data()
    cfg = make_cfg(batch_size=10_000, epochs=1)
    torch.manual_seed(cfg.seed)
    initial = build_mlp(cfg.model)
    with torch.no_grad():
        expected = F.cross_entropy(initial(data.x_train), data.y_train).item()
    (record,) = fit(cfg, data)
    assert record.train_loss == pytest.approx(expected, rel=1e-6)
    assert record.steps == 1


def test_same_config_and_seed_give_bitwise_identical_metrics():
    data = make_data()
    first = list(fit(make_cfg(), data))
    second = list(fit(make_cfg(), data))
    assert without_timing(first) == without_timing(second)
    other_seed = list(fit(make_cfg(seed=1), data))
    assert without_timing(other_seed) != without_timing(first)


def test_shuffling_does_not_depend_on_the_global_rng():
    data = make_data()
    plain = list(fit(make_cfg(), data))
    disturbed = []
    for record in fit(make_cfg(), data):
        disturbed.append(record)
        torch.manual_seed(1234)  # someone else drawing or reseeding between epochs
        torch.rand(10)
    assert without_timing(disturbed) == without_timing(plain)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_resumed_run_is_bitwise_identical_to_an_uninterrupted_one(optimizer):
    data = make_data()
    params = {"momentum": 0.9} if optimizer != "adam" else {}
    cfg = make_cfg(epochs=4, optimizer=optimizer, optimizer_params=params, lr=0.01)
    straight = Trainer(cfg, data)
    uninterrupted = list(straight.run())

    first = Trainer(cfg, data)
    head = [record for _, record in zip(range(2), first.run(), strict=False)]
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # as a checkpoint would, loadable weights_only
    list(first.run())  # training on must not change the saved state
    buffer.seek(0)
    np.random.seed(99)  # the new process starts from other RNG states
    resumed = Trainer(cfg, data)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.epochs_done == 2
    tail = list(resumed.run())
    assert [r.epoch for r in tail] == [3, 4]
    assert without_timing(head + tail) == without_timing(uninterrupted)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_finished_run_yields_nothing_more():
    trainer = Trainer(make_cfg(epochs=1), make_data())
    assert len(list(trainer.run())) == 1
    assert list(trainer.run()) == []


def test_a_run_resumed_after_its_best_epoch_tests_the_best_epochs_weights():
    data = make_data()
    cfg = make_cfg(optimizer="sgd", lr=2.0, epochs=6, select="best_epoch")
    straight = list(Trainer(cfg, data).run())
    best = straight[-1].test_epoch
    assert best < cfg.epochs, "the case needs a best epoch before the last"
    first = Trainer(cfg, data)
    head = [record for _, record in zip(range(best), first.run(), strict=False)]
    resumed = Trainer(cfg, data)
    resumed.load_state_dict(first.state_dict())
    assert without_timing(head + list(resumed.run())) == without_timing(straight)


def test_resume_restores_numpy_and_random_states():
    trainer = Trainer(make_cfg(), make_data())
    np.random.rand(5)
    np.random.randn()  # an odd draw leaves the pair's second normal cached ...
    while abs(np.random.get_state()[4]) >= 1:  # ... one in (-1, 1), so it is not read as a flag
        np.random.randn(2)
    state = trainer.state_dict()
    expected = (np.random.rand(3).tolist(), np.random.randn(3).tolist(), random.random())
    np.random.seed(99)
    random.seed(99)
    trainer.load_state_dict(state)
    assert (np.random.rand(3).tolist(), np.random.randn(3).tolist(), random.random()) == expected


def test_seed_everything_seeds_torch_numpy_and_random():
    def draws() -> tuple:
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    seed_everything(7)
    first = draws()
    seed_everything(7)
    assert draws() == first


def test_trainer_exposes_its_config_device_model_and_torch_optimizer():
    cfg = make_cfg(optimizer="sgd")
    trainer = Trainer(cfg, make_data())
    assert trainer.cfg is cfg and trainer.device == torch.device("cpu")
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    params = trainer.optimizer.param_groups[0]["params"]
    assert [id(p) for p in params] == [id(p) for p in trainer.model.parameters()]


def test_non_finite_loss_stops_the_run_as_diverged():
    data = make_data()
    cfg = make_cfg(optimizer="sgd", lr=1e6, epochs=5, model={"activation": "relu"})
    trainer = Trainer(cfg, data)
    records = list(trainer.run())
    assert records[-1].status == "diverged"
    assert len(records) < 5 and all(r.status == "running" for r in records[:-1])
    assert not (math.isfinite(records[-1].train_loss) and math.isfinite(records[-1].val_loss))
    assert records[-1].test_loss is None
    assert list(trainer.run()) == []  # and it stays stopped, also after a resume
    again = Trainer(cfg, data)
    again.load_state_dict(trainer.state_dict())
    assert list(again.run()) == []


def test_weights_that_blow_up_in_an_epochs_last_step_diverge_at_that_epoch():
    """The one step of the epoch starts from a finite loss and leaves non-finite weights: the
    validation loss alone says the run diverged."""
    cfg = make_cfg(optimizer="sgd", lr=1e20, batch_size=10_000, epochs=3)
    (record,) = fit(cfg, make_data())
    assert math.isfinite(record.train_loss) and not math.isfinite(record.val_loss)
    assert record.status == "diverged" and record.epoch == 1


@pytest.mark.parametrize("metric", [m for m in SELECT_METRICS if m != "val_rmse"])
def test_best_epoch_is_the_earliest_best_by_the_metrics_direction(metric):
    # lr 2.0: the metrics rise and fall, so the best epoch is neither the first nor the last
    cfg = make_cfg(optimizer="sgd", lr=2.0, epochs=6, select="best_epoch", metric=metric)
    records = list(fit(cfg, make_data()))
    values = [getattr(r, metric) for r in records]
    best = max(values) if SELECT_METRICS[metric] == "max" else min(values)
    assert 1 < values.index(best) + 1 < cfg.epochs
    assert records[-1].test_epoch == values.index(best) + 1


@pytest.mark.parametrize("metric", ["val_loss", "val_acc"])
def test_a_tied_best_epoch_is_the_earliest(metric):
    # lr 1e-30 leaves the weights as they are: every epoch validates the same
    cfg = make_cfg(optimizer="sgd", lr=1e-30, batch_size=10_000, select="best_epoch", metric=metric)
    records = list(fit(cfg, make_data()))
    assert len({getattr(r, metric) for r in records}) == 1
    assert records[-1].test_epoch == 1


def test_regression_reports_rmse():
    data = make_data("regression")
    cfg = make_cfg(model={"task": "regression", "loss": "mse"}, epochs=3)
    cfg = replace(cfg, model=replace(cfg.model, output_size=1))
    records = list(fit(cfg, data))
    final = records[-1]
    assert final.val_acc is None and final.test_acc is None
    assert final.val_rmse == pytest.approx(math.sqrt(final.val_loss))
    assert final.test_rmse == pytest.approx(math.sqrt(final.test_loss))
    assert final.val_rmse < records[0].val_rmse


def test_mse_classification_uses_one_hot_targets():
    data = make_data()
    cfg = make_cfg(model={"loss": "mse", "output_activation": "softmax"}, epochs=2)
    trainer = Trainer(cfg, data)
    final = list(trainer.run())[-1]
    with torch.no_grad():
        out = trainer.model(data.x_val)
    one_hot = F.one_hot(data.y_val, N_CLASSES).float()
    assert final.val_loss == pytest.approx(F.mse_loss(out, one_hot).item(), rel=1e-5)
    assert final.val_acc == pytest.approx((out.argmax(1) == data.y_val).double().mean().item())


def test_evaluation_in_chunks_gives_the_same_metrics(monkeypatch):
    data = make_data()
    whole = list(fit(make_cfg(epochs=1), data))[-1]
    monkeypatch.setattr(train_module, "EVAL_CHUNK", 7)
    chunked = list(fit(make_cfg(epochs=1), data))[-1]
    assert chunked.val_acc == whole.val_acc
    assert chunked.val_loss == pytest.approx(whole.val_loss, rel=1e-6)


def test_num_threads_is_applied():
    # The data is built first: no tensor work while the count is raised, or a process that
    # forks afterwards (mutmut) has an OpenMP team its children wait on forever.
    data = make_data()
    threads = torch.get_num_threads() + 1
    Trainer(make_cfg(num_threads=threads), data)
    assert torch.get_num_threads() == threads
    Trainer(make_cfg(num_threads=None), data)  # None leaves it
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "^batch_size: 0 is not a positive integer"),
        ({"epochs": 2.5}, "^epochs: 2.5"),
        ({"lr": -1.0}, "^lr: -1.0"),
        ({"seed": -1}, r"^seed: -1 is not an integer in \[0, 2\*\*32\)"),
        ({"seed": 2**32}, r"^seed: 4294967296 is not an integer"),
        ({"seed": True}, "^seed: True is not an integer"),
        ({"seed": 2.5}, "^seed: 2.5 is not an integer"),
        ({"seed": "1"}, "^seed: '1' is not an integer"),
        ({"select": "best"}, "^select: 'best' is not one of best_epoch, final$"),
        ({"metric": "acc"}, "^metric: 'acc' is not one of val_loss, val_acc, val_rmse"),
        ({"optimizer": "sgdd"}, "^optimizer: unknown optimizer 'sgdd' .*valid: sgd, adam"),
        ({"optimizer_params": {"momentum": 2.0}}, r"^optimizer\.adam: unknown hyperparameter"),
        ({"device": "gpu0"}, "^device: 'gpu0'"),
        ({"num_threads": 0}, "^num_threads: 0"),
    ],
)
def test_train_config_errors_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        make_cfg(**changes)


def test_model_that_is_not_an_mlp_config_is_named():
    with pytest.raises(ConfigError, match="^model: 'mlp' is not an MLPConfig"):
        replace(make_cfg(), model="mlp")


def test_numbers_from_numpy_become_python_numbers():
    """So that asdict(cfg), the trial's parameters, serialises to JSON."""
    cfg = make_cfg(
        lr=1,
        batch_size=np.int64(32),
        epochs=np.int64(2),
        seed=np.int64(3),
        num_threads=np.int64(1),
    )
    fields = ("lr", "batch_size", "epochs", "seed", "num_threads")
    assert [type(getattr(cfg, name)) for name in fields] == [float, int, int, int, int]
    json.dumps(asdict(cfg))
    assert make_cfg(seed=2**32 - 1).seed == 2**32 - 1


def test_optimizer_params_are_copied():
    params = {"momentum": 0.9}
    cfg = make_cfg(optimizer="sgd", optimizer_params=params)
    params["momentum"] = 0.5
    assert cfg.optimizer_params == {"momentum": 0.9}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_cuda_device_is_a_config_error():
    with pytest.raises(ConfigError, match="^device: 'cuda' but no CUDA device is available"):
        Trainer(make_cfg(device="cuda"), make_data())


def test_model_that_does_not_fit_the_data_is_a_config_error():
    with pytest.raises(ConfigError, match="model.input_size: 5 but data 'tiny' has 6 features"):
        Trainer(make_cfg(model={"input_size": 5}), make_data())
    with pytest.raises(ConfigError, match="model.output_size: 4 but data 'tiny' has 3 outputs"):
        Trainer(make_cfg(model={"output_size": 4}), make_data())
    with pytest.raises(ConfigError, match="model.task"):
        Trainer(make_cfg(), make_data("regression"))


# --- the exercise's teaching points -----------------------------------------------------------


def test_zero_grad_prevents_accumulation_across_steps():
    torch.manual_seed(0)
    model = build_mlp(MLPConfig(N_FEATURES, (8,), N_CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay put
    data = make_data()

    def step(zero: bool) -> torch.Tensor:
        if zero:
            optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(data.x_train), data.y_train).backward()
        optimizer.step()
        return model.linears[0].weight.grad.clone()

    once = step(zero=True)
    accumulated = step(zero=False)  # backward adds into .grad: the gradient doubles
    torch.testing.assert_close(accumulated, 2 * once)
    fresh = step(zero=True)
    torch.testing.assert_close(fresh, once, rtol=0, atol=0)


def test_trainer_zeroes_gradients_between_steps():
    """Two full-batch plain-SGD steps through Trainer land where two fresh-gradient steps land,
    not where an accumulated gradient (g1 + g2 in the second step) would take them."""
    import copy

    data = make_data()
    cfg = make_cfg(optimizer="sgd", lr=0.5, batch_size=data.n_train, epochs=2)
    trainer = Trainer(cfg, data)
    start = copy.deepcopy(trainer.model)
    records = list(trainer.run())
    assert [r.steps for r in records] == [1, 2]

    def grads(model) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(data.x_train), data.y_train).backward()
        return [p.grad.clone() for p in model.parameters()]

    fresh, accumulated = copy.deepcopy(start), copy.deepcopy(start)
    first = grads(fresh)
    with torch.no_grad():
        for model in (fresh, accumulated):
            for p, g in zip(model.parameters(), first, strict=True):
                p -= 0.5 * g
    second = grads(fresh)
    with torch.no_grad():
        for p, g in zip(fresh.parameters(), second, strict=True):
            p -= 0.5 * g
        for p, g1, g2 in zip(accumulated.parameters(), first, second, strict=True):
            p -= 0.5 * (g1 + g2)
    trained = [p.detach() for p in trainer.model.parameters()]
    for got, want in zip(trained, fresh.parameters(), strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
    gap = max(
        (a - b.detach()).abs().max().item()
        for a, b in zip(trained, accumulated.parameters(), strict=True)
    )
    assert gap > 1e-3  # the two outcomes are far apart: the check above can tell them apart


def test_float64_numpy_input_arrives_as_float32():
    model = build_mlp(MLPConfig(N_FEATURES, (8,), N_CLASSES))
    array = np.random.default_rng(0).normal(size=(5, N_FEATURES))  # NumPy's default: float64
    assert torch.from_numpy(array).dtype == torch.float64
    with pytest.raises(RuntimeError):  # float64 input meets float32 weights
        model(torch.from_numpy(array))
    x = to_features(array)
    assert x.dtype == torch.float32 and x.is_contiguous()
    assert model(x).shape == (5, N_CLASSES)


def test_trainer_casts_float64_features():
    data = make_data()
    double = Dataset(
        "tiny",
        "classification",
        data.x_train.double(),
        data.y_train,
        data.x_val.double(),
        data.y_val,
        data.x_test.double(),
        data.y_test,
        data.classes,
    )
    assert without_timing(list(fit(make_cfg(epochs=1), double))) == without_timing(
        list(fit(make_cfg(epochs=1), data))
    )
