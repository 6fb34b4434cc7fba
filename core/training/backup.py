"""``AsyncBackupAndRestore``: Keras' ``BackupAndRestore`` with a backup that does not stall.

The stock callback writes the full weights (and optimizer state) synchronously at every epoch
end: 1.5-2.5 s an epoch for a fine-tuned MobileNetV2 on a 2-core CPU. This one copies the
variables' values into memory (~0.04 s) and writes the same file in a background thread with
an atomic rename, so training goes on while the disk works. Restoring is the stock code path.

It walks the model with ``keras.src.saving.saving_lib`` (private API): the layout it records
is the one ``model.save_weights`` writes in the pinned Keras version (:data:`KERAS_VERSION`).
``tests/training/test_backup.py`` pins that version and checks the file it writes holds what
``save_weights`` writes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras.src.saving import saving_lib

from core.atomic import atomic_target

# The Keras release whose private saving walk (``saving_lib.H5IOStore``) this module follows.
# tests/training/test_backup.py fails when the installed Keras differs: re-check the walk
# against the new release's ``save_weights`` before moving this pin.
KERAS_VERSION = "3.15.1"

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
