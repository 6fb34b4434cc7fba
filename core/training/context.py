"""What a training run shares with its worker: status, events, the cancel flag, notes.

Pure Python (no Keras or TensorFlow), so the worker, the queue and the tests can use it
without paying TensorFlow's import. The worker builds a :class:`RunContext`; the trainer and
the Keras callbacks (:mod:`core.training.callbacks`) write through it.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.runs.metrics import METRICS_FILE
from core.runs.store import (
    CANCEL_FILE,
    HEARTBEAT_SECONDS,
    RunStatus,
    now_iso,
    write_status,
)


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


class StatusWriter:
    """The worker's view of ``status.json``: every change is written atomically.

    A background thread rewrites the file every :data:`~core.runs.store.HEARTBEAT_SECONDS` with a
    fresh heartbeat, also while the main thread is busy in a long computation.
    """

    def __init__(self, folder: Path, status: RunStatus) -> None:
        self.folder = folder
        self.status = status
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set(self, **fields: Any) -> None:
        """Changes ``fields`` of the status and writes it."""
        with self._lock:
            for key, value in fields.items():
                if not hasattr(self.status, key):
                    raise AttributeError(f"RunStatus has no field {key!r}")
                setattr(self.status, key, value)
            self.status.heartbeat = now_iso()
            write_status(self.folder, self.status)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.set()

    def start_heartbeat(self) -> None:
        """Starts the heartbeat thread."""
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        """Stops the heartbeat thread (before the final status is written)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class MetricsWriter:
    """Appends events to ``metrics.jsonl``, one JSON object per line, flushed at once.

    A line cut short by a killed worker is removed when the file is reopened, so readers
    never see a broken line in the middle of the file.
    """

    def __init__(self, folder: Path, echo: Callable[[dict], None] | None = None) -> None:
        self.path = folder / METRICS_FILE
        self.echo = echo
        self._lock = threading.Lock()
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(self.path, "r+b") as handle:
                    handle.truncate(data.rfind(b"\n") + 1)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def emit(self, event: dict[str, Any]) -> None:
        """Appends one event."""
        line = json.dumps(event, ensure_ascii=False, allow_nan=False) + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()
        if self.echo is not None:
            self.echo(event)

    def close(self) -> None:
        """Closes the file."""
        self._handle.close()


#: How a divergence note starts (the Train page shows such notes as warnings).
DIVERGENCE_NOTE_START = "The loss is diverging"


def divergence_message(
    epoch: int, loss: float, lowest: float, chance: float, learning_rate: float | None
) -> str:
    """The note left when the training loss explodes without becoming NaN.

    Args:
        epoch: The epoch (1-based) whose loss gave it away.
        loss: That epoch's training loss.
        lowest: The lowest epoch loss seen so far.
        chance: The loss of guessing uniformly, ``ln(number of classes)``.
        learning_rate: The learning rate in use, if known.

    Returns:
        What happened and what to do.
    """
    rate = (
        f"The learning rate ({learning_rate:.2g}) is" if learning_rate else "The learning rate is"
    )
    lower = f" (for example {learning_rate / 10:.1g})" if learning_rate else ""
    return (
        f"{DIVERGENCE_NOTE_START}: the training loss reached {loss:.3g} at epoch {epoch} "
        f"(lowest so far {lowest:.3g}; guessing at random gives {chance:.2f}), so the model "
        f"is getting worse, not better. {rate} probably too high: train again with a "
        f"learning rate 3 to 10 times lower{lower}."
    )


class RunContext:
    """What the training code gets from its worker: status, events, cancel, notes.

    Attributes:
        folder: The run folder.
        token: The cancel token; ``token.raise_if_set()`` stops at a safe point.
        summary: Facts gathered while training, written into ``summary.json`` however the
            run ends (epochs completed, best epoch, ...).
    """

    def __init__(
        self, folder: Path, status: StatusWriter, metrics: MetricsWriter, token: CancelToken
    ) -> None:
        self.folder = folder
        self.status = status
        self.metrics = metrics
        self.token = token
        self.summary: dict[str, Any] = {}
        self.notes: list[str] = []

    def set(self, **fields: Any) -> None:
        """Updates the status (phase, epoch, step, message, ...)."""
        self.status.set(**fields)

    def emit(self, event: dict[str, Any]) -> None:
        """Appends an event to ``metrics.jsonl``."""
        self.metrics.emit(event)

    def note(self, message: str) -> None:
        """Records a warning a person should see (status message and a note event)."""
        self.notes.append(message)
        self.emit({"type": "note", "message": message, "time": time.time()})

    def progress(self, done: int, total: int, message: str) -> None:
        """Progress of a non-epoch step (caching, embedding), shown as the status message."""
        self.set(message=f"{message}: {done}/{total}", step=done, steps_per_epoch=total)
