"""Holdout splits exactly as scikit-learn's ``train_test_split`` draws them, in NumPy alone.

Loading a data set imported sklearn for this split, and importing sklearn takes about 1 s (scipy
with it) on the start-up path of every sweep. ``holdout`` follows ``ShuffleSplit`` and
``StratifiedShuffleSplit`` (as in sklearn 1.9) call for call on the same ``RandomState``, so a
split seed keeps giving the rows it gave; tests/test_split.py holds it to the installed sklearn.
"""

from __future__ import annotations

import numpy as np


def holdout(
    rows: np.ndarray, size: int, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): ``size`` of ``rows``, as ``train_test_split(rows, test_size=size,
    random_state=seed, stratify=labels)`` returns them. With labels, every class needs >= 2
    rows and ``size`` and ``len(rows) - size`` must each be at least the number of classes."""
    rng = np.random.RandomState(seed)
    n_kept = len(rows) - size
    if labels is None:
        permutation = rng.permutation(len(rows))
        return rows[permutation[size:]], rows[permutation[:size]]
    _, label_index, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    class_rows = np.split(np.argsort(label_index, kind="stable"), np.cumsum(class_counts)[:-1])
    kept_per_class = _approximate_mode(class_counts, n_kept, rng)
    held_per_class = _approximate_mode(class_counts - kept_per_class, size, rng)
    kept: list[int] = []
    held: list[int] = []
    for members, n_k, n_h in zip(class_rows, kept_per_class, held_per_class, strict=True):
        shuffled = members[rng.permutation(len(members))]
        kept.extend(shuffled[:n_k])
        held.extend(shuffled[n_k : n_k + n_h])
    return rows[rng.permutation(kept)], rows[rng.permutation(held)]


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng) -> np.ndarray:
    """How many of n_draws each class gets: its floored share, then one more for the largest
    remainders, ties broken at random (sklearn.utils.extmath._approximate_mode)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
