"""What a run needs before its model: the devices, and the dataset decoded and split.

:func:`prepare_device` picks the devices (one, several local ones, or several workers), the
seed and the precision policy; :func:`prepare_data` loads the dataset, checks it can be
trained on, decodes it once into the image cache and returns its splits as
:class:`TrainingData`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.config import TrainConfig
from core.data.image_cache import build_image_cache
from core.training.context import RunContext
from core.training.devices import describe_devices, remember_devices
from core.training.distribute import Distribution, setup_distribution
from core.training.phases import balanced_class_weights


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(len(labels), num_classes)`` float32 one-hot rows of integer ``labels``."""
    out = np.zeros((len(labels), num_classes), dtype="float32")
    out[np.arange(len(labels)), labels] = 1.0
    return out


@dataclass
class TrainingData:
    """The dataset of a run, decoded once into the image cache and split into rows.

    Attributes:
        classes: Class names in the model's output order.
        fingerprint: The dataset's content fingerprint (keys the caches).
        cache: The per-size image cache (``cache.array`` is ``(N, size, size, 3)`` uint8).
        train_rows: Rows of the cache in the train split.
        val_rows: Rows in the val split.
        train_targets: One-hot targets of the train rows.
        val_targets: One-hot targets of the val rows.
        sample_weights: Per-row weights of the train rows (balanced classes), or None.
        backbone_identity: What the backbone's weights are when they come from a parent run
            that changed them (keys the embedding cache); None otherwise.
        test_rows: Rows in the test split (never used to pick a model; only reported).
        test_targets: One-hot targets of the test rows.
        embeddings: The backbone embeddings of every cache row once the fast path loaded
            them (the frozen backbone's; None before).
        dataset_dir: The dataset's folder.
        val_images: Image names of the val rows, in the same order.
        test_images: Image names of the test rows, in the same order.
    """

    classes: list[str]
    fingerprint: str
    cache: Any
    train_rows: np.ndarray
    val_rows: np.ndarray
    train_targets: np.ndarray
    val_targets: np.ndarray
    sample_weights: np.ndarray | None
    backbone_identity: str | None = None
    test_rows: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    test_targets: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros((0, 0), "float32")
    )
    embeddings: np.ndarray | None = None
    dataset_dir: Path | None = None
    val_images: list[str] = dataclasses.field(default_factory=list)
    test_images: list[str] = dataclasses.field(default_factory=list)


def prepare_device(config: TrainConfig, ctx: RunContext) -> tuple[Any, Distribution]:
    """Chooses the devices, seeds, sets the precision policy.

    Returns:
        The ``jit_compile`` setting for ``fit`` and the :class:`Distribution` (one device,
        several local devices, or several workers) the run trains with.
    """
    import keras

    # First: a multi-device strategy must exist before the backend makes its devices.
    dist = setup_distribution()
    ctx.summary.update(dist.summary())
    if dist.distributed:
        ctx.note(dist.describe(config.batch_size))
    device = describe_devices()
    if "CUDA_VISIBLE_DEVICES" not in os.environ:  # it sees the machine as the app does
        try:
            remember_devices(device)
        except OSError as error:  # only costs the app a slower first Model page
            ctx.note(f"Could not keep the device description for the app: {error}")
    ctx.set(device=device["label"], phase="loading", message="Loading the dataset.")
    ctx.summary["device"] = device["label"]
    # What the epoch times in the summary were measured on (see core.models.estimate).
    ctx.summary["device_kind"] = device["kind"]
    ctx.summary["cpu_cores"] = device.get("cpu_cores") or os.cpu_count()
    if config.mixed_precision:
        if device["kind"] == "gpu":
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            ctx.note("Mixed precision needs a GPU; training in float32 on this CPU.")
    keras.utils.set_random_seed(config.seed)
    # XLA was 5-23x slower than graph mode on a 2-core CPU: only let Keras decide on a GPU.
    return ("auto" if device["kind"] == "gpu" else False), dist


def prepare_data(config: TrainConfig, ctx: RunContext) -> TrainingData:
    """Loads the dataset, checks it can be trained on and decodes it into the image cache.

    Raises:
        ValueError: When the dataset has fewer than 2 classes or an empty train/val split.
    """
    from core.data.store import load_dataset

    dataset = load_dataset(config.dataset)
    classes = list(dataset.classes)
    train_frame, val_frame = dataset.frame("train"), dataset.frame("val")
    if len(classes) < 2:
        raise ValueError(
            f"Training needs at least 2 classes. Received: dataset {config.dataset!r} "
            f"with classes {classes}"
        )
    if len(train_frame) == 0 or len(val_frame) == 0:
        raise ValueError(
            f"Training needs images in both the train and val splits. Received: "
            f"{len(train_frame)} train and {len(val_frame)} val images in dataset "
            f"{config.dataset!r}; resplit it with a larger validation fraction or add images."
        )
    index = {name: i for i, name in enumerate(classes)}
    y_train = np.array([index[v] for v in train_frame["label"]], dtype=np.int64)
    y_val = np.array([index[v] for v in val_frame["label"]], dtype=np.int64)
    test_frame = dataset.frame("test")
    y_test = np.array([index[v] for v in test_frame["label"]], dtype=np.int64)
    ctx.summary.update(
        {
            "classes": classes,
            "num_train": len(y_train),
            "num_val": len(y_val),
            "num_test": len(y_test),
            "dataset": config.dataset,
            "fingerprint": dataset.fingerprint,
        }
    )
    size = config.model.image_size
    ctx.set(phase="caching", message=f"Decoding images at {size} px.")
    cache = build_image_cache(
        dataset.dir,
        [str(v) for v in dataset.manifest["image"]],
        dataset.fingerprint,
        size,
        progress=ctx.progress,
        should_stop=ctx.token.raise_if_set,
    )
    ctx.summary["cache_seconds"] = round(cache.built_seconds, 3)
    weights = None
    if config.class_weights == "balanced":
        weights = balanced_class_weights(y_train, len(classes))[y_train]
    return TrainingData(
        classes=classes,
        fingerprint=dataset.fingerprint,
        cache=cache,
        train_rows=cache.rows(list(train_frame["image"])),
        val_rows=cache.rows(list(val_frame["image"])),
        train_targets=one_hot(y_train, len(classes)),
        val_targets=one_hot(y_val, len(classes)),
        sample_weights=weights,
        test_rows=cache.rows(list(test_frame["image"])),
        test_targets=one_hot(y_test, len(classes)),
        dataset_dir=dataset.dir,
        val_images=[str(v) for v in val_frame["image"]],
        test_images=[str(v) for v in test_frame["image"]],
    )
