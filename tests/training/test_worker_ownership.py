"""One owner per run folder: a frozen worker is shown as not responding at once and cannot be
joined by a second writer; a pid now used by another process is never trusted or signalled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.config import TrainConfig
from core.runs.ownership import OWNER_LOCK, owner_state, process_start_ticks, verified_worker_pid
from core.runs.store import STATUS_FILE, create_run, read_status, write_status
from core.training.jobs import cancel_run, prepare_resume
from core.training.worker import run_worker

REPO = Path(__file__).resolve().parents[2]

# Holds the run's owner lock as a worker does, says so, then sleeps until killed.
OWNER_SCRIPT = """
import sys, time
from core.runs.ownership import acquire_owner
fd = acquire_owner(sys.argv[1])
print("owned", flush=True)
time.sleep(600)
"""


def _ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def _running(folder: Path, pid: int, *, beat_age: float, pid_start: int | None = None) -> None:
    status = read_status(folder)
    status.state, status.phase, status.pid = "running", "train", pid
    status.pid_start = process_start_ticks(pid) if pid_start is None else pid_start
    status.heartbeat = _ago(beat_age)
    write_status(folder, status)


@pytest.fixture
def owner(workspace):
    """A live process that owns a fresh run folder; yields (folder, process)."""
    folder = create_run(TrainConfig(dataset="ds1"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "owned"
    yield folder, process
    process.kill()
    process.wait()


def test_a_frozen_worker_is_not_responding_at_once_and_cannot_be_joined(owner):
    folder, process = owner
    _running(folder, process.pid, beat_age=20)  # beyond FROZEN_SECONDS, far below 10 x stale
    os.kill(process.pid, signal.SIGSTOP)
    status = read_status(folder)
    assert status.state == "running"
    assert status.extra["stale_seconds"] >= 20
    assert "Not responding" in status.message and "Cancel the run" in status.message

    with pytest.raises(ValueError, match="still holds it"):
        prepare_resume(folder.name)
    before = (folder / STATUS_FILE).read_bytes()
    refused = run_worker(folder, resume=True)  # a second worker: refused before writing
    assert refused.state == "running"
    assert (folder / STATUS_FILE).read_bytes() == before

    process.kill()
    process.wait()
    assert owner_state(folder) == "free"
    assert read_status(folder).state == "interrupted"  # at once, not after minutes


def test_cancel_ends_a_frozen_worker(owner):
    folder, process = owner
    _running(folder, process.pid, beat_age=20)
    os.kill(process.pid, signal.SIGSTOP)
    status = cancel_run(folder.name, grace_seconds=0.5)
    assert process.wait(timeout=20) is not None
    assert status.state == "cancelled"


@pytest.mark.parametrize("with_lock_file", [True, False])
def test_a_reused_pid_is_neither_trusted_nor_signalled(workspace, with_lock_file):
    folder = create_run(TrainConfig(dataset="ds1"))
    if with_lock_file:
        (folder / OWNER_LOCK).touch()  # the dead worker's lock, held by nobody
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        # The worker that wrote this status started at another time than the pid's process.
        _running(folder, stranger.pid, beat_age=1, pid_start=process_start_ticks(stranger.pid) - 7)
        assert verified_worker_pid(folder, read_status(folder)) is None
        assert read_status(folder).state == "interrupted"
        cancel_run(folder.name, grace_seconds=0.2)
        time.sleep(0.2)
        assert stranger.poll() is None, "an unrelated process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_the_worker_records_its_start_time_and_lets_go_of_the_folder(workspace):
    folder = create_run(TrainConfig(dataset="no-such-dataset", epochs=1))
    status = run_worker(folder)
    assert status.state == "failed"
    raw = json.loads((folder / STATUS_FILE).read_text())
    assert raw["pid"] == os.getpid()
    assert raw["pid_start"] == process_start_ticks(os.getpid()) > 0
    assert owner_state(folder) == "free"
