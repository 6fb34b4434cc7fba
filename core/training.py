"""One training run: data, model, phases, callbacks, the saved model and its summary.

:func:`train` runs inside the worker process (:mod:`core.worker`), which owns the run folder
and turns exceptions into final states. The phases follow fastai's ``fine_tune``:

1. ``config.epochs`` epochs with ``config.model.trainable`` (``head`` by default). When
   nothing in the backbone trains and augmentation is off this is the **fast path**: the
   backbone's embeddings are computed once (cached, see :mod:`core.embeddings`) and only
   the head trains on them; the head is part of the full model, so the saved model is the
   full raw-image model.
2. ``config.fine_tune_epochs`` more epochs with ``config.fine_tune_trainable`` and the
   learning rate times ``config.fine_tune_lr_mult``, recompiled.

Epoch numbers run on across phases, so the UI sees one curve. Each phase keeps its own
``BackupAndRestore`` state under ``checkpoints/phase<N>/`` (written in the background by
:class:`core.callbacks.AsyncBackupAndRestore`); a finished phase leaves
``checkpoints/phase<N>.done.json`` plus the full model's weights, so a resumed run skips it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.atomic import atomic_write_bytes, atomic_write_json
from core.config import TrainConfig
from core.runs import CHECKPOINTS_DIR, LABELS_FILE, LOGS_DIR, MODEL_FILE

if TYPE_CHECKING:
    import keras

    from core.worker import RunContext


@dataclass
class Phase:
    """One ``fit`` of the plan.

    Attributes:
        index: 1 or 2.
        name: Phase name shown in status and epoch events (``head``, ``train``, ``fine-tune``).
        trainable: What trains (``head``, ``top:N``, ``all``).
        epochs: Epochs in this phase.
        learning_rate: Base learning rate of this phase.
    """

    index: int
    name: str
    trainable: str
    epochs: int
    learning_rate: float


def plan_phases(config: TrainConfig) -> list[Phase]:
    """The phases a config asks for (one, or two with ``fine_tune_epochs``)."""
    trainable = config.model.trainable
    phases = [
        Phase(
            1,
            "head" if trainable == "head" else "train",
            trainable,
            config.epochs,
            config.learning_rate,
        )
    ]
    if config.fine_tune_epochs:
        phases.append(
            Phase(
                2,
                "fine-tune",
                config.fine_tune_trainable,
                config.fine_tune_epochs,
                config.learning_rate * config.fine_tune_lr_mult,
            )
        )
    return phases


def uses_fast_path(config: TrainConfig, phase: Phase) -> bool:
    """Whether ``phase`` can train the head on cached embeddings."""
    return phase.trainable == "head" and not config.model.augment.enabled


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


def train(config: TrainConfig, ctx: RunContext, *, resume: bool = False) -> dict[str, Any]:
    """Trains ``config`` into the run folder of ``ctx``.

    Args:
        config: What to train.
        ctx: The worker's context (status, events, cancel token, summary facts).
        resume: Continue from the last completed epoch of an earlier session.

    Returns:
        The summary (also left in ``ctx.summary`` for ``summary.json``).

    Raises:
        core.callbacks.TrainingCancelled: On a cancel request.
        core.callbacks.NonFiniteLoss: When the loss became NaN or infinite.
        ValueError: When the dataset cannot be trained on (too few images, one class, ...).
    """
    import keras

    from core.callbacks import (
        AsyncBackupAndRestore,
        BestModelSaver,
        CancelCheck,
        LiveMetrics,
        NonFiniteLossGuard,
    )
    from core.datasets import load_dataset
    from core.devices import describe_devices
    from core.embeddings import cached_embeddings, embedding_key
    from core.image_cache import ArrayFeeder, build_image_cache
    from core.model import build_model, feature_extractor, head_of, set_trainable
    from core.model_io import save_model

    started = time.monotonic()
    folder = ctx.folder
    checkpoints = folder / CHECKPOINTS_DIR
    checkpoints.mkdir(exist_ok=True)
    summary = ctx.summary
    summary.update({"run_id": folder.name, "batch_size": config.batch_size})

    # --- device, precision, seed -------------------------------------------------------
    device = describe_devices()
    ctx.set(device=device["label"], phase="loading", message="Loading the dataset.")
    summary["device"] = device["label"]
    if config.mixed_precision:
        if device["kind"] == "gpu":
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            ctx.note("Mixed precision needs a GPU; training in float32 on this CPU.")
    keras.utils.set_random_seed(config.seed)
    # XLA was 5-23x slower than graph mode on a 2-core CPU: only let Keras decide on a GPU.
    jit_compile = "auto" if device["kind"] == "gpu" else False

    # --- data ----------------------------------------------------------------------------
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
    summary.update(
        {
            "classes": classes,
            "num_train": len(y_train),
            "num_val": len(y_val),
            "dataset": config.dataset,
            "fingerprint": dataset.fingerprint,
        }
    )
    size = config.model.image_size
    ctx.set(phase="caching", message=f"Decoding images at {size} px.")
    all_images = [str(v) for v in dataset.manifest["image"]]
    cache = build_image_cache(
        dataset.dir,
        all_images,
        dataset.fingerprint,
        size,
        progress=ctx.progress,
        should_stop=ctx.token.raise_if_set,
    )
    summary["cache_seconds"] = round(cache.built_seconds, 3)
    train_rows = cache.rows(list(train_frame["image"]))
    val_rows = cache.rows(list(val_frame["image"]))
    train_targets = _one_hot(y_train, len(classes))
    val_targets = _one_hot(y_val, len(classes))
    weights = None
    if config.class_weights == "balanced":
        weights = balanced_class_weights(y_train, len(classes))[y_train]

    # --- model ---------------------------------------------------------------------------
    ctx.set(phase="loading", message=f"Building {config.model.backbone}.")
    model = build_model(config.model, len(classes), progress=ctx.progress)
    ctx.token.raise_if_set()
    model_path = folder / MODEL_FILE

    def save_full(epoch: int, metrics: dict[str, Any]) -> None:
        save_model(
            model,
            model_path,
            labels=classes,
            extra={
                "run_id": folder.name,
                "epoch": epoch,
                "metrics": metrics,
                "config": config.to_dict(),
            },
        )
        atomic_write_bytes(folder / LABELS_FILE, ("\n".join(classes) + "\n").encode())

    best_state = checkpoints / "best.json"
    saver = BestModelSaver(save_full, best_state, model)
    phases = plan_phases(config)
    epochs_done = 0
    throughput: list[tuple[int, float, bool]] = []  # (images trained, seconds, fast path)
    embedding_info: dict[str, Any] = {}
    summary["fast_path"] = False

    for phase in phases:
        done = checkpoints / f"phase{phase.index}.done.json"
        done_weights = checkpoints / f"phase{phase.index}.done.weights.h5"
        record = _read_json(done) if resume else None
        if record is not None and done_weights.is_file():
            model.load_weights(done_weights)
            epochs_done = int(record["epochs_done"])
            summary["fast_path"] = summary["fast_path"] or bool(record.get("fast_path"))
            continue
        first_epoch = epochs_done
        end_epoch = epochs_done + phase.epochs
        ctx.set(total_epochs=end_epoch + sum(p.epochs for p in phases[phase.index :]))
        set_trainable(model, phase.trainable)
        fast = uses_fast_path(config, phase)
        if fast:
            ctx.set(phase="embedding", message="Computing backbone embeddings once.")
            key = embedding_key(dataset.fingerprint, config.model, config.seed)
            emb = cached_embeddings(
                feature_extractor(model),
                cache.array,
                cache.images,
                key,
                batch_size=min(64, max(8, config.batch_size)),
                progress=ctx.progress,
                should_stop=ctx.token.raise_if_set,
            )
            embedding_info = {
                "embedding_seconds": round(emb.seconds, 3),
                "embedding_reused": emb.reused,
                "embedding_cache": str(emb.path),
                # Images through the backbone per second in the one embedding pass (None
                # when the embeddings were reused from an earlier run).
                "embedding_images_per_second": round(len(cache.images) / emb.seconds, 2)
                if emb.seconds and not emb.reused
                else None,
            }
            summary.update(embedding_info)
            summary["fast_path"] = True
            fit_model = head_of(model)
            source, dtype = emb.array, "float32"
        else:
            fit_model = model
            source, dtype = cache.array, "float32"
        if fast:
            # Embeddings are small (20k images x 1280 floats = 100 MB): plain arrays let
            # Keras batch them without a Python call per step.
            data: dict[str, Any] = {
                "x": np.asarray(source[train_rows], dtype="float32"),
                "y": train_targets,
                "sample_weight": weights,
                "batch_size": config.batch_size,
                "shuffle": True,
                "validation_data": (np.asarray(source[val_rows], dtype="float32"), val_targets),
                "validation_batch_size": max(config.batch_size, 256),
            }
            steps = -(-len(train_rows) // config.batch_size)
        else:
            train_feed = ArrayFeeder(
                source,
                train_rows,
                train_targets,
                config.batch_size,
                shuffle=True,
                seed=config.seed + phase.index,
                sample_weights=weights,
                dtype=dtype,
            )
            val_feed = ArrayFeeder(source, val_rows, val_targets, config.batch_size, dtype=dtype)
            data = {"x": train_feed, "validation_data": val_feed}
            steps = len(train_feed)
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
        )
        backup = AsyncBackupAndRestore(checkpoints / f"phase{phase.index}")
        callbacks: list[keras.callbacks.Callback] = [
            # Before the backup: an epoch with a non-finite validation loss is not saved.
            NonFiniteLossGuard(),
            # Snapshots the epoch in memory; a background thread writes it (Keras'
            # BackupAndRestore files, each renamed into place), so an epoch does not wait
            # for the disk. After a kill -9 the backup may be the epoch before the last
            # one reported; a resume repeats that one.
            backup,
            CancelCheck(ctx.token),
            live,
            saver,
        ]
        if config.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=config.early_stopping_patience
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
                    str(folder / LOGS_DIR / f"phase{phase.index}"), write_graph=False
                )
            )
        elif phase.index == 1:
            ctx.note(
                f"TensorBoard logs need the TensorFlow backend; the {keras.backend.backend()} "
                "backend writes none (metrics.jsonl has every number)."
            )
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
                "fast_path": fast,
                "resumed": resume,
                "time": time.time(),
            }
        )
        try:
            history = fit_model.fit(
                **data,
                epochs=end_epoch,
                initial_epoch=first_epoch,
                callbacks=callbacks,
                verbose=0,
            )
        finally:
            # Cancelled, diverged or done: the last backup and the best model so far go
            # to disk now.
            try:
                backup.flush()
            finally:
                saver.flush()
        ran = len(history.history.get("loss", []))
        # EarlyStopping may end the phase early; the backup knows the last epoch done.
        epochs_done = first_epoch + ran
        meta = _read_json(checkpoints / f"phase{phase.index}" / "training_metadata.json")
        if meta is not None:
            epochs_done = max(epochs_done, int(meta.get("epoch", 0)))
        throughput.append((live.train_images, live.train_seconds, fast))
        _save_weights_atomic(model, done_weights)
        atomic_write_json(done, {"epochs_done": epochs_done, "fast_path": fast})
        ctx.set(epoch=epochs_done)

    # --- final model -----------------------------------------------------------------------
    ctx.set(phase="saving", message="Saving the model.")
    if config.restore_best and saver.best is not None:
        if saver.best_weights is not None:
            model.set_weights(saver.best_weights)
        # else: the best epoch was in an earlier session; model.keras already holds it.
    else:
        save_full(epochs_done, {"epoch": epochs_done})
    if not model_path.is_file():
        save_full(epochs_done, {"epoch": epochs_done})
    trained_images = sum(n for n, _, _ in throughput)
    trained_seconds = sum(s for _, s, _ in throughput)
    head_images = sum(n for n, _, fast in throughput if fast)
    head_seconds = sum(s for _, s, fast in throughput if fast)
    best = saver.best or {}
    events = _epoch_metrics(folder)
    last = events[-1] if events else {}
    final = best if (config.restore_best and best) else last
    summary.update(
        {
            "epochs_completed": epochs_done,
            "total_epochs": config.total_epochs,
            "best_epoch": best.get("epoch"),
            "best_val_accuracy": best.get("val_accuracy"),
            "metrics": {k: final.get(k) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
            "last_epoch_metrics": {
                k: last.get(k) for k in ("loss", "accuracy", "val_loss", "val_accuracy")
            },
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
        }
    )
    return summary


def _epoch_metrics(folder: Path) -> list[dict[str, Any]]:
    from core.runs import MetricsReader, epoch_events

    return epoch_events(MetricsReader(folder).all())
