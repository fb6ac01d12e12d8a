"""Where a study's results live: a local path, file://, s3:// or gs://, through pyarrow.fs.

Used by ``python -m sweep run STUDY.yaml --storage s3://bucket/prefix`` (and ``--results DIR``):
the Parquet tables, study.yaml and Ray's experiment directory all go through :func:`resolve`, so
the same URI works for the writer, for Ray Tune (``RunConfig(storage_path=path,
storage_filesystem=fs)``) and for the analysis reading the results back.

S3-compatible endpoints (MinIO, moto, Ceph): pyarrow's S3FileSystem does not read
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` itself (apache/arrow#49643), so :func:`resolve` reads
them and passes ``endpoint_override``; a ``?endpoint_override=http://host:port`` query in the URI
wins over the environment. Credentials are never part of a URI: they come from the usual AWS / GCP
chain (environment, profile, instance metadata).

Importing this module has no side effects and does not import ray.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

T = TypeVar("T")

# Everyday operations (a sweep writes its tables for hours): a few retries ride out a blip.
CONNECT_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 3
# Query parameters a storage URI may carry (credentials never: they belong to the environment).
S3_QUERY_KEYS = ("endpoint_override", "region", "scheme")
GCS_QUERY_KEYS = ("endpoint_override", "scheme", "project_id")
OBJECT_STORE_SCHEMES = ("s3", "gs")
# What to check, by the AWS error code in pyarrow's message.
AWS_ERROR_HINTS = {
    "NETWORK_CONNECTION": "check the endpoint: AWS_ENDPOINT_URL_S3 or ?endpoint_override=",
    "NO_SUCH_BUCKET": "create the bucket first",
    "ACCESS_DENIED": "check credentials: AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
    "INVALID_ACCESS_KEY_ID": "check credentials: AWS_PROFILE or AWS_ACCESS_KEY_ID",
    "SIGNATURE_DOES_NOT_MATCH": "check credentials: AWS_SECRET_ACCESS_KEY",
    "MISSING_AUTHENTICATION_TOKEN": "no credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID",
}


class StorageError(OSError):
    """A storage location is unreachable, unwritable or malformed; the message is one line."""


def is_uri(uri_or_path: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` strings (file, s3, gs), False for plain local paths."""
    return "://" in str(uri_or_path)


def is_local(uri_or_path: str | os.PathLike[str]) -> bool:
    """A plain path or a file:// URI (a file system this process can append to)."""
    return not is_uri(uri_or_path) or str(uri_or_path).startswith("file://")


