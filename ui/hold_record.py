"""Hold-to-record webcam capture: about ten pictures a second into a class while held.

The frontend (``ui/components/hold_record``) sends the frames the app has not stored yet; they
are checked like uploads and kept as draft pictures (:mod:`core.data.capture`), and the
component is told what was stored so it stops re-sending it. The last bursts can be undone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components

from core.data import capture, drafts
from ui.text import md

FRONTEND = Path(__file__).parent / "components" / "hold_record"
FRAME_INTERVAL_MS = 100
SEND_INTERVAL_MS = 500


def hold_to_record(label: str, *, key: str, stored: Mapping[str, int] | None = None) -> None:
    """Renders the recorder for class ``label`` and keeps what it sends; offers an undo.

    Args:
        label: The class the next pictures go into ("" when none is named yet).
        key: Widget key of the component (its state keys derive from it).
        stored: Pictures per class already in a dataset, added to the draft counts the
            recorder shows (Quick mode's classes keep counting after Train).
    """
    acked: dict[str, int] = st.session_state.setdefault(f"{key}_acked", {})
    bursts: list[tuple[str, list[Path]]] = st.session_state.setdefault(f"{key}_bursts", [])
    counts = dict(stored or {})
    for name, paths in drafts.list_shots().items():
        counts[name] = counts.get(name, 0) + len(paths)
    recorder = components.declare_component("hold_record", path=str(FRONTEND))
    value = recorder(
        label=label,
        counts=counts,
        acked=acked,
        interval_ms=FRAME_INTERVAL_MS,
        max_side=capture.MAX_FRAME_SIDE,
        send_ms=SEND_INTERVAL_MS,
        key=key,
        default=None,
    )
    frames, problems = capture.new_frames(value, acked)
    if frames:
        kept = capture.keep_frames(frames)
        acked[frames[-1].recorder] = frames[-1].seq
        known: dict[str, int] = st.session_state.setdefault(f"{key}_burst_keys", {})
        for burst_key, (burst_label, paths) in kept.bursts.items():
            if burst_key in known:
                bursts[known[burst_key]][1].extend(paths)
            else:
                known[burst_key] = len(bursts)
                bursts.append((burst_label, paths))
        st.session_state[f"{key}_refused"] = problems + kept.refused
        st.rerun()  # the component learns what was stored; counts and thumbnails update
    for message in st.session_state.get(f"{key}_refused", []) + problems:
        st.warning(md(message))
    live = [(name, paths) for name, paths in bursts if any(p.exists() for p in paths)]
    if live:
        name, paths = live[-1]
        count = sum(p.exists() for p in paths)
        if st.button(
            f"Undo the last burst ({count} picture(s) of “{md(name)}”)",
            icon=":material/undo:",
            key=f"{key}_undo",
        ):
            capture.undo_burst(paths)
            st.toast(f"Removed {count} picture(s) of “{md(name)}”.")
            st.rerun()
