"""Run folders and the reader API the UI polls: status, incremental metrics, listing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from core.config import TrainConfig
from core.runs.listing import list_runs
from core.runs.metrics import MetricsReader, epoch_events
from core.runs.ownership import pid_alive
from core.runs.store import (
    RunStatus,
    create_run,
    find_run,
    read_config,
    read_labels,
    read_status,
    read_summary,
    run_dir,
    write_status,
)


def _config(**changes) -> TrainConfig:
    return TrainConfig(dataset="ds1", **changes)


def test_create_run_writes_config_and_queued_status(workspace):
    folder = create_run(_config(epochs=3, fine_tune_epochs=2))
    assert folder.parent == workspace / "runs"
    assert read_config(folder) == _config(epochs=3, fine_tune_epochs=2)
    status = read_status(folder)
    assert status.state == "queued"
    assert status.total_epochs == 5
    assert status.run_id == folder.name
    assert read_summary(folder) is None
    assert read_labels(folder) == []


def test_status_round_trip_keeps_unknown_fields():
    status = RunStatus(run_id="r", state="running", pid=12, epoch=2, total_epochs=4)
    data = status.to_dict() | {"future_field": 1}
    again = RunStatus.from_dict(data)
    assert again.extra == {"future_field": 1}
    assert again.epoch == 2 and again.state == "running"
    assert (
        0.0
        < RunStatus(state="running", epoch=1, total_epochs=4, step=5, steps_per_epoch=10).progress
        < 0.5
    )


def test_dead_worker_reads_as_interrupted(workspace):
    folder = create_run(_config())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    status = read_status(folder)
    status.state, status.pid = "running", child.pid
    write_status(folder, status)
    seen = read_status(folder)
    assert seen.state == "interrupted"
    assert "Resume" in seen.message
    # The file itself is untouched: the worker is its only writer.
    assert json.loads((folder / "status.json").read_text())["state"] == "running"


def test_live_worker_and_unreaped_zombie(workspace):
    folder = create_run(_config())
    status = read_status(folder)
    status.state, status.pid = "running", subprocess.os.getpid()
    write_status(folder, status)
    assert read_status(folder).state == "running"
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while pid_alive(zombie.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # exits but is not reaped: /proc says Z
    assert not pid_alive(zombie.pid)
    zombie.wait()


def test_stale_heartbeat_without_pid_is_interrupted(workspace):
    folder = create_run(_config())
    status = read_status(folder)
    status.heartbeat = "2020-01-01T00:00:00.000+00:00"
    write_status(folder, status)
    assert read_status(folder).state == "interrupted"
    assert read_status(create_run(_config())).state == "queued"


def test_metrics_reader_is_incremental_and_waits_for_partial_lines(workspace):
    folder = create_run(_config())
    path = folder / "metrics.jsonl"
    reader = MetricsReader(folder)
    assert reader.poll() == []
    with open(path, "ab") as handle:
        handle.write(b'{"type": "batch", "step": 1}\n{"type": "epoch", "epo')
    assert reader.poll() == [{"type": "batch", "step": 1}]
    assert reader.poll() == []
    with open(path, "ab") as handle:
        handle.write(b'ch": 1, "loss": 0.5}\n')
    assert reader.poll() == [{"type": "epoch", "epoch": 1, "loss": 0.5}]
    with open(path, "ab") as handle:
        handle.write(b'{"type": "epoch", "epoch": 1, "loss": 0.4}\n{"type": "epoch", "epoch": 2}\n')
    assert [e.get("loss") for e in reader.poll()] == [0.4, None]
    everything = reader.all()
    assert len(everything) == 4
    assert [e["epoch"] for e in epoch_events(everything)] == [1, 2]
    assert epoch_events(everything)[0]["loss"] == 0.4
    # A replaced (shorter) file starts the cursor over.
    path.write_text('{"type": "note"}\n')
    assert reader.poll() == [{"type": "note"}]


def test_metrics_reader_skips_a_line_cut_by_a_crash(workspace):
    folder = create_run(_config())
    (folder / "metrics.jsonl").write_bytes(b'{"type": "ba\n{"type": "epoch", "epoch": 1}\n')
    reader = MetricsReader(folder)
    assert reader.poll() == [{"type": "epoch", "epoch": 1}]
    assert reader.skipped == 1


def test_list_runs_from_folders_alone(workspace):
    first = create_run(_config(name="a"))
    second = create_run(_config(name="b"))
    (workspace / "runs" / "not-a-run").mkdir()
    runs = list_runs()
    assert {r.run_id for r in runs} == {first.name, second.name}
    assert runs[0].status.created >= runs[1].status.created
    info = next(r for r in runs if r.run_id == second.name)
    assert info.config["name"] == "b"
    assert info.has_model is False
    assert json.loads(json.dumps(info.to_dict()))["run_id"] == second.name


def test_run_ids_cannot_escape_the_runs_folder(workspace):
    for bad in ("../x", "/etc", "a/b", "", ".."):
        with pytest.raises(ValueError, match="run_id"):
            run_dir(bad)
    with pytest.raises(FileNotFoundError, match="No run"):
        find_run("missing-run")
    folder = create_run(_config())
    assert find_run(folder.name) == folder
    assert find_run(str(folder)) == folder
