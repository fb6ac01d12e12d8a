"""Data sources -> fixed train/val/test splits: ``Arrays`` (NumPy), or a ``Dataset`` of tensors.

    python -m model train --data digits      # scikit-learn's bundled copy, offline (the default)
    python -m model train --data mnist       # downloaded once into ~/.cache/mlp-sweep/mnist/

A source is a built-in name (``digits``, ``mnist``, ``fashion-mnist``) or a path: ``.csv`` /
``.parquet`` (feature columns + the column named by ``DataSpec.target``), ``.npz`` (Keras
``mnist.npz`` layout or ``X, y``) or a directory of MNIST-style IDX files. Splits depend on
``DataSpec.split_seed`` alone; scaling is fitted on the training split. MNIST and Fashion-MNIST
are verified against the SHA-256 table ``REMOTE_SOURCES``; offline, put their four ``.gz`` files in
``<cache dir>/<name>/``.

Loading imports neither torch nor sklearn (together about 2 s of a sweep's start-up, whose driver
only needs the arrays): ``load_arrays`` gives NumPy splits, ``Arrays.tensors()`` or
``load_dataset`` the torch ``Dataset``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import math
import os
import shutil
import struct
import urllib.request
import uuid
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from model.errors import ConfigError, DataError
from model.spec import (  # noqa: F401 - re-exported: DataSpec is plain data (no torch), in model.spec
    BUILTIN_SOURCES,
    SCALES,
    TASKS,
    DataSpec,
    data_field_error,
)
from model.split import holdout

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CACHE_ENV = "MLP_SWEEP_CACHE"
DOWNLOAD_TIMEOUT_S = 5.0  # per socket operation: an offline machine fails within seconds
LOCK_TIMEOUT_S = 900.0  # how long a trial waits for another process's download


# --------------------------------------------------------------------------------------------
# Public types


SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


class _Splits:
    """What the splits' shapes say, alike for NumPy arrays and tensors."""

    @property
    def n_features(self) -> int:
        """Width of one input row."""
        return int(self.x_train.shape[1])

    @property
    def n_outputs(self) -> int:
        """Number of classes, or of regression target dimensions."""
        if self.task == "classification":
            return len(self.classes)
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])

    @property
    def n_train(self) -> int:
        """Rows in the training split."""
        return int(self.x_train.shape[0])


@dataclass(frozen=True, eq=False)
class Dataset(_Splits):
    """Fixed splits as tensors: float32 features; int64 labels or float32 regression targets."""

    name: str
    task: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...] = ()  # label names in index order (classification); () otherwise


@dataclass(frozen=True, eq=False)
class Arrays(_Splits):
    """The same splits as contiguous NumPy arrays, before torch: what a sweep's driver holds and
    sends its trials."""

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...] = ()

    def tensors(self) -> Dataset:
        """The splits as tensors sharing the arrays' memory (imports torch)."""
        import torch

        with warnings.catch_warnings():
            # read-only arrays (Ray's object store holds a trial's): the tensors never write
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensors = {name: torch.from_numpy(getattr(self, name)) for name in SPLITS}
        return Dataset(name=self.name, task=self.task, classes=self.classes, **tensors)


def load_dataset(spec: DataSpec) -> Dataset:
    """``load_arrays(spec)`` as tensors."""
    return load_arrays(spec).tensors()


def load_arrays(spec: DataSpec) -> Arrays:
    """Read ``spec.source``, encode the targets, split by ``spec.split_seed``, scale on train."""
    table = _read_source(spec)
    y, y_test, classes = _encode_targets(table, spec.task)
    _check_finite(table.x, table.origin, table.feature_names)
    if table.x_test is not None:
        _check_finite(table.x_test, table.origin, table.feature_names)
    train, val, test = _split(table, y, y_test, spec)
    x_train, x_val, x_test = _scale([train[0], val[0], test[0]], spec.scale)
    label_dtype = np.int64 if spec.task == "classification" else np.float32
    arrays = Arrays(
        name=table.name,
        task=spec.task,
        x_train=x_train,  # _split's new float32 arrays
        y_train=np.ascontiguousarray(train[1], dtype=label_dtype),
        x_val=x_val,
        y_val=np.ascontiguousarray(val[1], dtype=label_dtype),
        x_test=x_test,
        y_test=np.ascontiguousarray(test[1], dtype=label_dtype),
        classes=classes,
    )
    log.info(
        "%s: %d train / %d val / %d test rows, %d features",
        arrays.name,
        arrays.n_train,
        len(arrays.x_val),
        len(arrays.x_test),
        arrays.n_features,
    )
    return arrays