def resolve(uri_or_path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path)`` for a local path, ``file://``, ``s3://`` or ``gs://`` URI.

    ``path`` is what the filesystem expects: an absolute path locally, ``bucket/key`` on object
    stores (the form Ray's ``RunConfig(storage_filesystem=...)`` wants for ``storage_path``).
    """
    return _resolve(str(uri_or_path), CONNECT_TIMEOUT_S, MAX_ATTEMPTS)


def _resolve(uri: str, connect_timeout_s: float, max_attempts: int) -> tuple[pafs.FileSystem, str]:
    if not is_uri(uri):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"{uri}: file:// URIs name a local path (file:///abs/path)")
        return pafs.LocalFileSystem(), os.path.abspath(unquote(parts.path))
    if scheme not in OBJECT_STORE_SCHEMES:
        raise StorageError(f"{uri}: unsupported storage scheme {scheme!r} (valid: file, s3, gs)")
    if not parts.netloc:
        raise StorageError(f"{uri}: no bucket name (expected {scheme}://bucket/prefix)")
    if "@" in parts.netloc:
        raise StorageError(f"{scheme}://...: credentials do not belong in a storage URI")
    path = (parts.netloc + "/" + unquote(parts.path).strip("/")).rstrip("/")
    query = _query(uri, parts.query, S3_QUERY_KEYS if scheme == "s3" else GCS_QUERY_KEYS)
    options = tuple(sorted(query.items()))
    if scheme == "s3":
        env = _environment(AWS_ENV_PREFIXES)
        return _s3_filesystem(parts.netloc, options, connect_timeout_s, max_attempts, env), path
    env = _environment(GCP_ENV_PREFIXES)
    return _gcs_filesystem(options, connect_timeout_s * max_attempts * 3, env), path


# A filesystem object is built once per bucket, options and credential environment, and shared:
# building pyarrow's S3FileSystem takes 13-18 ms (its AWS client; without a region it also asks
# AWS where the bucket lives), and a sweep resolves a URI for every table it rewrites. The
# environment the SDKs read credentials and endpoints from is part of the key, so a changed
# variable builds a new one. pyarrow's filesystems are safe to share between threads, and
# copying one (Tune deep-copies its storage settings, filesystem included, twice for every
# trial it creates) gives the same object back (see _SharedCopies).
AWS_ENV_PREFIXES = ("AWS_",)
GCP_ENV_PREFIXES = ("GOOGLE_", "CLOUDSDK_", "GCE_", "STORAGE_EMULATOR_HOST")
FILESYSTEM_CACHE_SIZE = 16


def _environment(prefixes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(prefixes)))


class _SharedCopies:
    """A filesystem whose copies are itself. A copy of pyarrow's S3FileSystem is a new AWS
    client: Tune deep-copies a run's storage settings for each trial it creates, which cost the
    driver 1.14 s for 51 trials on S3 (22 ms a trial, measured against moto's server on
    loopback), growing with the study. Pickling (to a trial's worker) is pyarrow's own."""

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


class SharedS3FileSystem(_SharedCopies, pafs.S3FileSystem):
    pass


class SharedGcsFileSystem(_SharedCopies, pafs.GcsFileSystem):
    pass


def _query(uri: str, query: str, valid: tuple[str, ...]) -> dict[str, str]:
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise StorageError(
            f"{uri}: unknown query parameter {unknown[0]!r} (valid: {', '.join(valid)})"
        )
    return options


def s3_endpoint_from_env() -> str | None:
    """The S3 endpoint the AWS CLI/boto3 would use: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name]
    return None


@functools.lru_cache(maxsize=FILESYSTEM_CACHE_SIZE)
def _s3_filesystem(
    bucket: str,
    options: tuple[tuple[str, str], ...],
    connect_timeout_s: float,
    max_attempts: int,
    env: tuple[tuple[str, str], ...],  # the key's part only: the SDK reads os.environ itself
) -> SharedS3FileSystem:
    query = dict(options)
    endpoint = query.get("endpoint_override") or s3_endpoint_from_env()
    region = (
        query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    )
    if region is None and endpoint is None:
        # What FileSystem.from_uri does: ask AWS where the bucket lives (one HEAD request).
        try:
            region = pafs.resolve_s3_region(bucket)
        except OSError as exc:
            raise StorageError(
                f"s3://{bucket}: cannot find the bucket's region: {_brief(exc)}"
            ) from None
    return SharedS3FileSystem(
        region=region or "us-east-1",
        endpoint_override=endpoint,
        scheme=query.get("scheme"),
        connect_timeout=connect_timeout_s,
        request_timeout=max(connect_timeout_s, 30.0),
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts),
        # Defer the upload until close: a small object becomes one PutObject, so a write is either
        # all there or not there (large ones are a multipart upload, also atomic on completion).
        allow_delayed_open=True,
    )


@functools.lru_cache(maxsize=FILESYSTEM_CACHE_SIZE)
def _gcs_filesystem(
    options: tuple[tuple[str, str], ...],
    retry_limit_s: float,
    env: tuple[tuple[str, str], ...],  # the key's part only: the SDK reads os.environ itself
) -> SharedGcsFileSystem:
    query = dict(options)
    return SharedGcsFileSystem(
        endpoint_override=query.get("endpoint_override"),
        scheme=query.get("scheme"),
        project_id=query.get("project_id"),
        # GCS's default is to keep retrying for 15 minutes; fail within seconds instead.
        retry_time_limit=timedelta(seconds=retry_limit_s),
    )


def join(uri: str | os.PathLike[str], *parts: str) -> str:
    """Append path parts to a path or URI, keeping a URI's scheme and query (e.g. the endpoint)."""
    uri = str(uri)
    if not is_uri(uri):
        return os.path.join(uri, *parts)
    split = urlsplit(uri)
    path = "/".join([split.path.rstrip("/"), *(p.strip("/") for p in parts)])
    return urlunsplit((split.scheme, split.netloc, path, split.query, ""))


def makedirs(uri: str | os.PathLike[str]) -> None:
    """Create a directory and its parents (object stores: marker objects; the bucket must exist)."""
    fs, path = resolve(uri)
    _call(uri, lambda: fs.create_dir(path, recursive=True))


