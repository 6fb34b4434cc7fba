"""``IngestReport``: what an ingest or an inspection found, in sentences a person can act on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.data.pool import Outcome
from core.data.sources import Listing, Plan
from core.data.splits import SPLITS, split_problems

_MAX_LISTED = 10  # examples quoted in one warning
_IMBALANCE_RATIO = 3.0
_FEW_IMAGES = 10


@dataclass
class IngestReport:
    """What an ingest (or an inspection) found.

    Attributes:
        classes: Class name -> number of usable images (after duplicates are skipped).
        num_images: Total usable images.
        rejected: ``{"file": ..., "reason": ...}`` for every file that was not used.
        duplicates: Groups of identical files; the first one of each group is kept.
        warnings: Sentences worth reading (label noise, imbalance, animations, ...).
        dataset_id: Id of the dataset created (None for an inspection or a refusal).
        dataset_dir: Its folder.
        error: Why the data cannot be trained on; None when it can.
        splits: Class -> {"train": n, "val": n, "test": n} once a dataset is created.
        ignored: Number of system files skipped (``__MACOSX``, ``.DS_Store``, hidden ...).
        source: What was read (folder, zip or "upload").
    """

    classes: dict[str, int] = field(default_factory=dict)
    num_images: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dataset_id: str | None = None
    dataset_dir: str | None = None
    error: str | None = None
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    ignored: int = 0
    source: str = ""

    @property
    def trainable(self) -> bool:
        """True when the data can be trained on (no blocking error)."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``--json`` prints)."""
        return {
            "classes": dict(self.classes),
            "num_images": self.num_images,
            "rejected": [dict(row) for row in self.rejected],
            "duplicates": [list(group) for group in self.duplicates],
            "warnings": list(self.warnings),
            "trainable": self.trainable,
            "error": self.error,
            "dataset_id": self.dataset_id,
            "dataset_dir": self.dataset_dir,
            "splits": {label: dict(counts) for label, counts in self.splits.items()},
            "ignored": self.ignored,
            "source": self.source,
        }


def _examples(lines: Sequence[str]) -> str:
    shown = "; ".join(lines[:_MAX_LISTED])
    return shown + (
        f"; ... and {len(lines) - _MAX_LISTED} more" if len(lines) > _MAX_LISTED else ""
    )


def summarise(outcome: Outcome, counts: Mapping[str, int]) -> list[str]:
    warnings: list[str] = []
    if outcome.cross_class:
        pairs = [f"{a!r} ({la}) = {b!r} ({lb})" for a, la, b, lb in outcome.cross_class]
        warnings.append(
            f"label noise: {len(pairs)} image(s) appear in two different classes; only the "
            f"first copy was kept, fix the labels if it is in the wrong class: {_examples(pairs)}"
        )
    skipped = sum(len(group) - 1 for group in outcome.groups) - len(outcome.cross_class)
    if skipped > 0:
        warnings.append(
            f"{skipped} duplicate image(s) within a class were skipped (see duplicates)"
        )
    if outcome.notes:
        warnings.append(_examples(outcome.notes))
    nonzero = {label: n for label, n in counts.items() if n > 0}
    if len(nonzero) >= 2:
        big = max(nonzero, key=nonzero.__getitem__)
        small = min(nonzero, key=nonzero.__getitem__)
        if nonzero[big] >= _IMBALANCE_RATIO * nonzero[small]:
            warnings.append(
                f"classes are imbalanced: {big!r} has {nonzero[big]} images, {small!r} has "
                f"{nonzero[small]} ({nonzero[big] / nonzero[small]:.1f}x); consider 'balanced' "
                f"class weights or more images of {small!r}"
            )
    few = sorted(label for label, n in nonzero.items() if n < _FEW_IMAGES)
    if few and all(n >= 1 for n in nonzero.values()):
        warnings.append(
            f"{len(few)} class(es) have fewer than {_FEW_IMAGES} images "
            f"({', '.join(map(repr, few[:_MAX_LISTED]))}); 20+ per class give a more reliable model"
        )
    folded: dict[str, list[str]] = {}
    for label in counts:
        folded.setdefault(label.casefold(), []).append(label)
    for variants in folded.values():
        if len(variants) > 1:
            warnings.append(
                f"classes {', '.join(map(repr, sorted(variants)))} differ only in case; "
                "rename one if they are the same class"
            )
    return warnings


def trainability_error(
    counts: Mapping[str, int], val_fraction: float, test_fraction: float, *, loose: int = 0
) -> str | None:
    """Says why these class counts cannot be trained on, or None when they can.

    Args:
        counts: Class name -> number of usable images.
        val_fraction: Validation share the split will use.
        test_fraction: Test share the split will use.
        loose: Files found outside any class folder (mentioned in the message).

    Returns:
        A message that names the problem and what to do, or None.
    """
    if len(counts) < 2:
        found = (
            f"found {len(counts)} class ({next(iter(counts))!r})" if counts else "found no classes"
        )
        loose_note = f" ({loose} files are not inside any class folder)" if loose else ""
        return (
            f"Training needs at least 2 classes but {found}{loose_note}. Put each class's "
            "images in its own folder (e.g. cats/ and dogs/) or list them in a CSV with "
            "filename,label columns."
        )
    problems = split_problems(counts, val_fraction, test_fraction)
    if problems:
        return "Some classes are too small to split: " + "; ".join(problems) + "."
    return None


def report_for(
    plan: Plan,
    outcome: Outcome,
    source: Listing,
    val_fraction: float,
    test_fraction: float,
) -> IngestReport:
    counts = Counter(row["label"] for row in outcome.rows)
    labels = {item.label for item in plan.items} | plan.empty_classes
    classes = {label: counts.get(label, 0) for label in sorted(labels)}
    report = IngestReport(
        classes=classes,
        num_images=sum(classes.values()),
        rejected=plan.rejected + outcome.rejected,
        duplicates=[list(group) for group in outcome.groups],
        warnings=plan.warnings + summarise(outcome, classes),
        ignored=source.ignored,
        source=source.name,
    )
    report.error = trainability_error(classes, val_fraction, test_fraction, loose=plan.loose)
    return report


def split_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for label, split in zip(manifest["label"], manifest["split"], strict=True):
        counts.setdefault(label, dict.fromkeys(SPLITS, 0))[split] += 1
    return dict(sorted(counts.items()))
