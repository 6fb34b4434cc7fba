"""The sidebar: where the user is (current dataset, model choice, active run and its state)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui import engine
from ui.labels import STATE_BADGES, trainable_phrase
from ui.text import md

RUN_REFRESH_SECONDS = 2.0


def render_sidebar(slot: Any, *, live: bool) -> None:
    """Draws the "Your work" panel under the navigation, replacing what ``slot`` showed.

    Args:
        slot: An ``st.sidebar.empty()`` placeholder.
        live: Follow an active run with a fragment that refreshes every
            :data:`RUN_REFRESH_SECONDS` (only on the last drawing of a script run).
    """
    with slot.container():
        st.markdown("##### Your work")
        _dataset_line()
        _model_line()
        run_id = st.session_state.get("run_id")
        status = engine.status_or_error(run_id)[0] if live and run_id else None
        if status is not None and status.active:
            st.fragment(run_every=RUN_REFRESH_SECONDS)(_run_line)()
        else:
            _run_line()


def _dataset_line() -> None:
    dataset_id = st.session_state.get("dataset_id")
    if not dataset_id:
        st.markdown(":material/photo_library: **Data** · _none chosen yet_")
        return
    dataset, error = engine.dataset_or_error(dataset_id)
    if dataset is None:
        st.markdown(":material/photo_library: **Data** · _unavailable_")
        st.caption(md(error))
        return
    st.markdown(f":material/photo_library: **{md(dataset.name)}**")
    st.caption(f"{len(dataset.manifest)} images · {len(dataset.classes)} classes")


def _model_line() -> None:
    config = st.session_state["model_config"]
    st.markdown(f":material/account_tree: **{engine.backbone_title(config.backbone)}**")
    weights = {"imagenet": "ImageNet weights", "none": "random init"}.get(
        config.weights, "your weights file"
    )
    st.caption(f"{config.image_size} px · {weights} · {trainable_phrase(config.trainable)}")


def _run_line() -> None:
    run_id = st.session_state.get("run_id")
    if not run_id:
        st.markdown(":material/model_training: **Run** · _none yet_")
        return
    status, error = engine.status_or_error(run_id)
    if status is None:
        st.markdown(":material/model_training: **Run** · _not found_")
        st.caption(md(error))
        return
    badge = STATE_BADGES.get(status.state, status.state)
    st.markdown(f":material/model_training: **Run** {badge}")
    detail = f"epoch {status.epoch}/{status.total_epochs}"
    if status.phase and status.active:
        detail += f" · {status.phase}"
    st.caption(f"{md(run_id)}  \n{detail}")
