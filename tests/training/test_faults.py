"""Training faults caused for real: NaN loss, out of memory, cancel, kill -9 and resume."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from core.runs.metrics import MetricsReader, epoch_events
from core.runs.store import create_run, read_status, read_summary, run_dir
from core.training.callbacks import FIRST_STEP_MESSAGE
from core.training.jobs import cancel_run, prepare_resume, resume_run, start_run
from core.training.out_of_memory import is_out_of_memory, out_of_memory_message
from core.training.worker import run_worker
from tests.helpers.training import make_dataset, small_config, wait_for, worker_log

pytestmark = pytest.mark.slow


def _load(folder: Path):
    from core.models.model_io import load_model

    return load_model(folder / "model.keras")


def test_nan_loss_fails_naming_epoch_and_step_and_keeps_last_good_model(tmp_path):
    # VGG16 has no BatchNorm: SGD at learning rate 10 blows its weights up within a few
    # steps. Phase 1 (head only, sane rate) finishes and saves a model; phase 2 at 1 x 10
    # diverges.
    config = small_config(
        make_dataset(tmp_path, per_class=8),
        model={"backbone": "vgg16"},
        optimizer="sgd",
        learning_rate=1.0,
        epochs=1,
        fine_tune_epochs=2,
        fine_tune_lr_mult=10.0,
    )
    folder = create_run(config)
    status = run_worker(folder)
    assert status.state == "failed"
    pattern = r"loss became (NaN|infinite) at epoch [23], step \d+; lower the learning rate"
    assert re.search(pattern, status.message), status.message
    assert "best model so far (epoch 1) is kept" in status.message
    model, labels = _load(folder)
    assert labels == ["circle", "square", "triangle"]
    assert np.isfinite(model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0)).all()
    # Phase 1's backup and end-of-phase weights survive (TerminateOnNaN would delete them).
    assert (folder / "checkpoints" / "phase1" / "latest.weights.h5").is_file()
    assert (folder / "checkpoints" / "phase1.done.weights.h5").is_file()
    summary = read_summary(folder)
    assert summary["state"] == "failed" and summary["best_epoch"] == 1
    assert summary["epochs_completed"] == status.epoch >= 1


def test_out_of_memory_is_reported_with_the_batch_size(tmp_path):
    # A genuine allocation failure: a flattened 1024-px MobileNetV2 feature map (1.3 M values)
    # into 8192 dense units is a 43 GB kernel. Linux refuses that at once (more than RAM +
    # swap under the default heuristic overcommit), TensorFlow raises ResourceExhaustedError
    # without touching the memory, and the run fails with the sentence a person needs.
    overcommit = Path("/proc/sys/vm/overcommit_memory")
    if not overcommit.exists() or overcommit.read_text().strip() == "1":
        pytest.skip("needs a kernel that refuses impossible allocations (overcommit != 1)")
    config = small_config(
        make_dataset(tmp_path, per_class=6, size=32),
        model={
            "backbone": "mobilenet_v2",
            "image_size": 1024,
            "pooling": "flatten",
            "dense_units": (8192,),
        },
        batch_size=32,
    )
    folder = create_run(config)
    status = run_worker(folder)
    assert status.state == "failed", status.message
    assert "Out of memory at batch size 32" in status.message
    assert "try 16" in status.message


def test_out_of_memory_classification():
    try:
        np.empty((2**16, 2**16, 8), dtype="float32")  # 128 GiB: refused at once
    except MemoryError as error:
        assert is_out_of_memory(error)
    try:
        try:
            raise MemoryError("host")
        except MemoryError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as error:
        assert is_out_of_memory(error)
    assert is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying"))
    assert not is_out_of_memory(ValueError("learning_rate must be a number"))
    assert out_of_memory_message(64).startswith("Out of memory at batch size 64; try 32")


def _slow_config(tmp_path, **changes):
    # trainable="all" takes the normal fit path: epochs of ~1 s with 9 steps each.
    values = {"model": {"trainable": "all"}, "batch_size": 4, "epochs": 30}
    values.update(changes)
    return small_config(make_dataset(tmp_path, per_class=16), **values)


def test_cancel_mid_epoch_keeps_best_model(tmp_path):
    run_id = start_run(_slow_config(tmp_path))
    folder = run_dir(run_id)
    reader = MetricsReader(folder)
    events: list[dict] = []

    def mid_second_epoch():
        events.extend(reader.poll())
        assert not (folder / "summary.json").exists(), worker_log(folder)
        return any(e["type"] == "batch" and e["epoch"] >= 2 for e in events) and any(
            e["type"] == "epoch" for e in events
        )

    wait_for(mid_second_epoch, timeout=300)
    status = cancel_run(run_id)
    assert status.state == "cancelled", worker_log(folder)
    # The worker stopped by itself at a batch boundary (not killed by the fallback).
    assert status.message.startswith("Cancelled.") and "killed" not in status.message
    assert re.search(r"best model so far \(epoch \d+\) is kept", status.message)
    done = epoch_events(MetricsReader(folder).all())
    assert 1 <= len(done) < 30
    model, labels = _load(folder)
    assert model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 3)
    summary = read_summary(folder)
    assert summary["state"] == "cancelled" and summary["epochs_completed"] == len(done)


def test_kill_9_shows_interrupted_and_resume_continues_from_last_epoch(tmp_path):
    # The head-only fast path with batches of 2: many short epochs, each backed up by
    # BackupAndRestore; the embeddings computed before the kill are reused on resume.
    epochs = 30
    config = small_config(make_dataset(tmp_path, per_class=16), batch_size=2, epochs=epochs)
    run_id = start_run(config)
    folder = run_dir(run_id)
    reader = MetricsReader(folder)
    events: list[dict] = []

    backup_file = folder / "checkpoints/phase1/training_metadata.json"

    def backed_up_epoch() -> int:
        # The backup is written after the epoch's metrics event: read it, not the events.
        try:
            return int(json.loads(backup_file.read_text())["epoch"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return 0  # not written yet, or caught mid-write

    def two_epochs_done():
        events.extend(reader.poll())
        assert not (folder / "summary.json").exists(), worker_log(folder)
        return len(epoch_events(events)) >= 2 and backed_up_epoch() >= 2

    wait_for(two_epochs_done, timeout=300)
    pid = read_status(folder).pid
    os.kill(pid, signal.SIGKILL)
    status = wait_for(lambda: (s := read_status(folder)).state == "interrupted" and s)
    assert "Resume" in status.message
    # The dead worker is reaped at once by the process that started it (no zombie left
    # until the next start).
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=30)
    last_done = backed_up_epoch()
    assert 2 <= last_done < epochs

    assert resume_run(run_id) == run_id
    final = wait_for(lambda: not (s := read_status(folder)).active and s, timeout=300)
    assert final.state == "completed", worker_log(folder)
    assert final.resumes == 1
    everything = MetricsReader(folder).all()
    resumed_at = max(i for i, e in enumerate(everything) if e["type"] == "phase")
    assert everything[resumed_at]["resumed"] is True
    resumed_epochs = [e["epoch"] for e in everything[resumed_at:] if e["type"] == "epoch"]
    assert resumed_epochs == list(range(last_done + 1, epochs + 1))
    assert [e["epoch"] for e in epoch_events(everything)] == list(range(1, epochs + 1))
    summary = read_summary(folder)
    assert summary["epochs_completed"] == epochs
    assert summary["embedding_reused"] is True
    _load(folder)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False  # reaped: the process table no longer has it
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def test_cancel_while_the_first_step_compiles_ends_cancelled_and_leaves_no_zombie(tmp_path):
    # A whole EfficientNet-Lite0 at 224 px trains from its first step, whose tracing and
    # compilation take many seconds on a CPU; no cancel check can run meanwhile, so the
    # escalation kills the worker. The cancel comes once the worker said it is preparing
    # that step (after the last check before it), before any batch event.
    dataset_id = make_dataset(tmp_path, per_class=6, size=40)
    config = small_config(
        dataset_id,
        model={"backbone": "efficientnet_lite0", "image_size": 224, "trainable": "all"},
        batch_size=4,
        epochs=1,
    )
    run_id = start_run(config)
    folder = run_dir(run_id)

    def compiling():
        status = read_status(folder)
        assert status.active, worker_log(folder)
        return FIRST_STEP_MESSAGE in status.message

    wait_for(compiling, timeout=120, every=0.02)
    assert not [e for e in MetricsReader(folder).all() if e["type"] == "batch"]
    pid = read_status(folder).pid
    status = cancel_run(run_id, grace_seconds=0.5)
    assert status.state == "cancelled", worker_log(folder)
    # Killed while compiling, or (on a fast machine) stopped by itself after that step.
    assert status.message.startswith(
        ("Cancelled before the first batch finished; nothing was trained yet", "Cancelled.")
    ), status.message
    assert json.loads((folder / "status.json").read_text())["state"] == "cancelled"
    assert read_status(folder).state == "cancelled"
    # The killed worker is reaped, not left behind as a zombie of this process.
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=30)
    assert not _is_zombie(pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    # Such a run can still be resumed.
    assert prepare_resume(run_id).name == run_id
    assert read_status(folder).state == "queued"
    assert not (folder / "cancel.request").exists()


def test_dead_worker_with_a_cancel_request_reads_as_cancelled(tmp_path):
    import subprocess
    import sys

    from core.runs.store import request_cancel, write_status

    folder = create_run(small_config("no-such-dataset"))
    status = read_status(folder)
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    status.state, status.pid = "running", int(finished.stdout)
    write_status(folder, status)
    assert read_status(folder).state == "interrupted"
    request_cancel(folder)
    shown = read_status(folder)
    assert shown.state == "cancelled"
    assert shown.message.startswith("Cancelled before the first batch finished")
    assert prepare_resume(folder.name) == folder
