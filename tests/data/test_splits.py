"""Stratified splits: every class in every split, seeded, refusals that say what to add."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.data.splits import (
    SplitError,
    assign_new,
    min_images_per_class,
    split_problems,
    stratified_split,
    validate_fractions,
)


def per_class(labels, splits):
    return Counter(zip(labels, splits, strict=True))


def test_every_class_lands_in_every_split_and_the_seed_decides():
    labels = ["a"] * 20 + ["b"] * 3 + ["c"] * 100
    splits = stratified_split(labels, val_fraction=0.15, test_fraction=0.15, seed=1)
    counts = per_class(labels, splits)
    for label in "abc":
        assert all(counts[(label, split)] >= 1 for split in ("train", "val", "test"))
    assert counts[("c", "val")] == 15 and counts[("c", "test")] == 15
    assert splits == stratified_split(labels, val_fraction=0.15, test_fraction=0.15, seed=1)
    assert splits != stratified_split(labels, val_fraction=0.15, test_fraction=0.15, seed=2)


def test_a_class_split_does_not_depend_on_other_classes():
    alone = stratified_split(["a"] * 10, val_fraction=0.2, test_fraction=0.2, seed=5)
    mixed = stratified_split(["a"] * 10 + ["b"] * 7, val_fraction=0.2, test_fraction=0.2, seed=5)
    assert mixed[:10] == alone


def test_too_small_classes_are_named_with_what_they_need():
    with pytest.raises(SplitError, match="class 'tiny' has 2 images; it needs at least 3"):
        stratified_split(["big"] * 10 + ["tiny"] * 2, val_fraction=0.1, test_fraction=0.1, seed=0)
    assert split_problems({"a": 1, "b": 5}, 0.2, 0.0) == [
        "class 'a' has 1 image; it needs at least 2 (one each for train, val): add 1 more "
        "or lower the validation/test split to 0"
    ]
    assert min_images_per_class(0.0, 0.0) == 1
    assert split_problems({"a": 1}, 0.0, 0.0) == []


@pytest.mark.parametrize(
    ("val", "test", "match"),
    [(-0.1, 0.1, "val_fraction"), (0.2, 1.0, "test_fraction"), (0.5, 0.45, "at least 10%")],
)
def test_bad_fractions_say_what_is_allowed(val, test, match):
    with pytest.raises(ValueError, match=match):
        validate_fractions(val, test)


def test_assign_new_fills_what_is_short_and_keeps_one_for_train():
    rng = np.random.default_rng(0)
    splits = assign_new(
        {"train": 7, "val": 0, "test": 0}, 3, val_fraction=0.2, test_fraction=0.2, rng=rng
    )
    assert Counter(splits) == {"val": 2, "test": 1}
    fresh = assign_new({}, 3, val_fraction=0.2, test_fraction=0.2, rng=rng)
    assert Counter(fresh) == {"train": 1, "val": 1, "test": 1}
    single = assign_new({}, 1, val_fraction=0.2, test_fraction=0.2, rng=rng)
    assert single == ["train"]


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=3, max_value=60), min_size=1, max_size=5),
    val=st.sampled_from([0.0, 0.1, 0.15, 0.3]),
    test=st.sampled_from([0.0, 0.1, 0.15, 0.3]),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_split_invariants(counts, val, test, seed):
    labels = [f"c{index}" for index, count in enumerate(counts) for _ in range(count)]
    splits = stratified_split(labels, val_fraction=val, test_fraction=test, seed=seed)
    table = per_class(labels, splits)
    for index in range(len(counts)):
        label = f"c{index}"
        assert table[(label, "train")] >= 1
        assert (table[(label, "val")] >= 1) == (val > 0)
        assert (table[(label, "test")] >= 1) == (test > 0)
