"""What the training will run on: CPU or GPU, its name and memory, for any Keras backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


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
