"""What the training will run on: CPU or GPU, its name and memory, for any Keras backend."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

GPU_QUEUE_ENV = "TRANSFER_STUDIO_GPU_QUEUE"
GPU_QUEUE_MODES = ("all", "per-gpu")


def gpu_queue_mode() -> str:
    """How runs share several GPUs: ``"all"`` (one run at a time on every GPU, the default)
    or ``"per-gpu"`` (one run per GPU at once), from ``TRANSFER_STUDIO_GPU_QUEUE``."""
    mode = os.environ.get(GPU_QUEUE_ENV, "").strip() or "all"
    if mode not in GPU_QUEUE_MODES:
        raise ValueError(f"{GPU_QUEUE_ENV} must be one of {GPU_QUEUE_MODES}. Received: {mode!r}")
    return mode


def visible_gpus() -> list[str]:
    """The NVIDIA GPUs this process may use, without starting any framework.

    ``CUDA_VISIBLE_DEVICES`` when it is set (its entries), else one entry per GPU the driver
    lists under ``/proc/driver/nvidia/gpus``.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [entry.strip() for entry in visible.split(",") if entry.strip() not in ("", "-1")]
    driver = Path("/proc/driver/nvidia/gpus")
    try:
        return [str(i) for i in range(len(list(driver.iterdir())))]
    except OSError:
        return []


def describe_queue(gpu_count: int) -> str:
    """One sentence on how runs use the GPUs (for the device panel)."""
    if gpu_count < 2:
        return "One training at a time on this device; others wait in the queue."
    if gpu_queue_mode() == "per-gpu":
        return (
            f"{gpu_count} GPUs, one run per GPU: up to {gpu_count} trainings at once "
            f"({GPU_QUEUE_ENV}=per-gpu)."
        )
    return (
        f"{gpu_count} GPUs: each training uses all of them (MirroredStrategy); others wait. "
        f"Set {GPU_QUEUE_ENV}=per-gpu to run one training per GPU instead."
    )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "CPU"


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _tensorflow_gpus() -> list[dict[str, Any]]:
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append({"name": details.get("device_name", device.name), "memory_bytes": 0})
    return gpus


def _jax_gpus() -> list[dict[str, Any]]:
    import jax

    gpus = []
    for device in jax.devices():
        if device.platform in ("gpu", "cuda", "rocm", "tpu"):
            stats = device.memory_stats() or {}
            gpus.append(
                {"name": device.device_kind, "memory_bytes": int(stats.get("bytes_limit", 0))}
            )
    return gpus


def _torch_gpus() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [
        {
            "name": torch.cuda.get_device_name(i),
            "memory_bytes": int(torch.cuda.get_device_properties(i).total_memory),
        }
        for i in range(torch.cuda.device_count())
    ]


def describe_devices() -> dict[str, Any]:
    """Describes the accelerator the active Keras backend will use.

    Returns:
        ``{"kind": "cpu" | "gpu", "name", "memory_bytes", "count", "backend", "cpu_cores",
        "host_memory_bytes", "label"}``; ``memory_bytes`` is the GPU's memory (0 when the
        backend does not say) or the host's on CPU; ``label`` is a short line for people.
    """
    import keras

    backend = keras.backend.backend()
    listers = {"tensorflow": _tensorflow_gpus, "jax": _jax_gpus, "torch": _torch_gpus}
    gpus = listers[backend]() if backend in listers else []
    cores = os.cpu_count() or 1
    host = _host_memory()
    if gpus:
        first = gpus[0]
        count = f"{len(gpus)} x " if len(gpus) > 1 else ""
        return {
            "kind": "gpu",
            "name": first["name"],
            "memory_bytes": first["memory_bytes"],
            "count": len(gpus),
            "backend": backend,
            "cpu_cores": cores,
            "host_memory_bytes": host,
            "label": f"gpu: {count}{first['name']} ({backend})",
        }
    name = _cpu_name()
    return {
        "kind": "cpu",
        "name": name,
        "memory_bytes": host,
        "count": 1,
        "backend": backend,
        "cpu_cores": cores,
        "host_memory_bytes": host,
        "label": f"cpu: {name} ({cores} cores, {backend})",
    }


DEVICES_FILE = "devices.json"
REMEMBERED_SECONDS = 3600.0


def remember_devices(info: dict[str, Any]) -> None:
    """Keeps :func:`describe_devices`' answer in the workspace cache for the app to read.

    The training worker imports TensorFlow anyway; the app then describes the machine without
    importing it (seconds on a CPU, on the first visit of the Model page). Called only where
    every GPU is visible (a worker pinned to one GPU would describe less than the machine).
    """
    from core.atomic import atomic_write_json
    from core.workspace import cache_dir

    atomic_write_json(cache_dir() / DEVICES_FILE, {"time": time.time(), "devices": info})


def remembered_devices(max_age: float = REMEMBERED_SECONDS) -> dict[str, Any] | None:
    """What :func:`remember_devices` kept, if younger than ``max_age`` seconds and intact."""
    from core.jsonfile import read_json_cache
    from core.workspace import cache_dir

    data = read_json_cache(cache_dir() / DEVICES_FILE)
    if not data or not isinstance(data.get("devices"), dict):
        return None
    stamp = data.get("time")
    if not isinstance(stamp, int | float) or not 0 <= time.time() - stamp <= max_age:
        return None
    info = data["devices"]
    if not isinstance(info.get("label"), str) or info.get("kind") not in ("cpu", "gpu"):
        return None
    return info
