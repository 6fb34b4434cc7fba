"""Data: add images (zip, folder, class by class, webcam), look at them, fix them, split them."""

from pathlib import Path

import streamlit as st

from core.data import drafts, edits, ingest
from ui import data_changes, data_view, engine
from ui.router import require_router
from ui.state import set_dataset
from ui.text import md

require_router()

st.title("Data")
st.caption(
    "One class per kind of picture you want told apart. A few dozen images per class is "
    "enough to start; more, and more varied, is better."
)


def _progress_bar():
    bar = st.progress(0.0, text="Reading images…")

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=message or f"{done} of {total}")

    return bar, progress


def _ingest_from(make_source, **kwargs):
    """Builds the source inside the guarded call, so a bad class name is reported too."""
    return ingest.ingest(make_source(), **kwargs)


def _run_ingest(call, *args, after=None, **kwargs) -> None:
    """Runs an ingest call with a progress bar, remembers its report, selects the dataset.

    ``after`` runs once a dataset was made (e.g. dropping the webcam pictures it now holds).
    """
    bar, progress = _progress_bar()
    try:
        report = call(*args, progress=progress, **kwargs)
    except ValueError as error:  # DatasetError: refused, with the report attached
        report = getattr(error, "report", None)
        st.session_state["data_report"] = report.to_dict() if report else {"error": str(error)}
        st.session_state["data_report"].setdefault("error", str(error))
        bar.empty()
        return
    bar.empty()
    st.session_state["data_report"] = report.to_dict()
    if report.dataset_id:
        if after is not None:
            after()
        set_dataset(report.dataset_id)
        st.rerun()


def _create_new(created) -> None:
    """Makes a new dataset from ``(files by class, name)`` when the user asked for one.

    Both ways of making one include the kept webcam pictures, so once the dataset exists
    they are dropped (they live on in the dataset).
    """
    if created is not None:
        files, name = created
        _run_ingest(
            _ingest_from, lambda: ingest.UploadSource(files), name=name, after=drafts.clear_shots
        )


def _files(uploads) -> list[tuple[str, bytes]]:
    return [(f.name, f.getvalue()) for f in uploads or []]


# ---- which dataset ---------------------------------------------------------------------
choices, broken_datasets = engine.dataset_choices()
for broken_id, reason in broken_datasets:
    st.warning(f"Dataset {md(broken_id)} cannot be opened: {md(reason)}")
ids = [dataset_id for dataset_id, _ in choices]
names = dict(choices)
current = st.session_state["dataset_id"]
choice = st.selectbox(
    "Current dataset",
    [None, *ids],
    index=(ids.index(current) + 1) if current in ids else 0,
    format_func=lambda i: "+ New dataset" if i is None else names[i],
    key=f"data_pick_{current}",
    help="Pick a dataset you made before, or start a new one below.",
)
if choice != current:
    set_dataset(choice)
    st.rerun()
dataset = engine.dataset_or_error(choice)[0] if choice else None

# ---- add images ------------------------------------------------------------------------
if dataset:
    adder = st.expander(
        "Add images, or make another dataset", icon=":material/add_photo_alternate:"
    )
else:
    st.subheader("Create a dataset")
    adder = st.container()
with adder:
    tab_zip, tab_folder, tab_class, tab_cam = st.tabs(
        [
            ":material/folder_zip: Zip file",
            ":material/folder: Folder",
            ":material/label: Class by class",
            ":material/photo_camera: Webcam",
        ]
    )
    with tab_zip:
        st.caption(
            "A zip with one folder per class, e.g. `cats/…jpg`, `dogs/…jpg`: makes a new dataset."
        )
        upload = st.file_uploader("Zip of class folders", type=["zip"], key="data_zip")
        zip_name = st.text_input(
            "Dataset name",
            Path(upload.name).stem if upload else "",
            key="data_zip_name",
            placeholder="e.g. Leaves",
        )
        if st.button(
            "Create dataset from zip", type="primary", disabled=upload is None, key="data_zip_go"
        ):
            data, filename = upload.getvalue(), upload.name
            _run_ingest(
                _ingest_from,
                lambda: ingest.ZipSource(data, filename),
                name=zip_name or Path(filename).stem,
            )
    with tab_folder:
        st.caption("A folder that holds one sub-folder per class: makes a new dataset.")
        folder = st.file_uploader(
            "Folder of class folders",
            accept_multiple_files="directory",
            type=data_view.IMAGE_TYPES,
            key="data_folder",
        )
        groups = data_view.group_by_folder(_files(folder))
        if folder:
            st.caption(
                "Found: "
                + (
                    ", ".join(f"**{k}** ({len(v)})" for k, v in groups.items())
                    or "no class folders"
                )
            )
        folder_name = st.text_input(
            "Dataset name", key="data_folder_name", placeholder="e.g. Leaves"
        )
        if st.button(
            "Create dataset from folder", type="primary", disabled=not groups, key="data_folder_go"
        ):
            _run_ingest(
                _ingest_from,
                lambda: ingest.UploadSource(groups),
                name=folder_name or "My images",
            )
    with tab_class:
        if dataset:
            st.caption("Add pictures to an existing class, or type a new class name.")
            cols = st.columns(2)
            target = cols[0].selectbox(
                "Class", [*dataset.classes, "+ New class…"], key="data_add_class"
            )
            if target == "+ New class…":
                target = cols[1].text_input("New class name", key="data_add_new").strip()
            files = st.file_uploader(
                "Images",
                accept_multiple_files=True,
                key="data_add_files",
                type=data_view.IMAGE_TYPES,
            )
            if st.button(
                "Add images", type="primary", disabled=not (files and target), key="data_add_go"
            ):
                _run_ingest(ingest.add_images, dataset.id, target, _files(files))
        else:
            _create_new(data_view.class_by_class_form())
    with tab_cam:
        if dataset:
            st.caption("Take pictures one by one; each goes into the class you choose.")
            cols = st.columns([2, 1])
            label = cols[1].selectbox("Into class", dataset.classes, key="data_cam_class")
            shot = cols[0].camera_input("Take a picture", key="data_cam")
            if (
                shot is not None
                and label
                and cols[1].button("Add this picture", type="primary", key="data_cam_go")
            ):
                name = f"webcam-{int(dataset.counts().loc[label, 'total']) + 1}.jpg"
                _run_ingest(ingest.add_images, dataset.id, label, [(name, shot.getvalue())])
        else:
            _create_new(data_view.webcam_drafts())

