"""Run folders: what a training run leaves on disk, and how the UI reads it back.

A run lives in ``workspace/runs/<run-id>/`` and is discoverable from that folder alone, so
everything survives a restart of the app::

    config.json      the TrainConfig (exactly what was asked for)
    status.json      RunStatus, rewritten atomically by the worker (state, pid, heartbeat, ...)
    metrics.jsonl    one JSON object per line: "batch" and "epoch" events (see below)
    checkpoints/     BackupAndRestore state, so an interrupted run resumes where it stopped
    model.keras      the best model so far (raw 0..255 RGB in, probabilities out)
    labels.txt       class names, one per line, in output order
    summary.json     final metrics, written when the run ends
    logs/            TensorBoard event files
    worker.log       stdout/stderr of the worker process

Events in ``metrics.jsonl``:

- ``{"type": "batch", "epoch", "step", "steps", "loss", "accuracy", "images_per_second",
  "fast_path", "phase", "time"}``, throttled to a few per second;
- ``{"type": "epoch", "epoch", "loss", "accuracy", "val_loss", "val_accuracy",
  "learning_rate", "seconds", "images_per_second", "fast_path", "phase", "time"}``;
- ``{"type": "session", ...}`` when a worker starts or resumes, ``{"type": "note", "message"}``
  for warnings a person should see.

``images_per_second`` counts training steps only. With ``"fast_path": true`` the head trains
on backbone features computed once beforehand, so it counts feature vectors through the
head (far more per second than images through the whole network); ``summary.json`` gives
the embedding pass separately (``embedding_images_per_second``).

The worker is the only writer of its folder; this module only reads (and writes the
initial files before the worker exists). Beside it: :mod:`core.runs.ownership` (the worker's
owner lock), :mod:`core.runs.metrics` (reading ``metrics.jsonl``) and
:mod:`core.runs.listing` (every run of the workspace).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.config import TrainConfig
from core.jsonfile import CorruptFileError, check_fields, read_json
from core.runs.metrics import MetricsReader
from core.runs.ownership import owner_state, same_process
from core.workspace import resolve_under, runs_dir

STATES = ("queued", "running", "completed", "failed", "cancelled", "interrupted", "broken")
#: Shown for a run folder whose files cannot be read; never written to ``status.json``.
BROKEN_STATE = "broken"
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("completed", "failed", "cancelled", "interrupted")
PHASES = ("", "waiting", "loading", "caching", "embedding", "head", "train", "fine-tune", "saving")

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
LABELS_FILE = "labels.txt"
MODEL_FILE = "model.keras"
CHECKPOINTS_DIR = "checkpoints"
BEST_FILE = "best.json"  # in CHECKPOINTS_DIR: epoch and metrics of the best model so far
LOGS_DIR = "logs"
CANCEL_FILE = "cancel.request"
WORKER_LOG = "worker.log"

# The worker beats every HEARTBEAT_SECONDS; a beat older than STALE_SECONDS means nobody is
# alive to write it (kept well above the beat so a busy machine is not taken for a dead one).
HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 30.0
#: A live owner whose beat is older than this is shown as not responding (frozen, stopped).
FROZEN_SECONDS = 5 * HEARTBEAT_SECONDS

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def now_iso() -> str:
    """Current UTC time as an ISO-8601 string (what every timestamp in a run folder uses)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse_time(value: str | None) -> float | None:
    """Converts an ISO timestamp written by :func:`now_iso` to epoch seconds.

    None, empty and unparseable values give None (a damaged timestamp is no timestamp).
    """
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@dataclass
class RunStatus:
    """The content of ``status.json``.

    Attributes:
        run_id: Folder name of the run.
        state: One of :data:`STATES`.
        pid: Process id of the worker (None before it started).
        pid_start: Start time of that process (clock ticks since boot, from
            ``/proc/<pid>/stat``), so a pid reused by another process is never taken for it.
        host: Host name of the worker (liveness by pid only makes sense on that host).
        heartbeat: Last time the worker said it was alive (ISO-8601, UTC).
        phase: What the worker is doing, one of :data:`PHASES`.
        epoch: Epochs completed so far (over both fine-tune phases).
        total_epochs: Epochs planned.
        step: Step within the current epoch.
        steps_per_epoch: Steps in one epoch.
        message: A sentence for a person (why it failed, what it waits for, ...).
        created: When the run folder was made.
        started: When training started (after waiting in the queue).
        finished: When the run ended.
        device: Short description of the device, e.g. ``"cpu: Intel Xeon (2 cores)"``.
        resumes: How many times the run was resumed.
    """

    run_id: str = ""
    state: str = "queued"
    pid: int | None = None
    pid_start: int = 0
    host: str = ""
    heartbeat: str = ""
    phase: str = ""
    epoch: int = 0
    total_epochs: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    message: str = ""
    created: str = ""
    started: str = ""
    finished: str = ""
    device: str = ""
    resumes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], path: str | os.PathLike[str] = STATUS_FILE
    ) -> RunStatus:
        """Builds a status from a dictionary; unknown keys go to ``extra``.

        Args:
            data: The parsed ``status.json``.
            path: Where it came from (for messages).

        Raises:
            CorruptFileError: If a field has the wrong type or ``state`` is unknown.
        """
        check_fields(path, data, _STATUS_TYPES)
        if "state" in data and data["state"] not in STATES[:-1]:
            raise CorruptFileError(
                path, f"has an unknown state {data['state']!r:.40}; allowed: {STATES[:-1]}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        extra = dict(values.pop("extra", {}) or {})
        extra.update({k: v for k, v in data.items() if k not in known})
        return cls(**values, extra=extra)

    @property
    def active(self) -> bool:
        """True while the run is queued or running."""
        return self.state in ACTIVE_STATES

    @property
    def progress(self) -> float:
        """Fraction of the planned work done, 0..1 (epochs plus the current epoch's steps)."""
        if self.total_epochs <= 0:
            return 0.0
        within = self.step / self.steps_per_epoch if self.steps_per_epoch else 0.0
        done = self.epoch + (within if self.state == "running" else 0.0)
        return max(0.0, min(1.0, done / self.total_epochs))


_TEXT_FIELDS = ("run_id", "state", "host", "heartbeat", "phase", "message", "created")
_STATUS_TYPES: dict[str, type | tuple[type, ...]] = {
    **dict.fromkeys(_TEXT_FIELDS + ("started", "finished", "device"), str),
    **dict.fromkeys(
        ("epoch", "total_epochs", "step", "steps_per_epoch", "resumes", "pid_start"), int
    ),
    "pid": (int, type(None)),
    "extra": (dict, type(None)),
}


def broken_status(folder: str | os.PathLike[str], error: CorruptFileError) -> RunStatus:
    """The status shown for a run whose ``status.json`` cannot be read.

    Args:
        folder: The run folder.
        error: Why it cannot be read.

    Returns:
        A status in the ``broken`` state whose message gives the reason and what to do.
    """
    folder = Path(folder)
    return RunStatus(
        run_id=folder.name,
        state=BROKEN_STATE,
        message=(
            f"This run cannot be read: {error.path.name} {error.reason}. Its other files are "
            f"untouched; delete the folder {folder.name!r} (under the workspace's runs "
            "folder) if the run is not needed."
        ),
    )


def validate_run_id(run_id: str) -> str:
    """Checks that ``run_id`` is a plain folder name.

    Raises:
        ValueError: If it contains path separators or other characters a run id never has.
    """
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id) or ".." in run_id:
        raise ValueError(
            "run_id must be a folder name made of letters, digits, '.', '_' and '-'. "
            f"Received: run_id={run_id!r}"
        )
    return run_id


