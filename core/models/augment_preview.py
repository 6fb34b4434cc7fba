"""Augmented copies of a few images, made by the same layers training uses.

The Model page shows these so a user sees what "rotation 0.1" or "zoom 0.2" does to *their*
pictures before training. The layers come from
:func:`core.models.transfer.build_augmentation`, so the preview and the training pipeline
cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from core.config import AugmentConfig


def load_square(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """Reads an image as RGB, resized to ``size`` x ``size``, as a uint8 array.

    Args:
        path: An image the dataset stored (already normalised by ingest).
        size: Side in pixels.

    Returns:
        Array of shape (size, size, 3), dtype uint8.
    """
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def augment_samples(
    paths: Sequence[str | os.PathLike[str]],
    augment: AugmentConfig,
    *,
    size: int = 160,
    variants: int = 3,
    seed: int = 0,
) -> list[list[np.ndarray]]:
    """Applies the training augmentation to each image a few times.

    Args:
        paths: Image files.
        augment: The augmentation settings.
        size: Side the images are resized to first.
        variants: Augmented copies per image.
        seed: Seed of the random layers, so the same settings give the same preview.

    Returns:
        For each path, ``[original, copy_1, ..., copy_variants]`` as uint8 arrays of shape
        (size, size, 3). With augmentation off, the copies equal the original.

    Raises:
        ValueError: If ``variants`` is below 1.
    """
    if isinstance(variants, bool) or not isinstance(variants, int) or variants < 1:
        raise ValueError(f"variants must be an integer >= 1. Received: variants={variants!r}")
    originals = [load_square(path, size) for path in paths]
    if not originals:
        return []
    batch = np.stack(originals).astype("float32")
    if not augment.enabled:
        return [[image] + [image.copy() for _ in range(variants)] for image in originals]

    import keras

    from core.models.transfer import build_augmentation

    layers = build_augmentation(augment, seed=seed)
    copies = []
    for _ in range(variants):
        out = keras.ops.convert_to_numpy(layers(batch, training=True))
        copies.append(np.clip(out, 0, 255).astype(np.uint8))
    return [[original] + [copy[i] for copy in copies] for i, original in enumerate(originals)]
