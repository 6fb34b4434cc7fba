"""Evaluate: where the model is wrong, why, and fixing the data in place, then retraining."""

from pathlib import Path

import streamlit as st

from core.runs.evaluate import SPLITS, evaluate, most_confused
from ui import engine
from ui.eval_common import choose_run, open_run
from ui.evaluate_figures import CELL_SELECTION, confusion_spec, per_class_frame, selected_cell
from ui.gradcam_view import gradcam_panel
from ui.router import require_router
from ui.state import set_run
from ui.text import md

require_router()

SPLIT_NAMES = {"val": "Validation", "test": "Test"}
GALLERY_PAGE = 24
NEW_CLASS = "+ new class…"

st.title("Evaluate")
st.caption(
    "Accuracy, per-class scores and the confusion matrix on images the model did not train "
    "on. Click a cell (or choose it) to see exactly those images, fix wrong labels, and "
    "retrain with the same settings."
)

run_dir = choose_run("evaluate", what="see where it goes wrong")
if run_dir is None:
    st.stop()

split = (
    st.segmented_control(
        "Split",
        options=list(SPLITS),
        format_func=SPLIT_NAMES.get,
        default="val",
        key="evaluate_split",
        help="Validation picks the model; the test split is the honest final score.",
    )
    or "val"
)

try:
    with st.spinner(f"Evaluating on the {SPLIT_NAMES[split].lower()} split..."):
        result = evaluate(run_dir, split, run_model=lambda: open_run(run_dir))
except (FileNotFoundError, KeyError, ValueError) as error:
    st.error(f"Cannot evaluate this run: {md(error)}")
    st.stop()

dataset_id = result.dataset
dataset, problem = engine.dataset_or_error(dataset_id)
# Images are stored under generated names: show the names they were uploaded with.
original_names = (
    dict(zip(dataset.manifest["image"], dataset.manifest["original_name"], strict=True))
    if dataset is not None
    else {}
)


def _name(image: str) -> str:
    return str(original_names.get(image) or Path(image).name)


cols = st.columns(4)
cols[0].metric("Accuracy", f"{result.accuracy:.1%}")
cols[1].metric(
    "Average score per class",
    f"{result.macro_avg.get('f1', 0.0):.3f}",
    help="For each class, the balance of how often a guess of it is right and how many of "
    "its images are found, averaged over the classes; 1 is perfect (macro F1: the mean "
    "over classes of the F1 score of precision and recall).",
)
cols[2].metric("Images", result.n)
cols[3].metric("Misclassified", sum(not p["correct"] for p in result.predictions))

# ---- confusion matrix + the chosen cell -------------------------------------------------
labels = result.labels
default_cell = most_confused(labels, result.confusion_matrix)
cell_keys = ("evaluate_true", "evaluate_pred")
for key, value in zip(cell_keys, default_cell, strict=True):
    if st.session_state.get(key) not in labels:
        st.session_state[key] = value


def _cell_from_click() -> None:
    """Copies a clicked heatmap cell into the two cell selectboxes (state only, no drawing)."""
    cell = selected_cell(st.session_state.get("evaluate_matrix"), labels)
    if cell is not None:
        st.session_state["evaluate_true"], st.session_state["evaluate_pred"] = cell


matrix_col, table_col = st.columns([3, 2])
with matrix_col:
    highlight = (st.session_state["evaluate_true"], st.session_state["evaluate_pred"])
    st.vega_lite_chart(
        *confusion_spec(labels, result.confusion_matrix, highlight=highlight),
        key="evaluate_matrix",
        on_select=_cell_from_click,
        selection_mode=CELL_SELECTION,
    )
with table_col:
    st.markdown("**Per class**")
    st.dataframe(
        per_class_frame(result.per_class),
        hide_index=True,
        width="stretch",
        column_config={
            name: st.column_config.ProgressColumn(name, format="%.2f", min_value=0, max_value=1)
            for name in ("precision", "recall", "f1")
        },
    )

pick_true, pick_pred = st.columns(2)
true_label = pick_true.selectbox("True label", labels, key="evaluate_true")
pred_label = pick_pred.selectbox("Predicted as", labels, key="evaluate_pred")


def _caption(record: dict) -> str:
    mark = "✓" if record["correct"] else "✗"
    return (
        f"{mark} {_name(record['image'])} · true {record['true']} · "
        f"pred {record['predicted']} · {record['confidence']:.0%}"
    )


def _explain(image: str) -> None:
    """Gallery button callback: Grad-CAM shows this image (state only, no drawing)."""
    st.session_state["evaluate_gradcam_image"] = image


