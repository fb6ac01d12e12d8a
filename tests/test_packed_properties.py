"""Packed training on random packs: each member trains as it would alone, whatever its neighbours.

Random optimizer, 1-5 members with their own learning rates, seeds and hyperparameters (all in
model.optim's valid ranges), a random batch size and selection rule, on test_train's tiny data.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_packed import assert_like_solo
from test_train import make_cfg, make_data, without_timing

from model.train import EpochMetrics, PackTrainer, TrainConfig, Trainer

DATA = make_data()
EPOCHS = 2

# Learning rates (log10 range) per optimizer where 2 epochs stay out of floating-point chaos:
# a pack computes each layer with bmm, a run of its own with addmm, so the two differ in the last
# bits; the comparison (rtol 1e-4) holds where training damps such differences rather than
# amplifying them. RMSprop's first steps divide by sqrt((1 - alpha) g^2): where g is ~0 a rounding
# difference becomes a step of lr / sqrt(1 - alpha), so its lr stays <= 0.01 (as test_packed's).
LOG_LR = {
    "sgd": (-3.0, -1.0),
    "adam": (-4.0, -2.0),
    "adamw": (-4.0, -2.0),
    "rmsprop": (-4.0, -2.0),
    "adagrad": (-3.0, -1.0),
}


def _unit(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_subnormal=False)


def _maybe(draw, params: dict, name: str, strategy: st.SearchStrategy) -> None:
    """Set params[name] from strategy, or leave it out (the optimizer's default)."""
    value = draw(st.none() | strategy)
    if value is not None:
        params[name] = value


@st.composite
def hyperparameters(draw, optimizer: str) -> dict:
    """Valid hyperparameters of optimizer besides lr, each set or left at its default."""
    params: dict = {}
    _maybe(draw, params, "weight_decay", _unit(0.0, 0.1 if optimizer == "adamw" else 0.01))
    if optimizer == "sgd":
        if draw(st.booleans()):  # nesterov needs momentum > 0 and no dampening
            params.update(nesterov=True, momentum=draw(_unit(0.1, 0.9)), dampening=0.0)
        else:
            _maybe(draw, params, "momentum", _unit(0.0, 0.9))
            _maybe(draw, params, "dampening", _unit(0.0, 1.0))
    elif optimizer in ("adam", "adamw"):
        _maybe(draw, params, "amsgrad", st.booleans())
        _maybe(draw, params, "beta1", _unit(0.0, 0.95))
        # beta2 near 0 makes the step ~ lr * sign(g): chaotic where g ~ 0 (see LOG_LR)
        _maybe(draw, params, "beta2", _unit(0.9, 0.9999))
    elif optimizer == "rmsprop":
        _maybe(draw, params, "centered", st.booleans())
        _maybe(draw, params, "momentum", _unit(0.0, 0.9))
        # alpha near 1 keeps the square average near 0 for long (the first-step chaos, longer)
        _maybe(draw, params, "alpha", _unit(0.9, 0.99))
    else:
        _maybe(draw, params, "lr_decay", _unit(0.0, 0.1))
        _maybe(draw, params, "initial_accumulator_value", _unit(0.0, 1.0))
    return params


@st.composite
def packs(draw, epochs: int = EPOCHS) -> list[TrainConfig]:
    """1-5 configurations that may share a pack: one optimizer, batch size and selection rule."""
    optimizer = draw(st.sampled_from(sorted(LOG_LR)))
    batch_size = draw(st.sampled_from([8, 16, 50]))
    select = draw(st.sampled_from(["final", "best_epoch"]))
    low, high = LOG_LR[optimizer]
    members = []
    for _ in range(draw(st.integers(1, 5))):
        lr = 10 ** draw(_unit(low, high))
        seed = draw(st.integers(0, 2**32 - 1))
        hp = draw(hyperparameters(optimizer))
        members.append(
            make_cfg(
                optimizer=optimizer,
                lr=lr,
                seed=seed,
                optimizer_params=hp,
                batch_size=batch_size,
                epochs=epochs,
                select=select,
            )
        )
    return members


@pytest.fixture(autouse=True, scope="module")
def restore_num_threads():
    """Trainer sets torch's (process-wide) thread count; leave it as other tests found it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def drive(
    pack: PackTrainer,
    got: dict[int, list[EpochMetrics]],
    *,
    stop: tuple[int, list[int]] | None = None,
    until: int | None = None,
) -> None:
    """Run pack, appending each member's records to got; stop = (epoch, members) stops those
    members after that epoch; until = an epoch to pause after (a later drive goes on)."""
    for records in pack.run():
        for member, record in records:
            got.setdefault(member, []).append(record)
        epoch = records[0][1].epoch
        if stop is not None and epoch == stop[0]:
            pack.stop(stop[1], "early_stopped")
        if epoch == until:
            return


def exact(records: list[EpochMetrics]) -> list[dict]:
    """Records without timing, NaN made comparable: equal lists mean bitwise equal numbers."""
    return [
        {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in without_timing(records)
    ]


@settings(max_examples=40, deadline=None)
@given(cfgs=packs(), engine=st.sampled_from(["auto", "stacked"]))
def test_each_member_of_a_random_pack_trains_as_it_would_alone(cfgs, engine) -> None:
    got: dict[int, list[EpochMetrics]] = {}
    drive(PackTrainer(cfgs, DATA, engine=engine), got)
    for member, cfg in enumerate(cfgs):
        assert_like_solo(got[member], list(Trainer(cfg, DATA).run()))


def _with_stopped(cfgs: list[TrainConfig]) -> st.SearchStrategy:
    return st.tuples(st.just(cfgs), st.sets(st.integers(0, len(cfgs) - 1)))


# Found by this test: a member without momentum stepped (grad / avg) * lr when a neighbour had
# momentum, (grad * lr) / avg when none had, so stopping the neighbour changed its last bits.
RMSPROP_MIXED = [
    make_cfg(optimizer="rmsprop", lr=0.01, batch_size=8, epochs=EPOCHS, optimizer_params=hp)
    for hp in ({"momentum": 0.5}, {}, {})
]

# Found by this test too: a per-member coefficient rounded differently from the shared float
# that torch.optim passes (grad + (p * wd) against grad.add(p, alpha=wd); (a / b) * lr against
# addcdiv's (lr * a) / b), so stopping a neighbour changed a member's last bits.
WEIGHT_DECAY_MIXED = [
    make_cfg(optimizer="rmsprop", lr=0.01, batch_size=8, epochs=EPOCHS, seed=seed,
             optimizer_params=hp, select="final")
    for seed, hp in enumerate(({}, {"weight_decay": 0.005859375}))
]  # fmt: skip
LR_MIXED = [
    make_cfg(optimizer="adagrad", lr=lr, batch_size=8, epochs=EPOCHS, select="final")
    for lr in (0.01, 0.1)
]


@settings(max_examples=40, deadline=None)
@given(case=packs().flatmap(_with_stopped))
@example(case=(RMSPROP_MIXED, {0}))
@example(case=(WEIGHT_DECAY_MIXED, {0}))
@example(case=(LR_MIXED, {0}))
def test_stopping_some_members_leaves_the_others_unchanged(case) -> None:
    cfgs, stopped = case
    whole: dict[int, list[EpochMetrics]] = {}
    drive(PackTrainer(cfgs, DATA), whole)
    pack = PackTrainer(cfgs, DATA)
    got: dict[int, list[EpochMetrics]] = {}
    drive(pack, got, stop=(1, sorted(stopped)))
    for member in range(len(cfgs)):
        if member in stopped:
            assert exact(got[member]) == exact(whole[member][:1])
            assert pack.statuses[member] == "early_stopped"
        else:
            assert exact(got[member]) == exact(whole[member])
            assert pack.statuses[member] == whole[member][-1].status


@settings(max_examples=40, deadline=None)
@given(cfgs=packs(epochs=3), data=st.data())
def test_a_pack_resumed_from_any_epoch_ends_as_an_uninterrupted_one(cfgs, data) -> None:
    saved_at = data.draw(st.integers(0, 2), label="saved_at")
    stopped = data.draw(st.sets(st.integers(0, len(cfgs) - 1)), label="stopped")
    stop = (data.draw(st.integers(1, 2), label="stop_at"), sorted(stopped))
    straight = PackTrainer(cfgs, DATA)
    expected: dict[int, list[EpochMetrics]] = {}
    drive(straight, expected, stop=stop)

    first = PackTrainer(cfgs, DATA)
    got: dict[int, list[EpochMetrics]] = {}
    if saved_at:
        drive(first, got, stop=stop, until=saved_at)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # as a Tune checkpoint would, loadable weights_only
    buffer.seek(0)
    resumed = PackTrainer(cfgs, DATA)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    drive(resumed, got, stop=stop)

    assert {m: exact(r) for m, r in got.items()} == {m: exact(r) for m, r in expected.items()}
    assert resumed.statuses == straight.statuses and resumed.active == straight.active
    assert resumed.best_epochs == straight.best_epochs
    # the last members to leave the stack keep their final weights there: the same, bit for bit
    for a, b in zip(resumed.engine.weights(), straight.engine.weights(), strict=True):
        assert torch.equal(a, b)
