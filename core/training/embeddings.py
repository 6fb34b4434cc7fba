"""Backbone embeddings computed once and cached: the frozen-backbone fast path.

When nothing in the backbone trains and augmentation is off, the backbone maps each image
to the same vector every epoch, so it is computed once per (dataset state x backbone x
image size x weights x pooling) and stored under ``workspace/cache/embeddings/`` as a
float32 ``.npy``; later runs with the same settings reuse it. The head then trains on the
vectors, which makes CPU training interactive.

The pass runs a compiled predict step batch by batch (``predict_on_batch``) rather than
``model.predict``: on a 2-core CPU ``predict`` sometimes ran at single-core speed.
:func:`measure_embedding_methods` times both.

With augmentation on, the head still trains on cached vectors: :func:`cached_augmented_views`
embeds ``K`` randomly augmented views of each *training* image once (validation and test
images are never augmented) and stores them as ``(K, n_train, dim)``; the trainer draws one
view per image per epoch (:class:`core.training.feeder.ViewFeeder`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import atomic_write_json
from core.config import AugmentConfig, ModelConfig
from core.data.image_cache import release_pages
from core.training.feeder import ArrayFeeder
from core.workspace import cache_dir

Progress = Callable[[int, int, str], None]
METHODS = ("batches", "predict")
#: ``"call"``: the model called on each batch (each worker of a multi-worker run).
ALL_METHODS = (*METHODS, "call")


def weights_identity(config: ModelConfig, seed: int) -> str:
    """What makes two backbones' weights equal: ``imagenet``, the file's hash, or the seed.

    Random initial weights (``weights="none"``) depend on the seed, so it is part of the key.
    """
    if config.weights == "imagenet":
        return "imagenet"
    if config.weights == "none":
        return f"random-seed{seed}"
    digest = hashlib.sha256()
    with open(config.weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"file-{digest.hexdigest()[:16]}"


def embedding_key(
    fingerprint: str, config: ModelConfig, seed: int, backbone_identity: str | None = None
) -> str:
    """File stem of the embeddings of a dataset state under a backbone configuration.

    Args:
        fingerprint: The dataset state.
        config: The model settings.
        seed: The run's seed (random initial weights depend on it).
        backbone_identity: What the backbone's weights are when they do not follow from
            ``config`` (a parent run that changed them); default :func:`weights_identity`.
    """
    import keras

    parts = [
        fingerprint,
        config.backbone,
        str(config.image_size),
        backbone_identity or weights_identity(config, seed),
        config.pooling,
        keras.backend.backend(),
    ]
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]
    return f"{config.backbone}-{config.image_size}-{digest}"


def compute_embeddings(
    extractor,
    images: np.ndarray,
    *,
    batch_size: int = 32,
    method: str = "batches",
    progress: Progress | None = None,
    should_stop: Callable[[], None] | None = None,
) -> np.ndarray:
    """Applies ``extractor`` to every row of ``images`` (uint8) and returns float32 vectors.

    Args:
        extractor: Keras model from raw 0..255 images to pooled features.
        images: ``(N, size, size, 3)`` array (may be memory-mapped).
        batch_size: Images per forward pass.
        method: ``"batches"`` (compiled predict step per batch), ``"predict"`` (Keras'
            ``predict``, which a multi-device strategy distributes) or ``"call"``.
        progress: Called with (done, total, message) after each batch.
        should_stop: Called after each batch; raises to abandon the pass (cancel).

    Returns:
        ``(N, feature_dim)`` float32 (``(N, *shape)`` for an extractor with a spatial output,
        such as the frozen bottom of a cut backbone).
    """
    if method not in ALL_METHODS:
        raise ValueError(f"method must be one of {set(ALL_METHODS)}. Received: method={method!r}")
    total = len(images)
    if method == "predict":
        feeder = ArrayFeeder(images, np.arange(total), np.zeros((total, 1), "float32"), batch_size)
        return np.asarray(extractor.predict(feeder, verbose=0), dtype="float32")

    out: np.ndarray | None = None
    for start in range(0, total, batch_size):
        batch = np.asarray(images[start : start + batch_size], dtype="float32")
        release_pages(images)
        rows = len(batch)
        if rows < batch_size:
            # A shorter last batch would trace the predict function a second time (seconds
            # on a CPU, measured by bench/frozen.py); pad it and drop the padding's rows.
            padding = np.zeros((batch_size - rows, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, padding])
        if method == "call":
            output = extractor(batch, training=False)
        else:
            output = extractor.predict_on_batch(batch)
        features = np.asarray(output, dtype="float32")[:rows]
        if out is None:
            out = np.empty((total, *features.shape[1:]), dtype="float32")
        out[start : start + rows] = features
        if progress is not None:
            progress(min(start + batch_size, total), total, "Computing embeddings")
        if should_stop is not None:
            should_stop()
    if out is None:
        raise ValueError("Cannot compute embeddings of zero images.")
    return out


@dataclass
class EmbeddingCache:
    """Embeddings of every row of an image cache.

    Attributes:
        array: ``(N, feature_dim)`` float32, rows aligned with the image cache.
        path: The ``.npy`` file.
        seconds: Seconds spent computing them (0 when reused).
        reused: Whether an earlier run's file was used.
    """

    array: np.ndarray
    path: Path
    seconds: float
    reused: bool


def cached_embeddings(
    extractor,
    images: np.ndarray,
    image_names: list[str],
    key: str,
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
    should_stop: Callable[[], None] | None = None,
    method: str = "batches",
) -> EmbeddingCache:
    """Returns the embeddings stored under ``key``, computing and saving them if needed.

    Args:
        extractor: Keras model from raw images to pooled features.
        images: The image cache's array.
        image_names: Its row index (stored beside the vectors, checked on reuse).
        key: From :func:`embedding_key`.
        batch_size: Images per forward pass.
        progress: Called with (done, total, message).
        should_stop: Raises to abandon the pass.
        method: How the pass runs (see :func:`compute_embeddings`).
    """
    found = _stored(key, image_names, (len(image_names),))
    if found is not None:
        return found
    started = time.monotonic()
    vectors = compute_embeddings(
        extractor,
        images,
        batch_size=batch_size,
        method=method,
        progress=progress,
        should_stop=should_stop,
    )
    return _store(key, vectors, image_names, time.monotonic() - started)


def _stored(key: str, names: list[str], leading: tuple[int, ...]) -> EmbeddingCache | None:
    """The vectors stored under ``key`` if they are of ``names`` with the leading ``shape``.

    An unreadable, truncated or foreign file counts as absent (it is computed again).
    """
    folder = cache_dir() / "embeddings"
    npy, index = folder / f"{key}.npy", folder / f"{key}.json"
    if not (npy.is_file() and index.is_file()):
        return None
    try:
        meta = json.loads(index.read_text())
        array = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("images") != list(names):
        return None
    if array.ndim != len(leading) + 1 or array.shape[: len(leading)] != leading:
        return None
    return EmbeddingCache(array=array, path=npy, seconds=0.0, reused=True)


def _store(key: str, vectors: np.ndarray, names: list[str], seconds: float) -> EmbeddingCache:
    """Saves ``vectors`` (and the row names they belong to) under ``key``, atomically."""
    folder = cache_dir() / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    npy, index = folder / f"{key}.npy", folder / f"{key}.json"
    tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
    try:
        np.save(tmp, vectors)
        atomic_write_json(index, {"images": list(names), "seconds": seconds})
        os.replace(tmp, npy)
    finally:
        tmp.unlink(missing_ok=True)
    return EmbeddingCache(array=vectors, path=npy, seconds=seconds, reused=False)


def measure_embedding_methods(extractor, images: np.ndarray, batch_size: int = 32) -> dict:
    """Times both embedding methods on ``images`` (after one warm-up batch each).

    Returns:
        ``{"batches": images_per_second, "predict": images_per_second}``.
    """
    result = {}
    for method in METHODS:
        compute_embeddings(extractor, images[:batch_size], batch_size=batch_size, method=method)
        started = time.perf_counter()
        compute_embeddings(extractor, images, batch_size=batch_size, method=method)
        result[method] = len(images) / (time.perf_counter() - started)
    return result


def views_key(base_key: str, augment: AugmentConfig, seed: int) -> str:
    """File stem of the augmented views: the embedding key plus the augmentation and seed."""
    recipe = json.dumps(dataclasses.asdict(augment), sort_keys=True)
    digest = hashlib.sha256(f"{base_key}|{recipe}|{seed}".encode()).hexdigest()[:16]
    return f"{base_key}-views{augment.views}-{digest}"


def augmented_extractor(model, augment: AugmentConfig, seed: int, *, through=None):
    """Raw image -> random augmentation (always on) -> pooled features, sharing ``model``'s weights.

    The augmentation layers are new ones built from ``augment`` with ``seed`` (so a rerun
    draws the same views); the backbone runs in inference mode as in training.

    Args:
        model: The transfer model.
        augment: The augmentation recipe.
        seed: Seed of the random layers.
        through: A model from raw images to use after the augmentation instead of
            preprocess -> backbone -> pool (the frozen bottom of a cut backbone).
    """
    import keras

    from core.models.transfer import build_augmentation

    augmentation = build_augmentation(augment, seed=seed)

    class AlwaysAugment(keras.layers.Layer):
        # The transfer model's Augmentation only acts in training; here every call augments.
        def call(self, inputs):
            return augmentation(inputs, training=True)

    inputs = keras.Input(model.input_shape[1:], name="image")
    x = AlwaysAugment(name="always_augment")(inputs)
    if through is not None:
        return keras.Model(inputs, through(x), name="augmented_bottom")
    x = model.get_layer("preprocess")(x)
    x = model.get_layer("backbone")(x, training=False)
    x = model.get_layer("pool")(x)
    return keras.Model(inputs, x, name="augmented_extractor")


def cached_augmented_views(
    extractor,
    images: np.ndarray,
    rows: np.ndarray,
    row_names: list[str],
    key: str,
    *,
    views: int,
    batch_size: int = 32,
    progress: Progress | None = None,
    should_stop: Callable[[], None] | None = None,
) -> EmbeddingCache:
    """Returns ``views`` augmented embeddings of ``images[rows]``, computing them if needed.

    The result's ``array`` is ``(views, len(rows), feature_dim)`` float32: ``array[v, i]``
    is view ``v`` of the image in row ``rows[i]``.

    Args:
        extractor: From :func:`augmented_extractor` (augments on every call).
        images: The image cache's array.
        rows: Rows of the training images, in the order the views are stored.
        row_names: Their image names (stored beside the vectors, checked on reuse).
        key: From :func:`views_key`.
        views: How many views of each image.
        batch_size: Images per forward pass.
        progress: Called with (done, total, message).
        should_stop: Raises to abandon the pass.
    """
    found = _stored(key, row_names, (views, len(row_names)))
    if found is not None:
        return found
    rows = np.asarray(rows, dtype=np.int64)
    started = time.monotonic()
    out: np.ndarray | None = None
    total = views * len(rows)
    for view in range(views):
        for start in range(0, len(rows), 256):
            chunk = np.asarray(images[rows[start : start + 256]])
            release_pages(images)
            vectors = compute_embeddings(extractor, chunk, batch_size=batch_size)
            if out is None:
                out = np.empty((views, len(rows), vectors.shape[-1]), dtype="float32")
            out[view, start : start + len(chunk)] = vectors
            if progress is not None:
                done = view * len(rows) + start + len(chunk)
                progress(done, total, f"Embedding {views} augmented views of each training image")
            if should_stop is not None:
                should_stop()
    if out is None:
        raise ValueError("Cannot compute augmented views of zero training images.")
    return _store(key, out, row_names, time.monotonic() - started)
