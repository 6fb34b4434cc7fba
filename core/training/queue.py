"""The training queue: who may take the device next, round robin across users.

Every worker waiting for the device leaves a ticket in ``<shared root>/queue/``. When the
device is free, the next ticket is chosen round robin: the user served longest ago goes
first (a user who was never served before anyone who was), and each user's own runs go in
the order they were started. So one person starting ten runs does not make everyone else
wait for all ten. Only the head of the queue tries the device lock, which still guarantees
that a single training runs at a time.

Tickets of workers that died (their pid no longer names the process that wrote them) are
ignored and removed; a damaged ticket is ignored.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from core.atomic import atomic_write_json
from core.jsonfile import CorruptFileError, read_json
from core.runs.ownership import pid_alive, process_start_ticks
from core.workspace import shared_root

QUEUE_DIR = "queue"
SERVED_FILE = "served.json"


@dataclass(frozen=True)
class Ticket:
    """One waiting worker.

    Attributes:
        path: The ticket file.
        user: Whose run it is (``""`` without accounts).
        run_id: The run.
        created: When it joined the queue (seconds since the epoch).
        pid: The waiting worker's pid.
        pid_start: That process's start time (see ``process_start_ticks``).
    """

    path: Path
    user: str
    run_id: str
    created: float
    pid: int
    pid_start: int


def queue_dir() -> Path:
    """The folder of tickets, in the shared root."""
    path = shared_root() / QUEUE_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def enter(user: str, run_id: str) -> Ticket:
    """Puts the calling worker in the queue.

    Args:
        user: Whose run it is.
        run_id: The run.

    Returns:
        The ticket (remove it with :func:`leave`).
    """
    created = time.time()
    pid = os.getpid()
    path = queue_dir() / f"{time.time_ns():020d}-{pid}.json"
    ticket = Ticket(path, user, run_id, created, pid, process_start_ticks(pid))
    atomic_write_json(
        path,
        {
            "user": user,
            "run_id": run_id,
            "created": created,
            "pid": pid,
            "pid_start": ticket.pid_start,
        },
    )
    return ticket


def leave(ticket: Ticket, *, served: bool) -> None:
    """Removes a ticket; ``served`` records that its user just got the device."""
    ticket.path.unlink(missing_ok=True)
    if served:
        times = _served()
        times[ticket.user] = time.time()
        atomic_write_json(queue_dir() / SERVED_FILE, times)


def _served() -> dict[str, float]:
    try:
        data = read_json(queue_dir() / SERVED_FILE) or {}
    except CorruptFileError:
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)}


def _read(path: Path) -> Ticket | None:
    try:
        data = read_json(path)
    except CorruptFileError:
        return None
    if data is None:
        return None
    try:
        ticket = Ticket(
            path,
            str(data["user"]),
            str(data["run_id"]),
            float(data["created"]),
            int(data["pid"]),
            int(data["pid_start"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    alive = pid_alive(ticket.pid) and (
        not ticket.pid_start or process_start_ticks(ticket.pid) == ticket.pid_start
    )
    if not alive:
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return ticket


def waiting() -> list[Ticket]:
    """Every live ticket, in the order the device will be given (round robin by user)."""
    tickets = [t for p in sorted(queue_dir().glob("*.json")) if (t := _read(p)) is not None]
    by_user: dict[str, list[Ticket]] = {}
    for ticket in sorted(tickets, key=lambda t: (t.created, t.path.name)):
        by_user.setdefault(ticket.user, []).append(ticket)
    served = _served()
    users = sorted(by_user, key=lambda u: (served.get(u, 0.0), by_user[u][0].created))
    order: list[Ticket] = []
    depth = 0
    while len(order) < len(tickets):
        for user in users:
            if depth < len(by_user[user]):
                order.append(by_user[user][depth])
        depth += 1
    return order


def position(ticket: Ticket) -> tuple[int, int]:
    """``(place, length)`` of a ticket in the queue; place 1 is next (0 when not in it)."""
    order = waiting()
    for index, other in enumerate(order):
        if other.path == ticket.path:
            return index + 1, len(order)
    return 0, len(order)
