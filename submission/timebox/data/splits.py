"""Deterministic stratified train/validation splits and class-balanced subsamples.

Labels are non-negative integer class indices and seeds non-negative integers. Each class is shuffled
with its own generator seeded by (seed, class), so the choice inside one class does not depend on
which other classes exist.
"""

from __future__ import annotations

import numpy as np

from timebox.errors import UsageError


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_idx, val_idx): each class puts round(n * val_fraction) items in val (half rounds up),
    at least one in val and one in train when it has two or more; a single-item class stays in train."""
    if not 0 < val_fraction < 1:
        raise UsageError(f"the validation fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    labels = np.asarray(labels)
    val_parts = []
    for label in np.unique(labels):
        members = _shuffled_members(labels, label, seed)
        n = len(members)
        n_val = min(max(int(np.floor(n * val_fraction + 0.5)), 1), n - 1)
        val_parts.append(members[:n_val])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels), dtype=np.int64), val)
    return train, val


def stratified_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of n items keeping class proportions (largest remainder); every class gets at least
    one item when n >= number of classes; all indices when n >= len(labels)."""
    if n < 1:
        raise UsageError(f"the subsample size must be at least 1, got {n}")
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    take, remainders = np.divmod(counts.astype(np.int64) * n, len(labels))
    by_remainder = np.argsort(-remainders, kind="stable")
    take[by_remainder[: n - take.sum()]] += 1
    if n >= len(classes):
        for empty in np.flatnonzero(take == 0):
            take[np.argmax(take)] -= 1
            take[empty] = 1
    chosen = [_shuffled_members(labels, label, seed)[:k] for label, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def _shuffled_members(labels: np.ndarray, label: int, seed: int) -> np.ndarray:
    """Indices of label in labels, shuffled by a generator seeded with (seed, label)."""
    members = np.flatnonzero(labels == label).astype(np.int64)
    return np.random.default_rng([seed, int(label)]).permutation(members)
