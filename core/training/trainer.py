"""One training run: data, model, phases, callbacks, the saved model and its summary.

:func:`train` runs inside the worker process (:mod:`core.training.worker`), which owns the run
folder and turns exceptions into final states. The phases follow fastai's ``fine_tune``:

1. ``config.effective_epochs`` epochs with ``config.model.trainable`` (``head`` by default).
   When nothing in the backbone trains this is the **fast path**: the backbone's embeddings
   are computed once (cached, see :mod:`core.training.embeddings`) and only the head trains on
   them; with augmentation on, ``augment.views`` augmented views of each training image are
   embedded once instead and each epoch draws one view per image. The head is part of the
   full model, so the saved model is the full raw-image model (augmentation inactive at
   inference). By default (auto settings) this phase stops early when the validation loss
   stops improving.
2. ``config.fine_tune_epochs`` more epochs with ``config.fine_tune_trainable`` and the
   learning rate times ``config.fine_tune_lr_mult``, recompiled.

At the end the best epoch's weights are restored and the summary records the validation and
test accuracy of that restored model (``val_accuracy``, ``test_accuracy``).

Epoch numbers run on across phases, so the UI sees one curve. Each phase keeps its own
``BackupAndRestore`` state under ``checkpoints/phase<N>/`` (written in the background by
:class:`core.training.backup.AsyncBackupAndRestore`); a finished phase leaves
``checkpoints/phase<N>.done.json`` plus the full model's weights, so a resumed run skips it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.atomic import atomic_write_bytes, atomic_write_json
from core.config import EARLY_STOPPING_MIN_DELTA, TrainConfig
from core.data.image_cache import build_image_cache
from core.models.model_io import save_model
from core.runs.store import (
    CHECKPOINTS_DIR,
    LABELS_FILE,
    LOGS_DIR,
    MODEL_FILE,
    MetricsReader,
    best_path,
    epoch_events,
)
from core.training.activations import ActivationCache
from core.training.cached_top import (
    CachedTop,
    FastFinetuneDecision,
    fast_finetune_note,
    prepare_cached_top,
)
from core.training.context import RunContext
from core.training.devices import describe_devices, remember_devices
from core.training.distribute import (
    Distribution,
    embedding_method,
    even_batch,
    pad_for_replicas,
    setup_distribution,
    weights_digest,
    worker_inputs,
)
from core.training.embeddings import (
    augmented_extractor,
    cached_augmented_views,
    cached_embeddings,
    compute_embeddings,
    embedding_key,
    views_key,
)
from core.training.feeder import ArrayFeeder, ViewFeeder, resident_fit_inputs
from core.training.final_scores import record_evaluations, scores_through_cut
from core.training.out_of_memory import smaller_batch

if TYPE_CHECKING:
    import keras


@dataclass
class Phase:
    """One ``fit`` of the plan.

    Attributes:
        index: 1 or 2.
        name: Phase name shown in status and epoch events (``head``, ``train``, ``fine-tune``).
        trainable: What trains (``head``, ``top:N``, ``all``).
        epochs: Epochs in this phase.
        learning_rate: Base learning rate of this phase.
        patience: Early-stopping patience on val_loss (0 = off).
    """

    index: int
    name: str
    trainable: str
    epochs: int
    learning_rate: float
    patience: int = 0


def plan_phases(config: TrainConfig) -> list[Phase]:
    """The phases a config asks for (one, or two with ``fine_tune_epochs``)."""
    trainable = config.model.trainable
    phases = [
        Phase(
            1,
            "head" if trainable == "head" else "train",
            trainable,
            config.effective_epochs,
            config.effective_learning_rate,
            config.effective_patience,
        )
    ]
    if config.fine_tune_epochs:
        phases.append(
            Phase(
                2,
                "fine-tune",
                config.fine_tune_trainable,
                config.fine_tune_epochs,
                config.effective_learning_rate * config.fine_tune_lr_mult,
                # Auto patience is for the head phase; an explicit one applies to both.
                config.early_stopping_patience or 0,
            )
        )
    return phases


def uses_fast_path(config: TrainConfig, phase: Phase) -> bool:
    """Whether ``phase`` can train the head on cached embeddings (or cached augmented views)."""
    return phase.trainable == "head"


def uses_augmented_views(config: TrainConfig, phase: Phase) -> bool:
    """Whether the fast path of ``phase`` trains on cached augmented views of the images."""
    return uses_fast_path(config, phase) and config.model.augment.enabled


def make_optimizer(config: TrainConfig, learning_rate: float, decay_steps: int):
    """Builds the configured optimizer, with a cosine schedule when asked.

    ``weight_decay`` is Keras' decoupled weight decay, available on every optimizer.
    """
    import keras

    rate: Any = learning_rate
    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, decay_steps))
    decay = config.weight_decay or None
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate, weight_decay=decay)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=config.momentum, weight_decay=decay)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate, momentum=config.momentum, weight_decay=decay)
    raise ValueError(
        f"optimizer must be one of adam, adamw, sgd, rmsprop. Received: {config.optimizer!r}"
    )


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Weight per class, inversely proportional to its size (mean weight 1 per image)."""
    counts = np.bincount(labels, minlength=num_classes).astype("float64")
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype("float32")


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), num_classes), dtype="float32")
    out[np.arange(len(labels)), labels] = 1.0
    return out


