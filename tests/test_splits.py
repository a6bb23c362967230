"""Stratified splits and subsamples: per-class counts, determinism, disjoint and covering indices."""

import numpy as np
import pytest

from timebox.data.splits import stratified_split, stratified_subsample
from timebox.errors import UsageError

LABELS = np.array([0] * 50 + [1] * 20 + [2] * 7 + [3] * 2 + [4] * 1 + [0] * 5)


def test_split_is_disjoint_covering_sorted_and_int_indices():
    train, val = stratified_split(LABELS, 0.2, seed=0)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(LABELS)))
    assert np.array_equal(train, np.sort(train)) and np.array_equal(val, np.sort(val))
    assert train.dtype.kind == "i" and val.dtype.kind == "i"


def test_split_gives_each_class_its_rounded_share_with_one_each_side():
    train, val = stratified_split(LABELS, 0.2, seed=0)
    assert np.bincount(LABELS[val], minlength=5).tolist() == [11, 4, 1, 1, 0]  # 55*.2, 20*.2, 7*.2=1.4, 2 -> 1, 1 -> 0
    assert np.bincount(LABELS[train], minlength=5).tolist() == [44, 16, 6, 1, 1]


def test_split_rounds_half_up_and_keeps_a_train_item():
    train, val = stratified_split(np.array([0] * 5 + [1] * 3), 0.5, seed=1)
    assert np.bincount(np.array([0] * 5 + [1] * 3)[val]).tolist() == [3, 2]  # 2.5 -> 3; 1.5 -> 2 (3 - 1 left for train)
    assert len(train) == 3


def test_split_is_deterministic_for_a_seed_and_varies_with_it():
    assert all(np.array_equal(a, b) for a, b in zip(stratified_split(LABELS, 0.3, 7), stratified_split(LABELS, 0.3, 7)))
    assert not np.array_equal(stratified_split(LABELS, 0.3, 7)[1], stratified_split(LABELS, 0.3, 8)[1])


def test_split_rejects_fraction_outside_zero_one():
    for fraction in (0, 1, -0.1, 1.5):
        with pytest.raises(UsageError, match="between 0 and 1"):
            stratified_split(LABELS, fraction, 0)


def test_subsample_keeps_proportions_by_largest_remainder():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    picked = stratified_subsample(labels, 7, seed=0)
    assert len(picked) == 7 and len(np.unique(picked)) == 7
    assert np.bincount(labels[picked]).tolist() == [4, 2, 1]  # quotas 3.5, 2.1, 1.4: the spare item goes to .5
    tied = np.array([0] * 60 + [1] * 30 + [2] * 10)
    # quotas 9, 4.5, 1.5: the remainders tie and the lower class wins
    assert np.bincount(tied[stratified_subsample(tied, 15, seed=0)]).tolist() == [9, 5, 1]


def test_subsample_gives_every_class_one_item_when_n_allows():
    picked = stratified_subsample(LABELS, 5, seed=0)
    assert sorted(LABELS[picked].tolist()) == [0, 1, 2, 3, 4]


def test_subsample_is_sorted_deterministic_and_within_range():
    a = stratified_subsample(LABELS, 30, seed=3)
    assert np.array_equal(a, stratified_subsample(LABELS, 30, seed=3))
    assert np.array_equal(a, np.sort(a)) and a.min() >= 0 and a.max() < len(LABELS)
    assert not np.array_equal(a, stratified_subsample(LABELS, 30, seed=4))


def test_subsample_of_n_at_least_len_is_everything_and_n_below_one_is_rejected():
    assert np.array_equal(stratified_subsample(LABELS, 10_000, 0), np.arange(len(LABELS)))
    with pytest.raises(UsageError, match="at least 1"):
        stratified_subsample(LABELS, 0, 0)