def exists(uri: str | os.PathLike[str]) -> bool:
    """True if a file or directory exists at ``uri``."""
    fs, path = resolve(uri)
    info = _call(uri, lambda: fs.get_file_info(path))
    return info.type != pafs.FileType.NotFound


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    """The whole content of one file; FileNotFoundError if it is missing."""
    fs, path = resolve(uri)

    def read() -> bytes:
        with fs.open_input_stream(path) as stream:
            return stream.readall()

    return _call(uri, read)


def write_bytes_atomic(uri: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file at ``uri`` with ``data`` so a reader sees the old or the new content, whole.

    Local: a temporary file in the same directory, fsync, then os.replace. Object stores: one
    upload, which the store makes visible only once complete.
    """
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        _call(uri, lambda: _write_local_atomic(path, bytes(data)))
        return

    def upload() -> None:
        with fs.open_output_stream(path) as out:
            out.write(data)

    _call(uri, upload)


def _write_local_atomic(path: str, data: bytes) -> None:
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        # mkstemp makes the file 0600; give it the mode a plain open() would (shared NFS readers).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def write_parquet_atomic(table: pa.Table, uri: str | os.PathLike[str]) -> None:
    """Write ``table`` as one Parquet file at ``uri``, replacing any previous one atomically."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)  # serialised in memory first: nothing partial ever reaches storage
    write_bytes_atomic(uri, sink.getvalue().to_pybytes())


def read_parquet(uri: str | os.PathLike[str]) -> pa.Table:
    """Read one Parquet file from a path or URI."""
    fs, path = resolve(uri)
    return _call(uri, lambda: pq.read_table(path, filesystem=fs))


def check_reachable(uri: str | os.PathLike[str], timeout_s: float = 5.0) -> None:
    """Raise StorageError (one line) unless ``uri`` can be written within about ``timeout_s``.

    Creates the directory, writes and deletes a small probe object under it. Runs before Ray
    starts so a bad endpoint, missing bucket or missing credentials fail fast instead of
    hanging in retries.
    """
    uri = str(uri)

    def probe_write() -> None:
        # Resolving may itself talk to the network (the bucket's region), so it runs under the
        # deadline too.
        fs, path = _resolve(uri, connect_timeout_s=max(0.5, timeout_s / 2), max_attempts=1)
        probe = f"{path}/.mlp-sweep-probe-{uuid.uuid4().hex}"
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as out:
            out.write(b"probe")
        fs.delete_file(probe)

    try:
        _with_deadline(probe_write, timeout_s)
    except TimeoutError:
        raise StorageError(
            f"storage {uri} is unreachable: no answer within {timeout_s:g}s "
            f"(endpoint {_endpoint(uri)})"
        ) from None
    except StorageError:
        raise
    except OSError as exc:
        message = f"storage {uri} is not writable: {_brief(exc)}"
        hint = next((h for code, h in AWS_ERROR_HINTS.items() if code in str(exc)), None)
        raise StorageError(f"{message} ({hint})" if hint else message) from None


def _with_deadline(func: Callable[[], T], timeout_s: float) -> T:
    """Run ``func`` in a daemon thread; TimeoutError if it has not returned after ``timeout_s``.

    pyarrow's S3 request timeout is ignored on Linux, so a server that accepts the connection
    and never answers would otherwise block the caller indefinitely.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="storage-check", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout_s}s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _call(uri: str | os.PathLike[str], func: Callable[[], T]) -> T:
    """Run one filesystem operation; pyarrow's errors become one-line StorageErrors naming uri."""
    try:
        return func()
    except (FileNotFoundError, StorageError):
        raise
    except OSError as exc:
        raise StorageError(f"{uri}: {_brief(exc)}") from None


def _endpoint(uri: str) -> str:
    """The endpoint a URI talks to, for error messages."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        override = dict(parse_qsl(parts.query)).get("endpoint_override") or s3_endpoint_from_env()
        return override or "AWS S3"
    if parts.scheme == "gs":
        return dict(parse_qsl(parts.query)).get("endpoint_override") or "Google Cloud Storage"
    return "local filesystem"


def _brief(exc: BaseException) -> str:
    """First line of a pyarrow/AWS error without the request id noise."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith("When ") and ": " in text:  # "When uploading object with key ...: "
        text = text.split(": ", 1)[1]
    return text.split(" (Request ID:")[0].split("; Details:")[0]