def _save_weights_atomic(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".{path.name[: -len('.weights.h5')]}.{os.getpid()}.tmp.weights.h5")
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _compile(model: keras.Model, config: TrainConfig, optimizer, jit_compile) -> None:
    import keras

    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


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
        train_targets=_one_hot(y_train, len(classes)),
        val_targets=_one_hot(y_val, len(classes)),
        sample_weights=weights,
        test_rows=cache.rows(list(test_frame["image"])),
        test_targets=_one_hot(y_test, len(classes)),
        dataset_dir=dataset.dir,
        val_images=[str(v) for v in val_frame["image"]],
        test_images=[str(v) for v in test_frame["image"]],
    )


class ModelWriter:
    """Saves the full model (labels and run facts embedded) and ``labels.txt``, atomically."""

    def __init__(self, model: keras.Model, folder: Path, config: TrainConfig, classes: list[str]):
        self.model, self.folder, self.config, self.classes = model, folder, config, classes
        self.path = folder / MODEL_FILE

    def __call__(self, epoch: int, metrics: dict[str, Any]) -> None:
        save_model(
            self.model,
            self.path,
            labels=self.classes,
            extra={
                "run_id": self.folder.name,
                "epoch": epoch,
                "metrics": metrics,
                "config": self.config.to_dict(),
            },
        )
        atomic_write_bytes(self.folder / LABELS_FILE, ("\n".join(self.classes) + "\n").encode())


@dataclass
class PhaseResult:
    """What one phase did: where it ended and how fast its training steps ran."""

    epochs_done: int
    images: int
    seconds: float
    fast_path: bool
    cached_top: CachedTop | None = None


def _fit_inputs(
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
    if fast and not dist.distributed:
        resident = resident_fit_inputs(
            views if views is not None else source[data.train_rows],
            data.train_targets,
            source[data.val_rows],
            data.val_targets,
            config.batch_size,
            seed=config.seed + phase.index,
            views=views is not None,
            sample_weights=data.sample_weights,
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


def _embed(
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


def _augmented_views(
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


def _callbacks(
    config: TrainConfig,
    ctx: RunContext,
    phase: Phase,
    backup: Any,
    live: Any,
    saver: Any,
) -> list[keras.callbacks.Callback]:
    import keras

    from core.training.callbacks import CancelCheck, DivergenceWatch, NonFiniteLossGuard

    callbacks: list[keras.callbacks.Callback] = [
        # Before the backup: an epoch with a non-finite validation loss is not saved.
        NonFiniteLossGuard(),
        # Snapshots the epoch in memory; a background thread writes it (Keras'
        # BackupAndRestore files, each renamed into place), so an epoch does not wait for
        # the disk. After a kill -9 the backup may be the epoch before the last one
        # reported; a resume repeats that one.
        backup,
        CancelCheck(ctx.token),
        live,
        saver,
        DivergenceWatch(ctx.note),
    ]
    if phase.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=phase.patience, min_delta=EARLY_STOPPING_MIN_DELTA
            )
        )
    if config.schedule == "reduce_on_plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.3, patience=2, min_lr=phase.learning_rate * 1e-3
            )
        )
    if keras.backend.backend() == "tensorflow":
        callbacks.append(
            keras.callbacks.TensorBoard(
                str(ctx.folder / LOGS_DIR / f"phase{phase.index}"), write_graph=False
            )
        )
    elif phase.index == 1:
        ctx.note(
            f"TensorBoard logs need the TensorFlow backend; the {keras.backend.backend()} "
            "backend writes none (metrics.jsonl has every number)."
        )
    return callbacks


