"""sweep.storage and sweep.cluster against real endpoints on loopback: moto's S3 server, sockets."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from conftest import S3_BUCKET

from sweep import storage
from sweep.cluster import ClusterAddressError, check_address
from sweep.storage import StorageError


@pytest.fixture
def s3_uri(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh prefix in the test bucket, with the endpoint in the URI's query."""
    return f"s3://{S3_BUCKET}/{request.node.name}?endpoint_override={s3_endpoint}"


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts TCP connections (kernel backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def small_table() -> pa.Table:
    return pa.table({"trial_id": ["a", "b"], "lr": [0.1, 0.01], "epochs_run": [3, 5]})


def test_parquet_round_trip_through_s3(s3_uri: str, s3_endpoint: str) -> None:
    uri = storage.join(s3_uri, "study", "trials.parquet")
    storage.write_parquet_atomic(small_table(), uri)
    assert storage.read_parquet(uri).equals(small_table())
    replacement = small_table().slice(0, 1)
    storage.write_parquet_atomic(replacement, uri)
    assert storage.read_parquet(uri).equals(replacement)
    # An independent client sees the object where the URI says it is.
    boto3 = pytest.importorskip("boto3")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    head = client.head_object(
        Bucket=S3_BUCKET, Key="test_parquet_round_trip_through_s3/study/trials.parquet"
    )
    assert head["ContentLength"] > 0


def test_s3_endpoint_from_environment(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    uri = f"s3://{S3_BUCKET}/from-env/run.json"
    storage.write_bytes_atomic(uri, b'{"ok": true}')
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b'{"ok": true}'
    fs, path = storage.resolve(uri)
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == f"{S3_BUCKET}/from-env/run.json"


def test_query_endpoint_wins_over_environment(
    s3_uri: str, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    storage.write_bytes_atomic(storage.join(s3_uri, "x.txt"), b"x")
    assert storage.read_bytes(storage.join(s3_uri, "x.txt")) == b"x"


def test_one_filesystem_per_bucket_options_and_environment(
    s3_endpoint: str, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built once and shared (building pyarrow's S3FileSystem takes 13-18 ms, and a sweep
    resolves a URI for every table it rewrites); another option or a changed AWS variable
    builds a new one, so nothing stale is used."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    uri = f"s3://{S3_BUCKET}/shared"
    fs, _ = storage.resolve(storage.join(uri, "trials.parquet"))
    assert storage.resolve(storage.join(uri, "epochs.parquet"))[0] is fs
    assert storage.resolve(uri + "?region=eu-west-1")[0] is not fs
    assert storage.resolve(f"s3://{S3_BUCKET}x/shared")[0] is not fs  # another bucket
    storage.write_bytes_atomic(storage.join(uri, "x.txt"), b"x")

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{closed_port}")
    assert storage.resolve(uri)[0] is not fs
    with pytest.raises(StorageError, match="NETWORK_CONNECTION"):  # the new endpoint is used
        storage.read_bytes(storage.join(uri, "x.txt"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    assert storage.resolve(uri)[0] is fs  # the first one again
    assert storage.read_bytes(storage.join(uri, "x.txt")) == b"x"

    gcs = "gs://b/x?endpoint_override=127.0.0.1:1&scheme=http"
    gcs_fs = storage.resolve(gcs)[0]
    assert storage.resolve(gcs.replace("/x?", "/y/z?"))[0] is gcs_fs
    assert storage.resolve(gcs.replace(":1&", ":2&"))[0] is not gcs_fs
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nowhere.json")
    assert storage.resolve(gcs)[0] is not gcs_fs


def test_tunes_per_trial_copies_of_its_storage_share_the_filesystem(s3_uri: str) -> None:
    """Tune deep-copies its StorageContext, filesystem included, for every trial it creates; a
    copy of pyarrow's S3FileSystem is a new AWS client (11-22 ms each), so ours copy to
    themselves. Pickled (to a trial's worker), it is pyarrow's own filesystem again."""
    import copy
    import pickle

    from ray.train._internal.storage import StorageContext

    fs, path = storage.resolve(s3_uri)
    assert copy.copy(fs) is fs and copy.deepcopy(fs) is fs
    context = StorageContext(storage_path=path, experiment_dir_name="e", storage_filesystem=fs)
    assert copy.deepcopy(context).storage_filesystem is fs
    shipped = pickle.loads(pickle.dumps(fs))
    assert type(shipped) is pafs.S3FileSystem and shipped.equals(fs)
    gcs = storage.resolve("gs://b/x?endpoint_override=127.0.0.1:1&scheme=http")[0]
    assert copy.deepcopy(gcs) is gcs and type(pickle.loads(pickle.dumps(gcs))) is pafs.GcsFileSystem


def test_missing_object_is_file_not_found(s3_uri: str, tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(s3_uri, "nothing.parquet"))
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(tmp_path / "nothing.parquet")
    assert not storage.exists(storage.join(s3_uri, "nothing.parquet"))


def test_local_atomic_write_leaves_only_the_file(tmp_path) -> None:
    target = tmp_path / "study" / "trials.parquet"
    storage.write_parquet_atomic(small_table(), target)
    storage.write_parquet_atomic(small_table(), f"file://{target}")
    assert os.listdir(target.parent) == ["trials.parquet"]
    assert storage.read_parquet(target).equals(small_table())
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_failed_local_write_keeps_old_content_and_no_temp_file(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run.json"
    storage.write_bytes_atomic(target, b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError, match="No space left"):
        storage.write_bytes_atomic(target, b"new")
    assert os.listdir(tmp_path) == ["run.json"]
    assert target.read_bytes() == b"old"


def test_resolve_local_and_file_uri(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fs, path = storage.resolve("results")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == str(tmp_path / "results")
    assert storage.resolve(f"file://{tmp_path}/a%20b")[1] == f"{tmp_path}/a b"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("hdfs://namenode/x", "unsupported storage scheme 'hdfs'"),
        ("s3:///prefix", "no bucket name"),
        ("s3://bucket/p?access_key=AKIA", "unknown query parameter 'access_key'"),
        ("s3://key:secret@bucket/p", "credentials do not belong"),
        ("file://otherhost/x", "local path"),
    ],
)
def test_malformed_uri_is_one_line_storage_error(uri: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as info:
        storage.resolve(uri)
    assert "\n" not in str(info.value)


def test_join_keeps_scheme_and_query() -> None:
    joined = storage.join("s3://b/pre/?endpoint_override=http://h:1", "name", "trials.parquet")
    assert joined == "s3://b/pre/name/trials.parquet?endpoint_override=http://h:1"
    assert storage.join("/r", "name") == "/r/name"


def test_makedirs_and_exists_local(tmp_path) -> None:
    target = tmp_path / "a" / "b"
    storage.makedirs(target)
    assert storage.exists(target)


def test_check_reachable_accepts_writable_storage(s3_uri: str, tmp_path) -> None:
    storage.check_reachable(s3_uri)
    storage.check_reachable(tmp_path / "new" / "results")
    assert os.listdir(tmp_path / "new" / "results") == []  # the probe is gone


@pytest.mark.timeout(60)
def test_check_reachable_missing_bucket(s3_endpoint: str) -> None:
    with pytest.raises(StorageError, match="bucket does not exist") as info:
        storage.check_reachable(f"s3://no-such-bucket/p?endpoint_override={s3_endpoint}")
    assert "\n" not in str(info.value)


@pytest.mark.timeout(60)
def test_check_reachable_refused_endpoint(closed_port: int) -> None:
    uri = f"s3://{S3_BUCKET}/p?endpoint_override=http://127.0.0.1:{closed_port}"
    with pytest.raises(StorageError, match="not writable.*connect") as info:
        storage.check_reachable(uri, timeout_s=5)
    assert "\n" not in str(info.value)


@pytest.mark.timeout(60)
def test_check_reachable_silent_endpoint(silent_server: int, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent_server}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(StorageError, match="no answer within 1s"):
        storage.check_reachable(f"s3://{S3_BUCKET}/p", timeout_s=1)


def test_check_reachable_unwritable_local_path(tmp_path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(StorageError, match="not writable") as info:
        storage.check_reachable(tmp_path / "a-file" / "results")
    assert "\n" not in str(info.value)


@pytest.mark.timeout(60)
def test_check_address_refused(closed_port: int) -> None:
    with pytest.raises(ClusterAddressError, match=f"cannot connect to 127.0.0.1:{closed_port}"):
        check_address(f"127.0.0.1:{closed_port}", timeout_s=5)
    with pytest.raises(ClusterAddressError, match="cannot connect"):
        check_address(f"ray://127.0.0.1:{closed_port}", timeout_s=5)


def test_check_address_auto_uses_ray_address(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{closed_port}")
    with pytest.raises(ClusterAddressError, match="cannot connect"):
        check_address("auto", timeout_s=5)


def test_check_address_listening_port_passes(silent_server: int) -> None:
    check_address(f"127.0.0.1:{silent_server}", timeout_s=5)
    check_address(f"ray://127.0.0.1:{silent_server}", timeout_s=5)
    check_address(None)
    check_address("local")


@pytest.mark.parametrize("address", ["http://127.0.0.1:8265", "127.0.0.1:notaport", ":6379"])
def test_check_address_malformed(address: str) -> None:
    with pytest.raises(ClusterAddressError, match="Ray address"):
        check_address(address)
