"""Scheduling: one training per device; a second start waits in the queue."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.runs.metrics import MetricsReader, epoch_events
from core.runs.store import create_run, read_status, run_dir
from core.training.jobs import WORKER_NICENESS, cancel_run, prepare_resume, start_run
from tests.helpers.training import make_dataset, small_config, wait_for, worker_log

pytestmark = pytest.mark.slow


def test_two_starts_at_once_run_one_after_the_other(tmp_path):
    dataset_id = make_dataset(tmp_path, per_class=8)
    first = run_dir(start_run(small_config(dataset_id, epochs=2)))
    second = run_dir(start_run(small_config(dataset_id, epochs=2, seed=4)))
    seen_queued_behind_running = False
    both_running = False

    def both_done():
        nonlocal seen_queued_behind_running, both_running
        states = {read_status(first).state, read_status(second).state}
        if states == {"running"}:
            both_running = True
        if states == {"running", "queued"}:
            waiting = [read_status(f) for f in (first, second)]
            queued = next(s for s in waiting if s.state == "queued")
            if queued.phase == "waiting" and "Queued" in queued.message:
                seen_queued_behind_running = True
        return not read_status(first).active and not read_status(second).active

    wait_for(both_done, timeout=300)
    assert not both_running
    assert seen_queued_behind_running
    for folder in (first, second):
        assert read_status(folder).state == "completed", worker_log(folder)
    # Their training did not overlap: one's first epoch started after the other's end.
    spans = []
    for folder in (first, second):
        events = MetricsReader(folder).all()
        spans.append((events[0]["time"], events[-1]["time"]))
    spans.sort()
    assert spans[0][1] <= spans[1][0]


def test_cancel_a_queued_run_and_refuse_to_resume_an_active_one(tmp_path):
    dataset_id = make_dataset(tmp_path, per_class=8)
    running = run_dir(start_run(small_config(dataset_id, epochs=40, batch_size=2)))
    wait_for(lambda: read_status(running).state == "running")
    # The worker yields the CPU to the app: its priority is lower than ours.
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    worker = os.getpriority(os.PRIO_PROCESS, read_status(running).pid)
    assert worker == min(19, ours + WORKER_NICENESS)
    # Its session's scheduling group too (it leads a session of its own): under autogroup
    # scheduling a nice value alone does not make it yield to processes of another session.
    autogroup = Path(f"/proc/{read_status(running).pid}/autogroup")
    if autogroup.exists():
        assert autogroup.read_text().split()[-1] == str(WORKER_NICENESS)
    queued = run_dir(start_run(small_config(dataset_id, epochs=1)))
    wait_for(lambda: read_status(queued).phase == "waiting" and read_status(queued).pid)
    with pytest.raises(ValueError, match="Only an interrupted, failed or cancelled run"):
        prepare_resume(queued.name)
    status = cancel_run(queued.name)
    assert status.state == "cancelled", worker_log(queued)
    assert "No epoch had finished" in status.message
    assert epoch_events(MetricsReader(queued).all()) == []
    assert cancel_run(running.name).state == "cancelled", worker_log(running)
    # Cancelling a finished run changes nothing.
    assert cancel_run(queued.name).state == "cancelled"
    assert read_status(create_run(small_config(dataset_id))).state == "queued"