def run_phase(
    config: TrainConfig,
    ctx: RunContext,
    phase: Phase,
    *,
    model: keras.Model,
    data: TrainingData,
    saver: Any,
    first_epoch: int,
    total_epochs: int,
    jit_compile: Any,
    resume: bool,
    dist: Distribution | None = None,
) -> PhaseResult:
    """Trains one phase (head, or fine-tune) from ``first_epoch`` for ``phase.epochs``.

    On the fast path the head trains on cached embeddings; otherwise the whole model trains
    on the image cache. The phase's backup lets a resumed run continue mid-phase.
    """
    from core.models.transfer import head_of, set_trainable

    dist = dist or Distribution()
    ctx.set(total_epochs=total_epochs)
    set_trainable(model, phase.trainable)
    fast = uses_fast_path(config, phase)
    views = None
    if fast and uses_augmented_views(config, phase) and dist.distributed:
        # Cached views feed one process on one device; over several devices the augmented
        # head trains through the whole model, augmenting every epoch.
        fast = False
        ctx.note(
            "Augmented views are cached for one device; with several devices every epoch "
            "augments and runs the whole model."
        )
    decision = None
    if fast:
        fit_model, source = head_of(model), _embed(config, ctx, data, model, dist)
        if uses_augmented_views(config, phase):
            views = _augmented_views(config, ctx, data, model)
    else:
        decision = prepare_cached_top(config, ctx, data, model, phase.trainable, dist)
        if phase.trainable.startswith("top:") and not decision.applies:
            ctx.note(fast_finetune_note(decision))
        fit_model, source = model, data.cache.array
        if decision.cached is not None:
            fit_model = decision.cached.top
    batch_size = config.batch_size
    while True:
        try:
            return _fit_phase(
                dataclasses.replace(config, batch_size=batch_size),
                ctx,
                phase,
                fit_model=fit_model,
                source=source,
                fast=fast,
                views=views,
                decision=decision,
                data=data,
                saver=saver,
                first_epoch=first_epoch,
                jit_compile=jit_compile,
                resume=resume,
                dist=dist,
            )
        except Exception as error:
            smaller = smaller_batch(error, batch_size)
            if smaller is None or dist.workers > 1:
                raise
            ctx.note(
                f"Out of memory at batch size {batch_size} ({phase.name}); retrying at "
                f"batch size {smaller}."
            )
            batch_size = smaller
            ctx.summary["batch_size"] = batch_size


