"""The frozen bottom's activations computed once and cached: fast fine-tuning of ``top:N``.

When only the top blocks of a pretrained backbone train, the blocks below them (BatchNorm in
inference mode) map each image to the same activation every epoch. The trainer splits the
model there (:mod:`core.models.cut`), runs the bottom once over the training and validation
images, stores the activations memory-mapped under ``workspace/cache/activations/<key>/``,
and trains the top blocks and the head on them. With augmentation on, ``augment.views``
augmented views of each training image go through the bottom once instead (validation images
are never augmented), and each epoch draws one view per image, as the head-only fast path does.

Activations are stored as float16 when that changes the top's predictions by at most
:data:`FLOAT16_TOLERANCE` on the first batch (checked every time a cache is built), else as
float32. The key covers the dataset state, the backbone, the input size, the cut, a digest of
the bottom's weights, the augmentation and the seed, so a cache is reused only when it holds
exactly what the bottom would compute now.

A cache is never built beyond the disk budget (:func:`budget_bytes`): the trainer checks
:func:`cache_bytes` first and runs the whole network when it would not fit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_json
from core.config import AugmentConfig
from core.data.image_cache import release_pages
from core.training.embeddings import compute_embeddings
from core.workspace import cache_dir

Progress = Callable[[int, int, str], None]

#: Largest change of a predicted probability float16 storage may cause (else float32).
FLOAT16_TOLERANCE = 1e-3
#: Environment variable: the most megabytes one activation cache may take on disk.
BUDGET_ENV = "TRANSFER_STUDIO_ACTIVATION_CACHE_MB"
#: Default budget: at most this many bytes, and never more than half the free disk.
DEFAULT_BUDGET_BYTES = 8 * 1024**3
_CHUNK_ROWS = 256
_META = "meta.json"


def cache_bytes(
    values_per_image: int, train_images: int, val_images: int, *, views: int = 0, itemsize: int = 2
) -> int:
    """Bytes an activation cache takes on disk.

    Args:
        values_per_image: Numbers per image at the cut (:attr:`CutPlan.values_per_image`).
        train_images: Training images.
        val_images: Validation images.
        views: Augmented views per training image (0: augmentation off).
        itemsize: Bytes per number (2 for float16, 4 for float32).
    """
    rows = train_images * max(views, 1) + val_images
    return int(values_per_image) * rows * itemsize


def budget_bytes() -> int:
    """The most bytes one activation cache may take: the configured budget or half the free disk.

    Raises:
        ValueError: If ``TRANSFER_STUDIO_ACTIVATION_CACHE_MB`` is not a non-negative number.
    """
    configured = DEFAULT_BUDGET_BYTES
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if raw:
        try:
            megabytes = float(raw)
        except ValueError:
            megabytes = -1.0
        if not megabytes >= 0:
            raise ValueError(f"{BUDGET_ENV} must be a number of megabytes >= 0. Received: {raw!r}")
        configured = int(megabytes * 1024**2)
    folder = cache_dir()
    free = shutil.disk_usage(folder).free
    return min(configured, free // 2)


def describe_bytes(count: int) -> str:
    """``count`` bytes in words (``"12 MB"``, ``"1.4 GB"``)."""
    if count >= 1024**3:
        return f"{count / 1024**3:.1f} GB"
    megabytes = count / 1024**2
    return f"{megabytes:.1f} MB" if megabytes < 10 else f"{megabytes:.0f} MB"


def weights_digest(model: Any) -> str:
    """A short digest of every weight of ``model`` (what makes two bottoms compute the same)."""
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable))
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def activation_key(
    fingerprint: str,
    backbone: str,
    image_size: int,
    block: str,
    bottom_digest: str,
    *,
    augment: AugmentConfig | None = None,
    seed: int = 0,
) -> str:
    """Folder name of the activations of a dataset state at a cut of a backbone.

    Args:
        fingerprint: The dataset state.
        backbone: Registry name.
        image_size: Input side.
        block: The first trainable block (where the cut is).
        bottom_digest: :func:`weights_digest` of the frozen bottom.
        augment: The augmentation when views are cached (None: no views).
        seed: The run's seed (draws the views).
    """
    import keras

    parts = [fingerprint, backbone, str(image_size), block, bottom_digest, keras.backend.backend()]
    if augment is not None and augment.enabled:
        parts += [json.dumps(dataclasses.asdict(augment), sort_keys=True), str(seed)]
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]
    safe_block = "".join(c if c.isalnum() or c in "_-" else "-" for c in block)
    return f"{backbone}-{image_size}-{safe_block}-{digest}"


@dataclass
class ActivationCache:
    """Activations of the training and validation images at a cut.

    Attributes:
        train: ``(n_train, *shape)`` activations of the training images, or None with views.
        views: ``(K, n_train, *shape)`` augmented views of the training images, or None.
        val: ``(n_val, *shape)`` activations of the validation images.
        folder: Where the arrays are stored.
        dtype: ``"float16"`` or ``"float32"``.
        seconds: Seconds spent computing them (0 when reused).
        reused: Whether an earlier run's cache was used.
    """

    train: np.ndarray | None
    views: np.ndarray | None
    val: np.ndarray
    folder: Path
    dtype: str
    seconds: float
    reused: bool

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays."""
        arrays = (self.train, self.views, self.val)
        return int(sum(a.nbytes for a in arrays if a is not None))


