"""One writer per results directory: ``python -m sweep run|resume`` hold this lock while they run.

The lock is an OS file lock (``filelock``: flock on POSIX) on ``journal.lock`` beside the
driver's journal, so it is released by the kernel when its holder dies, even by SIGKILL. The
file also names its holder (host, pid, start time): a second run is refused with that name, and
a run that finds the name of a holder that no longer holds the lock takes over with a note.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import filelock

from model.errors import ConfigError

log = logging.getLogger(__name__)


class ResultsInUseError(ConfigError):
    """Another run holds the results directory; the message names it."""


def holder_info() -> dict:
    """Who this process is: host, pid and start time."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return {"host": platform.node(), "pid": os.getpid(), "started": now}


def describe(info: dict) -> str:
    """'pid 123 on host h (started 2026-...)'."""
    return f"pid {info.get('pid')} on host {info.get('host')} (started {info.get('started')})"


@contextmanager
def results_lock(path: str, results: str) -> Iterator[dict | None]:
    """Hold the lock at ``path`` for the results at ``results``; yields the info of a dead
    holder that was taken over, else None. Raises ResultsInUseError when another run holds it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    lock = filelock.FileLock(path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = _read(path)
        who = describe(holder) if holder else "another process"
        raise ResultsInUseError(
            f"results: {results} is in use by {who}; wait for that run to end or stop it"
        ) from None
    try:
        previous = _read(path)
        if previous:
            log.warning(
                "results: took over the lock of %s, which is no longer running", describe(previous)
            )
        _write(path, json.dumps(holder_info()))
        yield previous
    finally:
        _write(path, "")  # an empty lock file: released cleanly
        lock.release()


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def _write(path: str, text: str) -> None:
    with open(path, "r+", encoding="utf-8") as f:
        f.truncate(0)
        f.write(text)
        f.flush()