def _fit_phase(
    config: TrainConfig,
    ctx: RunContext,
    phase: Phase,
    *,
    fit_model: keras.Model,
    source: Any,
    fast: bool,
    views: np.ndarray | None,
    decision: FastFinetuneDecision | None,
    data: TrainingData,
    saver: Any,
    first_epoch: int,
    jit_compile: Any,
    resume: bool,
    dist: Distribution,
) -> PhaseResult:
    """Compiles ``fit_model`` and fits one phase at ``config.batch_size``."""
    from core.training.backup import AsyncBackupAndRestore
    from core.training.callbacks import LiveMetrics

    checkpoints = ctx.folder / CHECKPOINTS_DIR
    end_epoch = first_epoch + phase.epochs
    cached = decision.cached if decision is not None else None
    inputs, steps = _fit_inputs(
        config, data, source, fast, phase, dist, views, cached.cache if cached else None
    )
    optimizer = make_optimizer(config, phase.learning_rate, steps * phase.epochs)
    _compile(fit_model, config, optimizer, jit_compile)
    if not fit_model.built:
        fit_model.build((None, *source.shape[1:]))
    live = LiveMetrics(
        ctx.emit,
        ctx.set,
        batch_size=config.batch_size,
        steps_per_epoch=steps,
        phase=phase.name,
        fast_path=fast,
        fast_finetune=cached is not None,
    )
    backup = AsyncBackupAndRestore(checkpoints / f"phase{phase.index}")
    callbacks = _callbacks(config, ctx, phase, backup, live, saver)
    ctx.set(phase=phase.name, message=f"Training ({phase.name}).", steps_per_epoch=steps)
    ctx.emit(
        {
            "type": "phase",
            "phase": phase.name,
            "index": phase.index,
            "first_epoch": first_epoch + 1,
            "last_epoch": end_epoch,
            "trainable": phase.trainable,
            "learning_rate": phase.learning_rate,
            "batch_size": config.batch_size,
            "early_stopping_patience": phase.patience,
            "augmented_views": views.shape[0] if views is not None else 0,
            "fast_path": fast,
            "fast_finetune": cached is not None,
            "fast_finetune_reason": decision.reason if decision is not None else "",
            "resumed": resume,
            "time": time.time(),
        }
    )
    try:
        history = fit_model.fit(
            **inputs, epochs=end_epoch, initial_epoch=first_epoch, callbacks=callbacks, verbose=0
        )
    finally:
        # Cancelled, diverged or done: the last backup and the best model so far go to disk
        # now.
        try:
            backup.flush()
        finally:
            saver.flush()
    # EarlyStopping may end the phase early; the backup knows the last epoch done.
    epochs_done = first_epoch + len(history.history.get("loss", []))
    meta = _read_json(checkpoints / f"phase{phase.index}" / "training_metadata.json")
    if meta is not None:
        epochs_done = max(epochs_done, int(meta.get("epoch", 0)))
    cached = decision.cached if decision is not None else None
    return PhaseResult(epochs_done, live.train_images, live.train_seconds, fast, cached)


def split_scores(probabilities: np.ndarray, targets: np.ndarray) -> dict[str, float | None]:
    """Accuracy and cross-entropy of predicted ``probabilities`` against one-hot ``targets``.

    Returns:
        ``{"accuracy", "loss"}``; both None for an empty split.
    """
    if len(targets) == 0:
        return {"accuracy": None, "loss": None}
    truth = targets.argmax(axis=1)
    picked = probabilities[np.arange(len(truth)), truth]
    return {
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == truth)),
        "loss": float(np.mean(-np.log(np.clip(picked, 1e-7, 1.0)))),
    }


def evaluate_saved_model(
    config: TrainConfig,
    ctx: RunContext,
    model: keras.Model,
    data: TrainingData,
    dist: Distribution | None = None,
    cached_top: CachedTop | None = None,
) -> dict[str, Any]:
    """Validation and test scores of ``model`` as it is saved (the restored best epoch).

    When only the head ever trained, the frozen backbone's cached embeddings go through the
    head (the same numbers the full model gives, in a fraction of the time). When the last
    phase fine-tuned on cached activations (``cached_top``), the validation images' cached
    activations and the test images through the frozen bottom go through the top: the same
    layers as the full model, without compiling the whole network once more. Otherwise the
    full model runs over the image cache.

    Returns:
        ``val_accuracy``, ``val_loss``, ``test_accuracy``, ``test_loss`` (None for an empty
        test split).
    """
    from core.models.transfer import head_of

    ctx.set(phase="evaluating", message="Scoring the saved model on the val and test splits.")
    rows = np.concatenate([data.val_rows, data.test_rows])
    if all(uses_fast_path(config, p) for p in plan_phases(config)):
        embeddings = _embed(config, ctx, data, model, dist or Distribution())
        features = np.asarray(embeddings[rows], dtype="float32")
        probabilities = np.asarray(head_of(model).predict(features, verbose=0, batch_size=256))
    elif cached_top is not None:
        probabilities = scores_through_cut(cached_top, ctx, data)
    else:
        order = np.argsort(rows)
        outputs = np.empty((len(rows), len(data.classes)), dtype="float32")
        for start in range(0, len(rows), 256):
            chunk = order[start : start + 256]
            images = np.asarray(data.cache.array[rows[chunk]], dtype="float32")
            outputs[chunk] = compute_embeddings(model, images, batch_size=config.batch_size)
            ctx.token.raise_if_set()
        probabilities = outputs
    val = split_scores(probabilities[: len(data.val_rows)], data.val_targets)
    test = split_scores(probabilities[len(data.val_rows) :], data.test_targets)
    record_evaluations(ctx, data, probabilities)
    return {
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
    }


