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
initial files before the worker exists).
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
from core.workspace import resolve_under, runs_dir

STATES = ("queued", "running", "completed", "failed", "cancelled", "interrupted")
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("completed", "failed", "cancelled", "interrupted")
PHASES = ("", "waiting", "loading", "caching", "embedding", "head", "train", "fine-tune", "saving")

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
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

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def now_iso() -> str:
    """Current UTC time as an ISO-8601 string (what every timestamp in a run folder uses)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse_time(value: str | None) -> float | None:
    """Converts an ISO timestamp written by :func:`now_iso` to epoch seconds (None passes)."""
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp()


@dataclass
class RunStatus:
    """The content of ``status.json``.

    Attributes:
        run_id: Folder name of the run.
        state: One of :data:`STATES`.
        pid: Process id of the worker (None before it started).
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
    def from_dict(cls, data: dict[str, Any]) -> RunStatus:
        """Builds a status from a dictionary; unknown keys go to ``extra``."""
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


def find_run(run: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """Resolves a run given as an id or as the path of its folder.

    Raises:
        FileNotFoundError: If no such run folder holds a ``status.json``.
    """
    candidate = Path(run)
    if (candidate / STATUS_FILE).is_file():
        return candidate.resolve()
    try:
        folder = run_dir(str(run), root)
    except ValueError as error:
        raise FileNotFoundError(f"No run {str(run)!r}: {error}") from error
    if not (folder / STATUS_FILE).is_file():
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
    if candidate.is_dir():
        return candidate.resolve()
    try:
        by_id = resolve_under(runs_dir(), str(run))
    except ValueError as error:
        raise FileNotFoundError(f"No run folder at {str(run)!r}: {error}") from error
    if by_id.is_dir():
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
        message="Waiting for a worker to start.",
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


def pid_alive(pid: int | None) -> bool:
    """True when process ``pid`` exists on this host and is not a zombie."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A finished child that its parent has not reaped yet still answers kill(0).
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _raw_status(folder: Path) -> RunStatus:
    data = json.loads((folder / STATUS_FILE).read_text())
    return RunStatus.from_dict(data)


def read_status(folder: str | os.PathLike[str], *, stale_after: float = STALE_SECONDS) -> RunStatus:
    """Reads a run's status, reporting a dead worker as ``interrupted``.

    A run that says queued/running is shown as interrupted when its worker is gone: on the
    same host, when its pid no longer exists (or is a zombie) and the heartbeat stopped;
    elsewhere, when the heartbeat is older than ``stale_after`` seconds. The file itself is
    not changed (the worker is its only writer); ``resume`` rewrites it.

    Args:
        folder: The run folder.
        stale_after: Seconds after which a heartbeat counts as stopped.

    Returns:
        The status; ``state`` may be ``interrupted``.

    Raises:
        FileNotFoundError: If the folder has no ``status.json``.
    """
    folder = Path(folder)
    status = _raw_status(folder)
    if status.state not in ACTIVE_STATES:
        return status
    beat = parse_time(status.heartbeat) or 0.0
    age = time.time() - beat
    same_host = not status.host or status.host == socket.gethostname()
    if same_host and status.pid is not None:
        # The pid answers definitively; the heartbeat only guards against pid reuse.
        dead = not pid_alive(status.pid) or age > 10 * stale_after
    else:
        dead = age > stale_after
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


class MetricsReader:
    """Reads ``metrics.jsonl`` incrementally; cheap enough to call every second.

    Each :meth:`poll` returns only the events appended since the previous call. A last line
    still being written (no newline yet) is kept back until it is complete.

    Args:
        folder: The run folder.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / METRICS_FILE
        self.offset = 0
        self.skipped = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        """Returns the events appended since the last call (possibly none)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:
            # The file was replaced by a shorter one: start over.
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(size - self.offset)
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return self._parse(lines)

    def _parse(self, lines: list[bytes]) -> list[dict[str, Any]]:
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                # A line cut short by a killed worker; the worker repairs the file on resume.
                self.skipped += 1
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def all(self) -> list[dict[str, Any]]:
        """Returns every complete event in the file (does not move the incremental cursor)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        lines.pop()
        return MetricsReader(self.path.parent)._parse(lines)


def epoch_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epoch events of ``events``, the last one kept per epoch (a resumed run may repeat)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.get("type") == "epoch":
            by_epoch[int(event["epoch"])] = event
    return [by_epoch[k] for k in sorted(by_epoch)]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def read_summary(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Returns ``summary.json`` of a finished run, or None while it has none."""
    return _read_json(Path(folder) / SUMMARY_FILE)


def read_config(folder: str | os.PathLike[str]) -> TrainConfig:
    """Returns the run's :class:`TrainConfig`."""
    return TrainConfig.load(Path(folder) / CONFIG_FILE)


def read_config_dict(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's ``config.json`` as a plain dictionary; empty if the file is missing."""
    return _read_json(Path(folder) / CONFIG_FILE) or {}


def best_path(folder: str | os.PathLike[str]) -> Path:
    """Where the run records its best epoch (``checkpoints/best.json``)."""
    return Path(folder) / CHECKPOINTS_DIR / BEST_FILE


def read_best(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Epoch and metrics of the run's best model so far, or None before the first epoch."""
    return _read_json(best_path(folder))


def read_labels(folder: str | os.PathLike[str]) -> list[str]:
    """Returns the class names of ``labels.txt`` (empty before the model was first saved)."""
    try:
        text = (Path(folder) / LABELS_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line]


@dataclass
class RunInfo:
    """One run as listed by :func:`list_runs`.

    Attributes:
        run_id: Folder name.
        dir: The run folder.
        status: Its status (``interrupted`` when the worker died).
        config: The config as a dictionary (None if unreadable).
        summary: ``summary.json`` when the run finished, else None.
        has_model: Whether ``model.keras`` exists.
    """

    run_id: str
    dir: Path
    status: RunStatus
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    has_model: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary."""
        return {
            "run_id": self.run_id,
            "run_dir": str(self.dir),
            "status": self.status.to_dict(),
            "config": self.config,
            "summary": self.summary,
            "has_model": self.has_model,
        }


def list_runs(root: str | os.PathLike[str] | None = None) -> list[RunInfo]:
    """Lists every run folder, newest first, from the folders alone.

    Folders without a readable ``status.json`` are skipped (they are not runs).
    """
    base = Path(root) if root is not None else runs_dir()
    if not base.is_dir():
        return []
    runs = []
    for folder in base.iterdir():
        if not folder.is_dir() or not (folder / STATUS_FILE).is_file():
            continue
        try:
            status = read_status(folder)
        except (OSError, ValueError, TypeError):
            continue
        runs.append(
            RunInfo(
                run_id=folder.name,
                dir=folder,
                status=status,
                config=_read_json(folder / CONFIG_FILE),
                summary=read_summary(folder),
                has_model=(folder / MODEL_FILE).is_file(),
            )
        )
    runs.sort(key=lambda info: (info.status.created or "", info.run_id), reverse=True)
    return runs


def request_cancel(folder: str | os.PathLike[str]) -> None:
    """Leaves the cancel request file the worker checks at every batch."""
    path = Path(folder) / CANCEL_FILE
    path.write_text(now_iso() + "\n")


def cancel_requested(folder: str | os.PathLike[str]) -> bool:
    """True when someone asked this run to stop."""
    return (Path(folder) / CANCEL_FILE).exists()
