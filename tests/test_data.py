"""model.data: every source from small files generated here, splits, scaling, errors, downloads.

    .venv/bin/pytest -q tests/test_data.py

No test touches the network: downloads go through a fake fetch or a file:// URL.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import multiprocessing
import random
import struct
import threading
import time
import tracemalloc
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model import data
from model.data import DataSpec, load_dataset
from model.errors import ConfigError, DataError

REAL_FETCH = data.fetch_url  # kept before any test replaces it

# --------------------------------------------------------------------------------------------
# Writers for small generated sources


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX file of unsigned bytes (gzipped when the name ends in .gz), written with struct."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


def images_and_labels(n: int, seed: int, side: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    return images, (np.arange(n) % 3).astype(np.uint8)


def write_idx_dir(folder: Path, *, gz: bool, with_test: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    x, y = images_and_labels(30, seed=1)
    write_idx(folder / f"train-images-idx3-ubyte{ext}", x)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", y)
    if with_test:
        x_test, y_test = images_and_labels(9, seed=2)
        write_idx(folder / f"t10k-images-idx3-ubyte{ext}", x_test)
        write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", y_test)
    return folder


def labelled_frame(n: int = 60) -> pd.DataFrame:
    """Three string classes; row_id identifies each row after splitting."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "row_id": np.arange(n, dtype=np.float64),
            "a": rng.normal(5.0, 2.0, n),
            "b": rng.uniform(-1.0, 3.0, n),
            "flat": np.full(n, 7.0),
            "label": np.array(["cat", "dog", "emu"])[np.arange(n) % 3],
        }
    )


def write_csv(tmp_path: Path, frame: pd.DataFrame, name: str = "table.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def load(source: Path | str, **fields) -> data.Dataset:
    return load_dataset(DataSpec(source=str(source), **fields))


def all_splits(ds: data.Dataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)]


# --------------------------------------------------------------------------------------------
# digits, the default


def test_digits_is_the_default_with_fixed_split_sizes_and_dtypes():
    ds = load_dataset(DataSpec())
    assert ds.name == "digits" and ds.task == "classification"
    # 1797 rows: round(0.15 * 1797) = 270 for val and for test
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (1257, 270, 270)
    assert ds.n_train == 1257 and ds.n_features == 64 and ds.n_outputs == 10
    assert ds.classes == tuple("0123456789")
    for x, y in all_splits(ds):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.is_contiguous() and y.ndim == 1


def test_arrays_are_the_datasets_splits_and_its_tensors_share_their_memory():
    """What a sweep's driver loads (NumPy, no torch) is what a trial trains on."""
    spec = DataSpec(task="regression", split_seed=5)
    arrays = data.load_arrays(spec)
    ds, again = arrays.tensors(), load_dataset(spec)
    for name in data.SPLITS:
        array, tensor = getattr(arrays, name), getattr(ds, name)
        assert array.flags.c_contiguous and array.dtype == np.float32
        assert tensor.data_ptr() == array.ctypes.data  # not a copy
        assert torch.equal(tensor, getattr(again, name))
    assert (arrays.n_train, arrays.n_features, arrays.n_outputs) == (1257, 64, 1)


def test_read_only_arrays_become_tensors_without_a_warning():
    """A trial's arrays come read-only from Ray's object store; torch would warn every trial."""
    arrays = data.load_arrays(DataSpec())
    for name in data.SPLITS:
        getattr(arrays, name).flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = arrays.tensors()
    assert ds.n_train == arrays.n_train and ds.classes == arrays.classes


def test_digits_split_is_stratified():
    ds = load_dataset(DataSpec())
    full = np.bincount(np.concatenate([y.numpy() for _, y in all_splits(ds)]), minlength=10)
    for _, y in all_splits(ds)[1:]:
        expected = full * len(y) / full.sum()
        assert np.all(np.abs(np.bincount(y.numpy(), minlength=10) - expected) <= 1)


