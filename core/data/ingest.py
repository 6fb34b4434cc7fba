"""The ingest driver: turn a source into a clean, validated dataset, and say what was wrong.

Three entry points, one pipeline:

- :func:`inspect` reads a source and reports what ingest would do; it writes nothing;
- :func:`ingest` builds and publishes a dataset from a source;
- :func:`add_images` adds uploaded files to one class of an existing dataset.

A source is a path (a folder, a zip or a labels CSV, told apart by content) or one of the
source objects of :mod:`core.data.sources` (uploads per class, zip bytes). The files are
read by the decode pool (:mod:`core.data.pool`); what was found goes into an
:class:`~core.data.report.IngestReport`; the dataset store (:mod:`core.data.store`) is
the only writer of the dataset folder.
"""

from __future__ import annotations

import numbers
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from core.data import store as datasets
from core.data.archive import ArchiveError, SafeZip
from core.data.limits import IngestLimits, ProgressFn
from core.data.pool import EXECUTORS, Seen, available_cores, process_items
from core.data.report import IngestReport, report_for, split_counts, summarise, trainability_error
from core.data.sources import (
    CsvSource,
    FolderSource,
    LayoutError,
    Source,
    UploadSource,
    ZipSource,
    as_source,
)
from core.data.splits import assign_new, class_rng, stratified_split, validate_fractions
from core.data.store import DatasetError, clean_label

__all__ = [
    "EXECUTORS",
    "CsvSource",
    "DatasetError",
    "FolderSource",
    "IngestLimits",
    "IngestReport",
    "ProgressFn",
    "UploadSource",
    "ZipSource",
    "add_images",
    "available_cores",
    "ingest",
    "inspect",
    "trainability_error",
]


