"""Per-configuration ASHA (sweep.asha): Ray ASHAScheduler's decisions, shared across packs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from sweep.asha import AshaRungs, RungRecord, start_rung_record


def ray_asha(max_t, grace_period, reduction_factor, mode) -> ASHAScheduler:
    """Ray's scheduler as sweep/runner.py configured it before packing (one bracket)."""
    scheduler = ASHAScheduler(
        time_attr="epoch", max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor
    )
    scheduler.set_search_properties("val_loss", mode)
    return scheduler


VALUES = st.one_of(
    st.sampled_from([0.1, 0.2, 0.3, 0.5, 1.0]),  # ties
    st.floats(min_value=-5, max_value=5, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)


@st.composite
def studies(draw):
    max_t = draw(st.integers(2, 20))
    grace = draw(st.integers(1, max_t))
    rf = draw(st.sampled_from([2, 3, 4, 2.5]))
    mode = draw(st.sampled_from(["min", "max"]))
    n = draw(st.integers(1, 8))
    order = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=80))  # who reports next
    values = draw(st.lists(VALUES, min_size=len(order), max_size=len(order)))
    return max_t, grace, rf, mode, n, order, values


@settings(max_examples=300, deadline=None)
@given(studies())
def test_same_decisions_as_rays_asha_scheduler(study):
    """Configurations report asynchronously (interleaved, each at its own epoch); a stopped or
    finished configuration reports no more. Every decision before max_t must be Ray's."""
    max_t, grace, rf, mode, n, order, values = study
    ray_scheduler = ray_asha(max_t, grace, rf, mode)
    ours = AshaRungs(max_t=max_t, grace_period=grace, reduction_factor=rf, mode=mode)
    trials = [SimpleNamespace(trial_id=f"c{i}") for i in range(n)]
    for trial in trials:
        ray_scheduler.on_trial_add(None, trial)
    epoch = [0] * n
    done = [False] * n
    for i, value in zip(order, values, strict=True):
        if done[i]:
            continue
        epoch[i] += 1
        result = {"epoch": epoch[i], "val_loss": value}
        ray_stops = ray_scheduler.on_trial_result(None, trials[i], result) == TrialScheduler.STOP
        go_on = ours.decide(trials[i].trial_id, epoch[i], value)
        if epoch[i] >= max_t:
            assert ray_stops and go_on  # the end: Ray stops it, ours lets it complete
            done[i] = True
            continue
        assert go_on == (not ray_stops), (trials[i].trial_id, epoch[i], value)
        done[i] = ray_stops


@pytest.mark.parametrize(
    ("max_t", "grace", "rf", "rungs"),
    [
        (20, 1, 3, (1, 3, 9)),
        (20, 2, 3, (2, 6, 18)),
        (30, 2, 3, (2, 6, 18)),
        (20, 1, 2, (1, 2, 4, 8, 16)),
        (20, 3, 2, (3, 6, 12)),
        (9, 1, 3, (1, 3)),  # a milestone at max_t decides nothing: the run ends there
        (20, 1, 2.5, (1, 3, 7, 16)),  # milestones 2.5, 6.25, 15.6: the first epoch past each
    ],
)
def test_rung_epochs_follow_grace_period_and_reduction_factor(max_t, grace, rf, rungs):
    asha = AshaRungs(max_t=max_t, grace_period=grace, reduction_factor=rf, mode="min")
    assert asha.rungs == rungs
    assert [e for e in range(1, max_t + 1) if asha.is_rung(e)] == list(rungs)
    bracket = ray_asha(max_t, grace, rf, "min")._brackets[0]
    assert [m for m, _ in bracket._rungs] == asha.milestones


def test_a_bad_value_at_a_rung_is_stopped_and_a_good_one_goes_on():
    asha = AshaRungs(max_t=10, grace_period=2, reduction_factor=2, mode="min")
    assert asha.decide("a", 1, 0.1)  # before the first rung: no decision
    assert asha.decide("a", 2, 0.5)  # first at the rung: nothing to compare with
    assert asha.decide("b", 2, 0.4)  # better than the median of {0.5}
    assert not asha.decide("c", 2, 0.9)  # worse than the median of {0.5, 0.4}
    assert not asha.decide("c", 3, 0.0)  # stopped stays stopped
    assert asha.decide("b", 4, 0.3)  # the next rung (4): first there
    assert not asha.decide("a", 4, 0.35)  # worse than b's 0.3 at rung 4
    assert asha.decide("b", 10, 9.9)  # max_t: b ends there whatever its value


@pytest.mark.parametrize(("rf", "goes_on", "stops"), [(2, 4.0, 6.0), (4, 2.0, 4.0)])
def test_reduction_factor_sets_the_cutoff(rf, goes_on, stops):
    """Ten values recorded at a rung (losses 9 .. 0): a newcomer must beat the (1 - 1/rf)
    quantile of them, the median for rf 2, the best quarter for rf 4."""
    asha = AshaRungs(max_t=5, grace_period=1, reduction_factor=rf, mode="min")
    for i in range(10):
        assert asha.decide(f"c{i}", 1, float(9 - i))  # each better than all before it
    assert asha.decide("new-good", 1, goes_on)
    assert not asha.decide("new-bad", 1, stops)


def test_state_round_trip_and_history_rebuild_the_same_record():
    asha = AshaRungs(max_t=20, grace_period=1, reduction_factor=3, mode="max")
    items = [("a", 1, 0.5), ("b", 1, 0.7), ("c", 1, 0.2), ("b", 2, 0.8), ("b", 3, 0.8)]
    decisions = asha.decide_many(items)
    again = AshaRungs.from_state(asha.state())
    assert again.state() == asha.state()
    rebuilt = AshaRungs(max_t=20, grace_period=1, reduction_factor=3, mode="max")
    for item in items:
        rebuilt.record(*item)
    rebuilt.stopped.update(c for (c, _, _), go in zip(items, decisions, strict=True) if not go)
    assert rebuilt.state() == asha.state()
    assert again.decide_many([("d", 1, 0.1)]) == asha.decide_many([("d", 1, 0.1)])


def test_packs_share_one_rung_record_actor(ray_session):
    """Two packs asking the same named actor get the decisions one record would give."""
    import ray

    args = {"max_t": 10, "grace_period": 1, "reduction_factor": 2, "mode": "min"}
    actor = start_rung_record("test-asha-shared", AshaRungs(**args), history=[("old", 1, 0.05)])
    try:
        pack_a = ray.get_actor("test-asha-shared")
        pack_b = ray.get_actor("test-asha-shared")
        first = ray.get(pack_a.decide_many.remote([("a1", 1, 0.5), ("a2", 1, 0.1)]))
        second = ray.get(pack_b.decide_many.remote([("b1", 1, 0.9), ("b2", 1, 0.01)]))
        alone = AshaRungs(**args)
        alone.record("old", 1, 0.05)
        expected = alone.decide_many([("a1", 1, 0.5), ("a2", 1, 0.1), ("b1", 1, 0.9)])
        expected += alone.decide_many([("b2", 1, 0.01)])
        assert first + second == expected == [False, True, False, True]
        assert ray.get(pack_b.stopped.remote(["a1", "b2"])) == [True, False]
        assert ray.get(actor.state.remote()) == alone.state()
    finally:
        ray.kill(actor)
    assert RungRecord is not None
