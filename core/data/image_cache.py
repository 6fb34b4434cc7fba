"""Decoded, resized images cached as one uint8 array per (dataset, image size).

Decoding JPEGs every epoch costs more than a frozen backbone's forward pass on a CPU, so
each image is decoded and resized once into ``workspace/cache/images/<key>.npy``, a
memory-mapped ``(N, size, size, 3)`` uint8 array, with ``<key>.json`` naming the image of
each row. The array is filled a chunk at a time, so host memory stays bounded however many
images there are; training reads it through :class:`core.training.feeder.ArrayFeeder`, a
``keras.utils.PyDataset`` (backend-generic: no ``tf.data``), so epochs do no decoding at all.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.atomic import atomic_write_json
from core.jsonfile import read_json_cache
from core.workspace import cache_dir

CHUNK = 256
Progress = Callable[[int, int, str], None]


def resize_for_model(image: Image.Image, size: int) -> np.ndarray:
    """Turns a PIL image into the model's input: RGB, ``size`` x ``size``, uint8.

    The whole picture is squashed to a square (no crop), with bilinear filtering; training,
    evaluation and prediction must all use this function so the model sees the same pixels.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def load_resized(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """Reads one stored (already normalised) image and resizes it for the model.

    JPEGs are decoded at a reduced scale with ``draft()`` when they are much larger than
    ``size``, which makes decoding several times faster.
    """
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size * 2, size * 2))
        return resize_for_model(image, size)


@dataclass
class ImageCache:
    """A cached image array and the index of its rows.

    Attributes:
        array: ``(N, size, size, 3)`` uint8, memory-mapped read-only.
        images: Manifest ``image`` value (relative path) of each row.
        size: Side of the images in pixels.
        path: The ``.npy`` file.
        built_seconds: Seconds spent building it (0 when it was reused).
    """

    array: np.ndarray
    images: list[str]
    size: int
    path: Path
    built_seconds: float = 0.0

    def rows(self, images: Sequence[str]) -> np.ndarray:
        """Row numbers of ``images`` (manifest ``image`` values).

        Raises:
            KeyError: If an image is not in the cache.
        """
        index = {name: row for row, name in enumerate(self.images)}
        return np.array([index[name] for name in images], dtype=np.int64)


def release_pages(array: np.ndarray) -> None:
    """Unmaps the pages of a memory-mapped array that this process has touched.

    Pages of a memory-mapped file stay mapped once read or written, and count in the
    process's resident set (RSS) until unmapped: one pass over a 3 GB cache would show as a
    3 GB worker although the kernel may reclaim every page. ``MADV_DONTNEED`` unmaps them; the
    data stays in the file (and the page cache), and the next access maps it again. A no-op
    for arrays that are not memory-mapped. Measured by ``bench/memory.py``.
    """
    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_DONTNEED)


def cache_key(fingerprint: str, size: int) -> str:
    """File stem of the cache of a dataset state and image size."""
    digest = hashlib.sha256(f"{fingerprint}|{size}".encode()).hexdigest()[:20]
    return f"{digest}-{size}"


def _open_existing(npy: Path, index: Path, size: int) -> ImageCache | None:
    if not (npy.is_file() and index.is_file()):
        return None
    meta = read_json_cache(index)  # a damaged index means the cache is rebuilt
    images = meta.get("images") if meta else None
    if not isinstance(images, list):
        return None
    try:
        array = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if array.shape != (len(images), size, size, 3) or array.dtype != np.uint8:
        return None
    return ImageCache(array=array, images=images, size=size, path=npy)


def build_image_cache(
    dataset_dir: str | os.PathLike[str],
    images: Sequence[str],
    fingerprint: str,
    size: int,
    *,
    threads: int = 2,
    progress: Progress | None = None,
    should_stop: Callable[[], None] | None = None,
) -> ImageCache:
    """Returns the cached array of ``images`` at ``size``, building it if needed.

    Args:
        dataset_dir: The dataset folder (manifest paths are relative to it).
        images: Manifest ``image`` values, in the row order of the array.
        fingerprint: The dataset's fingerprint (changes when its set of images changes).
        size: Side of the square images in pixels.
        threads: Decoding threads (Pillow releases the GIL while decoding).
        progress: Called with (done, total, message) after each chunk.
        should_stop: Called after each chunk; raises to abandon the build (cancel).

    Returns:
        The cache, memory-mapped read-only.
    """
    folder = cache_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(fingerprint, size)
    npy, index = folder / f"{key}.npy", folder / f"{key}.json"
    existing = _open_existing(npy, index, size)
    if existing is not None and existing.images == list(images):
        return existing
    started = time.monotonic()
    dataset_dir = Path(dataset_dir)
    total = len(images)
    tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
    try:
        array = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(total, size, size, 3)
        )
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for start in range(0, total, CHUNK):
                names = images[start : start + CHUNK]
                paths = [dataset_dir / name for name in names]
                for offset, pixels in enumerate(pool.map(lambda p: load_resized(p, size), paths)):
                    array[start + offset] = pixels
                # Written pages are in the page cache (shared mapping); keep RSS bounded.
                release_pages(array)
                if progress is not None:
                    progress(min(start + CHUNK, total), total, f"Decoding images at {size} px")
                if should_stop is not None:
                    should_stop()
        array.flush()
        del array
        atomic_write_json(index, {"images": list(images), "size": size, "fingerprint": fingerprint})
        os.replace(tmp, npy)
    finally:
        tmp.unlink(missing_ok=True)
    cache = _open_existing(npy, index, size)
    if cache is None:
        raise RuntimeError(f"The image cache {npy} was written but cannot be read back.")
    cache.built_seconds = time.monotonic() - started
    return cache
