"""Shared pieces of the Evaluate, Predict and Export pages: choosing a finished run and
opening its model once.

Models are kept by :mod:`ui.model_cache`, keyed by the run folder and the model file's
modification time: a read-only model is safe to share between sessions, and a retrained
model (new file) is picked up by itself. The chosen run itself is per-user state
(``run_id`` in session state and ``?run=`` in the URL, see :mod:`ui.state`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from ui import model_cache
from ui.nav import link
from ui.state import RUN_QUERY_PARAM, init_state, set_run


def finished_runs() -> list[Any]:
    """Runs with a saved model (usable for evaluation, prediction and export), newest first."""
    from core.runs.listing import list_runs

    return [info for info in list_runs() if info.has_model]


def open_run(run_dir: Path) -> Any:
    """The run's :class:`core.runs.predict.RunModel`, loaded once per model file."""
    key = model_cache.model_key(run_dir)
    if model_cache.is_loaded(key):
        return model_cache.run_model(key)
    with st.spinner("Loading the model..."):
        return model_cache.run_model(key)


def explainer(run_dir: Path) -> Any:
    """A :class:`core.runs.gradcam.GradCam` for the run's model, built once per model file."""
    return model_cache.explainer(model_cache.model_key(run_dir))


def _train_link() -> None:
    try:
        link("pages/train.py", "Go to Train", ":material/model_training:")
    except StreamlitPageNotFoundError:
        # The page runs on its own (not through the app's router): no page to link to.
        st.caption("Open **Train** in the navigation.")


def _run_label(info: Any) -> str:
    config = info.config or {}
    name = config.get("name") or ""
    backbone = (config.get("model") or {}).get("backbone", "?")
    return f"{name + ' · ' if name else ''}{backbone} · {info.run_id}"


def choose_run(page: str, *, what: str) -> Path | None:
    """Renders the run picker and returns the chosen run folder (None when there is none).

    Without any finished run it tells the user to train first (with a link to Train).

    Args:
        page: Widget-key prefix of the calling page (``evaluate``, ``predict``, ``export``).
        what: What the page does, for the "train first" message.
    """
    init_state()
    runs = finished_runs()
    if not runs:
        st.info(
            f"No trained model yet. Train a model first, then come back here to {what}.",
            icon=":material/model_training:",
        )
        _train_link()
        return None
    ids = [info.run_id for info in runs]
    current = st.session_state.get("run_id")
    if current and current not in ids:
        st.caption(
            f"Your current run `{current}` has no saved model yet (still training, failed or "
            "removed); showing the newest finished run."
        )
    index = ids.index(current) if current in ids else 0
    key = f"{page}_run_{ids[index]}"

    def adopt() -> None:
        # Only an explicit choice changes the active run (never a page visit while training).
        set_run(ids[st.session_state[key]])

    picked = st.selectbox(
        "Run",
        options=range(len(runs)),
        index=index,
        format_func=lambda i: _run_label(runs[i]),
        key=key,
        on_change=adopt,
        help="Any finished run; the one you trained last is chosen for you.",
    )
    if current == ids[picked] and st.query_params.get(RUN_QUERY_PARAM) != current:
        set_run(current)
    return runs[picked].dir
