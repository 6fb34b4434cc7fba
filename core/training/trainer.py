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

The parts live in their own modules: the plan (:mod:`core.training.phases`), the devices and
the split dataset (:mod:`core.training.prepare`), the fast path's embeddings
(:mod:`core.training.fast_path`), ``fit``'s inputs (:mod:`core.training.fit_inputs`) and the
saved model's scores (:mod:`core.training.final_scores`).
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
from core.models.model_io import save_model
from core.runs.metrics import MetricsReader, epoch_events
from core.runs.store import CHECKPOINTS_DIR, LABELS_FILE, LOGS_DIR, MODEL_FILE, best_path
from core.training.cached_top import (
    CachedTop,
    FastFinetuneDecision,
    fast_finetune_note,
    prepare_cached_top,
)
from core.training.context import RunContext
from core.training.distribute import Distribution, weights_digest
from core.training.fast_path import embed_augmented_views, embed_dataset
from core.training.final_scores import evaluate_saved_model
from core.training.fit_inputs import fit_inputs
from core.training.out_of_memory import smaller_batch
from core.training.phases import (
    Phase,
    compile_model,
    make_optimizer,
    plan_phases,
    uses_augmented_views,
    uses_fast_path,
)
from core.training.prepare import TrainingData, prepare_data, prepare_device

if TYPE_CHECKING:
    import keras


def _save_weights_atomic(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".{path.name[: -len('.weights.h5')]}.{os.getpid()}.tmp.weights.h5")
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


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
        fit_model, source = head_of(model), embed_dataset(config, ctx, data, model, dist)
        if uses_augmented_views(config, phase):
            views = embed_augmented_views(config, ctx, data, model)
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
    inputs, steps = fit_inputs(
        config, data, source, fast, phase, dist, views, cached.cache if cached else None
    )
    optimizer = make_optimizer(config, phase.learning_rate, steps * phase.epochs)
    compile_model(fit_model, config, optimizer, jit_compile)
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
