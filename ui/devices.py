"""The device panel: what training runs on (CPU or GPU, name, memory)."""

from __future__ import annotations

from typing import Any

import streamlit as st


def device_info() -> dict[str, Any]:
    """What training runs on: what the last training worker saw, if recent, else asked here.

    The worker's description (:func:`core.training.devices.remembered_devices`) needs no
    TensorFlow in the app; asking here imports it (seconds on a CPU), once an hour.
    """
    from core.training.devices import remembered_devices

    return remembered_devices() or _described_here()


@st.cache_data(show_spinner="Looking at this machine…", ttl=3600)
def _described_here() -> dict[str, Any]:
    from core.training.devices import describe_devices

    return describe_devices()


def _gib(value: int) -> str:
    return f"{value / 2**30:.1f} GiB" if value else "–"


def device_panel() -> None:
    """Draws device kind, name, memory and cores as metrics with a one-line explanation."""
    info = device_info()
    gpu = info.get("kind") == "gpu"
    cols = st.columns([2, 3, 1, 1])
    cols[0].metric("Device", "GPU" if gpu else "CPU")
    cols[1].markdown(f"**{info.get('name', 'unknown')}**  \nKeras backend: {info.get('backend')}")
    cols[2].metric("GPU memory" if gpu else "Memory", _gib(int(info.get("memory_bytes") or 0)))
    cols[3].metric("CPU cores", info.get("cpu_cores", "–"))
    count = int(info.get("count") or 1)
    if gpu and count > 1:
        from core.training.devices import describe_queue

        st.caption(
            describe_queue(count)
            + f" The batch size you set is the total per step, split over the GPUs (32 is "
            f"{max(1, 32 // count)} per GPU); the learning rate is not changed."
        )
    if not gpu:
        st.caption(
            "No GPU: training the new last layer only (the default) is fast on a CPU; "
            "training the whole network works but takes several times longer."
        )