# --------------------------------------------------------------------------------------------
# Downloads: MNIST and Fashion-MNIST, verified against this table


@dataclass(frozen=True)
class RemoteFile:
    """One file of a downloadable dataset and the SHA-256 of its bytes as served."""

    name: str
    sha256: str


@dataclass(frozen=True)
class RemoteSource:
    """A downloadable dataset: mirrors (base URLs, tried in order), files, class names."""

    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    classes: tuple[str, ...]


REMOTE_SOURCES: dict[str, RemoteSource] = {
    "mnist": RemoteSource(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        files=(
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        ),
        classes=tuple("0123456789"),
    ),
    "fashion-mnist": RemoteSource(
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        files=(
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
}


Fetch = Callable[[str, Path], None]


def fetch_url(url: str, dest: Path) -> None:
    """Write the bytes at ``url`` to ``dest``: the default fetcher (tests replace it)."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        with dest.open("wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)


def default_cache_dir() -> Path:
    """``$MLP_SWEEP_CACHE``, else ``~/.cache/mlp-sweep``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mlp-sweep").expanduser()


def ensure_downloaded(name: str, cache_dir: Path, fetch: Fetch | None = None) -> Path:
    """The folder ``cache_dir/name`` holding every verified file of ``REMOTE_SOURCES[name]``.

    Missing files are fetched under a file lock (parallel trials race for them), verified, and
    renamed into place only when their SHA-256 matches, so the cache never holds a partial file.
    """
    remote = REMOTE_SOURCES[name]
    folder = Path(cache_dir).expanduser() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{folder}: cannot create the cache folder ({_one_line(exc)})") from exc
    if all(_verified(folder / item.name, item.sha256) for item in remote.files):
        return folder  # the common case: no lock needed, files only ever appear complete
    lock = FileLock(str(folder.parent / f".{name}.lock"), timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            for stale in folder.glob(".*.part"):  # left by a downloader that was killed
                stale.unlink(missing_ok=True)
            for item in remote.files:
                _ensure_file(name, remote, item, folder, fetch or fetch_url)
    except Timeout as exc:
        raise DataError(
            f"{lock.lock_file}: waited {LOCK_TIMEOUT_S:.0f} s for another process downloading "
            f"{name}; try again when it has finished"
        ) from exc
    return folder


def _verified(path: Path, sha256: str) -> bool:
    """True if ``path`` exists with the expected hash; a wrong file there is an error."""
    if not path.exists():
        return False
    digest = _sha256(path)
    if digest != sha256:
        raise DataError(
            f"{path}: SHA-256 {digest} does not match the expected {sha256}; "
            "delete the file to download it again, or replace it with the original"
        )
    return True


def _ensure_file(
    name: str, remote: RemoteSource, item: RemoteFile, folder: Path, fetch: Fetch
) -> None:
    """Fetch ``item`` into ``folder`` from the first mirror that serves the right bytes."""
    path = folder / item.name
    if _verified(path, item.sha256):  # another process finished it while we waited
        return
    problems = []
    for base in remote.mirrors:
        url = base + item.name
        part = folder / f".{item.name}.{uuid.uuid4().hex}.part"
        try:
            log.info("downloading %s", url)
            fetch(url, part)
            digest = _sha256(part)
            if digest == item.sha256:
                os.replace(part, path)
                return
            problems.append(f"{url}: SHA-256 {digest} != expected {item.sha256}")
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, bad URLs
            problems.append(f"{url}: {_one_line(exc)}")
        finally:
            part.unlink(missing_ok=True)
    files = ", ".join(f.name for f in remote.files)
    raise DataError(
        f"{name}: could not download {item.name} ({'; '.join(problems)}); nothing was cached. "
        f"To use {name} offline, put {files} (from {remote.mirrors[0]}) in {folder}/ "
        f"(the folder follows data.cache_dir, else ${CACHE_ENV}), "
        "or set data.source to a directory holding the IDX files"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Reading sources into a _Table (raw arrays, no encoding, splitting or scaling yet)


@dataclass(frozen=True)
class _Table:
    name: str
    origin: str  # what error messages name: the file, folder or dataset
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None  # the source's own test split, kept as is
    y_test: np.ndarray | None = None
    classes: tuple[str, ...] | None = None  # fixed names when labels are already 0..k-1
    feature_names: tuple[str, ...] | None = None
    tabular: bool = False  # has named columns, so DataSpec.target applies


def _read_source(spec: DataSpec) -> _Table:
    if spec.target is not None and spec.source in BUILTIN_SOURCES:
        raise _target_unused(spec)
    if spec.source == "digits":
        return _read_digits()
    if spec.source in REMOTE_SOURCES:
        cache_dir = Path(spec.cache_dir).expanduser() if spec.cache_dir else default_cache_dir()
        folder = ensure_downloaded(spec.source, cache_dir)
        return _read_idx_dir(folder, spec.source, REMOTE_SOURCES[spec.source].classes)
    table = _read_path(Path(spec.source).expanduser(), spec.source, spec.target)
    if spec.target is not None and not table.tabular:
        raise _target_unused(spec)
    return table


def _target_unused(spec: DataSpec) -> ConfigError:
    return data_field_error(
        "target",
        f"{spec.target!r} given, but source {spec.source!r} has no named columns "
        "(target applies to CSV and Parquet only)",
    )


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled digits, read from the file sklearn ships without importing sklearn
    (about 1 s); its load_digits where that file is not."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    where = spec.submodule_search_locations if spec else None
    path = os.path.join(where[0], "datasets", "data", "digits.csv.gz") if where else ""
    if os.path.isfile(path):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            table = np.loadtxt(f, delimiter=",")  # as load_digits reads it: 64 pixels, the digit
        x, y = table[:, :-1], table[:, -1]
    else:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
    x, y = x.astype(np.float32), y.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False  # shared by every call: never modified
    return x, y


def _read_digits() -> _Table:
    x, y = _digits_arrays()
    return _Table("digits", "digits", x, y, classes=tuple(str(c) for c in range(10)))


def _read_path(path: Path, origin: str, target: str | None) -> _Table:
    if path.is_dir():
        return _read_idx_dir(path, path.resolve().name, None)
    if not path.exists():
        hint = f" (built-in sources: {', '.join(BUILTIN_SOURCES)})" if not path.suffix else ""
        raise DataError(f"{origin}: no such file or directory{hint}")
    lowered = path.name.lower()
    suffix = next((s for s in _FILE_READERS if lowered.endswith(s)), None)
    if suffix is None:
        raise DataError(
            f"{origin}: unknown data format {path.suffix or path.name!r} "
            f"(valid: {', '.join(_FILE_READERS)}, or a directory of IDX files)"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{origin}: file is empty")
    name = path.name[: -len(suffix)]
    return _FILE_READERS[suffix](path, origin, name, target)


def _read_csv(path: Path, origin: str, name: str, target: str | None) -> _Table:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{origin}: file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"{origin}: cannot read as CSV ({_one_line(exc)})") from exc
    return _table_from_frame(frame, origin, name, target)


def _read_parquet(path: Path, origin: str, name: str, target: str | None) -> _Table:
    import pyarrow

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as exc:
        raise DataError(f"{origin}: cannot read as Parquet ({_one_line(exc)})") from exc
    return _table_from_frame(frame, origin, name, target)


def _table_from_frame(frame: pd.DataFrame, origin: str, name: str, target: str | None) -> _Table:
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if target is None:
        raise data_field_error("target", f"required for {origin} (columns: {_listing(columns)})")
    if target not in columns:
        raise DataError(
            f"{origin}: target column {target!r} not found (columns: {_listing(columns)})"
        )
    if len(frame) == 0:
        raise DataError(f"{origin}: no data rows")
    features = [c for c in columns if c != target]
    if not features:
        raise DataError(f"{origin}: no feature columns besides the target {target!r}")
    non_numeric = [
        c
        for c in features
        if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]
    if non_numeric:
        raise DataError(
            f"{origin}: non-numeric feature columns: {_listing(non_numeric)} "
            "(encode them as numbers or drop them)"
        )
    x = frame[features].to_numpy(dtype=np.float64, na_value=np.nan)
    column = frame[target]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        y = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        y = column.to_numpy(dtype=object)
    return _Table(name, origin, x, y, feature_names=tuple(features), tabular=True)


def _read_npz(path: Path, origin: str, name: str, target: str | None) -> _Table:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{origin}: cannot read as NPZ ({_one_line(exc)})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{origin}: holds a single array, not an NPZ archive of named arrays")
    with archive:
        keys = set(archive.files)
        if {"x_train", "y_train", "x_test", "y_test"} <= keys:
            arrays = [
                _npz_array(archive, k, origin) for k in ("x_train", "y_train", "x_test", "y_test")
            ]
            x, y = _pair(arrays[0], arrays[1], origin, "x_train", "y_train")
            x_test, y_test = _pair(arrays[2], arrays[3], origin, "x_test", "y_test")
            if x.shape[1] != x_test.shape[1]:
                raise DataError(
                    f"{origin}: x_train rows have {x.shape[1]} values, "
                    f"x_test rows {x_test.shape[1]}"
                )
            return _Table(name, origin, x, y, x_test, y_test)
        if {"X", "y"} <= keys:
            x, y = _pair(
                _npz_array(archive, "X", origin), _npz_array(archive, "y", origin), origin, "X", "y"
            )
            return _Table(name, origin, x, y)
    raise DataError(
        f"{origin}: expected arrays x_train, y_train, x_test, y_test (Keras layout) or X, y "
        f"(found: {_listing(sorted(keys)) or 'none'})"
    )


def _npz_array(archive: np.lib.npyio.NpzFile, key: str, origin: str) -> np.ndarray:
    mapped = _mapped_member(archive, key)
    if mapped is not None:
        return mapped
    try:
        return archive[key]
    except ValueError as exc:  # object arrays need pickle, which is never allowed
        raise DataError(
            f"{origin}: array {key!r} holds Python objects; save labels as numbers or a "
            "fixed-width string array (np.asarray(labels, dtype=str))"
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{origin}: cannot read array {key!r} ({_one_line(exc)})") from exc


_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _mapped_member(archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray | None:
    """``key``'s array memory-mapped (read-only) from the archive's file, when ``np.savez``
    stored it uncompressed: nothing is copied until _split copies the rows it takes, so loading
    MNIST-sized features allocates 188 MB less (on a 2-core VM, reading them took 0.1-1.3 s).
    None, to read it the usual way, for a compressed, empty or unusual member."""
    try:
        info = archive.zip.getinfo(f"{key}.npy")
    except KeyError:
        return None
    path = archive.zip.filename  # None for an archive opened from a file object
    if path is None or info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None  # flag 0x1: encrypted
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the member's local header: its name and extra field come next
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        try:
            read_header = _NPY_HEADER_READERS.get(np.lib.format.read_magic(f))
            if read_header is None:
                return None
            shape, fortran_order, dtype = read_header(f)
        except ValueError:
            return None
        offset = f.tell()
    size = math.prod(shape) * dtype.itemsize
    if dtype.hasobject or size == 0 or offset - start + size != info.file_size:
        return None
    order = "F" if fortran_order else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


def _pair(
    x: np.ndarray, y: np.ndarray, origin: str, x_name: str, y_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Features flattened to (rows, values) and checked against their labels."""
    if x.ndim < 2:
        raise DataError(f"{origin}: {x_name} must have one row per sample (shape {x.shape})")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{origin}: {x_name} is not numeric (dtype {x.dtype})")
    if len(x) == 0:
        raise DataError(f"{origin}: {x_name} has no rows")
    if y.ndim == 0:
        raise DataError(f"{origin}: {y_name} must have one entry per row (got a scalar)")
    if len(y) != len(x):
        raise DataError(f"{origin}: {y_name} has {len(y)} entries but {x_name} has {len(x)} rows")
    return x.reshape(len(x), -1), y


_FILE_READERS: dict[str, Callable[[Path, str, str, str | None], _Table]] = {
    ".csv": _read_csv,
    ".csv.gz": _read_csv,
    ".parquet": _read_parquet,
    ".pq": _read_parquet,
    ".npz": _read_npz,
}

# IDX files by role; each may also be called "<stem>.idx3-ubyte" (Kaggle) and be gzipped.
_IDX_STEMS = {
    "train images": "train-images-idx3-ubyte",
    "train labels": "train-labels-idx1-ubyte",
    "test images": "t10k-images-idx3-ubyte",
    "test labels": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_idx_dir(folder: Path, name: str, classes: tuple[str, ...] | None) -> _Table:
    found = {role: _find_idx(folder, stem) for role, stem in _IDX_STEMS.items()}
    if found["train images"] is None and found["train labels"] is None:
        expected = ", ".join(_IDX_STEMS.values())
        raise DataError(
            f"{folder}: no IDX files (expected {expected}; plain or .gz; t10k optional)"
        )
    for split in ("train", "test"):
        images, labels = found[f"{split} images"], found[f"{split} labels"]
        if (images is None) != (labels is None):
            have, missing = (images, "labels") if labels is None else (labels, "images")
            raise DataError(
                f"{folder}: found {have.name} but no {_IDX_STEMS[f'{split} {missing}']}[.gz]"
            )
    x, y = _idx_pair(found["train images"], found["train labels"])
    x_test = y_test = None
    if found["test images"] is not None:
        x_test, y_test = _idx_pair(found["test images"], found["test labels"])
        if x_test.shape[1] != x.shape[1]:
            raise DataError(
                f"{found['test images']}: images have {x_test.shape[1]} pixels, "
                f"the training images {x.shape[1]}"
            )
    return _Table(name, str(folder), x, y, x_test, y_test, classes=classes)


def _find_idx(folder: Path, stem: str) -> Path | None:
    kaggle = stem.replace("-idx", ".idx")
    for candidate in (stem, stem + ".gz", kaggle, kaggle + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    if images.ndim < 2 or len(images) == 0:
        raise DataError(
            f"{images_path}: expected a non-empty array of images (shape {images.shape})"
        )
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected one label per image (shape {labels.shape})")
    if len(labels) != len(images):
        raise DataError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}"
        )
    return images.reshape(len(images), -1), labels


def _read_idx(path: Path) -> np.ndarray:
    """One IDX array: magic (0, 0, dtype, ndim), ndim big-endian uint32 sizes, then the data."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({_one_line(exc)})") from exc
    if not raw:
        raise DataError(f"{path}: file is empty")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = math.prod(shape)
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(
            f"{path}: IDX header says shape {shape} ({count * dtype.itemsize} bytes) "
            f"but the file holds {len(raw) - header} bytes of data"
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


# --------------------------------------------------------------------------------------------
# Targets, checks, splits, scaling


def _encode_targets(
    table: _Table, task: str
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """(y, y_test, classes): int64 class indices and names, or float32 regression targets."""
    parts = [table.y] if table.y_test is None else [table.y, table.y_test]
    _check_labels_present(parts, table.origin)
    if task == "regression":
        if any(p.dtype.kind not in "biuf" for p in parts):
            raise DataError(
                f"{table.origin}: target is not numeric; regression needs numbers "
                "(or set data.task: classification)"
            )
        encoded = [p.astype(np.float32) for p in parts]
        return encoded[0], (encoded[1] if len(encoded) > 1 else None), ()
    if any(p.ndim != 1 for p in parts):
        raise DataError(f"{table.origin}: classification needs one label per row (got 2-D targets)")
    if table.classes is not None:
        values = np.arange(len(table.classes))
        names = table.classes
    else:
        values, names = _class_values(np.concatenate(parts), table.origin)
    if len(names) < 2:
        raise DataError(
            f"{table.origin}: target has a single class ({names[0]!r}); classification needs >= 2"
        )
    encoded = []
    for part in parts:
        keys = part.astype(str) if values.dtype.kind == "U" else part
        index = np.searchsorted(values, keys)
        if np.any(index >= len(values)) or np.any(
            values[np.minimum(index, len(values) - 1)] != keys
        ):
            raise DataError(f"{table.origin}: labels outside 0..{len(names) - 1}")
        encoded.append(index.astype(np.int64))
    return encoded[0], (encoded[1] if len(encoded) > 1 else None), tuple(names)


def _class_values(labels: np.ndarray, origin: str) -> tuple[np.ndarray, list[str]]:
    """Sorted distinct labels and their names (integral numbers print without '.0')."""
    if labels.dtype.kind in "biuf":
        values = np.unique(labels)
        if values.dtype.kind == "f":
            if not np.all(values == np.round(values)):
                raise DataError(
                    f"{origin}: target has non-integer numbers; for continuous targets "
                    "set data.task: regression"
                )
            return values, [str(int(v)) for v in values]
        return values, [str(v) for v in values]
    values = np.unique(labels.astype(str))
    return values, [str(v) for v in values]


def _check_labels_present(parts: Sequence[np.ndarray], origin: str) -> None:
    for part in parts:
        missing = ~np.isfinite(part) if part.dtype.kind == "f" else pd.isna(part)
        if missing.ndim > 1:
            missing = missing.any(axis=tuple(range(1, missing.ndim)))
        if missing.any():
            first = int(np.flatnonzero(missing)[0]) + 1
            raise DataError(
                f"{origin}: {int(missing.sum())} missing or non-finite target values "
                f"(first at data row {first})"
            )


def _check_finite(x: np.ndarray, origin: str, names: tuple[str, ...] | None) -> None:
    if x.dtype.kind != "f":
        return  # integer and boolean features are always finite
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    rows, columns = np.flatnonzero(bad.any(axis=1)), np.flatnonzero(bad.any(axis=0))
    labels = [names[c] if names else f"#{c}" for c in columns]
    raise DataError(
        f"{origin}: {len(rows)} rows hold NaN or inf values (columns: {_listing(labels)}; "
        f"first at data row {rows[0] + 1})"
    )


def _split(
    table: _Table, y: np.ndarray, y_test: np.ndarray | None, spec: DataSpec
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """((x, y) train, (x, y) val, (x, y) test), from ``spec.split_seed`` alone; each x a new
    float32 array (the table's arrays may be cached or read-only)."""
    stratify = spec.task == "classification"
    rows = np.arange(len(y))
    if table.x_test is None:
        n_test = _holdout_size(len(y), spec.test_fraction)
        n_val = _holdout_size(len(y), spec.val_fraction)
        _check_rows(len(y), n_val, n_test, table.origin, "rows")
        rows, test_rows = _holdout(rows, y, n_test, spec.split_seed, stratify)
        test = (_features(table.x, test_rows), y[test_rows])
    else:
        n_val = _holdout_size(len(y), spec.val_fraction)
        _check_rows(len(y), n_val, 0, table.origin, "training rows")
        test = (np.array(table.x_test, dtype=np.float32), y_test)  # a copy: scaled in place
    train_rows, val_rows = _holdout(rows, y, n_val, spec.split_seed, stratify)
    train = (_features(table.x, train_rows), y[train_rows])
    return train, (_features(table.x, val_rows), y[val_rows]), test


def _features(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x's rows at rows as a new float32 array (fancy indexing copies), for _scale to scale in
    place: a float32 source is copied once, not twice. Loading MNIST-sized float32 features
    (188 MB) took 2.7-5.4 s with the second copy, 0.4-0.5 s without (2-core machine)."""
    return x[rows].astype(np.float32, copy=False)


def _holdout_size(n: int, fraction: float) -> int:
    return max(1, int(n * fraction + 0.5))  # round half up, and never an empty split


def _check_rows(n: int, n_val: int, n_test: int, origin: str, what: str) -> None:
    if n - n_val - n_test < 1:
        raise DataError(
            f"{origin}: {n} {what}, too few for the splits (val {n_val} + test {n_test} "
            f"+ at least 1 for training)"
        )


def _holdout(
    rows: np.ndarray, y: np.ndarray, size: int, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): ``size`` of ``rows``, stratified by label when every class allows it."""
    labels = y[rows] if stratify else None
    if labels is not None:
        counts = np.unique(labels, return_counts=True)[1]
        # the stratified split's conditions: >= 2 rows per class, room for every class each side
        if counts.min() < 2 or size < len(counts) or len(rows) - size < len(counts):
            labels = None
    return holdout(rows, size, seed, labels)


def _standard(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0, dtype=np.float64)
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), 2048):  # in blocks: np.std's full-size temporaries are ~6x slower
        centred = x[start : start + 2048] - mean
        squares += np.einsum("ij,ij->j", centred, centred)
    return mean, np.sqrt(squares / len(x))


def _minmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low = x.min(axis=0).astype(np.float64)
    return low, x.max(axis=0).astype(np.float64) - low


# scale name -> (shift, divisor) fitted on the training features; None leaves them as they are
SCALERS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None] = {
    "standard": _standard,
    "minmax": _minmax,
    "none": None,
}


def _scale(splits: list[np.ndarray], scale: str) -> list[np.ndarray]:
    """The float32 splits of _split, shifted and divided in place by statistics of
    ``splits[0]``."""
    fit = SCALERS[scale]
    if fit is None:
        return splits
    train = splits[0]
    shift, divisor = fit(train)
    divisor[train.max(axis=0) == train.min(axis=0)] = 1.0  # constant features become 0, not NaN
    shift, divisor = shift.astype(np.float32), divisor.astype(np.float32)
    for x in splits:
        x -= shift
        x /= divisor
    return splits


# --------------------------------------------------------------------------------------------
# Small helpers


def _listing(names: Sequence[str], limit: int = 12) -> str:
    """Comma-separated names, cut after ``limit`` so a 785-column CSV stays one readable line."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
