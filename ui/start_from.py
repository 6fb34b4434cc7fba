"""The Train page's "Start from" choice: the pretrained backbone, or an earlier run's model."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.config import TrainConfig
from ui.text import md

BACKBONE = ""


def _candidates(config: TrainConfig) -> list[Any]:
    """Finished runs with a model, built like this one (same backbone, size, pooling, head)."""
    from core.runs.listing import list_runs

    model = config.model
    found = []
    for info in list_runs():
        other = (info.config or {}).get("model") or {}
        same = (
            other.get("backbone") == model.backbone
            and other.get("image_size") == model.image_size
            and other.get("pooling", model.pooling) == model.pooling
            and list(other.get("dense_units") or []) == list(model.dense_units)
        )
        if info.has_model and same and info.status.state in ("completed", "cancelled"):
            found.append(info)
    return found


def start_from_picker(config: TrainConfig, classes: list[str]) -> tuple[str, str | None]:
    """Draws the choice and what it will do; returns ``(init_from, refusal)``.

    ``init_from`` is ``""`` for the pretrained backbone, else the chosen run's id;
    ``refusal`` says why the chosen run cannot be the starting point (None when it can).
    """
    from core.runs.lineage import IncompatibleParentError, plan_start

    runs = _candidates(config)
    labels = {BACKBONE: "The pretrained model (a new run)"}
    for info in runs:
        name = (info.config or {}).get("name") or info.run_id
        best = (info.summary or {}).get("best_val_accuracy")
        score = f", {best:.0%} on validation" if isinstance(best, int | float) else ""
        labels[info.run_id] = f"Run {name}{score}"
    choice = st.selectbox(
        "Start from",
        list(labels),
        format_func=labels.__getitem__,
        key="train_start_from",
        help="Keep learning: start from a model you trained before instead of from scratch "
        "(fine-tune it on the new images). Only runs with the same model settings are listed.",
    )
    if not runs:
        st.caption(
            "No earlier run with this model yet: after one finishes you can continue from it "
            "when new images arrive."
        )
    if choice == BACKBONE:
        return BACKBONE, None
    try:
        plan = plan_start(config.replace(init_from=choice), classes)
    except IncompatibleParentError as error:
        st.error(md(str(error)), icon=":material/block:")
        return choice, str(error)
    st.caption(
        f"Keeps what it learned about {len(plan.kept)} class(es)"
        + (f"; learns the new {md(', '.join(plan.added))}" if plan.added else "")
        + (
            f"; forgets {md(', '.join(plan.dropped))} (no longer in the data)"
            if plan.dropped
            else ""
        )
        + "."
    )
    return choice, None