if st.session_state.get("data_report"):
    with st.container(border=True):
        head = st.columns([5, 1])
        head[0].markdown("**Last import**")
        if head[1].button("Dismiss", key="data_report_close"):
            st.session_state.pop("data_report")
            st.rerun()
        data_view.show_report(st.session_state["data_report"])

if dataset is None:
    st.stop()

# ---- the dataset -----------------------------------------------------------------------
st.divider()
st.subheader(md(dataset.name))
data_view.overview(dataset)


@st.fragment
def _browse(dataset) -> None:
    """The thumbnail grid and its actions: ticking a box reruns only this part."""
    st.subheader("Look through the images")
    st.caption("Tick images to delete them or move them to another class.")
    selected, shown_class = data_view.browser(dataset)
    actions = st.columns([1, 2, 1, 2], vertical_alignment="bottom")
    if actions[0].button(
        f"Delete {len(selected)} selected",
        icon=":material/delete:",
        disabled=not selected,
        key="data_delete",
    ):
        edits.delete_images(dataset.id, selected)
        data_view.clear_selection(selected)
        st.rerun()
    move_to = actions[1].selectbox(
        "Move selected to", [c for c in dataset.classes if c != shown_class], key="data_move_to"
    )
    if actions[2].button(
        "Move",
        icon=":material/drive_file_move:",
        disabled=not (selected and move_to),
        key="data_move",
    ):
        edits.relabel_images(dataset.id, selected, move_to)
        data_view.clear_selection(selected)
        st.rerun()


_browse(dataset)


with st.expander("Rename a class", icon=":material/edit:"):
    cols = st.columns([1, 1, 1], vertical_alignment="bottom")
    old = cols[0].selectbox("Class", dataset.classes, key="data_rename_old")
    new = cols[1].text_input("New name", key="data_rename_new").strip()
    cols[2].button(
        "Rename",
        disabled=not new or new == old,
        key="data_rename_go",
        on_click=data_changes.apply,
        args=("data_rename", data_changes.rename_class, dataset.id),
    )
    data_changes.show_error("data_rename")

st.subheader("Train / validation / test split")
st.caption(
    "The model learns from *train*, is tuned on *validation*, and is judged once on *test*, "
    "images it never saw. The split is stratified: each class is cut the same way."
)
totals = data_view.summary(dataset)[0][["train", "val", "test"]].sum()
st.markdown(
    f"Now: **{totals['train']}** train · **{totals['val']}** validation · "
    f"**{totals['test']}** test images (per class in the table above)."
)
cols = st.columns(4, vertical_alignment="bottom")
val = cols[0].slider("Validation share", 0.05, 0.4, dataset.val_fraction, 0.05, key="data_val")
test = cols[1].slider("Test share", 0.0, 0.4, dataset.test_fraction, 0.05, key="data_test")
seed = cols[2].number_input(
    "Seed",
    0,
    2**31 - 1,
    dataset.seed,
    key="data_seed",
    help="The same seed always gives the same split.",
)
cols[3].button(
    "Apply split",
    icon=":material/call_split:",
    key="data_split",
    on_click=data_changes.apply,
    args=("data_split", data_changes.resplit, dataset.id),
)
data_changes.show_error("data_split")
