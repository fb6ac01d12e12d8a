"""SIGTERM and SIGHUP stop a sweep the way Ctrl-C does: ``python -m sweep run|resume``.

``timeout``, Kubernetes, Slurm and ``ray job stop`` send SIGTERM; a closed terminal sends
SIGHUP. Unhandled, Ray's core worker prints a C++ stack dump and the driver may abort. The CLI
calls :func:`arm` at start, and ``sweep.runner`` calls :func:`rearm` after ``ray.init`` (which
installs handlers of its own). Each signal is passed on to whatever handles SIGINT at that
moment: Ray Tune's handler during ``Tuner.fit`` (trials stopped, experiment state saved), else
Python's, which raises KeyboardInterrupt. :func:`exit_code` then gives 128 + the signal.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
# After a stop signal the sweep has this long to stop on its own. A signal sent to the whole
# process group (`timeout`, Slurm, `ray job stop`) also ends the local Ray's own processes, and
# a driver whose Ray is gone can wait on it for a minute; then the cleanups run and it exits.
GRACE_S = float(os.environ.get("MLP_SWEEP_STOP_GRACE_S", "10"))
_state: dict[str, int | bool | None] = {"received": None, "armed": False}
_cleanups: list[Callable[[], None]] = []
_cancel = threading.Event()  # set by disarm(): no forced exit after all


def arm() -> None:
    """Install the stop handlers (main thread only; elsewhere signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)
    _state["armed"] = True
    _cancel.clear()


def rearm() -> None:
    """Put the handlers back if the CLI armed them (call after anything that replaces them)."""
    if _state["armed"]:
        arm()


def disarm() -> None:
    """Restore the default handlers, forget any signal received, cancel a forced exit (tests)."""
    _cancel.set()
    _cleanups.clear()
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
    _state.update(received=None, armed=False)


def at_forced_exit(cleanup: Callable[[], None]) -> None:
    """Run ``cleanup`` (flush tables, say how to resume) if the grace period runs out."""
    _cleanups.append(cleanup)


def received() -> int | None:
    """The first stop signal received, or None."""
    return _state["received"]  # type: ignore[return-value]


def exit_code(default: int) -> int:
    """128 + the stop signal received (143 for SIGTERM, 129 for SIGHUP), else ``default``."""
    signum = received()
    return 128 + signum if signum else default


def describe() -> str:
    """'SIGTERM' / 'SIGHUP' for the signal received, else 'Ctrl-C'."""
    signum = received()
    return signal.Signals(signum).name if signum else "Ctrl-C"


def _stop(signum: int, frame) -> None:
    if _state["received"] is None:
        _state["received"] = signum
        threading.Thread(target=_force_exit, args=(signum,), daemon=True).start()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)  # Tune's: stop the experiment; Python's: KeyboardInterrupt
    else:
        raise KeyboardInterrupt


def _force_exit(signum: int) -> None:
    """Still running GRACE_S after the signal: run the cleanups and exit with 128 + signum."""
    if _cancel.wait(GRACE_S):
        return
    for cleanup in reversed(_cleanups):
        try:
            cleanup()
        except Exception:  # noqa: BLE001 - exiting anyway; each cleanup is best effort
            pass
    sys.stderr.flush()
    os._exit(128 + signum)


@contextmanager
def ray_out_of_reach() -> Iterator[None]:
    """While a local Ray starts, put its processes (GCS, raylet and, through the raylet, the
    trial workers) in process groups of their own, so that a stop signal sent to the driver's
    group (``timeout``, ``ray job stop``, a closed terminal) reaches the driver only, which then
    stops the trials through Ray. Ray already keeps Ctrl-C away from them the same way."""
    from ray._private import services

    original = services.ConsolePopen

    class _OwnGroupPopen(original):
        def __init__(self, *args, **kwargs):
            if os.name == "posix":
                kwargs.setdefault("process_group", 0)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = _OwnGroupPopen
    try:
        yield
    finally:
        services.ConsolePopen = original


def exit_process(code: int) -> NoReturn:
    """End a command-line run with ``code`` without tearing the interpreter down.

    Everything a normal exit does for the program still happens: the atexit handlers run
    (Ray's, logging's) and the output is flushed. Only the final teardown of every module
    (torch, Ray, pandas) is skipped, which takes 1 to 1.5 s on a 2-core machine and writes
    nothing. While another (non-daemon) thread still runs, Python's own exit waits for it.
    """
    current = threading.current_thread()
    if any(t is not current and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone (a closed pipe): nothing left to save
            pass
    os._exit(code)
