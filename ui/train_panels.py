"""The Train page's panels: the runs in progress, the shown run's live view and header, what
to do when a backbone's weights are missing, and the learning-rate finder.

The page (``pages/train.py``) lays them out; this module draws them from the run folders
(read only) and hands Cancel, Resume and Show to :mod:`core.training.jobs`.
"""

from __future__ import annotations

import dataclasses

import streamlit as st

from core.models.registry import DEFAULT_BACKBONE
from core.models.weights import missing_weights
from core.runs.metrics import MetricsReader
from core.runs.store import read_config
from core.training.jobs import runs_in_progress
from ui import engine, model_cache, run_view
from ui.figures import batch_events, batch_loss_spec, history_spec
from ui.labels import PHASE_NAMES, STATE_BADGES, trainable_phrase
from ui.lr_find_view import TEACHING_SENTENCE, lr_find_figure, sweep_caption
from ui.nav import link
from ui.state import set_model_config, set_run
from ui.text import md

WAITING_FOR_EPOCH = "Waiting for the first epoch… the curves appear here when it ends."


def _controls(status) -> None:
    """Cancel / Resume / next steps, by state."""
    if status.active:
        if st.button("Cancel training", icon=":material/stop_circle:", key="train_cancel"):
            from core.training.jobs import cancel_run

            cancel_run(status.run_id, wait=False)
            st.toast("Cancelling: the run stops after the current batch and keeps its best model.")
    elif status.state in ("interrupted", "failed", "cancelled") and (
        _resumable(status.run_id)
        and st.button("Resume this run", icon=":material/play_arrow:", key="train_resume")
    ):
        from core.training.jobs import resume_run

        try:
            resume_run(status.run_id)
        except (ValueError, FileNotFoundError) as error:
            st.error(md(error))
        else:
            st.rerun(scope="app")


def _resumable(run_id: str) -> bool:
    """Whether Resume can work: its weights are still to be had (says why not otherwise)."""
    try:
        model = read_config(engine.run_folder(run_id)).model
    except (FileNotFoundError, ValueError) as error:
        st.caption(f"Resume is not offered: the run's settings cannot be read ({error}).")
        return False
    missing = missing_weights(model.backbone, model.weights, model.image_size)
    if missing:
        st.caption(f"Resume is not offered: it would fail the same way. {missing}")
        return False
    return True


def weights_choices(model) -> bool:
    """Says what a run of ``model`` lacks before Start and offers the choices that work.

    Returns:
        True when the weights are there (Start can work).
    """
    missing = missing_weights(model.backbone, model.weights, model.image_size)
    if not missing:
        return True
    st.warning(
        f"{missing} A run would fail, so Start is off until you pick one of these:",
        icon=":material/cloud_off:",
    )
    c = st.columns(3)
    if c[0].button(
        f"Use {engine.backbone_title(DEFAULT_BACKBONE)}",
        icon=":material/offline_pin:",
        key="train_use_offline",
        help="Its ImageNet weights ship with the app: works without internet.",
    ):
        set_model_config(dataclasses.replace(model, backbone=DEFAULT_BACKBONE, weights="imagenet"))
        st.rerun(scope="app")
    if c[1].button(
        "Start from random weights",
        icon=":material/casino:",
        key="train_use_random",
        help="No pretraining: learns everything from your images, so it needs many more.",
    ):
        set_model_config(dataclasses.replace(model, weights="none"))
        st.rerun(scope="app")
    c[2].page_link(
        "pages/model.py", label="Upload a weights file (Model page)", icon=":material/upload:"
    )
    return False


def _next_steps() -> None:
    """Links to what comes after a finished run."""
    cols = st.columns(3)
    link("pages/evaluate.py", "See where it is wrong", ":material/fact_check:", where=cols[0])
    link("pages/predict.py", "Try it on new images", ":material/image_search:", where=cols[1])
    link("pages/export.py", "Download the model", ":material/download:", where=cols[2])


