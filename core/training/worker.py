"""The training worker: owns one run folder from queue to final status.

``python -m core.training <run>`` (what
:func:`core.training.jobs.start_run` launches) and the foreground CLI both end up in
:func:`run_worker`. It

1. records its pid and a heartbeat in ``status.json`` (a thread beats every 2 s, so a
   reader can tell a live worker from a dead one);
2. waits in the queue: an exclusive ``fcntl.flock`` on ``workspace/locks/<device>.lock``
   means one training per device; a waiting run stays ``queued`` and keeps beating;
3. trains (:func:`core.training.trainer.train`), honouring cancel requests at every batch;
4. turns every way a run can end into a final state and a sentence for a person:
   completed, cancelled, failed (NaN loss, out of memory, bad data, a bug), and writes
   ``summary.json``.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_json
from core.runs.metrics import MetricsReader, epoch_events
from core.runs.ownership import RunOwnedError, acquire_owner, process_start_ticks, release_owner
from core.runs.store import (
    MODEL_FILE,
    SUMMARY_FILE,
    RunStatus,
    _raw_status,
    now_iso,
    read_best,
    read_config,
    read_status,
)
from core.training.context import (
    CancelToken,
    MetricsWriter,
    NonFiniteLoss,
    RunContext,
    StatusWriter,
    TrainingCancelled,
)
from core.training.devices import gpu_queue_mode, visible_gpus
from core.training.distribute import collective_timeout, is_worker_lost, read_cluster
from core.training.out_of_memory import is_out_of_memory, out_of_memory_message
from core.workspace import current_user, shared_root

DEVICE_LOCK_ENV = "TRANSFER_STUDIO_DEVICE"


def _kept_model_sentence(folder: Path) -> str:
    best = read_best(folder)
    if (folder / MODEL_FILE).is_file() and best is not None:
        epoch = best.get("epoch")
        return f" The best model so far (epoch {epoch}) is kept."
    return " No epoch had finished, so no model was kept."


def _complete_summary(folder: Path, summary: dict[str, Any], status: RunStatus) -> None:
    """Fills the summary of a run that did not finish from what is on disk."""
    if "epochs_completed" in summary:
        return
    events = epoch_events(MetricsReader(folder).all())
    last = events[-1] if events else {}
    best = read_best(folder) or {}
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    summary.update(
        {
            "epochs_completed": status.epoch,
            "total_epochs": status.total_epochs,
            "best_epoch": best.get("epoch"),
            "best_val_accuracy": best.get("val_accuracy"),
            "metrics": {k: (best or last).get(k) for k in keys} if (best or last) else None,
            "last_epoch_metrics": {k: last.get(k) for k in keys} if last else None,
        }
    )


def device_lock_paths() -> list[tuple[Path, str | None]]:
    """The locks that admit trainings on this machine's devices, with the GPU each stands for.

    One lock (one training at a time, using every GPU) unless several GPUs are visible and
    ``TRANSFER_STUDIO_GPU_QUEUE=per-gpu``: then one lock per GPU, and a run takes the first
    free one (``CUDA_VISIBLE_DEVICES`` is set to it before TensorFlow starts).
    """
    name = os.environ.get(DEVICE_LOCK_ENV, "device0")
    cluster = read_cluster()
    if cluster is not None:
        # Each worker of a cluster holds its own machine's device; local test clusters share
        # one workspace, so the lock is per worker.
        name = f"{name}-worker{cluster.index}"
    folder = shared_root() / "locks"  # one device for every user of the server
    folder.mkdir(parents=True, exist_ok=True)
    gpus = visible_gpus()
    if gpu_queue_mode() == "per-gpu" and len(gpus) > 1 and cluster is None:
        return [(folder / f"{name}-gpu{gpu}.lock", gpu) for gpu in gpus]
    return [(folder / f"{name}.lock", None)]


def _wait_for_device(status: StatusWriter, token: CancelToken) -> int:
    """Blocks until this worker holds a device lock; returns the open lock descriptor.

    The worker waits in the shared queue (:mod:`core.training.queue`): only the runs at the
    head of the queue, chosen round robin across users, try the locks (one, or one per GPU);
    the others show their place.
    """
    from core.training import queue

    candidates = device_lock_paths()
    fds = [os.open(path, os.O_RDWR | os.O_CREAT, 0o644) for path, _ in candidates]
    ticket = queue.enter(current_user(), status.status.run_id)
    shown = None
    got: tuple[Path, str | None, int] | None = None
    try:
        while True:
            place, length = queue.position(ticket)
            if place <= len(candidates):
                for (path, gpu), fd in zip(candidates, fds, strict=True):
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    got = (path, gpu, fd)
                    break
                if got is not None:
                    break
            holder = candidates[0][0].with_suffix(".holder")
            who = holder.read_text().strip() if holder.exists() else "another run"
            if len(candidates) > 1:
                who = f"one of {len(candidates)} runs (one per GPU)"
            message = f"Queued: waiting for {who} to finish on this device."
            if length > 1:
                message += f" Place {max(place, 1)} of {length} in the queue (runs of different "
                message += "people take turns)."
            if message != shown:
                status.set(state="queued", phase="waiting", message=message)
                shown = message
            if token.is_set():
                raise TrainingCancelled("Cancelled while waiting in the queue.") from None
            time.sleep(0.25)
    finally:
        queue.leave(ticket, served=got is not None)
        for fd in fds:
            if got is None or fd != got[2]:
                os.close(fd)
    path, gpu, fd = got
    path.with_suffix(".holder").write_text(f"run {status.status.run_id}\n")
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        status.set(message=f"Running on GPU {gpu} (one run per GPU).")
    return fd


def _install_signal_handlers(token: CancelToken) -> dict:
    """SIGTERM, SIGUSR1 and Ctrl-C ask for a cancel; returns the handlers they replace.

    The handler only sets the token; the run then ends as ``cancelled`` at the next check
    (before/after every batch, in the caching and embedding loops), saving the best model
    so far. It does not raise: Python runs signal handlers in the main thread only between
    bytecodes, so while TensorFlow traces, compiles or runs a step in C++ the handler waits
    for that call to return anyway, and an exception raised at an arbitrary point could cut
    a checkpoint or model write in half. A worker that cannot reach a check in time is
    killed by :func:`core.training.jobs.cancel_run`, which records the cancel for it.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        token.set()

    return {
        sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
    }