def test_digits_regression_gives_float_targets():
    ds = load_dataset(DataSpec(task="regression"))
    assert ds.y_train.dtype == torch.float32 and ds.classes == () and ds.n_outputs == 1


# --------------------------------------------------------------------------------------------
# Splits: sizes, partition, determinism, independence from other seeds


def test_split_partitions_the_rows(tmp_path):
    path = write_csv(tmp_path, labelled_frame(60))
    ds = load(path, target="label", scale="none", val_fraction=0.2, test_fraction=0.25)
    ids = [x[:, 0].numpy().astype(int) for x, _ in all_splits(ds)]
    assert [len(i) for i in ids] == [33, 12, 15]
    assert sorted(np.concatenate(ids).tolist()) == list(range(60))


def test_split_depends_on_split_seed_only(tmp_path):
    path = write_csv(tmp_path, labelled_frame(60))
    first = load(path, target="label", split_seed=3)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    again = load(path, target="label", split_seed=3)
    for (x1, y1), (x2, y2) in zip(all_splits(first), all_splits(again), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other = load(path, target="label", split_seed=4)
    assert not torch.equal(first.x_test, other.x_test)


def test_split_falls_back_to_unstratified_when_a_class_has_one_row(tmp_path):
    frame = labelled_frame(20)
    frame.loc[0, "label"] = "yak"  # a class with one row cannot be stratified
    ds = load(write_csv(tmp_path, frame), target="label")
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 20
    assert ds.classes == ("cat", "dog", "emu", "yak")


# --------------------------------------------------------------------------------------------
# Scaling, fitted on the training split only


def test_standard_scaling_uses_training_statistics(tmp_path):
    path = write_csv(tmp_path, labelled_frame(60))
    raw = load(path, target="label", scale="none")
    scaled = load(path, target="label", scale="standard")
    train = raw.x_train.double().numpy()
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[3] = 1.0  # the constant column "flat" is shifted to 0, not divided by 0
    for (x_raw, _), (x_scaled, _) in zip(all_splits(raw), all_splits(scaled), strict=True):
        np.testing.assert_allclose(x_scaled.numpy(), (x_raw.numpy() - mean) / std, atol=1e-5)
    np.testing.assert_allclose(scaled.x_train.numpy().mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(scaled.x_train.numpy().std(axis=0), [1, 1, 1, 0], atol=1e-5)
    # val is not re-centred on its own statistics
    assert np.abs(scaled.x_val.numpy()[:, 1].mean()) > 1e-3


def test_minmax_scaling_uses_training_range(tmp_path):
    path = write_csv(tmp_path, labelled_frame(60))
    raw = load(path, target="label", scale="none")
    scaled = load(path, target="label", scale="minmax")
    train = raw.x_train.double().numpy()
    low, span = train.min(axis=0), np.ptp(train, axis=0)
    span[3] = 1.0
    for (x_raw, _), (x_scaled, _) in zip(all_splits(raw), all_splits(scaled), strict=True):
        np.testing.assert_allclose(x_scaled.numpy(), (x_raw.numpy() - low) / span, atol=1e-5)
    np.testing.assert_allclose(scaled.x_train.numpy().min(axis=0), [0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(scaled.x_train.numpy().max(axis=0), [1, 1, 1, 0], atol=1e-6)


def test_scale_none_keeps_values(tmp_path):
    frame = labelled_frame(30)
    ds = load(write_csv(tmp_path, frame), target="label", scale="none")
    rows = ds.x_train[:, 0].numpy().astype(int)
    expected = frame[["row_id", "a", "b", "flat"]].to_numpy(np.float32)[rows]
    np.testing.assert_array_equal(ds.x_train.numpy(), expected)


# --------------------------------------------------------------------------------------------
# File formats


def test_csv_string_labels_are_encoded_and_the_mapping_kept(tmp_path):
    frame = labelled_frame(30)
    ds = load(write_csv(tmp_path, frame), target="label", scale="none")
    assert ds.classes == ("cat", "dog", "emu") and ds.n_outputs == 3 and ds.n_features == 4
    for x, y in all_splits(ds):
        names = [ds.classes[i] for i in y.tolist()]
        assert names == frame["label"].to_numpy()[x[:, 0].numpy().astype(int)].tolist()


def test_csv_integer_labels_name_their_values(tmp_path):
    frame = labelled_frame(30).assign(label=lambda f: np.arange(30) % 2 * 5 + 3)  # 3 and 8
    ds = load(write_csv(tmp_path, frame), target="label")
    assert ds.classes == ("3", "8")
    assert set(ds.y_train.tolist()) == {0, 1}


def test_parquet_regression_target_stays_float(tmp_path):
    frame = labelled_frame(40).drop(columns="label").assign(price=lambda f: f["a"] * 1.5)
    path = tmp_path / "houses.parquet"
    frame.to_parquet(path)
    ds = load(path, target="price", task="regression", scale="none")
    assert ds.name == "houses" and ds.task == "regression"
    assert ds.classes == () and ds.n_outputs == 1 and ds.n_features == 4
    assert ds.y_train.dtype == torch.float32 and ds.y_train.shape == (len(ds.x_train),)
    np.testing.assert_allclose(ds.y_train.numpy(), ds.x_train[:, 1].numpy() * 1.5, rtol=1e-6)


def test_parquet_classification(tmp_path):
    path = tmp_path / "t.parquet"
    labelled_frame(30).to_parquet(path)
    ds = load(path, target="label")
    assert ds.classes == ("cat", "dog", "emu") and ds.y_val.dtype == torch.int64


def test_npz_keras_layout_keeps_its_test_split(tmp_path):
    x_train, y_train = images_and_labels(40, seed=1)
    x_test, y_test = images_and_labels(10, seed=2)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    ds = load(path, scale="none", val_fraction=0.25, test_fraction=0.5)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (30, 10, 10)
    assert ds.n_features == 16  # 4 x 4 images flattened
    np.testing.assert_array_equal(ds.x_test.numpy(), x_test.reshape(10, 16))
    np.testing.assert_array_equal(ds.y_test.numpy(), y_test)
    # test_fraction is ignored when the source has its own test split
    other = load(path, scale="none", val_fraction=0.25, test_fraction=0.1)
    assert torch.equal(ds.x_train, other.x_train) and torch.equal(ds.x_val, other.x_val)


def test_own_test_split_is_scaled_with_training_statistics(tmp_path):
    x_train, y_train = images_and_labels(40, seed=1)
    x_test, y_test = images_and_labels(10, seed=2)
    path = tmp_path / "m.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    raw = load(path, scale="none")
    ds = load(path, scale="minmax")
    train = raw.x_train.numpy()
    span = np.ptp(train, axis=0)
    expected = (x_test.reshape(10, 16) - train.min(axis=0)) / np.where(span == 0, 1, span)
    np.testing.assert_allclose(ds.x_test.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("save, copies", [(np.savez, (0.9, 1.3)), (np.savez_compressed, (2, 2.6))])
def test_loading_copies_float32_features_once(tmp_path, save, copies):
    """The split and scaled arrays are the only copy of an uncompressed archive's features (the
    file's arrays are memory-mapped); a compressed archive's are read first, so about twice the
    features' bytes at the peak, not three times (MNIST-sized float32 features are 188 MB)."""
    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(40_000, 64)), rng.normal(size=(10_000, 64))  # 12.8 MB as float32
    path = tmp_path / "f32.npz"
    labels = {"y_train": np.arange(40_000) % 3, "y_test": np.arange(10_000) % 3}
    save(path, x_train=x.astype(np.float32), x_test=x_test.astype(np.float32), **labels)
    features = (x.size + x_test.size) * 4
    tracemalloc.start()
    try:
        arrays = data.load_arrays(DataSpec(source=str(path)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert arrays.x_train.dtype == np.float32 and len(arrays.x_test) == 10_000
    low, high = copies
    assert low * features < peak < high * features  # 3.07 when the splits were copied twice


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int64])
def test_an_uncompressed_archive_is_memory_mapped_and_loads_as_a_compressed_one(
    tmp_path, order, dtype
):
    rng = np.random.default_rng(1)
    x = np.asarray(rng.integers(0, 200, size=(120, 3, 4)), dtype=dtype, order=order)
    y = np.arange(120) % 4
    np.savez(tmp_path / "plain.npz", X=x, y=y)
    np.savez_compressed(tmp_path / "packed.npz", X=x, y=y)
    with np.load(tmp_path / "plain.npz") as plain, np.load(tmp_path / "packed.npz") as packed:
        mapped = data._mapped_member(plain, "X")
        assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
        np.testing.assert_array_equal(mapped, x)
        assert mapped.dtype == x.dtype and mapped.flags.f_contiguous == (order == "F")
        assert data._mapped_member(packed, "X") is None  # read the usual way
        assert data._mapped_member(plain, "absent") is None
    a, b = (
        data.load_arrays(DataSpec(source=str(tmp_path / n))) for n in ("plain.npz", "packed.npz")
    )
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert getattr(a, field).flags.writeable and not isinstance(getattr(a, field), np.memmap)


def test_a_damaged_uncompressed_member_is_read_the_usual_way(tmp_path):
    """A member whose stored size disagrees with its header is not mapped; np.load's own
    reading reports it (one clear line naming the file)."""
    path = tmp_path / "cut.npz"
    np.savez(path, X=np.zeros((50, 4), np.float32), y=np.zeros(50))
    raw = bytearray(path.read_bytes())
    header = raw.index(b"{'descr'")
    raw[header : header + 60] = raw[header : header + 60].replace(b"(50, 4)", b"(90, 4)")
    assert b"(90, 4)" in raw
    path.write_bytes(bytes(raw))
    with np.load(path) as archive:
        assert data._mapped_member(archive, "X") is None
    with pytest.raises(DataError, match="cut.npz"):
        data.load_arrays(DataSpec(source=str(path)))


def test_npz_x_y_layout_is_split_three_ways(tmp_path):
    x, y = images_and_labels(40, seed=3)
    path = tmp_path / "xy.npz"
    np.savez(path, X=x.reshape(40, -1).astype(np.float64), y=np.array(["p", "q", "r"])[y])
    ds = load(path)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (28, 6, 6)
    assert ds.classes == ("p", "q", "r") and ds.x_train.dtype == torch.float32


def test_npz_two_dimensional_regression_targets(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "reg.npz"
    np.savez(path, X=rng.normal(size=(30, 3)), y=rng.normal(size=(30, 2)))
    ds = load(path, task="regression")
    assert ds.y_train.shape == (len(ds.x_train), 2) and ds.n_outputs == 2


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_directory_keeps_its_test_split(tmp_path, gz):
    folder = write_idx_dir(tmp_path / "idx", gz=gz)
    ds = load(folder, scale="none")
    x_test, y_test = images_and_labels(9, seed=2)
    assert ds.name == "idx" and ds.classes == ("0", "1", "2")
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (25, 5, 9)
    np.testing.assert_array_equal(ds.x_test.numpy(), x_test.reshape(9, 16))
    np.testing.assert_array_equal(ds.y_test.numpy(), y_test)


def test_idx_directory_without_test_files_is_split_three_ways(tmp_path):
    folder = write_idx_dir(tmp_path / "idx", gz=True, with_test=False)
    ds = load(folder)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (20, 5, 5)


def test_idx_reads_kaggle_file_names(tmp_path):
    folder = tmp_path / "kaggle"
    folder.mkdir()
    x, y = images_and_labels(20, seed=1)
    write_idx(folder / "train-images.idx3-ubyte", x)
    write_idx(folder / "train-labels.idx1-ubyte", y)
    assert load(folder).n_features == 16


# --------------------------------------------------------------------------------------------
# Bad data: one clear line naming the file and the problem


def _csv(frame):
    return lambda tmp: write_csv(tmp, frame)


def _bytes(name, content):
    def write(tmp):
        (tmp / name).write_bytes(content)
        return tmp / name

    return write


def _npz(name="bad.npz", **arrays):
    def write(tmp):
        np.savez(tmp / name, **arrays)
        return tmp / name

    return write


def _idx(files):
    def write(tmp):
        folder = tmp / "idx"
        folder.mkdir()
        for name, content in files.items():
            if isinstance(content, bytes):
                (folder / name).write_bytes(content)
            else:
                write_idx(folder / name, content)
        return folder

    return write


_frame = labelled_frame(30)
_images, _labels = images_and_labels(10, seed=1)
BAD_DATA = {
    "missing file": (lambda tmp: tmp / "nope.csv", {}, ["nope.csv", "no such file"]),
    "empty file": (_bytes("empty.csv", b""), {}, ["empty.csv", "file is empty"]),
    "header only": (_bytes("h.csv", b"a,b,label\n"), {}, ["h.csv", "no data rows"]),
    "unknown format": (_bytes("data.txt", b"1,2\n"), {}, ["data.txt", "unknown data format"]),
    "not parquet": (
        _bytes("x.parquet", b"not parquet"),
        {},
        ["x.parquet", "cannot read as Parquet"],
    ),
    "not npz": (_bytes("x.npz", b"not a zip file"), {}, ["x.npz", "cannot read as NPZ"]),
    "npz keys": (_npz(a=np.zeros(3)), {"target": None}, ["bad.npz", "expected arrays", "found: a"]),
    "npz objects": (
        _npz(X=np.zeros((4, 2)), y=np.array(["a", None], dtype=object)),
        {"target": None},
        ["bad.npz", "holds Python objects"],
    ),
    "npz lengths": (
        _npz(X=np.zeros((4, 2)), y=np.zeros(3)),
        {"target": None},
        ["bad.npz", "y has 3 entries but X has 4 rows"],
    ),
    "missing target": (
        _csv(_frame),
        {"target": "species"},
        ["table.csv", "target column 'species' not found", "columns: row_id, a, b, flat, label"],
    ),
    "non-numeric features": (
        _csv(_frame.assign(colour="red", size="L")),
        {},
        ["table.csv", "non-numeric feature columns: colour, size"],
    ),
    "nan feature": (
        _csv(_frame.assign(b=_frame["b"].where(_frame.index != 4))),
        {},
        ["table.csv", "1 rows hold NaN or inf", "columns: b", "first at data row 5"],
    ),
    "inf feature": (
        _csv(_frame.assign(a=_frame["a"].where(_frame.index % 10 != 2, np.inf))),
        {},
        ["table.csv", "3 rows hold NaN or inf", "columns: a", "first at data row 3"],
    ),
    "missing label": (
        _csv(_frame.assign(label=_frame["label"].where(_frame.index != 7))),
        {},
        ["table.csv", "1 missing or non-finite target values", "first at data row 8"],
    ),
    "single class": (
        _csv(_frame.assign(label="cat")),
        {},
        ["table.csv", "single class ('cat')"],
    ),
    "too few rows": (
        _csv(_frame.head(2)),
        {},
        ["table.csv", "2 rows, too few for the splits"],
    ),
    "continuous labels": (
        _csv(_frame.assign(label=_frame["a"])),
        {},
        ["table.csv", "non-integer", "data.task: regression"],
    ),
    "text regression target": (
        _csv(_frame),
        {"task": "regression"},
        ["table.csv", "target is not numeric"],
    ),
    "idx none": (_idx({}), {"target": None}, ["idx", "no IDX files"]),
    "idx half pair": (
        _idx({"train-images-idx3-ubyte": _images}),
        {"target": None},
        ["train-images-idx3-ubyte", "no train-labels-idx1-ubyte"],
    ),
    "idx bad magic": (
        _idx({"train-images-idx3-ubyte": b"\x01\x02\x03\x04", "train-labels-idx1-ubyte": _labels}),
        {"target": None},
        ["train-images-idx3-ubyte", "not an IDX file"],
    ),
    "idx truncated": (
        _idx(
            {
                "train-images-idx3-ubyte": struct.pack(">BBBBIII", 0, 0, 8, 3, 10, 4, 4) + b"\0",
                "train-labels-idx1-ubyte": _labels,
            }
        ),
        {"target": None},
        ["train-images-idx3-ubyte", "header says shape (10, 4, 4)", "holds 1 bytes"],
    ),
    "idx bad gzip": (
        _idx({"train-images-idx3-ubyte.gz": b"not gzip", "train-labels-idx1-ubyte": _labels}),
        {"target": None},
        ["train-images-idx3-ubyte.gz", "cannot read"],
    ),
    "idx label count": (
        _idx({"train-images-idx3-ubyte": _images, "train-labels-idx1-ubyte": _labels[:7]}),
        {"target": None},
        ["train-labels-idx1-ubyte", "7 labels for 10 images"],
    ),
}


@pytest.mark.parametrize("case", BAD_DATA.keys())
def test_bad_data_is_one_line_naming_the_file(tmp_path, case):
    write, fields, expected = BAD_DATA[case]
    source = write(tmp_path)
    with pytest.raises(DataError) as caught:
        load(source, **{"target": "label", **fields})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(source))
    for part in expected:
        assert part in message


def test_misspelt_builtin_lists_the_builtins():
    with pytest.raises(DataError, match=r"^digitz: no such file .*digits, mnist, fashion-mnist"):
        load("digitz")


def test_missing_target_for_csv_is_a_config_error_listing_columns(tmp_path):
    path = write_csv(tmp_path, labelled_frame(10))
    with pytest.raises(ConfigError, match=r"^data\.target: required .*row_id, a, b, flat, label"):
        load(path)


@pytest.mark.parametrize("source", ["digits", "npz"])
def test_target_for_a_source_without_columns_is_a_config_error(tmp_path, source):
    if source == "npz":
        source = tmp_path / "xy.npz"
        np.savez(source, X=np.zeros((9, 2)), y=np.arange(9) % 2)
    with pytest.raises(ConfigError, match=r"^data\.target: 'label' given"):
        load(source, target="label")


def test_long_column_lists_are_cut(tmp_path):
    frame = pd.DataFrame({f"pixel{i}": [0, 1] for i in range(40)})
    with pytest.raises(DataError, match=r"pixel11, \.\.\. \(40 in all\)\)$"):
        load(write_csv(tmp_path, frame), target="label")


# --------------------------------------------------------------------------------------------
# Bad spec values: ConfigError naming the field


BAD_SPECS = [
    ({"scale": "zscore"}, "data.scale: unknown scale 'zscore' (valid: standard, minmax, none)"),
    ({"task": "clf"}, "data.task: unknown task 'clf' (valid: classification, regression)"),
    ({"val_fraction": 0}, "data.val_fraction: 0 out of range (must be > 0 and < 1)"),
    ({"val_fraction": 1.2}, "data.val_fraction: 1.2 out of range"),
    ({"test_fraction": -0.1}, "data.test_fraction: -0.1 out of range"),
    ({"test_fraction": True}, "data.test_fraction: must be a number (got True)"),
    ({"test_fraction": "0.2"}, "data.test_fraction: must be a number (got '0.2')"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "data.val_fraction + data.test_fraction: 0.5"),
    ({"split_seed": -1}, "data.split_seed: -1 out of range"),
    ({"split_seed": 1.5}, "data.split_seed: must be an integer (got 1.5)"),
    ({"source": ""}, "data.source: must be a dataset name or a path"),
    ({"target": ""}, "data.target: must be a column name or null"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_bad_spec_values_raise_config_error_naming_the_field(fields, message):
    with pytest.raises(ConfigError) as caught:
        DataSpec(**fields)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_spec_accepts_a_path_object(tmp_path):
    assert DataSpec(source=tmp_path).source == str(tmp_path)


# --------------------------------------------------------------------------------------------
# mnist / fashion-mnist downloads, with a fake fetch


def test_remote_table_lists_four_hashed_files_per_dataset():
    names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    assert set(data.REMOTE_SOURCES) == {"mnist", "fashion-mnist"}
    for remote in data.REMOTE_SOURCES.values():
        assert [f.name for f in remote.files] == names
        assert all(len(f.sha256) == 64 and int(f.sha256, 16) >= 0 for f in remote.files)
        assert len(remote.classes) == 10 and remote.mirrors
    assert data.REMOTE_SOURCES["mnist"].files[0].sha256.startswith("440fcabf73cc546f")


@pytest.fixture
def fake_remote(tmp_path, monkeypatch):
    """'mnist' served from small generated IDX files; returns (served bytes, fetch log)."""
    served = {}
    for name, seed, n in [("train", 1, 30), ("t10k", 2, 9)]:
        x, y = images_and_labels(n, seed)
        served[f"{name}-images-idx3-ubyte.gz"] = write_idx(tmp_path / "i.gz", x).read_bytes()
        served[f"{name}-labels-idx1-ubyte.gz"] = write_idx(tmp_path / "l.gz", y).read_bytes()
    files = tuple(data.RemoteFile(n, hashlib.sha256(b).hexdigest()) for n, b in served.items())
    remote = data.RemoteSource(("fake://one/", "fake://two/"), files, ("zero", "one", "two"))
    monkeypatch.setitem(data.REMOTE_SOURCES, "mnist", remote)
    calls = []

    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        dest.write_bytes(served[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(data, "fetch_url", fetch)
    return served, calls


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_is_verified_cached_and_not_fetched_again(tmp_path, fake_remote):
    served, calls = fake_remote
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True)
    (cache / "mnist" / ".train-images-idx3-ubyte.gz.0123.part").write_bytes(b"killed midway")
    ds = load_dataset(DataSpec("mnist", cache_dir=str(cache)))
    assert ds.name == "mnist" and ds.classes == ("zero", "one", "two")
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (25, 5, 9)
    assert calls == [f"fake://one/{name}" for name in served]
    assert cache_files(cache / "mnist") == sorted(served)
    again = load_dataset(DataSpec("mnist", cache_dir=str(cache)))
    assert len(calls) == 4 and torch.equal(ds.x_train, again.x_train)


def test_download_uses_the_cache_environment_variable(tmp_path, fake_remote, monkeypatch):
    monkeypatch.setenv("MLP_SWEEP_CACHE", str(tmp_path / "env-cache"))
    load_dataset(DataSpec("mnist"))
    assert len(cache_files(tmp_path / "env-cache" / "mnist")) == 4


def test_hash_mismatch_is_rejected_and_nothing_is_cached(tmp_path, fake_remote, monkeypatch):
    def corrupt(url: str, dest: Path) -> None:
        dest.write_bytes(b"truncated download")

    monkeypatch.setattr(data, "fetch_url", corrupt)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as caught:
        load_dataset(DataSpec("mnist", cache_dir=str(cache)))
    message = str(caught.value)
    assert "fake://one/train-images-idx3-ubyte.gz: SHA-256" in message
    assert "fake://two/train-images-idx3-ubyte.gz: SHA-256" in message
    assert "nothing was cached" in message and "\n" not in message
    assert cache_files(cache / "mnist") == []  # no partial or unverified file left behind


def test_a_failing_mirror_falls_back_to_the_next(tmp_path, fake_remote, monkeypatch):
    served, calls = fake_remote
    good_fetch = data.fetch_url

    def flaky(url: str, dest: Path) -> None:
        if url.startswith("fake://one/"):
            dest.write_bytes(b"partial")
            raise urllib.error.URLError("connection reset")
        good_fetch(url, dest)

    monkeypatch.setattr(data, "fetch_url", flaky)
    cache = tmp_path / "cache"
    load_dataset(DataSpec("mnist", cache_dir=str(cache)))
    assert calls == [f"fake://two/{name}" for name in served]
    assert cache_files(cache / "mnist") == sorted(served)


def test_files_put_in_the_cache_by_hand_need_no_network(tmp_path, fake_remote, monkeypatch):
    served, _ = fake_remote
    folder = tmp_path / "cache" / "mnist"
    folder.mkdir(parents=True)
    for name, content in served.items():
        (folder / name).write_bytes(content)

    def offline(url: str, dest: Path) -> None:
        raise AssertionError(f"fetched {url}")

    monkeypatch.setattr(data, "fetch_url", offline)
    assert load_dataset(DataSpec("mnist", cache_dir=str(tmp_path / "cache"))).n_features == 16


def test_a_wrong_file_in_the_cache_is_reported_and_left_alone(tmp_path, fake_remote):
    folder = tmp_path / "cache" / "mnist"
    folder.mkdir(parents=True)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"something else")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: SHA-256 .* does not match"):
        load_dataset(DataSpec("mnist", cache_dir=str(tmp_path / "cache")))
    assert (folder / "train-labels-idx1-ubyte.gz").read_bytes() == b"something else"


def test_no_network_says_which_files_to_put_where(tmp_path, fake_remote, monkeypatch):
    # The real fetcher on file:// URLs that do not exist fails as an offline machine does.
    missing = (tmp_path / "nowhere").as_uri() + "/"
    remote = dataclasses.replace(data.REMOTE_SOURCES["mnist"], mirrors=(missing,))
    monkeypatch.setitem(data.REMOTE_SOURCES, "mnist", remote)
    monkeypatch.setattr(data, "fetch_url", REAL_FETCH)
    cache = tmp_path / "cache"
    started = time.monotonic()
    with pytest.raises(DataError) as caught:
        load_dataset(DataSpec("mnist", cache_dir=str(cache)))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith("mnist: could not download train-images-idx3-ubyte.gz")
    assert "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, " in message
    assert f"in {cache / 'mnist'}/" in message and "\n" not in message
    assert cache_files(cache / "mnist") == []


def _download_in_child(cache: str) -> None:
    data.ensure_downloaded("mnist", Path(cache))


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_racing_downloads_fetch_each_file_once(tmp_path, fake_remote, monkeypatch, how):
    served, _ = fake_remote
    log = tmp_path / "fetches.log"

    def slow_fetch(url: str, dest: Path) -> None:
        with log.open("a") as out:  # appends from several processes: one short line each
            out.write(url + "\n")
        time.sleep(0.05)  # widen the window in which a second downloader could interfere
        dest.write_bytes(served[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(data, "fetch_url", slow_fetch)
    cache = tmp_path / "cache"
    if how == "threads":
        errors = []

        def run():
            try:
                data.ensure_downloaded("mnist", cache)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        workers = [threading.Thread(target=run) for _ in range(3)]
    else:
        context = multiprocessing.get_context("fork")  # the child inherits the fake fetch
        workers = [context.Process(target=_download_in_child, args=(str(cache),)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    if how == "threads":
        assert errors == []
    else:
        assert [w.exitcode for w in workers] == [0, 0, 0]
    assert sorted(log.read_text().split()) == sorted(f"fake://one/{name}" for name in served)
    folder = cache / "mnist"
    assert cache_files(folder) == sorted(served)
    for name, content in served.items():
        assert (folder / name).read_bytes() == content


def test_the_builtin_sources_the_study_checks_are_digits_and_the_download_table():
    from model.data import BUILTIN_SOURCES, REMOTE_SOURCES

    assert BUILTIN_SOURCES == ("digits", *REMOTE_SOURCES)  # model.spec lists them without torch