def _final_summary(
    config: TrainConfig,
    ctx: RunContext,
    saver: Any,
    results: list[PhaseResult],
    epochs_done: int,
    started: float,
) -> None:
    trained_images = sum(r.images for r in results)
    trained_seconds = sum(r.seconds for r in results)
    head_images = sum(r.images for r in results if r.fast_path)
    head_seconds = sum(r.seconds for r in results if r.fast_path)
    best = saver.best or {}
    events = _epoch_metrics(ctx.folder)
    last = events[-1] if events else {}
    final = best if (config.restore_best and best) else last
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    ctx.summary.update(
        {
            "epochs_completed": epochs_done,
            "total_epochs": config.total_epochs,
            "best_epoch": best.get("epoch"),
            "best_val_accuracy": best.get("val_accuracy"),
            "metrics": {k: final.get(k) for k in keys},
            "last_epoch_metrics": {k: last.get(k) for k in keys},
            # Training steps only (validation and the embedding pass excluded). On the fast
            # path these are feature vectors through the head: see head_images_per_second
            # and embedding_images_per_second.
            "images_per_second": round(trained_images / trained_seconds, 2)
            if trained_seconds
            else None,
            "head_images_per_second": round(head_images / head_seconds, 2)
            if head_seconds
            else None,
            "seconds": round(time.monotonic() - started, 3),
            "model": MODEL_FILE,
            # Measured seconds of each epoch by phase: calibrates later estimates.
            "epoch_seconds": _epoch_seconds(events),
        }
    )


def _epoch_seconds(events: list[dict[str, Any]]) -> dict[str, list[float]]:
    """``{phase: [seconds of each epoch]}`` from the epoch events, in epoch order."""
    by_phase: dict[str, list[float]] = {}
    for event in events:
        if isinstance(event.get("seconds"), int | float):
            by_phase.setdefault(str(event.get("phase") or "train"), []).append(
                round(float(event["seconds"]), 3)
            )
    return by_phase


def _start_from_parent(
    config: TrainConfig, ctx: RunContext, data: TrainingData, model: keras.Model
) -> None:
    """Loads the parent run's trained weights into ``model`` (``config.init_from``)."""
    from core.runs.lineage import plan_start, start_from_parent

    ctx.set(message=f"Starting from run {config.init_from}.")
    plan = plan_start(config, data.classes, root=ctx.folder.parent)
    start_from_parent(model, plan, data.classes)
    if not plan.backbone_frozen:
        data.backbone_identity = f"run-{plan.parent_id}"
    ctx.summary.update(plan.to_dict())
    ctx.note(plan.sentence())


def train(config: TrainConfig, ctx: RunContext, *, resume: bool = False) -> dict[str, Any]:
    """Trains ``config`` into the run folder of ``ctx``.

    Args:
        config: What to train.
        ctx: The worker's context (status, events, cancel token, summary facts).
        resume: Continue from the last completed epoch of an earlier session.

    Returns:
        The summary (also left in ``ctx.summary`` for ``summary.json``).

    Raises:
        core.training.context.TrainingCancelled: On a cancel request.
        core.training.context.NonFiniteLoss: When the loss became NaN or infinite.
        ValueError: When the dataset cannot be trained on (too few images, one class, ...).
    """
    started = time.monotonic()
    (ctx.folder / CHECKPOINTS_DIR).mkdir(exist_ok=True)
    ctx.summary.update({"run_id": ctx.folder.name, "batch_size": config.batch_size})
    jit_compile, dist = prepare_device(config, ctx)
    data = prepare_data(config, ctx)
    with dist.scope():
        return _train_model(config, ctx, data, dist, jit_compile, resume, started)


