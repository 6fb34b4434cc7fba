"""Stratified train/val/test splits that every class can live with.

Each class is shuffled on its own (seeded by the dataset seed and the class name, so adding
or renaming another class never reshuffles this one) and cut by the requested fractions.
Every class gets at least one image in train, and at least one in val and in test when
those fractions are above zero; a class too small for that is refused with the number of
images it needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

SPLITS = ("train", "val", "test")


class SplitError(ValueError):
    """The requested split cannot be made (a class is too small)."""


def validate_fractions(val_fraction: float, test_fraction: float) -> None:
    """Checks the split fractions.

    Args:
        val_fraction: Share of each class for validation, in [0, 1).
        test_fraction: Share of each class for the final test, in [0, 1).

    Raises:
        ValueError: If a fraction is outside [0, 1) or they leave nothing for training.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{name} must be a number in [0, 1). Received: {name}={value!r}")
    if val_fraction + test_fraction > 0.9:
        raise ValueError(
            "val_fraction + test_fraction must leave at least 10% for training. Received: "
            f"val_fraction={val_fraction!r}, test_fraction={test_fraction!r}"
        )


def min_images_per_class(val_fraction: float, test_fraction: float) -> int:
    """Smallest class that can be split: one image per split that is in use."""
    return 1 + int(val_fraction > 0) + int(test_fraction > 0)


def split_problems(
    counts: Mapping[str, int], val_fraction: float, test_fraction: float
) -> list[str]:
    """Explains, class by class, why ``counts`` cannot be split (empty list when it can).

    Args:
        counts: Class name -> number of images.
        val_fraction: See :func:`validate_fractions`.
        test_fraction: See :func:`validate_fractions`.

    Returns:
        One sentence per class that is too small, naming how many images it needs.
    """
    needed = min_images_per_class(val_fraction, test_fraction)
    uses = ["train"] + ["val"] * (val_fraction > 0) + ["test"] * (test_fraction > 0)
    problems = []
    for label in sorted(counts):
        count = counts[label]
        if count < needed:
            missing = needed - count
            problems.append(
                f"class {label!r} has {count} image{'s' * (count != 1)}; it needs at least "
                f"{needed} (one each for {', '.join(uses)}): add {missing} more"
                + (" or lower the validation/test split to 0" if needed > 1 else "")
            )
    return problems


def class_rng(seed: int, label: str) -> np.random.Generator:
    """A random generator for one class, stable across runs and independent of others."""
    digest = hashlib.sha256(label.encode("utf-8")).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def _split_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_val = max(int(val_fraction > 0), round(count * val_fraction))
    n_test = max(int(test_fraction > 0), round(count * test_fraction))
    while n_val + n_test > count - 1:  # train keeps at least one image
        if n_test >= n_val and n_test > int(test_fraction > 0):
            n_test -= 1
        elif n_val > int(val_fraction > 0):
            n_val -= 1
        else:
            raise SplitError(f"{count} images cannot be split into train/val/test")
    return n_val, n_test


def stratified_split(
    labels: Sequence[str], *, val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """Assigns each item a split, class by class.

    Args:
        labels: The label of each item, in a stable order.
        val_fraction: Share of each class for validation.
        test_fraction: Share of each class for the final test.
        seed: Seed; the same inputs always give the same splits.

    Returns:
        ``"train"``, ``"val"`` or ``"test"`` for each item, in the order of ``labels``.

    Raises:
        ValueError: If the fractions are invalid.
        SplitError: If a class is too small (the message names it and what it needs).
    """
    validate_fractions(val_fraction, test_fraction)
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    problems = split_problems(
        {label: len(indices) for label, indices in by_class.items()}, val_fraction, test_fraction
    )
    if problems:
        raise SplitError("; ".join(problems))
    result = ["train"] * len(labels)
    for label, indices in by_class.items():
        n_val, n_test = _split_sizes(len(indices), val_fraction, test_fraction)
        order = class_rng(seed, label).permutation(len(indices))
        for position, shuffled in enumerate(order):
            if position < n_val:
                result[indices[shuffled]] = "val"
            elif position < n_val + n_test:
                result[indices[shuffled]] = "test"
    return result


def assign_new(
    existing: Mapping[str, int],
    count: int,
    *,
    val_fraction: float,
    test_fraction: float,
    rng: np.random.Generator,
) -> list[str]:
    """Splits ``count`` new images of one class without moving the class's existing ones.

    New images first fill whatever val/test is short of its target share of the grown
    class; the rest go to train. Existing images keep their split, so a test set never
    leaks into training when images are added.

    Args:
        existing: Split name -> number of images the class already has there.
        count: Number of new images.
        val_fraction: Target share for validation.
        test_fraction: Target share for the test split.
        rng: Decides which of the new images go where.

    Returns:
        A split name for each new image.
    """
    total = sum(existing.get(split, 0) for split in SPLITS) + count
    wanted = {"val": 0, "test": 0}
    if total >= min_images_per_class(val_fraction, test_fraction):
        target_val, target_test = _split_sizes(total, val_fraction, test_fraction)
        wanted["val"] = max(0, target_val - existing.get("val", 0))
        wanted["test"] = max(0, target_test - existing.get("test", 0))
    free = max(0, count - int(existing.get("train", 0) == 0))  # keep one for train if none
    n_val = min(wanted["val"], free)
    n_test = min(wanted["test"], free - n_val)
    splits = ["val"] * n_val + ["test"] * n_test
    splits += ["train"] * (count - len(splits))
    return [splits[i] for i in rng.permutation(count)]
