"""The Evaluate page's Grad-CAM panel: one picture and where the model looked in it.

The heatmap needs the run's model in memory. When it is not loaded yet (the first visit of
the page, a moment after the server started), the panel shows the picture at once with a
note, has :mod:`ui.model_cache` load the model in a background thread, and a small fragment
checks every :data:`POLL_SECONDS` until the model is ready, then draws the page again with
the heatmap. The rest of the page is usable meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from ui import model_cache
from ui.text import md

POLL_SECONDS = 0.5
PREPARING = "Loading the model to explain this picture… the heatmap appears here in a moment."


def _when_ready(key: model_cache.Key) -> None:
    """Fragment body: once the model is in memory, the whole page is drawn with the heatmap."""
    if model_cache.is_loaded(key):
        st.rerun(scope="app")
    st.caption(f":material/hourglass_top: {PREPARING}")


def gradcam_panel(
    run_dir: Path, record: dict[str, Any], wanted: str, caption: Callable[[dict], str]
) -> None:
    """The picture of ``record`` beside its Grad-CAM for class ``wanted``.

    Args:
        run_dir: The run whose model explains.
        record: A prediction record (``path``, ``true``, ``predicted``...).
        wanted: The class to explain.
        caption: Makes the picture's caption from ``record``.
    """
    from core.data.imageio import load_image

    key = model_cache.model_key(run_dir)
    picture = load_image(Path(record["path"]))
    left, right = st.columns(2)
    left.image(picture, caption=caption(record), width="stretch")
    if not model_cache.is_loaded(key):
        model_cache.warm_in_background(run_dir)
        with right:
            st.fragment(run_every=POLL_SECONDS)(_when_ready)(key)
        return
    run_model = model_cache.run_model(key)
    if wanted not in run_model.labels:
        right.caption(f"The model has no class {md(repr(wanted))} (a label added after training).")
        return
    from core.runs.gradcam import overlay

    heatmap, _ = model_cache.explainer(key).explain(picture, run_model.labels.index(wanted))
    right.image(
        overlay(picture, heatmap),
        caption=f"Where the model looks for '{wanted}' (red = strong)",
        width="stretch",
    )
