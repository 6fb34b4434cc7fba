"""Changes to a stored dataset: delete or move images, rename a class, draw a new split.

Each change reads the manifest under the dataset's lock, changes it and saves it atomically
(:func:`core.data.store.locked` and :func:`core.data.store.save_dataset`), so two tabs editing
the same dataset do not lose each other's changes. Images are named by the manifest's
``image`` column (e.g. ``images/ab12cd34.jpg``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from core.data.splits import SplitError, split_problems, stratified_split, validate_fractions
from core.data.store import Dataset, DatasetError, clean_label, locked, save_dataset


def _unknown_images(manifest: pd.DataFrame, images: Sequence[str]) -> list[str]:
    known = set(manifest["image"])
    return [image for image in images if image not in known]


def _require_images(dataset: Dataset, images: Sequence[str]) -> None:
    if isinstance(images, str):
        raise ValueError(f"images must be a list of image paths. Received a string: {images!r}")
    unknown = _unknown_images(dataset.manifest, images)
    if unknown:
        raise DatasetError(
            f"{len(unknown)} image(s) are not in dataset {dataset.id!r}: "
            f"{', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''} "
            "(use the 'image' column of the manifest, e.g. 'images/ab12cd34.jpg')"
        )


def delete_images(dataset_id: str, images: Sequence[str]) -> Dataset:
    """Removes images from a dataset (manifest first, then the files).

    Args:
        dataset_id: The dataset.
        images: Values of the manifest's ``image`` column.

    Returns:
        The updated dataset.

    Raises:
        DatasetError: If an image is not in the dataset.
    """
    with locked(dataset_id) as dataset:
        _require_images(dataset, images)
        doomed = set(images)
        keep = dataset.manifest[~dataset.manifest["image"].isin(doomed)]
        updated = save_dataset(dataset, keep)
    for image in doomed:
        (dataset.dir / image).unlink(missing_ok=True)
    return updated


def relabel_images(dataset_id: str, images: Sequence[str], label: str) -> Dataset:
    """Moves images to another class (new or existing); their split is kept.

    Raises:
        DatasetError: If an image is not in the dataset.
        ValueError: If ``label`` is empty or too long.
    """
    label = clean_label(label)
    with locked(dataset_id) as dataset:
        _require_images(dataset, images)
        manifest = dataset.manifest.copy()
        manifest.loc[manifest["image"].isin(set(images)), "label"] = label
        return save_dataset(dataset, manifest)


def rename_class(dataset_id: str, old: str, new: str) -> Dataset:
    """Renames a class; renaming onto an existing class merges the two.

    Raises:
        DatasetError: If ``old`` is not a class of the dataset.
        ValueError: If ``new`` is empty or too long.
    """
    new = clean_label(new)
    with locked(dataset_id) as dataset:
        if old not in set(dataset.manifest["label"]):
            raise DatasetError(
                f"Dataset {dataset_id!r} has no class {old!r}. Classes: {dataset.classes}"
            )
        manifest = dataset.manifest.copy()
        manifest.loc[manifest["label"] == old, "label"] = new
        return save_dataset(dataset, manifest)


def resplit(dataset_id: str, val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    """Draws a new stratified train/val/test split.

    Raises:
        ValueError: If a fraction is out of range.
        DatasetError: If a class is too small for the split (the message names it and how
            many images it needs).
    """
    validate_fractions(val_fraction, test_fraction)
    with locked(dataset_id) as dataset:
        manifest = dataset.manifest.sort_values("image", kind="stable").reset_index(drop=True)
        counts = manifest["label"].value_counts().to_dict()
        problems = split_problems(counts, val_fraction, test_fraction)
        if problems:
            raise DatasetError("Cannot split: " + "; ".join(problems))
        try:
            manifest["split"] = stratified_split(
                list(manifest["label"]),
                val_fraction=val_fraction,
                test_fraction=test_fraction,
                seed=int(seed),
            )
        except SplitError as error:
            raise DatasetError(f"Cannot split: {error}") from error
        return save_dataset(
            dataset,
            manifest,
            val_fraction=float(val_fraction),
            test_fraction=float(test_fraction),
            seed=int(seed),
        )
