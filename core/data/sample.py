"""A sample dataset the project draws itself: no download, identical on every machine.

Each class is a kind of shape (circle, square, triangle, star) drawn with random colour,
size, position, rotation and background noise, so a newcomer can train a real model in a
minute without uploading anything. Tests and benchmarks use the same generator.

:func:`write_digits_folders` writes a second, harder set: scikit-learn's bundled 8x8
handwritten digits, upscaled (ten classes of real handwriting, no download), on which a
linear head is not trivially perfect, so accuracy comparisons mean something.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SAMPLE_CLASSES = ("circle", "square", "triangle", "star")


def _polygon(cx: float, cy: float, radius: float, corners: int, angle: float) -> list[tuple]:
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / corners),
            cy + radius * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def _star(cx: float, cy: float, radius: float, angle: float) -> list[tuple]:
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.45
        theta = angle + math.pi * k / 5
        points.append((cx + r * math.cos(theta), cy + r * math.sin(theta)))
    return points


def draw_shape(shape: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Draws one random picture of ``shape``.

    Args:
        shape: One of :data:`SAMPLE_CLASSES`.
        size: (width, height) in pixels.
        rng: Source of randomness (seeded by the caller for reproducibility).

    Returns:
        An RGB image.

    Raises:
        ValueError: If ``shape`` is not a known shape.
    """
    if shape not in SAMPLE_CLASSES:
        raise ValueError(f"shape must be one of {SAMPLE_CLASSES}. Received: shape={shape!r}")
    width, height = size
    background = rng.integers(0, 256, size=3)
    noise = rng.normal(0, 18, size=(height, width, 3))
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    fill = tuple(int(c) for c in (background + 128 + rng.integers(-40, 40, size=3)) % 256)
    side = min(width, height)
    radius = side * rng.uniform(0.18, 0.38)
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    angle = rng.uniform(0, 2 * math.pi)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, radius, 4, angle), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, radius, 3, angle), fill=fill)
    else:
        draw.polygon(_star(cx, cy, radius, angle), fill=fill)
    return image.filter(ImageFilter.GaussianBlur(radius=0.6))


def write_class_folders(
    folder: str | os.PathLike[str],
    counts: dict[str, int],
    *,
    size: tuple[int, int] = (128, 128),
    image_format: str = "JPEG",
    seed: int = 0,
) -> Path:
    """Writes a folder with one sub-folder of generated images per class.

    Args:
        folder: Where to write; created if missing.
        counts: Class name -> number of images. Names outside :data:`SAMPLE_CLASSES` cycle
            through the known shapes, so any class names can be used.
        size: (width, height) of every image.
        image_format: Pillow format name, e.g. ``"JPEG"`` or ``"PNG"``.
        seed: Seed; the same arguments always give the same bytes.

    Returns:
        The folder path.
    """
    folder = Path(folder)
    extension = {"JPEG": ".jpg", "PNG": ".png"}.get(
        image_format.upper(), "." + image_format.lower()
    )
    for index, (label, count) in enumerate(counts.items()):
        shape = label if label in SAMPLE_CLASSES else SAMPLE_CLASSES[index % len(SAMPLE_CLASSES)]
        class_dir = folder / label
        class_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, index])
        for number in range(count):
            image = draw_shape(shape, size, rng)
            image.save(class_dir / f"{label}_{number:04d}{extension}", image_format, quality=92)
    return folder


def write_sample_images(
    folder: str | os.PathLike[str],
    *,
    per_class: int = 60,
    classes: Iterable[str] = SAMPLE_CLASSES,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
) -> Path:
    """Writes the sample dataset (default 4 classes x 60 images of 128x128) as class folders."""
    return write_class_folders(
        folder, {label: per_class for label in classes}, size=size, seed=seed
    )


def write_digits_folders(folder: Path, per_class: int, size: int = 64) -> Path:
    """Writes scikit-learn's 8x8 handwritten digits, upscaled to ``size`` px, as class folders.

    Args:
        folder: Where the class folders ``digit_0`` .. ``digit_9`` go.
        per_class: Images per class (at most the ~180 the set has of each digit).
        size: Side of the written PNGs in pixels.

    Returns:
        ``folder``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    written = dict.fromkeys(range(10), 0)
    for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        if written[int(label)] >= per_class:
            continue
        written[int(label)] += 1
        pixels = (image / 16.0 * 255).astype(np.uint8)
        picture = Image.fromarray(pixels).resize((size, size), Image.BILINEAR).convert("RGB")
        class_dir = Path(folder) / f"digit_{label}"
        class_dir.mkdir(parents=True, exist_ok=True)
        picture.save(class_dir / f"d{index:04d}.png")
    return Path(folder)