def run_worker(
    folder: str | os.PathLike[str],
    *,
    resume: bool = False,
    echo: Callable[[dict], None] | None = None,
) -> RunStatus:
    """Trains the run in ``folder`` in this process and returns its final status.

    Never raises for a failed run: the failure is the returned (and written) status.

    Args:
        folder: A run folder made by :func:`core.runs.store.create_run` (holds config.json).
        resume: Continue from the last completed epoch of an earlier session.
        echo: Called with every metrics event (the CLI prints progress with it).

    Returns:
        The final status (completed, cancelled or failed).
    """
    started = time.monotonic()
    folder = Path(folder).resolve()
    try:
        # Before anything is written: one worker per run folder, for its whole life.
        owner_fd = acquire_owner(folder)
    except RunOwnedError as error:
        traceback.print_exception(error)
        return read_status(folder)
    try:
        return _run_owned(folder, started, resume=resume, echo=echo)
    finally:
        release_owner(owner_fd)


def _run_owned(
    folder: Path, started: float, *, resume: bool, echo: Callable[[dict], None] | None
) -> RunStatus:
    try:
        status = _raw_status(folder)
    except (FileNotFoundError, ValueError):
        status = RunStatus(run_id=folder.name, created=now_iso())
    status.pid = os.getpid()
    status.pid_start = process_start_ticks(status.pid)
    status.host = socket.gethostname()
    status.state = "queued"
    status.finished = ""
    if resume:
        status.resumes += 1
    # Handlers first: once the pid is in status.json, a cancel may signal this process.
    token = CancelToken(folder)
    previous_handlers = _install_signal_handlers(token)
    writer = StatusWriter(folder, status)
    writer.set(message="Training process started.")
    writer.start_heartbeat()
    metrics = MetricsWriter(folder, echo)
    context = RunContext(folder, writer, metrics, token)
    lock_fd = None
    state, message = "failed", ""
    config = None
    try:
        config = read_config(folder)
        writer.set(total_epochs=config.total_epochs)
        lock_fd = _wait_for_device(writer, token)
        token.raise_if_set()
        writer.set(state="running", phase="loading", started=now_iso(), message="Starting.")
        # Imported here: the trainer pulls in Keras/TensorFlow (seconds), and the worker
        # must already beat and hold its place in the queue while that happens.
        from core.training.trainer import train

        train(config, context, resume=resume)
        state, message = "completed", "Training finished."
    except TrainingCancelled:
        state = "cancelled"
        message = "Cancelled." + _kept_model_sentence(folder)
    except NonFiniteLoss as error:
        state, message = "failed", str(error) + _kept_model_sentence(folder)
    except BaseException as error:  # noqa: BLE001 - every failure becomes a status
        state = "failed"
        if is_worker_lost(error):
            message = (
                "Another worker of the cluster stopped answering (no reply within "
                f"{collective_timeout():g} s), so the run stopped. Check that every worker in "
                "TF_CONFIG is running and can reach the others, then resume."
            )
        elif is_out_of_memory(error):
            batch = context.summary.get("batch_size") or (config.batch_size if config else 0)
            message = out_of_memory_message(int(batch), writer.status.phase)
        elif isinstance(error, (ValueError, FileNotFoundError, KeyError)):
            message = str(error) or type(error).__name__
        else:
            message = f"Training stopped by an unexpected error: {type(error).__name__}: {error}"
        traceback.print_exc()
        if isinstance(error, KeyboardInterrupt | SystemExit):
            state = "cancelled"
            message = "Cancelled."
    finally:
        writer.stop_heartbeat()
        context.summary.setdefault("seconds", round(time.monotonic() - started, 3))
        _complete_summary(folder, context.summary, writer.status)
        context.summary.update({"state": state, "message": message, "notes": context.notes})
        summary_path = folder / SUMMARY_FILE

        atomic_write_json(summary_path, context.summary)
        metrics.emit({"type": "end", "state": state, "message": message, "time": time.time()})
        metrics.close()
        writer.set(state=state, message=message, finished=now_iso(), phase="")
        if lock_fd is not None:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
        for sig, previous in previous_handlers.items():
            signal.signal(sig, previous)
    return writer.status
