"""The Train page's hyperparameter form: sensible defaults, one line of help per setting.

Epochs, learning rate and early-stopping patience may stay on *auto* (``None``): the engine
then chooses them for what trains (see :attr:`core.config.TrainConfig.effective_epochs`).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.config import OPTIMIZERS, SCHEDULES
from ui.labels import trainable_phrase

LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
BATCH_SIZES = [8, 16, 32, 64, 128]
LR_FACTORS = [0.01, 0.03, 0.1, 0.3, 1.0]
SCHEDULE_WORDS = {
    "constant": "same all along",
    "cosine": "smoothly down to zero",
    "reduce_on_plateau": "lower when stuck",
}
PHASE_TWO = ["all", "top:1", "top:2", "top:3", "top:4", "top:6", "top:8"]


def _nearest(options: list[float], value: float) -> float:
    return min(options, key=lambda option: abs(option - value))


def learning_rate_options(saved: float | None) -> list[float | None]:
    """Choices of the learning-rate box: auto, the usual rates, and a rate chosen elsewhere
    (the learning-rate finder's suggestion) in its place in the order."""
    rates = sorted(set(LEARNING_RATES) | ({float(saved)} if saved is not None else set()))
    return [None, *rates]


def _rate_label(value: float | None) -> str:
    return "auto" if value is None else f"{value:.2g}"


NAME_ROUND = "train_name_round"


def name_key(state: Any) -> str:
    """Widget key of the run-name field; :func:`forget_name` moves it on after a start."""
    return f"train_name_{state.get(NAME_ROUND, 0)}"


def forget_name(state: Any) -> None:
    """Empties the run-name field for the next run (each run names itself)."""
    state[NAME_ROUND] = (state.get(NAME_ROUND, 0)) + 1


def hyperparameter_form(saved: dict[str, Any], *, can_start: bool = True) -> dict[str, Any] | None:
    """Draws the form; returns the chosen hyperparameters when Start is pressed, else None.

    Args:
        saved: The last hyperparameters (``st.session_state["train_config"]``), used as
            defaults.
        can_start: False greys Start out (the page says why above the form).

    Returns:
        ``TrainConfig`` field values (without ``dataset`` and ``model``), or None.
    """
    # Outside the form: a change redraws the page, so the fine-tune fields follow it.
    two_phase = st.toggle(
        "Then fine-tune (a second phase)",
        saved["fine_tune_epochs"] > 0,
        key="train_ft",
        help="After the first epochs, unfreeze part of the backbone and continue "
        "with a lower learning rate (fastai's fine_tune).",
    )
    with st.form("train_form", border=True):
        st.markdown("**Basics**")
        c = st.columns(4)
        epochs = c[0].number_input(
            "Epochs",
            1,
            1000,
            None if saved["epochs"] is None else int(saved["epochs"]),
            key="train_epochs",
            placeholder="auto",
            help="Passes over the training images. Leave it empty (auto): a frozen backbone's "
            "head trains until validation stops improving; otherwise 10.",
        )
        batch_size = c[1].select_slider(
            "Batch size",
            BATCH_SIZES,
            _nearest(BATCH_SIZES, saved["batch_size"]),
            key="train_batch",
            help="Images per step. Lower it if memory runs out.",
        )
        rates = learning_rate_options(saved["learning_rate"])
        lr = c[2].selectbox(
            "Learning rate",
            rates,
            rates.index(saved["learning_rate"]),
            key="train_lr",
            format_func=_rate_label,
            help="How big each step is. auto: 3e-3 for a new head, 1e-4 when the backbone "
            "trains. The learning-rate finder below suggests one for your data.",
        )
        optimizer = c[3].selectbox(
            "Optimizer",
            OPTIMIZERS,
            OPTIMIZERS.index(saved["optimizer"]),
            key="train_opt",
            help="Adam is a safe default. SGD with momentum can generalise a little better "
            "with a schedule.",
        )
        st.markdown("**Steadier training**")
        c = st.columns(4)
        schedule = c[0].selectbox(
            "Learning-rate schedule",
            SCHEDULES,
            SCHEDULES.index(saved["schedule"]),
            key="train_schedule",
            format_func=SCHEDULE_WORDS.get,
            help="Same all along (constant); smoothly down to zero (cosine); lower it when the "
            "validation loss stalls (reduce_on_plateau).",
        )
        patience = c[1].number_input(
            "Early stopping patience",
            0,
            100,
            None
            if saved["early_stopping_patience"] is None
            else int(saved["early_stopping_patience"]),
            key="train_patience",
            placeholder="auto",
            help="Stop when validation loss has not improved for this many epochs (0 = off; "
            "auto: 10 when only the head trains). The best epoch's weights are kept.",
        )
        smoothing = c[2].slider(
            "Label smoothing",
            0.0,
            0.3,
            float(saved["label_smoothing"]),
            0.05,
            key="train_ls",
            help="Makes the model less over-confident. 0.1 is common.",
        )
        with c[3]:
            st.write("")
            balanced = st.toggle(
                "Balance classes",
                saved["class_weights"] == "balanced",
                key="train_cw",
                help="Give rare classes more weight so the model does not ignore them.",
            )
        st.markdown("**Two-phase fine-tune** (optional)")
        if not two_phase:
            st.caption("Turn on **Then fine-tune (a second phase)** above to set these.")
        c = st.columns(3)
        ft_epochs = c[0].number_input(
            "Fine-tune epochs",
            1,
            500,
            int(saved["fine_tune_epochs"]) or 3,
            key="train_ft_epochs",
            disabled=not two_phase,
        )
        ft_what = c[1].selectbox(
            "Then train",
            PHASE_TWO,
            key="train_ft_what",
            format_func=trainable_phrase,
            index=PHASE_TWO.index(saved["fine_tune_trainable"])
            if saved["fine_tune_trainable"] in PHASE_TWO
            else 0,
            disabled=not two_phase,
        )
        ft_mult = c[2].select_slider(
            "Learning-rate factor",
            LR_FACTORS,
            _nearest(LR_FACTORS, saved["fine_tune_lr_mult"]),
            key="train_ft_mult",
            help="Phase 2 uses the learning rate times this factor.",
            disabled=not two_phase,
        )
        c = st.columns([3, 1], vertical_alignment="bottom")
        name = c[0].text_input(
            "Name this run (optional)",
            saved.get("name", ""),
            # A new key per started run: the browser keeps a widget's text under its key.
            key=name_key(st.session_state),
            placeholder="e.g. first try, last layer only",
        )
        start = c[1].form_submit_button(
            "Start training",
            type="primary",
            icon=":material/play_arrow:",
            width="stretch",
            disabled=not can_start,
        )
    if not start:
        return None
    return dict(
        saved,
        epochs=None if epochs is None else int(epochs),
        batch_size=int(batch_size),
        learning_rate=None if lr is None else float(lr),
        optimizer=optimizer,
        schedule=schedule,
        early_stopping_patience=None if patience is None else int(patience),
        class_weights="balanced" if balanced else "off",
        label_smoothing=float(smoothing),
        fine_tune_epochs=int(ft_epochs) if two_phase else 0,
        fine_tune_trainable=ft_what,
        fine_tune_lr_mult=float(ft_mult),
        name=name.strip(),
    )
