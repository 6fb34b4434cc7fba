"""Backbone embeddings computed once and cached: the frozen-backbone fast path.

When nothing in the backbone trains and augmentation is off, the backbone maps each image
to the same vector every epoch, so it is computed once per (dataset state x backbone x
image size x weights x pooling) and stored under ``workspace/cache/embeddings/`` as a
float32 ``.npy``; later runs with the same settings reuse it. The head then trains on the
vectors, which makes CPU training interactive.

The pass runs a compiled predict step batch by batch (``predict_on_batch``) rather than
``model.predict``: on a 2-core CPU ``predict`` sometimes ran at single-core speed.
:func:`measure_embedding_methods` times both.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import atomic_write_json
from core.config import ModelConfig
from core.data.image_cache import release_pages
from core.jsonfile import read_json_cache
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
        ``(N, feature_dim)`` float32.
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
            out = np.empty((total, features.shape[-1]), dtype="float32")
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
    folder = cache_dir() / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    npy, index = folder / f"{key}.npy", folder / f"{key}.json"
    meta = read_json_cache(index) if npy.is_file() else None  # damaged: computed again
    if meta is not None:
        try:
            array = np.load(npy, mmap_mode="r")
        except (OSError, ValueError):
            array = np.empty((0,))
        if meta.get("images") == list(image_names) and len(array) == len(image_names):
            return EmbeddingCache(array=array, path=npy, seconds=0.0, reused=True)
    started = time.monotonic()
    vectors = compute_embeddings(
        extractor,
        images,
        batch_size=batch_size,
        method=method,
        progress=progress,
        should_stop=should_stop,
    )
    seconds = time.monotonic() - started
    tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
    try:
        np.save(tmp, vectors)
        atomic_write_json(index, {"images": list(image_names), "seconds": seconds})
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