def _load(folder: Path, train_names: list[str], val_names: list[str], views: int):
    """The cache in ``folder`` if it holds the named images; None when absent or unusable.

    A truncated, empty or foreign file counts as absent (the cache is built again).
    """
    meta_path = folder / _META
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    if meta.get("train") != list(train_names) or meta.get("val") != list(val_names):
        return None
    if meta.get("views") != views or meta.get("dtype") not in ("float16", "float32"):
        return None
    try:
        val = np.load(folder / "val.npy", mmap_mode="r")
        train = np.load(folder / ("views.npy" if views else "train.npy"), mmap_mode="r")
    except (OSError, ValueError):
        return None
    expected = (views, len(train_names)) if views else (len(train_names),)
    if train.shape[: len(expected)] != expected or val.shape[:1] != (len(val_names),):
        return None
    if train.shape[len(expected) :] != val.shape[1:] or train.dtype != val.dtype:
        return None
    return ActivationCache(
        train=None if views else train,
        views=train if views else None,
        val=val,
        folder=folder,
        dtype=str(val.dtype),
        seconds=0.0,
        reused=True,
    )


def choose_dtype(top: Any, activations: np.ndarray) -> str:
    """``"float16"`` when storing ``activations`` so changes ``top``'s predictions by at most
    :data:`FLOAT16_TOLERANCE`, else ``"float32"``."""
    half = activations.astype("float16")
    if not np.isfinite(half).all():
        return "float32"
    exact = np.asarray(top.predict_on_batch(activations), dtype="float32")
    rounded = np.asarray(top.predict_on_batch(half.astype("float32")), dtype="float32")
    return "float16" if float(np.abs(exact - rounded).max()) <= FLOAT16_TOLERANCE else "float32"


class _Writer:
    """Writes chunks of activations into a new ``.npy`` memory map, in order."""

    def __init__(self, path: Path, leading: tuple[int, ...]):
        self.path, self.leading = path, leading
        self.array: np.ndarray | None = None

    def write(self, index: tuple[Any, ...], values: np.ndarray, dtype: str) -> None:
        if self.array is None:
            shape = (*self.leading, *values.shape[1:])
            self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=dtype, shape=shape)
        self.array[index] = values

    def close(self, shape: tuple[int, ...], dtype: str) -> None:
        """Flushes the array; writes an empty one of ``shape`` per row when no chunk came."""
        if self.array is None:
            empty = np.lib.format.open_memmap(
                self.path, mode="w+", dtype=dtype, shape=(*self.leading, *shape)
            )
            del empty
            return
        self.array.flush()
        self.array = None