def live_run(run_id: str, was_active: bool) -> None:
    """State, controls, progress, metrics, curves and notes of run ``run_id``.

    Args:
        run_id: The run shown.
        was_active: The run was training or queued when the page drew this (a fragment
            that refreshes it); when it has ended since, the whole page is drawn again.
    """
    status, error = engine.status_or_error(run_id)
    if status is None:
        st.warning(f"Run {md(run_id)} cannot be shown: {md(error)}")
        return
    if was_active and not status.active:
        st.rerun(scope="app")  # the run just ended: redraw the page without polling
    events = MetricsReader(engine.run_folder(run_id)).all()
    elapsed, eta = run_view.timing(status)
    phase = PHASE_NAMES.get(status.phase, status.phase)
    head = st.columns([3, 1], vertical_alignment="center")
    badge = STATE_BADGES.get(status.state, status.state)
    doing = phase if status.state == "running" else ""
    head[0].markdown(f"#### {badge} &nbsp; {doing}")
    with head[1]:
        _controls(status)
    if status.active and status.extra.get("stale_seconds"):
        st.warning(md(status.message), icon=":material/hourglass_disabled:")
    elif status.state == "queued":
        st.info(f":material/schedule: {md(status.message or 'Waiting for the device to be free.')}")
    elif status.state == "failed":
        st.error(md(status.message or "The run failed."))
        st.markdown(
            "**What to try**\n"
            + "\n".join(f"- {t}" for t in run_view.failure_advice(status.message))
        )
    elif status.state in ("interrupted", "cancelled") and status.message:
        st.warning(md(status.message))
    elif status.state == "completed":
        st.success(md(status.message or "Training finished. The best model is saved."))
        _next_steps()
        # Its next step is Evaluate: the model is loaded and its explainer traced meanwhile.
        model_cache.warm_in_background(engine.run_folder(run_id))
    st.progress(status.progress, text=f"Epoch {status.epoch} of {status.total_epochs}")
    best = run_view.best_val_accuracy(events)
    speed_label, speed, speed_help = run_view.throughput_metric(events)
    m = st.columns(5)
    m[0].metric("Epoch", f"{status.epoch} / {status.total_epochs}")
    m[1].metric("Best val accuracy", f"{best:.1%}" if best is not None else "–")
    m[2].metric(speed_label, f"{speed:,.0f}" if speed else "–", help=speed_help)
    m[3].metric("Elapsed", run_view.format_duration(elapsed))
    live = status.active and not status.extra.get("stale_seconds")  # a frozen run has no ETA
    m[4].metric("Time left (est.)", run_view.format_duration(eta) if live else "–")
    if any(e.get("type") == "epoch" for e in events):
        charts = st.columns(2)
        charts[0].vega_lite_chart(*history_spec(events, "loss"), key=f"loss_{run_id}")
        charts[1].vega_lite_chart(*history_spec(events, "accuracy"), key=f"acc_{run_id}")
    elif status.active:
        # One placeholder, not a stack of empty chart frames.
        st.info(WAITING_FOR_EPOCH, icon=":material/show_chart:")
    else:
        st.caption(":material/show_chart: No epoch finished, so there are no curves to show.")
    if batch_events(events):
        st.vega_lite_chart(*batch_loss_spec(events), key=f"batch_{run_id}")
    for note in run_view.notes(events):
        if run_view.is_warning_note(note):
            st.warning(md(note), icon=":material/trending_up:")
        else:
            st.caption(f":material/info: {md(note)}")


def run_header(run_id: str) -> None:
    """One line of the run's settings, and warnings about settings unlikely to be meant."""
    try:
        config = read_config(engine.run_folder(run_id))
    except (FileNotFoundError, ValueError) as error:
        st.warning(f"Run {md(run_id)} has no readable settings: {md(error)}")
        return
    dataset, _ = engine.dataset_or_error(config.dataset)
    model = config.model
    data_name = dataset.name if dataset else config.dataset
    st.markdown(
        f"**{md(config.name or run_id)}** · data: {md(data_name)} · "
        f"{engine.backbone_title(model.backbone)} at {model.image_size} px · "
        f"{trainable_phrase(model.trainable)} · {_epochs_phrase(config)} · "
        f"{config.optimizer} lr {config.effective_learning_rate:g}"
        f"{' (auto)' if config.learning_rate is None else ''}"
    )
    if dataset is not None:
        train_images = int(engine.dataset_counts(dataset)["train"].sum())
        for warning in run_view.setting_warnings(config, train_images):
            st.warning(warning, icon=":material/warning:")


