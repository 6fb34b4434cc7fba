"""``fit``'s inputs for one phase: embeddings, augmented views, activations or images.

:func:`fit_inputs` picks the feed for where the phase's inputs live and how many devices
train: a resident tf.data pipeline for small cached arrays on one device
(:func:`core.training.feeder.resident_fit_inputs`), the memory-mapped feeders otherwise, and
per-worker datasets for a multi-worker run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.config import TrainConfig
from core.training.activations import ActivationCache
from core.training.distribute import Distribution, even_batch, pad_for_replicas, worker_inputs
from core.training.feeder import ArrayFeeder, ViewFeeder, resident_fit_inputs
from core.training.phases import Phase
from core.training.prepare import TrainingData

# Decoded image caches up to this size (train + val) are fed from memory.
RESIDENT_IMAGE_BYTES = 256 << 20


def fit_inputs(
    config: TrainConfig,
    data: TrainingData,
    source: Any,
    fast: bool,
    phase: Phase,
    dist: Distribution,
    views: np.ndarray | None = None,
    activations: ActivationCache | None = None,
) -> tuple[dict[str, Any], int]:
    """``fit`` keyword arguments for the phase's inputs, and the steps per epoch."""
    if activations is not None:
        return _activation_inputs(config, data, phase, activations)
    if dist.workers > 1:
        return worker_inputs(
            dist,
            source,
            data.train_rows,
            data.train_targets,
            data.val_rows,
            data.val_targets,
            global_batch=config.batch_size,
            seed=config.seed + phase.index,
            sample_weights=data.sample_weights,
        )
    images = len(data.train_rows) + len(data.val_rows)
    small = images * source[:1].nbytes <= RESIDENT_IMAGE_BYTES
    if not dist.distributed and (fast or small):
        # Cached arrays are fed from memory; so is a small image cache: the PyDataset
        # feeder's Python call per batch made a whole-network epoch ("Everything") 0.6x
        # plain Keras on arrays. Images through a whole network validate at the training
        # batch.
        resident = resident_fit_inputs(
            views if views is not None else source[data.train_rows],
            data.train_targets,
            source[data.val_rows],
            data.val_targets,
            config.batch_size,
            seed=config.seed + phase.index,
            views=views is not None,
            sample_weights=data.sample_weights,
            val_batch_size=None if fast else config.batch_size,
        )
        if resident is not None:
            return resident
    if fast and views is not None:
        feed = ViewFeeder(
            views,
            data.train_targets,
            config.batch_size,
            seed=config.seed + phase.index,
            sample_weights=data.sample_weights,
        )
        inputs = {
            "x": feed,
            "validation_data": (
                np.asarray(source[data.val_rows], dtype="float32"),
                data.val_targets,
            ),
            "validation_batch_size": max(config.batch_size, 256),
        }
        return inputs, len(feed)
    batch = even_batch(dist, config.batch_size)
    train_rows, train_targets, train_weights = pad_for_replicas(
        dist, data.train_rows, data.train_targets, data.sample_weights
    )
    val_rows, val_targets, val_weights = pad_for_replicas(dist, data.val_rows, data.val_targets)
    if fast:
        # Embeddings are small (20k images x 1280 floats = 100 MB): plain arrays let
        # Keras batch them without a Python call per step.
        validation = (np.asarray(source[val_rows], dtype="float32"), val_targets)
        if val_weights is not None:
            validation = (*validation, val_weights)
        inputs: dict[str, Any] = {
            "x": np.asarray(source[train_rows], dtype="float32"),
            "y": train_targets,
            "sample_weight": train_weights,
            "batch_size": batch,
            "shuffle": True,
            "validation_data": validation,
            "validation_batch_size": even_batch(dist, max(batch, 256)),
        }
        return inputs, -(-len(train_rows) // batch)
    train_feed = ArrayFeeder(
        source,
        train_rows,
        train_targets,
        batch,
        shuffle=True,
        seed=config.seed + phase.index,
        sample_weights=train_weights,
        dtype="float32",
    )
    val_feed = ArrayFeeder(
        source, val_rows, val_targets, batch, sample_weights=val_weights, dtype="float32"
    )
    return {"x": train_feed, "validation_data": val_feed}, len(train_feed)


def _activation_inputs(
    config: TrainConfig, data: TrainingData, phase: Phase, activations: ActivationCache
) -> tuple[dict[str, Any], int]:
    """``fit`` inputs of a phase fine-tuning on cached activations (or their augmented views)."""
    seed = config.seed + phase.index
    views = activations.views is not None
    resident = resident_fit_inputs(
        activations.views if views else activations.train,
        data.train_targets,
        activations.val,
        data.val_targets,
        config.batch_size,
        seed=seed,
        views=views,
        sample_weights=data.sample_weights,
    )
    if resident is not None:
        return resident
    if activations.views is not None:
        train: Any = ViewFeeder(
            activations.views,
            data.train_targets,
            config.batch_size,
            seed=seed,
            sample_weights=data.sample_weights,
        )
    else:
        train = ArrayFeeder(
            activations.train,
            np.arange(len(data.train_rows)),
            data.train_targets,
            config.batch_size,
            shuffle=True,
            seed=seed,
            sample_weights=data.sample_weights,
        )
    val = ArrayFeeder(
        activations.val, np.arange(len(data.val_rows)), data.val_targets, config.batch_size
    )
    return {"x": train, "validation_data": val}, len(train)
