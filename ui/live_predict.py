"""Live prediction: the camera view whose top classes are computed in the browser.

Two components are declared: ``live`` (the static page in ``ui/components/live_predict``) and,
per run, ``model_<run>`` whose folder is the run's web export (only its files are served: the
ONNX model, ``model.json``, ``classifier.js`` and onnxruntime-web). The live page loads the
classifier from the second one, so a classroom of browsers costs the server no work per frame.
"""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components

from core.runs.live import current_web_export, ensure_web_export

FRONTEND = Path(__file__).parent / "components" / "live_predict"
FRAME_INTERVAL_MS = 100  # at most ~10 frames a second: live, yet light on a laptop


def _component_name(run_dir: Path) -> str:
    return "model_" + re.sub(r"[^A-Za-z0-9_]", "_", run_dir.name)


def live_prediction(run_dir: Path, *, top: int, key: str) -> None:
    """Renders the live camera prediction of a run (its web export is made on first use).

    Args:
        run_dir: The finished run's folder.
        top: How many classes the bars show.
        key: Widget key of the component.
    """
    folder = current_web_export(run_dir)
    if folder is None:
        with st.status("Preparing the model for your browser (once per model)...") as box:
            from core.runs.predict import load_run_model

            def say(message: str) -> None:
                box.update(label=message)

            folder = ensure_web_export(run_dir, run_model=load_run_model(run_dir), progress=say)
            box.update(label="The model is ready for your browser.", state="complete")
    name = _component_name(run_dir)
    components.declare_component(name, path=str(folder))
    live = components.declare_component("live", path=str(FRONTEND))
    # Both are served under <component base>/<module>.<name>/; the live page sits beside it.
    live(
        model_base=f"../{__name__}.{name}/",
        top=top,
        interval_ms=FRAME_INTERVAL_MS,
        key=key,
        default=None,
    )