def _run(
    source: Source,
    *,
    name: str | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    limits: IngestLimits,
    progress: ProgressFn | None,
    workers: int | None,
    executor: str,
) -> IngestReport:
    """Shared driver: inspect when ``name`` is None, else build and publish a dataset."""
    validate_fractions(val_fraction, test_fraction)
    store = name is not None
    if store and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name must be a non-empty string. Received: name={name!r}")
    if store and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an integer. Received: seed={seed!r}")
    seed = int(seed)
    name = name.strip() if store else None
    report = IngestReport()
    staging: Path | None = None
    archive: SafeZip | None = None
    try:
        listing, plan, archive = source.open(limits)
        report.source = listing.name
        report.ignored = listing.ignored
        report.rejected = list(plan.rejected)
        report.warnings = list(plan.warnings)
        if store:
            early = Counter(item.label for item in plan.items)
            early.update({label: 0 for label in plan.empty_classes})
            error = trainability_error(early, val_fraction, test_fraction, loose=plan.loose)
            if error:
                report.classes = dict(sorted(early.items()))
                report.num_images = sum(early.values())
                report.error = error
                raise DatasetError(error, report)
            dataset_id = datasets.new_dataset_id(name)
            staging = datasets.staging_path(dataset_id)
        outcome = process_items(
            plan.items,
            limits,
            dataset_dir=staging,
            progress=progress,
            workers=workers,
            executor=executor,
        )
        report = report_for(plan, outcome, listing, val_fraction, test_fraction)
        if report.error and store:
            raise DatasetError(report.error, report)
        if not store:
            return report
        for row in outcome.rows:
            row["source"] = listing.name
        outcome.rows.sort(key=lambda row: (row["label"], row["original_name"]))
        manifest = datasets.manifest_frame(outcome.rows)
        manifest["split"] = stratified_split(
            list(manifest["label"]),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        report.splits = split_counts(manifest)
        report.dataset_id = dataset_id
        report.dataset_dir = str(datasets.dataset_path(dataset_id))
        datasets.publish_dataset(
            staging,
            dataset_id,
            name=name,
            manifest=manifest,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            report=report.to_dict(),
        )
        staging = None
        return report
    except (LayoutError, ArchiveError) as error:
        report.error = str(error)
        if store:
            raise DatasetError(report.error, report) from error
        return report
    except OSError as error:  # disk full, permissions: nothing is kept, say why
        if not store:
            raise
        report.error = f"Could not write the dataset: {error}"
        raise DatasetError(report.error, report) from error
    finally:
        if archive is not None:
            archive.close()
        if staging is not None and staging.exists():
            shutil.rmtree(staging)


def inspect(
    source: Source | str | os.PathLike[str],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    limits: IngestLimits | None = None,
    progress: ProgressFn | None = None,
    workers: int | None = None,
    executor: str = "auto",
) -> IngestReport:
    """Reads a source and reports what ingest would do; writes nothing.

    Args:
        source: A path (folder of class folders, ``.zip`` or CSV with filename,label
            columns) or a source object (:class:`UploadSource`, :class:`ZipSource`, ...).
        val_fraction: Validation share used to judge whether classes are big enough.
        test_fraction: Test share, likewise.
        limits: Ingest limits (defaults when None).
        progress: ``progress(done, total, message)``.
        workers: Decoding workers (default: every available core).
        executor: ``"auto"``, ``"serial"``, ``"thread"`` or ``"process"``.

    Returns:
        The report; ``report.error`` says why the data cannot be trained on, if so.
    """
    return _run(
        as_source(source),
        name=None,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=0,
        limits=limits or IngestLimits(),
        progress=progress,
        workers=workers,
        executor=executor,
    )


def ingest(
    source: Source | str | os.PathLike[str],
    name: str | None = None,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    limits: IngestLimits | None = None,
    progress: ProgressFn | None = None,
    workers: int | None = None,
    executor: str = "auto",
) -> IngestReport:
    """Builds a dataset from a source and publishes it in the workspace.

    Args:
        source: As :func:`inspect`.
        name: Display name of the dataset (default: the folder or file name; uploads need
            one).
        val_fraction: Share of each class for validation.
        test_fraction: Share of each class for the final test.
        seed: Seed of the stratified split.
        limits: Ingest limits (defaults when None).
        progress: ``progress(done, total, message)``.
        workers: Decoding workers (default: every available core).
        executor: ``"auto"``, ``"serial"``, ``"thread"`` or ``"process"``.

    Returns:
        The report, with ``dataset_id`` and ``dataset_dir`` set.

    Raises:
        DatasetError: If no dataset can be made (fewer than 2 classes, a class too small,
            a zip bomb, ...); ``error.report`` holds what was read.
        ValueError: If a fraction is out of range, or no name is given for uploads.
    """
    source = as_source(source)
    return _run(
        source,
        name=name or source.default_name,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        limits=limits or IngestLimits(),
        progress=progress,
        workers=workers,
        executor=executor,
    )


def add_images(
    dataset_id: str,
    label: str,
    files: Sequence[tuple[str, bytes]],
    *,
    limits: IngestLimits | None = None,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Adds uploaded files to one class of an existing dataset.

    Files go through the same checks as any ingest; duplicates of images already in the
    dataset are skipped and reported. Existing images keep their split; new ones are
    split to keep each class near the dataset's fractions.

    Args:
        dataset_id: The dataset.
        label: Class of the new images (new or existing).
        files: ``(filename, bytes)`` pairs.
        limits: Ingest limits (defaults when None).
        progress: ``progress(done, total, message)``.

    Returns:
        The report of what was added and what was skipped.
    """
    limits = limits or IngestLimits()
    label = clean_label(label)
    listing, plan, _ = UploadSource({label: files}).open(limits)
    with datasets.locked(dataset_id) as dataset:
        manifest = dataset.manifest
        seen = {
            sha: Seen(image, existing_label)
            for sha, image, existing_label in zip(
                manifest["sha256"], manifest["image"], manifest["label"], strict=True
            )
        }
        outcome = process_items(
            plan.items,
            limits,
            dataset_dir=dataset.dir,
            progress=progress,
            workers=None,
            executor="auto",
            seen=seen,
            live=True,
        )
        new_rows = pd.DataFrame(outcome.rows, columns=datasets.MANIFEST_COLUMNS)
        new_rows["source"] = listing.name
        if len(new_rows):
            existing = manifest.loc[manifest["label"] == label, "split"].value_counts().to_dict()
            rng = class_rng(dataset.seed + len(manifest), label)
            new_rows["split"] = assign_new(
                existing,
                len(new_rows),
                val_fraction=dataset.val_fraction,
                test_fraction=dataset.test_fraction,
                rng=rng,
            )
            merged = pd.concat([manifest, datasets.manifest_frame(new_rows.to_dict("records"))])
            updated = datasets.save_dataset(dataset, merged)
        else:
            updated = dataset
    classes = dict(Counter(row["label"] for row in outcome.rows)) or {label: 0}
    report = IngestReport(
        classes=classes,
        num_images=len(outcome.rows),
        rejected=plan.rejected + outcome.rejected,
        duplicates=[list(group) for group in outcome.groups],
        warnings=summarise(outcome, {}) + updated.problems(),
        dataset_id=updated.id,
        dataset_dir=str(updated.dir),
        splits=split_counts(updated.manifest[updated.manifest["label"] == label]),
        ignored=listing.ignored,
        source=listing.name,
    )
    if not outcome.rows:
        report.error = (
            f"No image was added to {label!r}: none of the {len(files)} file(s) was usable."
        )
    return report
