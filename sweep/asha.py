"""ASHA per configuration, across packs: one rung record for the whole study.

Ray's ASHAScheduler stops whole Tune trials, and a Tune trial now trains a pack of
configurations. So the packs decide per configuration themselves, against one shared record of
the values seen at each rung (a Ray actor, ``RungRecord``), asking at rung epochs only. The
decisions are Ray 2.60's: ``AshaRungs`` follows ``ray.tune.schedulers.async_hyperband`` (one
bracket, ``time_attr`` the epoch, ``stop_last_trials`` true) line by line, and
tests/test_asha.py feeds the same sequences to both. Used by ``python -m sweep run`` for studies
with ``scheduler.type: asha``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import ray


class AshaRungs:
    """The rungs of asynchronous successive halving and the values recorded at each."""

    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: float, mode: str):
        self.max_t = max_t
        self.grace_period = grace_period
        self.rf = reduction_factor
        self.mode = mode
        self._sign = -1.0 if mode == "min" else 1.0  # Ray's metric_op: larger is better
        # As Ray's _Bracket(min_t=grace_period, max_t, reduction_factor, s=0): descending.
        count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)
        self.milestones = [grace_period * reduction_factor**k for k in reversed(range(count))]
        self.recorded: dict[float, dict[str, float]] = {m: {} for m in self.milestones}
        self.stopped: set[str] = set()

    @property
    def rungs(self) -> tuple[int, ...]:
        """The epochs at which a configuration can be stopped, ascending (the first epoch at or
        past each milestone, before max_t: at max_t a configuration ends anyway)."""
        epochs = {math.ceil(m) for m in self.milestones}
        return tuple(sorted(e for e in epochs if e < self.max_t))

    def is_rung(self, epoch: int) -> bool:
        return epoch in self.rungs

    def _cutoff(self, recorded: dict[str, float]) -> float | None:
        if not recorded:
            return None
        with warnings.catch_warnings():  # all NaN so far: the cutoff is NaN, nothing is stopped
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100)

    def decide(self, config_id: str, epoch: int, value: float | None) -> bool:
        """True: the configuration goes on; False: stop it. Records value as Ray does."""
        if config_id in self.stopped:
            return False  # decided before (a retried pack reaching the rung again)
        if epoch >= self.max_t:
            return True  # Ray stops it here too: it has run all its epochs
        reward = None if value is None else self._sign * value
        for milestone in self.milestones:
            recorded = self.recorded[milestone]
            if epoch < milestone or config_id in recorded:
                continue
            cutoff = self._cutoff(recorded)
            go_on = not (cutoff is not None and reward is not None and reward < cutoff)
            if reward is not None:
                recorded[config_id] = reward
            if not go_on:
                self.stopped.add(config_id)
            return go_on
        return True

    def decide_many(self, items: Iterable[tuple[str, int, float | None]]) -> list[bool]:
        """decide() for each (config_id, epoch, value), in order (a pack's one round trip)."""
        return [self.decide(config_id, epoch, value) for config_id, epoch, value in items]

    def record(self, config_id: str, epoch: int, value: float | None) -> None:
        """Record a value reported in an earlier run (resume), deciding nothing."""
        stopped = config_id in self.stopped
        self.stopped.discard(config_id)
        self.decide(config_id, epoch, value)
        self.stopped.discard(config_id)
        if stopped:
            self.stopped.add(config_id)

    def state(self) -> dict:
        """Plain, picklable state; from_state() rebuilds the record."""
        return {
            "args": {
                "max_t": self.max_t,
                "grace_period": self.grace_period,
                "reduction_factor": self.rf,
                "mode": self.mode,
            },
            "recorded": [dict(self.recorded[m]) for m in self.milestones],
            "stopped": sorted(self.stopped),
        }

    @classmethod
    def from_state(cls, state: dict) -> AshaRungs:
        rungs = cls(**state["args"])
        for milestone, values in zip(rungs.milestones, state["recorded"], strict=True):
            rungs.recorded[milestone] = dict(values)
        rungs.stopped = set(state["stopped"])
        return rungs


@ray.remote(num_cpus=0)
class RungRecord:
    """The study's one AshaRungs, shared by every pack (an actor serialises the decisions)."""

    def __init__(self, state: dict) -> None:
        self.rungs = AshaRungs.from_state(state)

    def decide_many(self, items: Sequence[tuple[str, int, float | None]]) -> list[bool]:
        return self.rungs.decide_many(items)

    def stopped(self, config_ids: Sequence[str]) -> list[bool]:
        return [config_id in self.rungs.stopped for config_id in config_ids]

    def state(self) -> dict:
        return self.rungs.state()


def start_rung_record(
    name: str,
    rungs: AshaRungs,
    *,
    history: Iterable[tuple[str, int, float | None]] = (),
    stopped: Iterable[str] = (),
):
    """Start the study's named RungRecord actor, holding history (the rung values an earlier
    run reported) and the configurations it stopped. The actor is owned by the driver: it ends
    with the run (the runner kills it at the end)."""
    for config_id, epoch, value in history:
        rungs.record(config_id, epoch, value)
    rungs.stopped.update(stopped)
    return RungRecord.options(name=name).remote(rungs.state())