def cached_activations(
    bottom: Any,
    top: Any,
    images: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    train_names: list[str],
    val_names: list[str],
    key: str,
    *,
    augmented_bottom: Any = None,
    views: int = 0,
    batch_size: int = 32,
    progress: Progress | None = None,
    should_stop: Callable[[], None] | None = None,
) -> ActivationCache:
    """Returns the activations stored under ``key``, computing and storing them if needed.

    Args:
        bottom: Raw images -> activation at the cut (:func:`core.models.cut.split_at_cut`).
        top: Activation -> probabilities (decides float16 vs float32 storage).
        images: The image cache's array.
        train_rows: Rows of the training images.
        val_rows: Rows of the validation images.
        train_names: Names of the training images (checked when the cache is reused).
        val_names: Names of the validation images.
        key: From :func:`activation_key`.
        augmented_bottom: Like ``bottom`` but augmenting every call; with ``views`` > 0 the
            training images go through it ``views`` times.
        views: Augmented views per training image (0: none).
        batch_size: Images per forward pass.
        progress: Called with (done, total, message).
        should_stop: Raises to abandon the pass (cancel).
    """
    if views and augmented_bottom is None:
        raise ValueError(f"views={views} needs an augmented_bottom model to draw them.")
    root = cache_dir() / "activations"
    folder = root / key
    found = _load(folder, train_names, val_names, views)
    if found is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    started = time.monotonic()
    chosen: dict[str, str] = {}
    total = len(train_rows) * max(views, 1) + len(val_rows)
    done = 0
    message = (
        f"Caching the frozen part's output for {views} augmented views of each training image"
        if views
        else "Caching the frozen part's output once"
    )

    def run(model: Any, rows: np.ndarray, writer: _Writer, lead: tuple[Any, ...]) -> None:
        nonlocal done
        rows = np.asarray(rows, dtype=np.int64)
        for start in range(0, len(rows), _CHUNK_ROWS):
            chunk = np.asarray(images[rows[start : start + _CHUNK_ROWS]])
            release_pages(images)
            values = compute_embeddings(model, chunk, batch_size=batch_size)
            if "dtype" not in chosen:
                chosen["dtype"] = choose_dtype(top, values[:batch_size])
            writer.write((*lead, slice(start, start + len(chunk))), values, chosen["dtype"])
            done += len(chunk)
            if progress is not None:
                progress(done, total, message)
            if should_stop is not None:
                should_stop()

    try:
        if views:
            writer = _Writer(tmp / "views.npy", (views, len(train_rows)))
            for view in range(views):
                run(augmented_bottom, train_rows, writer, (view,))
        else:
            writer = _Writer(tmp / "train.npy", (len(train_rows),))
            run(bottom, train_rows, writer, ())
        shape = tuple(int(d) for d in top.input_shape[1:])
        writer.close(shape, chosen.get("dtype", "float32"))
        val_writer = _Writer(tmp / "val.npy", (len(val_rows),))
        run(bottom, val_rows, val_writer, ())
        val_writer.close(shape, chosen.get("dtype", "float32"))
        seconds = time.monotonic() - started
        atomic_write_json(
            tmp / _META,
            {
                "train": list(train_names),
                "val": list(val_names),
                "views": views,
                "dtype": chosen.get("dtype", "float32"),
                "seconds": seconds,
            },
        )
        if folder.exists() and _load(folder, train_names, val_names, views) is None:
            # An unusable cache under this key (checked by _load above): ours to replace.
            shutil.rmtree(folder)
        if not folder.exists():
            try:
                os.replace(tmp, folder)
            except OSError:
                # Another run stored the same key meanwhile; its cache is used if readable.
                if _load(folder, train_names, val_names, views) is None:
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    built = _load(folder, train_names, val_names, views)
    if built is None:
        raise RuntimeError(f"The activation cache just written to {folder} cannot be read back.")
    built.seconds, built.reused = seconds, False
    return built
