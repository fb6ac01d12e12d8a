"""Trials that no node can hold: ``python -m sweep run STUDY.yaml --pending-timeout SECONDS``.

Ray Tune leaves a trial PENDING for ever when no node of the cluster has the CPUs and GPUs it
asks for. :class:`PendingWatch` compares a trial's request with the largest live node
(``ray.nodes()``), says so in the progress line, and after ``timeout_s`` stops the run the way
Ctrl-C does (trials stopped, tables flushed); the runner then raises :class:`PendingTimeout`.
The default timeout leaves an autoscaling cluster time to add a node.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence

from ray import tune

from model.errors import ConfigError

log = logging.getLogger(__name__)
_EPS = 1e-9


class PendingTimeout(ConfigError):
    """No node could hold a trial for the whole pending timeout; the message says how to go on."""


def shortfall(need: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why no node can hold a trial that needs ``need`` ({"CPU": 4, "GPU": 0.5}), or None."""
    need = {k: v for k, v in need.items() if v > 0}
    if any(all(node.get(k, 0) + _EPS >= v for k, v in need.items()) for node in nodes):
        return None
    if not nodes:
        return "waiting for resources: the cluster has no live node"
    for name, amount in need.items():
        largest = max(node.get(name, 0) for node in nodes)
        if largest + _EPS < amount:
            return (
                f"waiting for resources: a trial needs {amount:g} {name}, "
                f"the largest node has {largest:g}"
            )
    wanted = " and ".join(f"{v:g} {k}" for k, v in need.items())
    return f"waiting for resources: a trial needs {wanted} on one node, and no node has both"


def live_nodes() -> list[dict[str, float]]:
    """Total resources of every live node of the connected Ray cluster."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


class PendingWatch(tune.Callback):
    """Notices trials that no node can hold; stops the run after ``timeout_s`` (0: never)."""

    def __init__(
        self,
        need: Mapping[str, float],
        timeout_s: float,
        *,
        stream=None,
        poll_s: float = 2.0,
        nodes: Callable[[], list[dict[str, float]]] = live_nodes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.need, self.timeout_s, self.stream = dict(need), timeout_s, stream
        self.poll_s, self.nodes, self.clock = poll_s, nodes, clock
        self.note: str | None = None
        self.since: float | None = None
        self.timed_out = False
        self._polled = float("-inf")

    def __getstate__(self) -> dict:  # Tune pickles its run config; the stream stays behind
        return {**self.__dict__, "stream": None, "nodes": live_nodes, "clock": time.monotonic}

    def on_step_end(self, iteration, trials, **info) -> None:
        now = self.clock()
        if self.timed_out or now - self._polled < self.poll_s:
            return
        self._polled = now
        waiting = any(t.status == "PENDING" for t in trials)
        self.check(waiting, now)

    def check(self, waiting: bool, now: float) -> None:
        """Update the note; stop the run once it has stood for the whole timeout."""
        note = shortfall(self.need, self.nodes()) if waiting else None
        if note is None:
            self.note = self.since = None
            return
        if self.since is None:
            self.since = now
            if self.stream is not None:
                print(note, file=self.stream, flush=True)
        self.note = note
        if self.timeout_s > 0 and now - self.since >= self.timeout_s:
            self.timed_out = True
            log.info("%s for %gs: stopping the run", note, self.timeout_s)
            os.kill(os.getpid(), signal.SIGINT)  # Tune's own graceful stop, as for Ctrl-C

    def error(self, out: str) -> PendingTimeout:
        """The one-line error once the run was stopped."""
        return PendingTimeout(
            f"{self.note} for {self.timeout_s:g}s (--pending-timeout); stopped. Once a node "
            f"that can hold a trial is up: python -m sweep resume {out}"
        )
