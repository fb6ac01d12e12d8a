"""Joining an existing Ray cluster: ``python -m sweep run STUDY.yaml --address HOST:PORT``.

:func:`check_address` answers "is anything listening there?" with a plain TCP connect before
``ray.init`` is called, because ``ray.init`` on a dead address keeps retrying for a long time.
No ray import here.
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit

RAY_CLIENT_SCHEME = "ray://"
DEFAULT_GCS_PORT = 6379
DEFAULT_CLIENT_PORT = 10001


class ClusterAddressError(ConnectionError):
    """A Ray cluster address is malformed or nothing answers there; the message is one line."""


def check_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Raise ClusterAddressError unless a TCP connection to the Ray address opens in ``timeout_s``.

    ``address`` is what ``ray.init`` takes: ``host:port`` (the GCS), ``ray://host:port`` (Ray
    Client), ``auto`` (RAY_ADDRESS, else the cluster ``ray start`` last recorded on this machine),
    or None / ``local`` (a fresh local Ray: nothing to check).
    """
    target = _target(address)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except TimeoutError:
        raise ClusterAddressError(
            f"Ray address {address}: no answer from {host}:{port} within {timeout_s:g}s"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterAddressError(
            f"Ray address {address}: cannot connect to {host}:{port} ({reason}); "
            "is the head node up (ray start --head / ray up)?"
        ) from None


def _target(address: str | None) -> tuple[str, int] | None:
    """(host, port) to probe for ``address``, or None when there is nothing to probe."""
    if address is None or address == "local":
        return None
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or _recorded_address()
        if not address or address == "auto":
            return None  # ray.init("auto") then looks for local Ray processes and fails fast
    if address.startswith(RAY_CLIENT_SCHEME):
        return _host_port(address, address[len(RAY_CLIENT_SCHEME) :], DEFAULT_CLIENT_PORT)
    if "://" in address:
        raise ClusterAddressError(
            f"Ray address {address}: expected host:port or ray://host:port "
            "(http://...:8265 is the job-submission address, for `ray job submit`)"
        )
    return _host_port(address, address, DEFAULT_GCS_PORT)


def _host_port(address: str, netloc: str, default_port: int) -> tuple[str, int]:
    try:
        split = urlsplit("//" + netloc.rstrip("/"))
        host, port = split.hostname, split.port or default_port
    except ValueError:
        host = None
    if not host:
        raise ClusterAddressError(f"Ray address {address}: expected host:port")
    return host, port


def _recorded_address() -> str | None:
    """The GCS address the last `ray start` on this machine wrote (Ray's ray_current_cluster)."""
    if "RAY_TMPDIR" in os.environ:
        tmp = os.environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        tmp = os.environ["TMPDIR"]
    else:
        tmp = "/tmp"
    try:
        with open(os.path.join(tmp, "ray", "ray_current_cluster")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def resolve_address(address: str | None) -> str | None:
    """The cluster to join, as Ray's own tools pick it: ``--address`` wins, else ``RAY_ADDRESS``;
    None (or ``local``) means a private local Ray on 127.0.0.1.

    A cluster that ``ray start`` left on this machine is never joined unless asked for
    (``--address auto`` or ``RAY_ADDRESS=auto``).
    """
    chosen = address or os.environ.get("RAY_ADDRESS", "").strip() or None
    return None if chosen in (None, "local") else chosen
