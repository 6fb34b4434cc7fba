"""The fast path's inputs: the backbone's embeddings of every image, and augmented views.

Both are computed once per dataset, backbone, size and weights and cached across runs
(:mod:`core.training.embeddings`); the run's summary records how long each pass took and
whether it was reused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core.config import TrainConfig
from core.training.context import RunContext
from core.training.distribute import Distribution, embedding_method, even_batch
from core.training.embeddings import (
    augmented_extractor,
    cached_augmented_views,
    cached_embeddings,
    embedding_key,
    views_key,
)
from core.training.prepare import TrainingData

if TYPE_CHECKING:
    import keras


def embed_dataset(
    config: TrainConfig,
    ctx: RunContext,
    data: TrainingData,
    model: keras.Model,
    dist: Distribution,
):
    """The backbone embeddings of every image (computed once, cached across runs).

    On several local devices the pass is distributed (``predict`` splits each batch); each
    worker of a multi-worker run computes all of them itself (every worker needs them all).
    """
    from core.models.transfer import feature_extractor

    if data.embeddings is not None:
        return data.embeddings
    ctx.set(phase="embedding", message="Computing backbone embeddings once.")
    emb = cached_embeddings(
        feature_extractor(model),
        data.cache.array,
        data.cache.images,
        embedding_key(data.fingerprint, config.model, config.seed, data.backbone_identity),
        batch_size=even_batch(dist, min(64, max(8, config.batch_size))),
        progress=ctx.progress,
        should_stop=ctx.token.raise_if_set,
        method=embedding_method(dist),
    )
    ctx.summary.update(
        {
            "embedding_seconds": round(emb.seconds, 3),
            "embedding_reused": emb.reused,
            "embedding_cache": str(emb.path),
            # Images through the backbone per second in the one embedding pass (None when
            # the embeddings were reused from an earlier run).
            "embedding_images_per_second": round(len(data.cache.images) / emb.seconds, 2)
            if emb.seconds and not emb.reused
            else None,
            "fast_path": True,
        }
    )
    data.embeddings = emb.array
    return emb.array


def embed_augmented_views(
    config: TrainConfig, ctx: RunContext, data: TrainingData, model: keras.Model
) -> np.ndarray:
    """``augment.views`` augmented embeddings of every training image (computed once, cached)."""
    augment = config.model.augment
    ctx.set(
        phase="embedding",
        message=f"Embedding {augment.views} augmented views of each training image once.",
    )
    base = embedding_key(data.fingerprint, config.model, config.seed, data.backbone_identity)
    key = views_key(base, augment, config.seed)
    names = [data.cache.images[row] for row in data.train_rows]
    views = cached_augmented_views(
        augmented_extractor(model, augment, config.seed),
        data.cache.array,
        data.train_rows,
        names,
        key,
        views=augment.views,
        batch_size=min(64, max(8, config.batch_size)),
        progress=ctx.progress,
        should_stop=ctx.token.raise_if_set,
    )
    ctx.summary.update(
        {
            "augmented_views": augment.views,
            "views_seconds": round(views.seconds, 3),
            "views_reused": views.reused,
            "views_cache": str(views.path),
        }
    )
    return np.asarray(views.array, dtype="float32")
