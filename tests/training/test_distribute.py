"""Training beyond one device: MirroredStrategy on logical CPUs, and two local workers.

Everything here runs for real: the CPU is split into logical devices (``--cpu-replicas``)
or two worker processes talk over 127.0.0.1 with ``TF_CONFIG``. Each training runs in its
own process, because TensorFlow's devices are fixed once a process has made them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

from core.training import distribute
from core.training.devices import describe_queue, gpu_queue_mode, visible_gpus
from tests.helpers.runs import subprocess_env
from tests.helpers.training import make_dataset

TRAIN_FLAGS = [
    "--backbone",
    "efficientnet_lite0",
    "--image-size",
    "64",
    "--batch-size",
    "8",
    "--seed",
    "3",
    # The settings these tests were written for (the auto defaults stop the head early).
    "--learning-rate",
    "1e-3",
    "--early-stopping",
    "0",
]


def _train(args: list[str], env: dict[str, str], timeout: float = 600):
    return subprocess.run(
        [sys.executable, "-m", "core", "train", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def test_pinned_to_the_keras_it_patches():
    assert keras.__version__ == distribute.KERAS_VERSION


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", None),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', None),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}',
            distribute.Cluster(("a:1", "b:2"), 1),
        ),
    ],
)
def test_read_cluster(raw, expected):
    assert distribute.read_cluster({"TF_CONFIG": raw}) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '{"cluster": {}}',
        '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "chief", "index": 0}}',
        '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
        '{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
    ],
)
def test_malformed_tf_config_is_refused_with_its_shape(raw):
    with pytest.raises(distribute.ClusterConfigError, match="TF_CONFIG"):
        distribute.read_cluster({"TF_CONFIG": raw})


def test_malformed_tf_config_exits_2_with_one_line(tmp_path, workspace):
    env = subprocess_env(workspace)
    env["TF_CONFIG"] = '{"cluster": "nope"}'
    result = _train(["--data", "x"], env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "TF_CONFIG" in result.stderr


def test_cpu_replicas_env_is_validated():
    assert distribute.cpu_replicas_from_env({}) == 1
    assert distribute.cpu_replicas_from_env({distribute.CPU_REPLICAS_ENV: "3"}) == 3
    with pytest.raises(ValueError, match="TRANSFER_STUDIO_CPU_REPLICAS"):
        distribute.cpu_replicas_from_env({distribute.CPU_REPLICAS_ENV: "zero"})


def test_per_worker_batch_and_description():
    dist = distribute.Distribution("MirroredStrategy", replicas=2, devices=["CPU:0", "CPU:1"])
    assert dist.per_worker_batch(32) == 32
    assert "16 per device" in dist.describe(32) and "not rescaled" in dist.describe(32)
    cluster = distribute.Distribution("MultiWorkerMirroredStrategy", replicas=2, workers=2)
    assert cluster.per_worker_batch(32) == 16


def test_two_logical_cpus_train_like_one_device(tmp_path, workspace):
    dataset = make_dataset(tmp_path, per_class=16, size=64)
    env = subprocess_env(workspace)
    flags = ["--data", dataset, *TRAIN_FLAGS, "--epochs", "15"]
    one = _train(flags, env)
    two = _train([*flags, "--cpu-replicas", "2"], env)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    single, mirrored = _last_json(one.stdout), _last_json(two.stdout)
    assert (single["strategy"], single["replicas"]) == ("default", 1)
    assert (mirrored["strategy"], mirrored["replicas"], mirrored["workers"]) == (
        "MirroredStrategy",
        2,
        1,
    )
    summary = json.loads((Path(mirrored["run_dir"]) / "summary.json").read_text())
    assert summary["strategy"] == "MirroredStrategy" and summary["replicas"] == 2
    assert any("4 per device" in note for note in summary["notes"])
    # Same data, same seed: the accuracy matches one device within noise (offline
    # EfficientNet-Lite0 features separate these shapes well).
    assert single["best_val_accuracy"] >= 0.75
    assert abs(mirrored["best_val_accuracy"] - single["best_val_accuracy"]) <= 0.15


def _cluster_config(tmp_path: Path, env: dict[str, str], epochs: int) -> Path:
    """A run config (from a one-epoch run on a fresh dataset) that every worker reads."""
    dataset = make_dataset(tmp_path, per_class=16, size=64)
    prepared = _train(["--data", dataset, *TRAIN_FLAGS, "--epochs", "1"], env)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    recipe = json.loads((Path(_last_json(prepared.stdout)["run_dir"]) / "config.json").read_text())
    recipe["epochs"] = epochs
    config = tmp_path / "run.json"
    config.write_text(json.dumps(recipe))
    return config


def _start_workers(config: Path, runs: Path, env: dict[str, str]) -> list[subprocess.Popen]:
    ports = _free_ports(2)
    command = [sys.executable, "-m", "core", "train", "--config", str(config)]
    return [
        subprocess.Popen(
            [*command, "--runs-dir", str(runs), "--json"],
            env=dict(env, TF_CONFIG=_tf_config(ports, index)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]


def test_two_local_workers_train_one_run_and_only_the_chief_writes_it(tmp_path, workspace):
    runs = tmp_path / "cluster-runs"
    env = subprocess_env(workspace)
    processes = _start_workers(_cluster_config(tmp_path, env, epochs=4), runs, env)
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    chief, worker = (_last_json(out) for out, _ in outputs)
    assert chief["state"] == "completed"
    assert (chief["strategy"], chief["workers"], chief["replicas"]) == (
        "MultiWorkerMirroredStrategy",
        2,
        2,
    )
    assert worker["role"] == "worker" and worker["index"] == 1
    assert worker["state"] == "completed"
    # Synchronous training: both workers end with the very same weights.
    assert chief["weights_sha256"] and chief["weights_sha256"] == worker["weights_sha256"]
    # The chief's run folder is complete; the other worker wrote nothing under runs/.
    folders = list(runs.iterdir())
    assert folders == [Path(chief["run_dir"])]
    for name in ("config.json", "status.json", "metrics.jsonl", "summary.json", "model.keras"):
        assert (folders[0] / name).is_file(), name
    summary = json.loads((folders[0] / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["epochs_completed"] == 4


def test_a_dead_worker_fails_the_run_with_a_clear_message(tmp_path, workspace):
    runs = tmp_path / "cluster-runs"
    env = dict(subprocess_env(workspace), TRANSFER_STUDIO_COLLECTIVE_TIMEOUT="15")
    chief, other = _start_workers(_cluster_config(tmp_path, env, epochs=500), runs, env)
    try:
        deadline = time.monotonic() + 300
        metrics = None
        while time.monotonic() < deadline and chief.poll() is None:
            found = list(runs.glob("*/metrics.jsonl"))
            if found and found[0].read_text().count('"type": "epoch"') >= 2:
                metrics = found[0]
                break
            time.sleep(0.5)
        assert metrics is not None, "the cluster never finished two epochs"
        other.kill()  # the worker dies mid-run (kill -9)
        out, err = chief.communicate(timeout=240)  # bounded: it must not wait forever
    finally:
        for process in (chief, other):
            if process.poll() is None:
                process.kill()
    assert chief.returncode == 1, err[-2000:]
    result = _last_json(out)
    assert result["state"] == "failed"
    assert "stopped answering" in result["message"] and "TF_CONFIG" in result["message"]


def test_gpu_queue_settings(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert visible_gpus() == ["0", "1"]
    monkeypatch.delenv("TRANSFER_STUDIO_GPU_QUEUE", raising=False)
    assert gpu_queue_mode() == "all"
    assert "MirroredStrategy" in describe_queue(2)
    monkeypatch.setenv("TRANSFER_STUDIO_GPU_QUEUE", "per-gpu")
    assert "one run per GPU" in describe_queue(2)
    monkeypatch.setenv("TRANSFER_STUDIO_GPU_QUEUE", "sometimes")
    with pytest.raises(ValueError, match="per-gpu"):
        gpu_queue_mode()


def test_one_run_per_gpu_lets_two_runs_train_at_once(tmp_path, workspace, monkeypatch):
    from core.runs.store import create_run, read_status
    from core.training.jobs import spawn_worker
    from tests.helpers.training import small_config, wait_until_final

    dataset = make_dataset(tmp_path)
    # Two GPUs as far as the queue can tell (CPU-only here, so each run trains on the CPU).
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("TRANSFER_STUDIO_GPU_QUEUE", "per-gpu")
    folders = [create_run(small_config(dataset, epochs=3, name=f"gpu{i}")) for i in range(2)]
    for folder in folders:
        spawn_worker(folder)
    # Without per-GPU locks the second run would sit in "queued" until the first ended.
    seen_both_running = False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = [read_status(folder).state for folder in folders]
        if states == ["running", "running"]:
            seen_both_running = True
            break
        if all(state in ("completed", "failed", "cancelled") for state in states):
            break
        time.sleep(0.1)
    finals = [wait_until_final(folder) for folder in folders]
    assert [status.state for status in finals] == ["completed", "completed"]
    assert seen_both_running
    messages = " ".join((folder / "metrics.jsonl").read_text() for folder in folders)
    locks = sorted(p.name for p in (workspace / "locks").glob("*-gpu*.lock"))
    assert locks == ["device0-gpu0.lock", "device0-gpu1.lock"], (locks, messages[:200])


def _jax_path() -> str | None:
    """Where a JAX install can be found for a child process (None when there is none)."""
    import importlib.util

    spec = importlib.util.find_spec("jax")
    return str(Path(spec.origin).parent.parent) if spec and spec.origin else None


@pytest.mark.skipif(_jax_path() is None, reason="JAX is not installed in this environment")
def test_jax_backend_trains_data_parallel_over_two_cpu_devices(tmp_path, workspace):
    # JAX's DataParallel refuses batches that do not split evenly; 9 validation images and
    # an odd last batch are padded with zero-weight rows, so the metrics stay exact.
    dataset = make_dataset(tmp_path, per_class=12, size=64)
    env = dict(subprocess_env(workspace), KERAS_BACKEND="jax")
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], _jax_path()])
    result = _train(["--data", dataset, *TRAIN_FLAGS, "--epochs", "10", "--cpu-replicas", "2"], env)
    assert result.returncode == 0, result.stderr[-2000:]
    final = _last_json(result.stdout)
    assert (final["strategy"], final["replicas"]) == ("DataParallel", 2)
    assert final["best_val_accuracy"] >= 0.75