def _epochs_phrase(config) -> str:
    if config.effective_patience and config.epochs is None:
        return f"up to {config.total_epochs} epochs, stops when it stops improving"
    return f"{config.total_epochs} epochs"


def runs_in_progress_panel(shown: str | None) -> None:
    """Every run training or waiting in the queue, each with Show and Cancel."""
    from core.training.jobs import cancel_run

    runs = runs_in_progress()
    if not runs:
        return
    with st.container(border=True):
        st.markdown(f"**Runs in progress** ({len(runs)})")
        if len(runs) > 1:
            st.caption(
                "One training at a time on this machine: the others wait in the queue and "
                "start by themselves, in this order."
            )
        for run in runs:
            row = st.columns([5, 1, 1], vertical_alignment="center")
            here = " · shown below" if run.run_id == shown else ""
            row[0].markdown(
                f"{STATE_BADGES.get(run.state, run.state)} **{md(run_view.run_title(run))}**"
                f"{here}  \n{run_view.in_progress_line(run)}"
            )
            row[0].progress(run.progress)
            if row[1].button(
                "Show",
                icon=":material/visibility:",
                key=f"train_queue_show_{run.run_id}",
                disabled=run.run_id == shown,
                help="Shows this run's curves and details below.",
            ):
                set_run(run.run_id)
                st.rerun(scope="app")
            if row[2].button(
                "Cancel",
                icon=":material/stop_circle:",
                key=f"train_queue_cancel_{run.run_id}",
                help="Stops this run (a waiting run just leaves the queue); a training run "
                "keeps its best model so far.",
            ):
                cancel_run(run.run_id, wait=False)
                st.toast(f"Cancelling {run_view.run_title(run)}.")
                st.rerun(scope="app")


def _use_rate(rate: float) -> None:
    # A button callback runs before the form is drawn again, so the box can take the rate.
    st.session_state["train_config"] = dict(st.session_state["train_config"], learning_rate=rate)
    st.session_state["train_lr"] = rate


def lr_finder_panel(config) -> None:
    """The learning-rate finder: sweep (in a child process), plot, suggest, one click to use."""
    from core.training.lr_find import LrFindResult, lr_find_in_subprocess

    signature = {k: v for k, v in config.to_dict().items() if k not in ("learning_rate", "name")}
    fast = config.head_first
    st.caption(
        "Trains a throw-away copy of the model for a few hundred steps while the learning "
        "rate rises from 1e-7 to 10, and plots the loss. "
        + (
            "The pretrained model stays frozen: this takes seconds."
            if fast
            else "Part of the pretrained model trains, so it runs through the whole model "
            "and takes about as long as 100 training steps."
        )
    )
    if st.button("Find a learning rate", icon=":material/search_insights:", key="train_lr_find"):
        with st.spinner("Sweeping the learning rate..."):
            try:
                found = lr_find_in_subprocess(config)
            except RuntimeError as error:
                st.error(str(error))
            else:
                st.session_state["train_lr_found"] = {
                    "signature": signature,
                    "result": found.to_dict(),
                }
    saved = st.session_state.get("train_lr_found")
    if not saved:
        return
    try:
        result = LrFindResult.from_dict(saved.get("result"))
    except ValueError as error:
        st.warning(f"The last sweep cannot be shown: {error}")
        return
    if saved.get("signature") != signature:
        st.caption(":material/info: This sweep was made with other settings; run it again.")
    st.plotly_chart(lr_find_figure(result.to_dict()), key="train_lr_figure")
    st.caption(TEACHING_SENTENCE)
    cols = st.columns([2, 3], vertical_alignment="center")
    cols[0].button(
        f"Use {result.suggestion:.1e}",
        icon=":material/check:",
        key="train_lr_use",
        type="primary",
        on_click=_use_rate,
        args=(float(f"{result.suggestion:.2g}"),),
        help="Puts the suggested rate into the Learning rate box below.",
    )
    cols[1].caption(sweep_caption(result.to_dict()))