def _gallery(records: list[dict], key: str) -> list[dict]:
    """Shows records as an image grid (paged); returns the records shown."""
    if not records:
        st.caption("No images here.")
        return []
    shown = records
    if len(records) > GALLERY_PAGE:
        pages = (len(records) + GALLERY_PAGE - 1) // GALLERY_PAGE
        page = st.number_input("Page", 1, pages, 1, key=f"{key}_page")
        shown = records[(page - 1) * GALLERY_PAGE : page * GALLERY_PAGE]
    grid = st.columns(6)
    for index, record in enumerate(shown):
        with grid[index % 6]:
            st.image(record["path"], caption=_caption(record), width="stretch")
            st.button(
                "Why?",
                key=f"{key}_why_{index}",
                icon=":material/visibility:",
                on_click=_explain,
                args=(record["image"],),
                help="Show where the model looked in this picture (Grad-CAM, below).",
            )
    return shown


cell_tab, losses_tab = st.tabs(
    [f"Cell: {true_label} → {pred_label}", "Top losses (most confidently wrong)"]
)
with cell_tab:
    cell_records = result.cell(true_label, pred_label)
    st.caption(f"{len(cell_records)} image(s), most confident first.")
    _gallery(cell_records, "evaluate_cell")
with losses_tab:
    loss_records = result.top_losses(GALLERY_PAGE)
    st.caption("Misclassified images with the highest loss: often wrong labels or odd images.")
    _gallery(loss_records, "evaluate_losses")

candidates = {r["image"]: r for r in cell_records + loss_records}
# A newly chosen cell shows its first image in Grad-CAM (not the one chosen before).
if st.session_state.get("evaluate_gradcam_cell") != (true_label, pred_label):
    st.session_state["evaluate_gradcam_cell"] = (true_label, pred_label)
    if cell_records:
        st.session_state["evaluate_gradcam_image"] = cell_records[0]["image"]
if st.session_state.get("evaluate_gradcam_image") not in candidates:
    st.session_state.pop("evaluate_gradcam_image", None)


def _short(image: str) -> str:
    record = candidates.get(image)
    name = _name(image)
    return f"{name} ({record['true']} → {record['predicted']})" if record else name


# ---- Grad-CAM ---------------------------------------------------------------------------
st.subheader("Why? Grad-CAM")
if not candidates:
    st.caption("Choose a cell with images to explain them.")
else:
    gc_cols = st.columns([2, 1])
    chosen = gc_cols[0].selectbox(
        "Image", list(candidates), format_func=_short, key="evaluate_gradcam_image"
    )
    target = gc_cols[1].radio(
        "Explain", ["predicted class", "true class"], horizontal=True, key="evaluate_gradcam_for"
    )
    record = candidates[chosen]
    wanted = record["predicted"] if target == "predicted class" else record["true"]
    gradcam_panel(run_dir, record, wanted, _caption)

# ---- fix the data, then retrain ------------------------------------------------------------
st.subheader("Fix the data")
if dataset is None:
    st.warning(f"The dataset of this run is not available any more: {md(problem)}")
    st.stop()
with st.container(border=True):
    to_fix = st.multiselect(
        "Images to fix (from the gallery above)",
        list(candidates),
        format_func=_short,
        key="evaluate_fix_images",
    )
    fix_cols = st.columns([2, 2, 1, 1], vertical_alignment="bottom")
    choice = fix_cols[0].selectbox(
        "New label", list(dataset.classes) + [NEW_CLASS], key="evaluate_fix_label"
    )
    new_label = choice
    if choice == NEW_CLASS:
        new_label = fix_cols[1].text_input("New class name", key="evaluate_fix_new").strip()
    if fix_cols[2].button(
        "Relabel",
        icon=":material/label:",
        disabled=not (to_fix and new_label),
        key="evaluate_relabel",
    ):
        from core.data.edits import relabel_images

        try:
            relabel_images(dataset_id, to_fix, new_label)
        except (KeyError, ValueError) as error:
            st.error(str(error))
        else:
            st.session_state.pop("evaluate_fix_images", None)
            st.toast(f"Relabelled {len(to_fix)} image(s) as {md(repr(new_label))}.")
            st.rerun()
    if fix_cols[3].button(
        "Remove", icon=":material/delete:", disabled=not to_fix, key="evaluate_remove"
    ):
        from core.data.edits import delete_images

        try:
            delete_images(dataset_id, to_fix)
        except (KeyError, ValueError) as error:
            st.error(str(error))
        else:
            st.session_state.pop("evaluate_fix_images", None)
            st.toast(f"Removed {len(to_fix)} image(s) from the dataset.")
            st.rerun()

st.caption("Changed labels? Train again with exactly the same settings on the fixed data.")
if st.button(
    "Retrain with same settings", icon=":material/replay:", type="primary", key="evaluate_retrain"
):
    from core.runs.store import read_config
    from core.training.jobs import start_run

    try:
        new_run = start_run(read_config(run_dir))
    except (OSError, ValueError) as error:
        st.error(f"Could not start the run: {error}")
    else:
        set_run(new_run)
        st.switch_page("pages/train.py", query_params={"run": new_run})
