"""Starting, cancelling and resuming training runs in their own worker processes.

The app (or the CLI with ``--background``) calls :func:`start_run`; it makes the run folder
and launches ``python -m core.training <run>`` as a new
process session, so closing the app does not kill training. The worker waits in the queue
(status ``queued``) while another run holds the device, see :mod:`core.training.worker`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import core
from core.config import TrainConfig
from core.runs.ownership import owner_state, verified_worker_pid
from core.runs.store import (
    ACTIVE_STATES,
    CANCEL_FILE,
    WORKER_LOG,
    RunStatus,
    _raw_status,
    create_run,
    find_run,
    now_iso,
    read_status,
    request_cancel,
    write_status,
)
from core.workspace import (
    HOME_ENV,
    SHARED_HOME_ENV,
    USER_ENV,
    current_user,
    shared_root,
    workspace_root,
)

# Worker processes this process started and has not reaped yet (pid -> process).
_children: dict[int, subprocess.Popen] = {}
WORKER_NICENESS = 10  # how much lower the workers' CPU priority is than the app's
_children_lock = threading.Lock()


def _reap() -> None:
    """Forgets workers that ended (their reaper thread already collected them)."""
    with _children_lock:
        for pid, child in list(_children.items()):
            if child.returncode is not None:
                del _children[pid]


def _reaper(process: subprocess.Popen) -> None:
    # Waiting is what removes a dead child from the process table: without it a killed
    # worker stays a zombie of the app, which still answers kill(pid, 0).
    process.wait()
    with _children_lock:
        _children.pop(process.pid, None)


def _watch(process: subprocess.Popen) -> None:
    """Reaps ``process`` as soon as it ends, from a daemon thread of this process.

    The thread never keeps the app alive; if the app exits first, the worker (its own
    session) keeps running and is re-parented to init, which reaps it.
    """
    with _children_lock:
        _children[process.pid] = process
    threading.Thread(
        target=_reaper, args=(process,), name=f"reap-worker-{process.pid}", daemon=True
    ).start()


def worker_command(folder: Path, *, resume: bool = False) -> list[str]:
    """The command line of the worker process for run folder ``folder``.

    The worker runs at a lower CPU priority (:data:`WORKER_NICENESS`, for the process and
    its session's scheduling group, see :mod:`core.training.priority`): on a machine with
    few cores, training would otherwise slow every click in the app, and it loses almost
    nothing when the app is idle.
    """
    command = [sys.executable, "-m", "core.training", str(folder), "--nice", str(WORKER_NICENESS)]
    if resume:
        command.append("--resume")
    return command


def spawn_worker(folder: str | os.PathLike[str], *, resume: bool = False) -> subprocess.Popen:
    """Launches the worker of an existing run folder and returns its process.

    The worker runs in its own session (a signal to the app does not reach it), with the
    same workspace root, and writes its output to ``worker.log`` in the run folder.
    """
    folder = Path(folder).resolve()
    _reap()
    env = dict(os.environ)
    env[HOME_ENV] = str(workspace_root())
    env[SHARED_HOME_ENV] = str(shared_root())
    env[USER_ENV] = current_user()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    repo_root = Path(core.__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(
        [str(repo_root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    with open(folder / WORKER_LOG, "ab") as log:
        process = subprocess.Popen(
            worker_command(folder, resume=resume),
            cwd=repo_root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _watch(process)
    return process


def start_run(config: TrainConfig, *, root: str | os.PathLike[str] | None = None) -> str:
    """Creates a run for ``config`` and starts its worker process.

    If another run holds the device, the new run stays ``queued`` until it ends.

    Args:
        config: What to train (validated on construction).
        root: Folder holding runs; defaults to ``workspace/runs``.

    Returns:
        The run id (its folder name under ``root``).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig. Received: {type(config).__name__}")
    folder = create_run(config, root)
    # The worker records its own pid as it starts; one that dies before that shows as
    # interrupted once the initial heartbeat is stale.
    spawn_worker(folder)
    return folder.name


def _wait_until_inactive(folder: Path, timeout: float) -> RunStatus:
    deadline = time.monotonic() + timeout
    status = read_status(folder)
    while status.active and time.monotonic() < deadline:
        _reap()
        time.sleep(0.2)
        status = read_status(folder)
    return status


def _signal(pid: int, sig: signal.Signals) -> None:
    # Workers started here lead their own process group (start_new_session); a foreground
    # CLI worker may not, so fall back to the process itself.
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _record_cancel(folder: Path) -> RunStatus:
    """Writes ``cancelled`` for a worker that died after a cancel request without saying so.

    A worker killed while it cannot reach a cancel check (compiling its first train step,
    stuck in a long C++ call) never writes its final state; the cancel request file in the
    run folder is the evidence that this end was asked for.
    """
    raw = _raw_status(folder)
    status = read_status(folder)
    if raw.state in ACTIVE_STATES and status.state == "cancelled":
        status.finished = now_iso()
        status.phase = ""
        write_status(folder, status)
    return status


def _escalate(folder: Path, grace_seconds: float) -> RunStatus:
    """Waits for the worker to stop by itself, then SIGTERM, then SIGKILL; records the end."""
    status = _wait_until_inactive(folder, grace_seconds)
    if status.active and status.pid is not None:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            # Checked before every signal: a pid that no longer names the run's worker
            # (it ended, and the system gave the number to another process) is left alone.
            pid = verified_worker_pid(folder, _raw_status(folder))
            if pid is None:
                break
            _signal(pid, sig)
            if sig == signal.SIGTERM:
                # A stopped (SIGSTOP) worker only acts on SIGTERM once it runs again.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            status = _wait_until_inactive(folder, wait)
            if not status.active:
                break
    return _record_cancel(folder)


def cancel_run(
    run_id: str,
    *,
    root: str | os.PathLike[str] | None = None,
    wait: bool = True,
    grace_seconds: float = 15.0,
) -> RunStatus:
    """Asks a run to stop; the worker honours it at the next batch.

    The best model so far stays in the run folder. If the worker has not stopped after
    ``grace_seconds``, it gets SIGTERM, then SIGKILL (a worker compiling its first train
    step cannot stop by itself); a worker that died without recording its end is then
    recorded as ``cancelled`` here, and :func:`core.runs.store.read_status` shows it so even if
    this process is gone before it could write it.

    Args:
        run_id: The run's id or folder.
        root: Folder holding runs; defaults to ``workspace/runs``.
        wait: Block until the run stopped (or was killed). When False, the escalation runs
            in a background thread and the current status is returned at once.
        grace_seconds: How long the worker gets to stop by itself.

    Returns:
        The run's status after the request (``cancelled`` when ``wait`` and it stopped).

    Raises:
        FileNotFoundError: If there is no such run.
    """
    folder = find_run(run_id, root)
    status = read_status(folder)
    if not status.active:
        return status
    request_cancel(folder)
    pid = verified_worker_pid(folder, _raw_status(folder))
    if pid is not None:
        # A worker stuck before its first batch check also hears the signal.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
    if wait:
        return _escalate(folder, grace_seconds)
    threading.Thread(target=_escalate, args=(folder, grace_seconds), daemon=True).start()
    return read_status(folder)


def resume_run(run_id: str, *, root: str | os.PathLike[str] | None = None) -> str:
    """Starts a new worker for an interrupted, failed or cancelled run.

    Training continues from the last completed epoch (``BackupAndRestore`` state under
    ``checkpoints/``), with the metrics written so far kept.

    Args:
        run_id: The run's id or folder.
        root: Folder holding runs; defaults to ``workspace/runs``.

    Returns:
        The run id.

    Raises:
        FileNotFoundError: If there is no such run.
        ValueError: If the run is still active or already completed.
    """
    folder = prepare_resume(run_id, root)
    spawn_worker(folder, resume=True)
    return folder.name


def prepare_resume(run_id: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Checks that a run can be resumed and marks it queued again; returns its folder."""
    folder = find_run(run_id, root)
    status = read_status(folder)
    held = owner_state(folder) == "held"
    if held and (status.state not in ACTIVE_STATES or status.extra.get("stale_seconds")):
        raise ValueError(
            f"Run {folder.name!r} cannot be resumed while its worker (pid {status.pid}) still "
            "holds it; it may be frozen. Cancel the run to end that worker, then resume."
        )
    if status.state not in ("interrupted", "failed", "cancelled"):
        raise ValueError(
            "Only an interrupted, failed or cancelled run can be resumed. "
            f"Received: run {folder.name!r} in state {status.state!r}"
        )
    (folder / CANCEL_FILE).unlink(missing_ok=True)
    status.state = "queued"
    status.pid = None
    status.heartbeat = now_iso()
    status.finished = ""
    status.message = "Starting the training process again to resume the run."
    write_status(folder, status)
    return folder


@dataclass(frozen=True)
class RunInProgress:
    """A run that is training or waiting for the device, as the Train page lists it.

    Attributes:
        run_id: The run's folder name.
        name: The name the user gave it (``""`` when none).
        state: ``running`` or ``queued``.
        phase: What a running run is doing (see :data:`core.runs.store.PHASES`).
        epoch: Epochs done.
        total_epochs: Epochs planned.
        progress: Fraction done, 0..1.
        place: Place in the queue (1 is next) for a queued run that joined the queue; None
            for a running run or one whose worker is still starting.
        queue_length: How many runs wait in the queue (all users).
    """

    run_id: str
    name: str
    state: str
    phase: str
    epoch: int
    total_epochs: int
    progress: float
    place: int | None
    queue_length: int


def runs_in_progress(root: str | os.PathLike[str] | None = None) -> list[RunInProgress]:
    """Every run of this workspace that is running or queued, with its place in the queue.

    Running runs come first, then queued ones in the order the device will take them
    (a queued run whose worker has not joined the queue yet comes last).

    Args:
        root: Folder holding runs; defaults to ``workspace/runs``.

    Returns:
        The runs, in that order.
    """
    from core.runs.listing import list_runs
    from core.training import queue

    order = queue.waiting()
    places = {ticket.run_id: index + 1 for index, ticket in enumerate(order)}
    found = []
    for info in list_runs(root):
        status = info.status
        if not status.active:
            continue
        name = str((info.config or {}).get("name") or "")
        place = places.get(info.run_id) if status.state == "queued" else None
        found.append(
            RunInProgress(
                run_id=info.run_id,
                name=name,
                state=status.state,
                phase=status.phase,
                epoch=int(status.epoch),
                total_epochs=int(status.total_epochs),
                progress=float(status.progress),
                place=place,
                queue_length=len(order),
            )
        )

    def rank(run: RunInProgress) -> tuple[int, int]:
        if run.state == "running":
            return (0, 0)
        return (1, run.place) if run.place is not None else (2, 0)

    # sorted() is stable: within a rank the newest-first order of list_runs stays.
    return sorted(found, key=rank)
