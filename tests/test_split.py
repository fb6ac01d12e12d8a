"""model.split draws the rows sklearn's train_test_split draws, and loading data imports no sklearn.

sklearn stays the reference, as torch.optim is for the stacked optimizers: every split here is
compared with the installed sklearn's, row for row and in order.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from model import data
from model.split import holdout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@st.composite
def labelled_rows(draw):
    """Row ids (not 0..n-1: a second split works on the rows the first one kept), labels with
    every class >= 2 rows, and a held-out size that leaves room for every class on both sides."""
    counts = draw(st.lists(st.integers(2, 9), min_size=1, max_size=6))
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = labels[draw(st.permutations(range(len(labels))))]
    classes = len(counts)
    size = draw(st.integers(classes, len(labels) - classes))  # every class has >= 2 rows
    offset = draw(st.integers(0, 50))
    return np.arange(len(labels)) * 3 + offset, labels * 7 - 2, size  # labels need not be 0..k


@settings(max_examples=300, deadline=None)
@given(case=labelled_rows(), seed=st.integers(0, 2**31 - 1))
@example(case=(np.arange(12), np.repeat(np.arange(4), 3), 5), seed=0)  # the shares tie
def test_stratified_holdout_is_sklearns(case, seed):
    rows, labels, size = case
    kept, held = holdout(rows, size, seed, labels)
    want = train_test_split(rows, test_size=size, random_state=seed, stratify=labels)
    np.testing.assert_array_equal(kept, want[0])
    np.testing.assert_array_equal(held, want[1])


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 80), data_=st.data(), seed=st.integers(0, 2**31 - 1))
def test_unstratified_holdout_is_sklearns(n, data_, seed):
    rows = np.arange(n) + 100
    size = data_.draw(st.integers(1, n - 1))
    kept, held = holdout(rows, size, seed)
    want_kept, want_held = train_test_split(rows, test_size=size, random_state=seed)
    np.testing.assert_array_equal(kept, want_kept)
    np.testing.assert_array_equal(held, want_held)


def test_digits_at_the_datasets_sizes_splits_as_sklearn_splits_it():
    _, y = load_digits(return_X_y=True)
    rows = np.arange(len(y))
    for seed in (0, 1, 12345):
        kept, held = holdout(rows, 270, seed, y)
        want = train_test_split(rows, test_size=270, random_state=seed, stratify=y)
        np.testing.assert_array_equal(kept, want[0])
        np.testing.assert_array_equal(held, want[1])


def test_digits_are_sklearns_digits():
    data._digits_arrays.cache_clear()
    x, y = data._digits_arrays()
    want_x, want_y = load_digits(return_X_y=True)
    np.testing.assert_array_equal(x, want_x.astype(np.float32))
    np.testing.assert_array_equal(y, want_y)
    assert x.dtype == np.float32 and y.dtype == np.int64


def test_loading_digits_imports_no_sklearn():
    """The point of model.split: sklearn (and scipy, ~1 s) stays out of a sweep's start-up."""
    code = (
        "import sys; from model.data import load_dataset; from model.spec import DataSpec; "
        "load_dataset(DataSpec(split_seed=3)); "
        "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