def run_dir(run_id: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Returns the folder of run ``run_id`` (it may not exist yet).

    Args:
        run_id: The run's id (its folder name).
        root: Folder holding runs; defaults to ``workspace/runs``.

    Raises:
        ValueError: If ``run_id`` is not a plain folder name.
    """
    base = Path(root) if root is not None else runs_dir()
    return resolve_under(base, validate_run_id(run_id))


def _is_file(path: Path) -> bool:
    """``path.is_file()`` that answers False for names the OS refuses (too long, NUL bytes)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def find_run(run: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """Resolves a run given as an id or as the path of its folder.

    Raises:
        FileNotFoundError: If no such run folder holds a ``status.json``.
    """
    candidate = Path(run)
    if _is_file(candidate / STATUS_FILE):
        return candidate.resolve()
    try:
        folder = run_dir(str(run), root)
    except ValueError as error:
        raise FileNotFoundError(f"No run {str(run)[:80]!r}: {error}") from error
    if not _is_file(folder / STATUS_FILE):
        raise FileNotFoundError(
            f"No run {str(run)!r} under {folder.parent}. List runs with `python -m core runs`."
        )
    return folder


def resolve_run_dir(run: str | os.PathLike[str]) -> Path:
    """Turns a run folder path or a run id into the run folder (no status needed).

    Args:
        run: A path to a run folder, or the id of a run under the workspace's ``runs/``.

    Returns:
        The absolute run folder.

    Raises:
        FileNotFoundError: If neither a folder at that path nor a run with that id exists.
    """
    candidate = Path(run).expanduser()
    if _is_dir(candidate):
        return candidate.resolve()
    try:
        by_id = resolve_under(runs_dir(), str(run))
    except ValueError as error:
        raise FileNotFoundError(f"No run folder at {str(run)[:80]!r}: {error}") from error
    if _is_dir(by_id):
        return by_id
    raise FileNotFoundError(
        f"No run folder at {str(run)!r} and no run with that id under {runs_dir()}."
    )


def new_run_id(config: TrainConfig) -> str:
    """A sortable, unique id: UTC time, backbone and a random suffix."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    backbone = re.sub(r"[^A-Za-z0-9]+", "-", config.model.backbone)[:24].strip("-")
    return f"{stamp}-{backbone}-{secrets.token_hex(3)}"


def create_run(config: TrainConfig, root: str | os.PathLike[str] | None = None) -> Path:
    """Makes a new run folder with ``config.json`` and a queued ``status.json``.

    Args:
        config: What to train.
        root: Folder holding runs; defaults to ``workspace/runs``.

    Returns:
        The new run folder.
    """
    base = Path(root) if root is not None else runs_dir()
    base.mkdir(parents=True, exist_ok=True)
    while True:
        run_id = new_run_id(config)
        folder = run_dir(run_id, base)
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
    config.save(folder / CONFIG_FILE)
    stamp = now_iso()
    status = RunStatus(
        run_id=run_id,
        state="queued",
        host=socket.gethostname(),
        heartbeat=stamp,
        created=stamp,
        total_epochs=config.total_epochs,
        message="Starting the training process (a few seconds).",
    )
    write_status(folder, status)
    return folder


def write_status(folder: str | os.PathLike[str], status: RunStatus) -> None:
    """Writes ``status.json`` atomically (readers never see half a file).

    Temp file + ``os.replace`` without ``fsync``: the file is rewritten every couple of
    seconds, so surviving a power cut matters less than not stalling training on a busy
    disk; a reader still sees either the old or the new file, never a mix.
    """
    path = Path(folder) / STATUS_FILE
    tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(status.to_dict(), indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _raw_status(folder: Path) -> RunStatus:
    path = folder / STATUS_FILE
    data = read_json(path)
    if data is None:
        raise FileNotFoundError(f"No run {folder.name[:80]!r} here (no {STATUS_FILE}).")
    return RunStatus.from_dict(data, path)


def _worker_gone(folder: Path, status: RunStatus, age: float, stale_after: float) -> bool:
    same_host = not status.host or status.host == socket.gethostname()
    if not same_host:
        return age > stale_after
    if status.pid is None:
        return age > stale_after  # no worker has started yet
    owner = owner_state(folder)
    if owner == "held":
        return False
    if owner == "free":
        return True
    # No owner lock (a run from before locks): the pid, checked against its start time.
    return not same_process(status) or age > 10 * stale_after


def read_status(folder: str | os.PathLike[str], *, stale_after: float = STALE_SECONDS) -> RunStatus:
    """Reads a run's status, reporting a dead worker as ``interrupted``.

    A run that says queued/running is shown as interrupted when its worker is gone: on the
    same host, when nobody holds the folder's owner lock (or, for older runs, when its pid
    no longer names the process that started the run); elsewhere, when the heartbeat is
    older than ``stale_after`` seconds. A worker that holds the lock but has not beaten for
    :data:`FROZEN_SECONDS` is shown as not responding at once (``extra["stale_seconds"]``).
    The file itself is not changed (the worker is its only writer); ``resume`` rewrites it.

    Args:
        folder: The run folder.
        stale_after: Seconds after which a heartbeat counts as stopped.

    Returns:
        The status; ``state`` may be ``interrupted``.

    Raises:
        FileNotFoundError: If the folder has no ``status.json``.
        CorruptFileError: If ``status.json`` is damaged (truncated, empty, wrong types).
    """
    folder = Path(folder)
    status = _raw_status(folder)
    if status.state not in ACTIVE_STATES:
        return status
    beat = parse_time(status.heartbeat) or 0.0
    age = time.time() - beat
    dead = _worker_gone(folder, status, age, stale_after)
    if dead:
        # The worker may have written its final state and let go of the lock in between.
        again = _raw_status(folder)
        if again.state not in ACTIVE_STATES or again.pid != status.pid:
            return again if again.state not in ACTIVE_STATES else status
    if not dead and status.pid is not None and age > FROZEN_SECONDS:
        status.extra["stale_seconds"] = int(age)
        status.message = (
            f"Not responding: no heartbeat for {int(age)} s, although its worker "
            f"(pid {status.pid}) still exists; it may be frozen or suspended. Cancel the run "
            "to end that worker, then resume it from the last completed epoch."
        )
    if dead and cancel_requested(folder):
        # Killed after a cancel request (e.g. still compiling its first step when the
        # grace period ran out): the person asked for this end, so it is not an accident.
        status.state = "cancelled"
        status.message = cancelled_without_worker_message(folder)
    elif dead:
        was = status.state
        status.state = "interrupted"
        status.message = (
            f"The worker stopped while the run was {was} (last heartbeat "
            f"{int(age)} s ago). Resume it to continue from the last completed epoch."
        )
    return status


def cancelled_without_worker_message(folder: str | os.PathLike[str]) -> str:
    """The sentence for a cancelled run whose worker was stopped before it recorded its end.

    Args:
        folder: The run folder.

    Returns:
        What happened and what was kept.
    """
    folder = Path(folder)
    best = read_best(folder)
    kept = ""
    if best is not None and (folder / MODEL_FILE).is_file():
        kept = f" The best model so far (epoch {best.get('epoch')}) is kept."
    events = MetricsReader(folder).all()
    phases = [i for i, event in enumerate(events) if event.get("type") == "phase"]
    since = events[phases[-1] :] if phases else []
    if not any(event.get("type") == "batch" for event in since):
        if not any(event.get("type") == "epoch" for event in events):
            return "Cancelled before the first batch finished; nothing was trained yet."
        return "Cancelled before the first batch of this session finished." + kept
    return "Cancelled: the worker did not stop by itself and was stopped." + (
        kept or " No epoch had finished, so no model was kept."
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    return read_json(path)


def read_summary(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Returns ``summary.json`` of a finished run, or None while it has none.

    Raises:
        CorruptFileError: If the file is damaged.
    """
    return _read_json(Path(folder) / SUMMARY_FILE)


def read_config(folder: str | os.PathLike[str]) -> TrainConfig:
    """Returns the run's :class:`TrainConfig`.

    Raises:
        FileNotFoundError: If the run has no ``config.json``.
        CorruptFileError: If it is damaged or does not describe a valid config.
    """
    return TrainConfig.load(Path(folder) / CONFIG_FILE)


def read_config_dict(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's ``config.json`` as a plain dictionary; empty if the file is missing.

    Raises:
        CorruptFileError: If the file is damaged.
    """
    return _read_json(Path(folder) / CONFIG_FILE) or {}


def best_path(folder: str | os.PathLike[str]) -> Path:
    """Where the run records its best epoch (``checkpoints/best.json``)."""
    return Path(folder) / CHECKPOINTS_DIR / BEST_FILE


def read_best(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Epoch and metrics of the run's best model so far, or None before the first epoch.

    A damaged record counts as none (it is rewritten at the next better epoch).
    """
    try:
        return _read_json(best_path(folder))
    except CorruptFileError:
        return None


def read_labels(folder: str | os.PathLike[str]) -> list[str]:
    """Returns the class names of ``labels.txt`` (empty before the model was first saved)."""
    path = Path(folder) / LABELS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as error:
        raise CorruptFileError(path, "is not UTF-8 text (binary content)") from error
    except OSError as error:
        raise CorruptFileError(path, f"cannot be read ({error.strerror or error})") from error
    return [line for line in text.splitlines() if line]


def request_cancel(folder: str | os.PathLike[str]) -> None:
    """Leaves the cancel request file the worker checks at every batch."""
    path = Path(folder) / CANCEL_FILE
    path.write_text(now_iso() + "\n")


def cancel_requested(folder: str | os.PathLike[str]) -> bool:
    """True when someone asked this run to stop."""
    return (Path(folder) / CANCEL_FILE).exists()
