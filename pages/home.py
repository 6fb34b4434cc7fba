"""Home: what Transfer Studio does, the steps as a checklist, and the sample dataset."""

import tempfile

import streamlit as st

from core.data.sample import SAMPLE_CLASSES, write_sample_images
from ui import engine
from ui.nav import link
from ui.router import require_router
from ui.state import set_dataset

require_router()

SAMPLE_NAME = "Sample shapes"
SAMPLE_PER_CLASS = 60

st.title("Transfer Studio")
st.markdown(
    ":material/photo_library: Teach a computer to recognise **your own pictures**, without "
    "writing code.  \n"
    ":material/school: Start from a network that already knows 1,000 kinds of objects "
    "(ImageNet) and retrain only what your task needs.  \n"
    ":material/insights: Watch it learn live, see where it is wrong, and download a model for "
    "a phone, a server or the browser. Everything stays on this machine."
)


def _load_sample() -> str:
    """Draws the sample images into a temporary folder and ingests them; returns the id."""
    from core.data.ingest import ingest

    bar = st.progress(0.0, text="Drawing sample images…")

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=message or "Adding images…")

    with tempfile.TemporaryDirectory(prefix="sample-") as folder:
        write_sample_images(folder, per_class=SAMPLE_PER_CLASS)
        report = ingest(folder, name=SAMPLE_NAME, progress=progress)
    bar.empty()
    return report.dataset_id


def _existing_sample() -> str | None:
    from core.data.store import list_datasets

    for dataset in list_datasets():
        if dataset.name == SAMPLE_NAME and len(dataset.manifest) == 4 * SAMPLE_PER_CLASS:
            return dataset.id
    return None


def _steps() -> list[tuple[bool, str, str, str]]:
    """(done, title, what to do, page) for each step of the work."""
    dataset_id = st.session_state["dataset_id"]
    run_id = st.session_state["run_id"]
    status = engine.status_or_error(run_id)[0] if run_id else None
    trained = status is not None and status.state == "completed"
    return [
        (
            bool(dataset_id),
            "Add your images",
            "Upload a zip, a folder or photos per class.",
            "pages/data.py",
        ),
        (
            bool(st.session_state["model_confirmed"]),
            "Choose a model",
            "Pick a pretrained model and what to retrain.",
            "pages/model.py",
        ),
        (run_id is not None, "Train", "Start a run and watch the curves live.", "pages/train.py"),
        (
            trained,
            "Check and export",
            "See where the model is wrong, fix labels, download it.",
            "pages/evaluate.py",
        ),
    ]


left, right = st.columns([3, 2], gap="large")
with left, st.container(border=True):
    st.subheader("Your steps")
    steps = _steps()
    next_step = next((i for i, step in enumerate(steps) if not step[0]), None)
    for index, (done, title, hint, page) in enumerate(steps):
        icon = ":material/check_circle:" if done else ":material/radio_button_unchecked:"
        colour = "green" if done else ("blue" if index == next_step else "gray")
        row = st.columns([5, 2], vertical_alignment="center")
        row[0].markdown(f":{colour}[{icon}] **{index + 1}. {title}**  \n{hint}")
        link(page, "Go" if not done else "Open", ":material/arrow_forward:", where=row[1])

with right, st.container(border=True):
    st.subheader("New here?")
    st.write(
        f"Load a small practice set: {len(SAMPLE_CLASSES)} kinds of shapes "
        f"({', '.join(SAMPLE_CLASSES)}), {SAMPLE_PER_CLASS} pictures each, drawn on this "
        "machine. Then go to **Train** and press Start."
    )
    if st.button("Load the sample dataset", type="primary", icon=":material/auto_awesome:"):
        dataset_id = _existing_sample()
        reused = dataset_id is not None
        if dataset_id is None:
            try:
                dataset_id = _load_sample()
            except ValueError as error:
                st.error(f"The sample could not be added: {error}")
        if dataset_id:
            set_dataset(dataset_id)
            note = "already in your workspace, selected" if reused else "added and selected"
            st.session_state["home_notice"] = f"Sample dataset {note}."
            st.rerun()
    if st.session_state.get("home_notice"):
        st.success(st.session_state.pop("home_notice"), icon=":material/check:")
        st.page_link("pages/data.py", label="Look at the images", icon=":material/photo_library:")
        st.page_link("pages/train.py", label="Train on them", icon=":material/model_training:")
