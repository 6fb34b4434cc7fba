"""Keras callbacks of the training worker: they record, check and stop; they never draw.

- :class:`LiveMetrics` appends batch events (throttled) and epoch events to
  ``metrics.jsonl`` and keeps ``status.json`` current.
- :class:`NonFiniteLossGuard` stops at the first NaN/inf loss by raising
  :class:`NonFiniteLoss` (Keras' ``TerminateOnNaN`` would end training "normally", which
  lets ``BackupAndRestore`` delete the last good backup).
- :class:`DivergenceWatch` notes a training loss that explodes without ever becoming NaN
  (far above chance level, or many times its lowest value), and what to do about it.
- :class:`CancelCheck` raises :class:`TrainingCancelled` at the next train, validation or
  predict batch after a cancel request.
- :class:`BestModelSaver` saves the full model (backbone + head) whenever validation
  improves, atomically, so the best model so far survives a cancel or a crash.

The per-epoch backup (``AsyncBackupAndRestore``) lives in :mod:`core.training.backup`; the
cancel flag and the exceptions live in :mod:`core.training.context` (no Keras needed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from core.atomic import atomic_write_json
from core.jsonfile import read_json_cache
from core.training.context import CancelToken, NonFiniteLoss, divergence_message

FIRST_STEP_MESSAGE = "preparing the first step (tracing and compiling the model)."


def current_learning_rate(model: keras.Model) -> float | None:
    """The optimizer's learning rate now (schedules evaluated at the current step)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _floats(logs: dict[str, Any] | None) -> dict[str, float]:
    out = {}
    for key, value in (logs or {}).items():
        try:
            out[key] = float(keras.ops.convert_to_numpy(value))
        except (TypeError, ValueError):
            continue
    return out


def _clean(value: float | None) -> float | None:
    # JSON has no NaN: a non-finite value is written as null.
    if value is None or not math.isfinite(value):
        return None
    return value


