"""Who owns a run folder: the worker's owner lock, and proof that a pid is that worker.

A run folder has one writer, its worker process. The worker takes the folder's owner lock
(:func:`acquire_owner`, a ``flock`` the kernel drops however the process ends), so readers
ask the kernel whether a worker lives (:func:`owner_state`) instead of trusting a pid. A pid
is only signalled with proof it still names the worker (:func:`verified_worker_pid`): the
lock is held and the process started when the worker recorded.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Protocol


class WorkerRecord(Protocol):
    """What a run's status records about its worker (:class:`core.runs.store.RunStatus`)."""

    pid: int | None
    pid_start: int
    host: str


#: Held (``flock``) by the one worker that owns the folder, for as long as it lives.
OWNER_LOCK = ".worker.lock"


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


def process_start_ticks(pid: int | None) -> int:
    """When process ``pid`` started, in clock ticks since boot (0 when unknown).

    Together with the pid this names one process for good: a pid the system hands to a new
    process later comes with a later start time.
    """
    if not pid or pid <= 0:
        return 0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 of proc(5); fields[0] is field 3 (the state)
    except (IndexError, ValueError):
        return 0


def owner_state(folder: str | os.PathLike[str]) -> str:
    """Whether a live worker owns the run folder, asked of the kernel (not of a pid).

    Returns:
        ``"held"`` while a worker process holds the folder's owner lock (also when it is
        frozen), ``"free"`` when the lock file exists but nobody holds it (its worker is
        gone), ``"none"`` when no worker ever took it (older runs, or not started yet).
    """
    path = Path(folder) / OWNER_LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "none"
    except OSError:
        return "none"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return "held"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "free"
    finally:
        os.close(fd)


class RunOwnedError(RuntimeError):
    """Another live worker owns the run folder; nothing was written."""


def acquire_owner(folder: str | os.PathLike[str], wait_seconds: float = 3.0) -> int:
    """Takes the run folder's owner lock for this process; returns its descriptor.

    Held until the descriptor is closed (or the process ends, however it ends), so a run
    folder never has two writers: a second worker, or a resume while a frozen worker still
    lives, is refused here before it writes anything.

    Args:
        folder: The run folder.
        wait_seconds: How long to retry (readers hold the lock shared for microseconds).

    Raises:
        RunOwnedError: If another process holds it.
    """
    path = Path(folder) / OWNER_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise RunOwnedError(
                    f"Run {Path(folder).name!r} is owned by another live worker; a run folder "
                    "has one writer. Cancel that worker first (it may be frozen), then resume."
                ) from None
            time.sleep(0.05)


def release_owner(fd: int) -> None:
    """Gives up the owner lock taken by :func:`acquire_owner`."""
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def same_process(status: WorkerRecord) -> bool:
    """The recorded pid is alive and (when recorded) started when the worker started."""
    if not pid_alive(status.pid):
        return False
    return not status.pid_start or process_start_ticks(status.pid) == status.pid_start


def verified_worker_pid(folder: str | os.PathLike[str], status: WorkerRecord) -> int | None:
    """The pid of the run's worker, only when there is proof it is that worker.

    Proof: the folder's owner lock is held and the pid's start time is the one the worker
    recorded (for runs without an owner lock, the start time alone). A pid now used by an
    unrelated process gives None, so it is never signalled.

    Args:
        folder: The run folder.
        status: Its raw status.

    Returns:
        The pid, or None.
    """
    if status.pid is None or (status.host and status.host != socket.gethostname()):
        return None
    owner = owner_state(folder)
    if owner == "free":
        return None
    if owner == "none" and not status.pid_start:
        return None
    return status.pid if same_process(status) else None
