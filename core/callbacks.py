"""Keras callbacks of the training worker: they record, check and stop; they never draw.

- :class:`LiveMetrics` appends batch events (throttled) and epoch events to
  ``metrics.jsonl`` and keeps ``status.json`` current.
- :class:`NonFiniteLossGuard` stops at the first NaN/inf loss by raising
  :class:`NonFiniteLoss` (Keras' ``TerminateOnNaN`` would end training "normally", which
  lets ``BackupAndRestore`` delete the last good backup).
- :class:`CancelCheck` raises :class:`TrainingCancelled` at the next train, validation or
  predict batch after a cancel request.
- :class:`BestModelSaver` saves the full model (backbone + head) whenever validation
  improves, atomically, so the best model so far survives a cancel or a crash.
- :class:`AsyncBackupAndRestore` is ``keras.callbacks.BackupAndRestore`` (same files, same
  restore) whose per-epoch backup is an in-memory snapshot written by a background thread,
  so training does not wait for the disk.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras.src.saving import saving_lib

from core.atomic import atomic_target
from core.runs import CANCEL_FILE

FIRST_STEP_MESSAGE = "preparing the first step (tracing and compiling the model)."


class TrainingCancelled(Exception):
    """Raised inside training when the user asked the run to stop."""


class NonFiniteLoss(Exception):
    """Raised when the loss became NaN or infinite.

    Attributes:
        epoch: 1-based epoch in which it happened.
        step: 1-based step within that epoch.
    """

    def __init__(
        self,
        epoch: int,
        step: int,
        value: float,
        learning_rate: float | None,
        what: str = "loss",
    ) -> None:
        self.epoch, self.step, self.value = epoch, step, value
        rate = f" (it was {learning_rate:g})" if learning_rate is not None else ""
        kind = "NaN" if math.isnan(value) else "infinite"
        super().__init__(
            f"The {what} became {kind} at epoch {epoch}, step {step}; lower the learning "
            f"rate{rate} and start again."
        )


class CancelToken:
    """A cancel flag set by a signal handler or by the run folder's cancel request file.

    Args:
        folder: Run folder whose ``cancel.request`` file means "stop".
        check_every: Seconds between looks at the file system.
    """

    def __init__(self, folder: str | Path | None = None, check_every: float = 0.2) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.check_every = check_every
        self._event = threading.Event()
        self._last_check = 0.0

    def set(self) -> None:
        """Marks the run as cancelled (safe from a signal handler)."""
        self._event.set()

    def is_set(self) -> bool:
        """True once a cancel was requested."""
        if self._event.is_set():
            return True
        now = time.monotonic()
        if self.folder is not None and now - self._last_check >= self.check_every:
            self._last_check = now
            if (self.folder / CANCEL_FILE).exists():
                self._event.set()
        return self._event.is_set()

    def raise_if_set(self) -> None:
        """Raises :class:`TrainingCancelled` when a cancel was requested."""
        if self.is_set():
            raise TrainingCancelled("The run was cancelled.")


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
    ) -> None:
        super().__init__()
        self.fast_path = bool(fast_path)
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


class CancelCheck(keras.callbacks.Callback):
    """Raises :class:`TrainingCancelled` at the next batch after a cancel request.

    It also looks before ``fit`` starts and before every batch, so a request made while
    the model was being built never waits for a first train step. A request that arrives
    while that first step is being traced and compiled (tens of seconds for a whole
    backbone on a CPU) is only seen when the step returns: neither a callback nor a Python
    signal handler runs while the main thread is inside TensorFlow's C++ code, which is
    why :func:`core.jobs.cancel_run` escalates to SIGKILL and records the cancel itself.
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
    (model file plus ``state_path``) at once when the last write is older than
    ``min_interval`` seconds, otherwise at the next :meth:`flush`. The caller flushes at
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
        if self.state_path.is_file():
            self.best = json.loads(self.state_path.read_text())

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
        from core.atomic import atomic_write_json

        atomic_write_json(self.state_path, self.best)
        self._pending = False
        self._last_write = time.monotonic()