def _train_model(
    config: TrainConfig,
    ctx: RunContext,
    data: TrainingData,
    dist: Distribution,
    jit_compile: Any,
    resume: bool,
    started: float,
) -> dict[str, Any]:
    """Builds the model and runs the phases (inside the distribution's scope)."""
    from core.models.transfer import build_model
    from core.training.callbacks import BestModelSaver

    checkpoints = ctx.folder / CHECKPOINTS_DIR
    ctx.set(phase="loading", message=f"Building {config.model.backbone}.")
    model = build_model(config.model, len(data.classes), progress=ctx.progress)
    if config.init_from:
        _start_from_parent(config, ctx, data, model)
    ctx.token.raise_if_set()
    save_full = ModelWriter(model, ctx.folder, config, data.classes)
    saver = BestModelSaver(save_full, best_path(ctx.folder), model)
    phases = plan_phases(config)
    epochs_done = 0
    results: list[PhaseResult] = []
    ctx.summary["fast_path"] = False
    for phase in phases:
        done = checkpoints / f"phase{phase.index}.done.json"
        done_weights = checkpoints / f"phase{phase.index}.done.weights.h5"
        record = _read_json(done) if resume else None
        if record is not None and done_weights.is_file():
            model.load_weights(done_weights)
            epochs_done = int(record["epochs_done"])
            ctx.summary["fast_path"] = ctx.summary["fast_path"] or bool(record.get("fast_path"))
            continue
        result = run_phase(
            config,
            ctx,
            phase,
            model=model,
            data=data,
            saver=saver,
            first_epoch=epochs_done,
            total_epochs=epochs_done + sum(p.epochs for p in phases[phase.index - 1 :]),
            jit_compile=jit_compile,
            resume=resume,
            dist=dist,
        )
        epochs_done = result.epochs_done
        results.append(result)
        _save_weights_atomic(model, done_weights)
        atomic_write_json(done, {"epochs_done": epochs_done, "fast_path": result.fast_path})
        # A phase that stopped early shortens the plan: progress reaches 100% at the end.
        later = sum(p.epochs for p in phases[phase.index :])
        ctx.set(epoch=epochs_done, total_epochs=epochs_done + later)

    ctx.set(phase="saving", message="Saving the model.")
    if config.restore_best and saver.best is not None:
        if saver.best_weights is not None:
            model.set_weights(saver.best_weights)
        # else: the best epoch was in an earlier session; model.keras already holds it.
    else:
        save_full(epochs_done, {"epoch": epochs_done})
    if not save_full.path.is_file():
        save_full(epochs_done, {"epoch": epochs_done})
    elif config.restore_best and saver.best is not None and saver.best_weights is None:
        # The best epoch was saved in an earlier session: score what model.keras holds.
        model.load_weights(save_full.path)
    # The last phase's cut serves when that phase ran in this session (its layers hold the
    # saved weights); a phase finished in an earlier session left none.
    last = results[-1] if results and results[-1].epochs_done == epochs_done else None
    scores = evaluate_saved_model(
        config, ctx, model, data, dist, cached_top=last.cached_top if last else None
    )
    _final_summary(config, ctx, saver, results, epochs_done, started)
    if dist.distributed:
        ctx.summary["weights_sha256"] = weights_digest(model)
    ctx.summary.update(scores)
    ctx.summary["settings"] = {
        "epochs": config.effective_epochs,
        "learning_rate": config.effective_learning_rate,
        "early_stopping_patience": config.effective_patience,
        "auto": list(config.auto_fields),
    }
    return ctx.summary


def _epoch_metrics(folder: Path) -> list[dict[str, Any]]:
    return epoch_events(MetricsReader(folder).all())