class LiveMetrics(keras.callbacks.Callback):
    """Writes batch and epoch events and keeps the status current.

    Args:
        emit: Called with each event dictionary (appends it to ``metrics.jsonl``).
        update_status: Called with status fields to change (epoch, step, ...).
        batch_size: Images per step (for images/s).
        steps_per_epoch: Steps in one epoch.
        phase: Name of the training phase written into epoch events.
        batch_interval: Least seconds between two batch events.
        fast_path: Whether this fit trains the head on precomputed backbone features; every
            event says so (``"fast_path"``), because its ``images_per_second`` then counts
            feature vectors through the head, not images through the whole network.
        fast_finetune: Whether this fit trains the top blocks on cached activations of the
            frozen bottom (``"fast_finetune"`` in every event, for the same reason).
    """

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None],
        update_status: Callable[..., None],
        *,
        batch_size: int,
        steps_per_epoch: int,
        phase: str,
        batch_interval: float = 0.3,
        fast_path: bool = False,
        fast_finetune: bool = False,
    ) -> None:
        super().__init__()
        self.fast_path = bool(fast_path)
        self.fast_finetune = bool(fast_finetune)
        self.emit = emit
        self.update_status = update_status
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.phase = phase
        self.batch_interval = batch_interval
        self.epoch = 0
        self.train_seconds = 0.0
        self.train_images = 0
        self._epoch_start = 0.0
        self._last_emit = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._first_step = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1
        self._epoch_start = time.monotonic()
        self._last_emit = self._epoch_start
        self._train_end = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if getattr(self, "_first_step", False):
            # The first step of a fit traces and compiles the model: a long silence that
            # nothing can interrupt, so say what is going on.
            self.update_status(message=f"Training ({self.phase}): {FIRST_STEP_MESSAGE}")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        step = batch + 1
        self._train_end = now
        if getattr(self, "_first_step", False):
            self._first_step = False
            self.update_status(message=f"Training ({self.phase}).")
        self._steps_done = step
        if now - self._last_emit < self.batch_interval and step != self.steps_per_epoch:
            return
        self._last_emit = now
        values = _floats(logs)
        elapsed = max(now - self._epoch_start, 1e-9)
        self.emit(
            {
                "type": "batch",
                "epoch": self.epoch,
                "step": step,
                "steps": self.steps_per_epoch,
                "loss": _clean(values.get("loss")),
                "accuracy": _clean(values.get("accuracy")),
                "images_per_second": round(step * self.batch_size / elapsed, 2),
                "fast_path": self.fast_path,
                "fast_finetune": self.fast_finetune,
                "phase": self.phase,
                "time": time.time(),
            }
        )
        if step != self.steps_per_epoch:  # the epoch's end writes the status anyway
            self.update_status(step=step, steps_per_epoch=self.steps_per_epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        values = _floats(logs)
        train_end = getattr(self, "_train_end", None) or now
        steps = getattr(self, "_steps_done", self.steps_per_epoch)
        seconds = train_end - self._epoch_start
        self.train_seconds += seconds
        self.train_images += steps * self.batch_size
        event = {
            "type": "epoch",
            "epoch": epoch + 1,
            "loss": _clean(values.get("loss")),
            "accuracy": _clean(values.get("accuracy")),
            "val_loss": _clean(values.get("val_loss")),
            "val_accuracy": _clean(values.get("val_accuracy")),
            "learning_rate": current_learning_rate(self.model),
            "seconds": round(now - self._epoch_start, 4),
            "images_per_second": round(steps * self.batch_size / seconds, 2) if seconds else None,
            "fast_path": self.fast_path,
            "fast_finetune": self.fast_finetune,
            "phase": self.phase,
            "time": time.time(),
        }
        self.emit(event)
        self.update_status(epoch=epoch + 1, step=self.steps_per_epoch)

    @property
    def images_per_second(self) -> float:
        """Training throughput over all epochs this callback saw (validation excluded)."""
        return self.train_images / self.train_seconds if self.train_seconds else 0.0


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Raises :class:`NonFiniteLoss` at the first NaN or infinite training or validation loss.

    Put it before ``BackupAndRestore`` (:class:`AsyncBackupAndRestore`) in the callback list,
    so an epoch whose validation loss is not finite is never backed up (a resume would start
    from broken weights): the exception is raised before the backup's ``on_epoch_end`` takes
    its snapshot, and the snapshots already queued are of earlier, finite epochs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.step = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step = batch + 1
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = float(keras.ops.convert_to_numpy(loss))
        if not math.isfinite(value):
            raise NonFiniteLoss(self.epoch, batch + 1, value, current_learning_rate(self.model))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = _floats(logs).get("val_loss")
        if value is not None and not math.isfinite(value):
            raise NonFiniteLoss(
                epoch + 1,
                self.step,
                value,
                current_learning_rate(self.model),
                what="validation loss",
            )


class DivergenceWatch(keras.callbacks.Callback):
    """Reports, once, an epoch whose training loss shows the run is diverging.

    A learning rate far too high can drive the cross-entropy to thousands while staying
    finite, so :class:`NonFiniteLossGuard` never fires and the run would "complete" at chance
    accuracy. Diverging here means an epoch loss above ``chance_factor`` times the loss of
    guessing at random (``ln(classes)``), or above ``growth_factor`` times the lowest epoch
    loss so far while also above chance. The callback only records: training goes on (the
    best model so far stays saved) and ``report`` receives the sentence.

    Args:
        report: Called with the message (the worker's ``RunContext.note``).
        chance_factor: Multiple of chance-level loss that counts as diverging.
        growth_factor: Growth over the lowest epoch loss that counts as diverging.
    """

    def __init__(
        self,
        report: Callable[[str], None],
        *,
        chance_factor: float = 3.0,
        growth_factor: float = 10.0,
    ) -> None:
        super().__init__()
        if chance_factor <= 1 or growth_factor <= 1:
            raise ValueError(
                "chance_factor and growth_factor must be above 1. Received: "
                f"chance_factor={chance_factor!r}, growth_factor={growth_factor!r}"
            )
        self.report = report
        self.chance_factor = chance_factor
        self.growth_factor = growth_factor
        self.lowest = math.inf
        self.reported = False

    def _chance(self) -> float:
        outputs = int(self.model.outputs[0].shape[-1]) if self.model is not None else 2
        return math.log(max(outputs, 2))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = _floats(logs).get("loss")
        if loss is None or not math.isfinite(loss):
            return
        chance = self._chance()
        exploded = loss > self.chance_factor * chance
        grew = loss > self.growth_factor * self.lowest and loss > chance
        self.lowest = min(self.lowest, loss)
        if (exploded or grew) and not self.reported:
            self.reported = True
            rate = current_learning_rate(self.model) if self.model is not None else None
            self.report(divergence_message(epoch + 1, loss, self.lowest, chance, rate))


class CancelCheck(keras.callbacks.Callback):
    """Raises :class:`TrainingCancelled` at the next batch after a cancel request.

    It also looks before ``fit`` starts and before every batch, so a request made while
    the model was being built never waits for a first train step. A request that arrives
    while that first step is being traced and compiled (tens of seconds for a whole
    backbone on a CPU) is only seen when the step returns: neither a callback nor a Python
    signal handler runs while the main thread is inside TensorFlow's C++ code, which is
    why :func:`core.training.jobs.cancel_run` escalates to SIGKILL and records the cancel itself.
    """

    def __init__(self, token: CancelToken) -> None:
        super().__init__()
        self.token = token

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.token.raise_if_set()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.token.raise_if_set()

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.token.raise_if_set()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.token.raise_if_set()

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.token.raise_if_set()

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.token.raise_if_set()


def is_better(candidate: dict[str, float | None], best: dict[str, float | None] | None) -> bool:
    """Whether epoch metrics ``candidate`` beat ``best``: higher val_accuracy, then lower val_loss.

    Non-finite or missing values never win.
    """
    acc, loss = candidate.get("val_accuracy"), candidate.get("val_loss")
    if acc is None or loss is None or not (math.isfinite(acc) and math.isfinite(loss)):
        return False
    if best is None:
        return True
    if acc != best["val_accuracy"]:
        return acc > best["val_accuracy"]
    return loss < best["val_loss"]


class BestModelSaver(keras.callbacks.Callback):
    """Keeps the best epoch's weights and saves them with ``save(epoch, metrics)``.

    On an improvement the weights of ``model`` are copied in memory; they are written
    (model file plus ``state_path``) at once when the last write (or the start of training)
    is older than ``min_interval`` seconds, otherwise at the next :meth:`flush`. A run
    shorter than that writes its model once, at the end. The caller flushes at
    the end of every ``fit``, also when it ends by an exception (cancel, NaN), so the best
    model so far is always on disk when a run stops; a ``kill -9`` loses at most
    ``min_interval`` seconds of improvements, and ``state_path`` always describes the model
    file. Writing a whole model after every one of hundreds of sub-second head-only epochs
    would otherwise cost more than the training.

    Args:
        save: Writes ``model`` as the run's model (called with the 1-based epoch and its
            metrics, while ``model`` holds the best weights).
        state_path: Where the saved epoch's metrics are kept between sessions.
        model: The full model whose weights are kept and saved.
        min_interval: Least seconds between two writes.
    """

    def __init__(
        self,
        save: Callable[[int, dict[str, Any]], None],
        state_path: Path,
        model: keras.Model,
        min_interval: float = 20.0,
    ) -> None:
        super().__init__()
        self.save = save
        self.state_path = Path(state_path)
        self.full_model = model
        self.min_interval = min_interval
        self.best_weights: list | None = None
        self.best: dict[str, Any] | None = None
        self._pending = False
        self._last_write = -float("inf")
        # A damaged record counts as none: the next better epoch rewrites it.
        self.best = read_json_cache(self.state_path)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._last_write == -float("inf"):  # the clock starts with the first training
            self._last_write = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = _floats(logs)
        metrics = {
            "epoch": epoch + 1,
            "loss": values.get("loss"),
            "accuracy": values.get("accuracy"),
            "val_loss": values.get("val_loss"),
            "val_accuracy": values.get("val_accuracy"),
        }
        if not is_better(metrics, self.best):
            return
        self.best = metrics
        self.best_weights = self.full_model.get_weights()
        self._pending = True
        if time.monotonic() - self._last_write >= self.min_interval:
            self.flush()

    def flush(self) -> None:
        """Writes the best weights kept in memory, if they are not on disk yet."""
        if not self._pending or self.best is None or self.best_weights is None:
            return
        current = self.full_model.get_weights()
        self.full_model.set_weights(self.best_weights)
        try:
            self.save(int(self.best["epoch"]), self.best)
        finally:
            self.full_model.set_weights(current)

        atomic_write_json(self.state_path, self.best)
        self._pending = False
        self._last_write = time.monotonic()
