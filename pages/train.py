"""Train: hyperparameters, Start, and the live view of the run (re-attachable by URL)."""

import streamlit as st

from core.training.jobs import runs_in_progress
from ui import engine
from ui.devices import device_panel
from ui.labels import trainable_phrase
from ui.router import require_router
from ui.start_from import start_from_picker
from ui.state import build_train_config, set_run
from ui.text import md
from ui.train_form import forget_name, hyperparameter_form
from ui.train_panels import (
    live_run,
    lr_finder_panel,
    run_header,
    runs_in_progress_panel,
    weights_choices,
)

require_router()

st.title("Train")
st.caption(
    "Training runs in the background on this machine: you can leave this page, refresh it, "
    "or open it in a second tab, and it picks the run up again."
)

run_id = st.session_state["run_id"]
if run_id:
    st.query_params["run"] = run_id

active = False

if runs_in_progress():
    st.fragment(run_every=2.0)(runs_in_progress_panel)(run_id)
if run_id:
    with st.container(border=True):
        run_header(run_id)
        status, _ = engine.status_or_error(run_id)
        active = bool(status and status.active)
        if active:
            st.fragment(run_every=1.5)(live_run)(run_id, True)
        else:
            live_run(run_id, False)

# ---- settings of a new run ------------------------------------------------------------
dataset_id = st.session_state["dataset_id"]
if run_id:
    st.subheader("Start a new run")
else:
    st.subheader("Settings")
if not dataset_id:
    st.info("First add images on the **Data** page (or load the sample on **Home**).")
    st.page_link("pages/data.py", label="Go to Data", icon=":material/photo_library:")
    st.stop()

dataset, error = engine.dataset_or_error(dataset_id)
if dataset is None:
    st.error(f"The current dataset cannot be loaded: {md(error)}")
    st.stop()
model = st.session_state["model_config"]
st.caption(
    f"Data: **{dataset.name}** ({len(dataset.manifest)} images, {len(dataset.classes)} classes) · "
    f"Model: **{engine.backbone_title(model.backbone)}**, {model.image_size} px, "
    f"{trainable_phrase(model.trainable)} — change it on the Model page."
)
problems = dataset.problems()
for problem in problems:
    st.error(f"This dataset cannot be trained on yet: {md(problem)}.", icon=":material/report:")
if active:
    st.caption(
        "Another run started now waits in the queue until this one ends (one training at a "
        "time on this machine)."
    )
weights_ok = weights_choices(model)
init_from, refusal = "", None
try:
    planned = build_train_config(dataset_id, st.session_state["train_config"])
except ValueError as error:
    planned = None
    st.error(f"The saved settings cannot be used: {md(error)}")
if planned is not None and not problems:
    init_from, refusal = start_from_picker(planned, list(dataset.classes))
if planned is not None:
    st.markdown(f":material/auto_awesome: {planned.defaults_sentence()}")
    with st.expander("Find a good learning rate", icon=":material/query_stats:"):
        lr_finder_panel(planned)
overrides = hyperparameter_form(
    st.session_state["train_config"], can_start=weights_ok and not problems
)
if overrides is not None and not problems and weights_ok:
    try:
        config = build_train_config(dataset_id, overrides).replace(init_from=init_from)
    except ValueError as error:
        st.error(f"These settings cannot be used: {md(error)}")
        st.stop()
    if refusal:
        st.error("Pick another starting point: the chosen run cannot be continued.")
        st.stop()
    from core.training.jobs import start_run

    # The settings carry over to the next run; its name does not (each run names itself).
    st.session_state["train_config"] = dict(overrides, name="")
    forget_name(st.session_state)
    set_run(start_run(config))
    st.rerun()

with st.expander("What will it run on?", icon=":material/memory:"):
    device_panel()