Entries = list[tuple[str, "dict | None", dict[str, Any]]]


class _WeightsLayout(saving_lib.H5IOStore):
    """What ``model.save_weights`` would write, recorded in memory instead of a file.

    ``saving_lib`` walks a model only into an ``H5IOStore``; this one opens no file and
    keeps, per entry (path, metadata), the variables themselves (a numpy copy for any other
    value). The walk is slow (its Python bookkeeping costs far more than reading the
    values), so it is done once per ``fit`` (again for every snapshot when an entry holds
    something other than a variable or the optimizer's variables); :meth:`snapshot` then
    only copies the variables' current values, and :func:`_write_weights` writes them as
    the file ``save_weights`` would have written.
    """

    def __init__(self, model: keras.Model) -> None:  # no file: the base class would open one
        self.mode = "w"
        self.entries: Entries = []
        saving_lib._save_state(
            model, weights_store=self, assets_store=None, inner_path="", visited_saveables=set()
        )
        # Optimizers store numpy copies, not their variables: map those back by position.
        # Anything else stored as a plain value makes the layout good for this snapshot only.
        self.reusable = True
        optimizer = getattr(model, "optimizer", None)
        for path, _, values in self.entries:
            if all(isinstance(value, keras.Variable) for value in values.values()):
                continue
            variables = list(optimizer.variables) if optimizer is not None else []
            if (
                path == "optimizer"
                and list(values) == [str(i) for i in range(len(variables))]
                and all(
                    tuple(np.shape(values[str(i)])) == tuple(v.shape)
                    for i, v in enumerate(variables)
                )
            ):
                values.update({str(i): v for i, v in enumerate(variables)})
            else:
                self.reusable = False

    def __bool__(self) -> bool:
        return True

    def make(self, path: str, metadata: dict | None = None) -> _WeightsLayout:
        self.entries.append((path, metadata, {}))
        return self

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(value, keras.Variable):
            value = np.array(keras.ops.convert_to_numpy(value), copy=True)
        self.entries[-1][2][key] = value

    def __getitem__(self, key: str) -> Any:
        return self.entries[-1][2][key]

    def __len__(self) -> int:
        return len(self.entries[-1][2]) if self.entries else 0

    def keys(self):  # noqa: D102 - the store's mapping interface
        return self.entries[-1][2].keys() if self.entries else {}.keys()

    def __contains__(self, key: object) -> bool:
        return bool(self.entries) and key in self.entries[-1][2]

    def close(self) -> None:
        pass

    def snapshot(self) -> Entries:
        """The entries with every variable replaced by a numpy copy of its value now."""
        return [
            (
                path,
                metadata,
                {
                    key: np.array(keras.ops.convert_to_numpy(value), copy=True)
                    if isinstance(value, keras.Variable)
                    else value
                    for key, value in values.items()
                },
            )
            for path, metadata, values in self.entries
        ]


def _write_weights(entries: Entries, path: Path, attrs: dict[str, Any]) -> None:
    """Writes snapshot ``entries`` as the ``.weights.h5`` file ``path``, plus root ``attrs``."""
    store = saving_lib.H5IOStore(path, mode="w")
    try:
        for entry_path, metadata, values in entries:
            if not values and not metadata:
                continue  # save_weights creates no group for a store left unused
            entry = store.make(entry_path, metadata=metadata)
            for key, value in values.items():
                entry[key] = value
        for key, value in attrs.items():
            store.h5_file.attrs[key] = value
    finally:
        store.close()


class AsyncBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose epoch-end backup is written by a background thread.

    At each epoch end the model's weights and optimizer variables are copied into memory
    (the same walk as ``model.save_weights``) with the epoch number; one writer thread
    writes them to ``latest.weights.h5`` and ``training_metadata.json`` in ``backup_dir``
    (Keras' files, so :meth:`on_train_begin` restores them as ``BackupAndRestore`` does).
    Each file is written to a temporary name and renamed into place, so a ``kill -9`` in
    the middle of a write leaves the previous complete backup. When a snapshot arrives
    while another is being written only the newest waits; older pending ones are dropped.
    Call :meth:`flush` when ``fit`` ends, also by an exception: it waits for the writer
    (``on_train_end`` does it for a ``fit`` that ends normally) and raises what it failed on.

    After a ``kill -9`` the backup may be one epoch behind the last epoch reported (the
    one being written when the process died); a resume repeats that epoch.

    The epoch is also stored inside the weights file, and the restore trusts it over the
    JSON file, so a kill between the two renames cannot pair weights with another epoch.

    Args:
        backup_dir: Folder of the backup (one per ``fit``, not shared with anything else).
    """

    EPOCH_ATTR = "transfer_studio_backup_epoch"

    def __init__(self, backup_dir: str | Path) -> None:
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self._lock = threading.Condition()
        self._pending: tuple[int, Entries] | None = None
        self._layout: tuple[int, _WeightsLayout] | None = None
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self.snapshot_seconds = 0.0
        self.write_seconds = 0.0
        self.writes = 0

    def _load_model(self) -> None:
        super()._load_model()
        path = Path(self._weights_path)
        if path.is_file():
            import h5py

            with h5py.File(path, "r") as f:
                epoch = f.attrs.get(self.EPOCH_ATTR)
            if epoch is not None:
                self.model._initial_epoch = int(epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        self._raise_writer_error()
        started = time.monotonic()
        optimizer = getattr(self.model, "optimizer", None)
        signature = len(optimizer.variables) if optimizer is not None else 0
        if self._layout is None or self._layout[0] != signature or not self._layout[1].reusable:
            self._layout = (signature, _WeightsLayout(self.model))
        snapshot = self._layout[1].snapshot()
        self.snapshot_seconds += time.monotonic() - started
        with self._lock:
            self._pending = (self._current_epoch, snapshot)
            if not self._running:
                self._running = True
                self._thread = threading.Thread(
                    target=self._write_loop, name="backup-writer", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._layout = None
        super().on_train_begin(logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.flush()
        super().on_train_end(logs)

    def flush(self) -> None:
        """Waits until every snapshot taken so far is on disk (or dropped for a newer one).

        Raises:
            OSError: (or whatever the writer raised) when writing the backup failed.
        """
        with self._lock:
            while self._pending is not None or self._busy:
                if not self._running:
                    break
                self._lock.wait(timeout=1.0)
        self._raise_writer_error()

    def _raise_writer_error(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise OSError(
                f"Could not write the training backup to {self.backup_dir}: {error}"
            ) from error

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                while self._pending is None:
                    if not self._lock.wait(timeout=30.0) and self._pending is None:
                        # Idle: the thread ends; the next snapshot starts another.
                        self._running = False
                        return
                epoch, snapshot = self._pending
                self._pending = None
                self._busy = True
            try:
                started = time.monotonic()
                self._write(epoch, snapshot)
                self.write_seconds += time.monotonic() - started
                self.writes += 1
            except BaseException as error:  # handed to the training thread, never lost
                with self._lock:
                    self._error = error
            finally:
                del snapshot
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _write(self, epoch: int, snapshot: Entries) -> None:
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        weights = Path(self._weights_path)
        tmp = atomic_target(weights)
        try:
            _write_weights(snapshot, tmp, {self.EPOCH_ATTR: epoch})
            os.replace(tmp, weights)
        finally:
            tmp.unlink(missing_ok=True)
        metadata = Path(self._training_metadata_path)
        tmp = atomic_target(metadata)
        try:
            tmp.write_text(json.dumps({"epoch": epoch, "batch": 0}))
            os.replace(tmp, metadata)
        finally:
            tmp.unlink(missing_ok=True)
