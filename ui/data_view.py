"""Widgets of the Data page: ingest reports, the class overview, the image browser, splits.

Every change to a dataset goes through :mod:`core.data.store`; this module only draws and
forwards the user's choices.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
import streamlit as st

from core.data import drafts
from core.workspace import datasets_dir
from ui import engine
from ui.figures import SPLIT_COLORS, class_counts_frame
from ui.hold_record import hold_to_record
from ui.text import md

PAGE_SIZE = 24
GRID_COLUMNS = 6
IMBALANCE_RATIO = 3.0
IGNORED_PARTS = ("__MACOSX",)


def group_by_folder(
    names_and_bytes: Iterable[tuple[str, bytes]],
) -> dict[str, list[tuple[str, bytes]]]:
    """Groups a folder upload into classes by the folder each file sits in.

    ``"holiday/cats/a.jpg"`` and ``"cats/a.jpg"`` both go to class ``cats``. Files at the top
    level (no folder) and hidden or system folders are left out; the ingest report lists
    what the engine rejects.

    Args:
        names_and_bytes: (relative path as the browser sent it, content) pairs.

    Returns:
        Class name -> list of (file name, content).
    """
    groups: dict[str, list[tuple[str, bytes]]] = {}
    for name, data in names_and_bytes:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if len(parts) < 2 or any(p.startswith(".") or p in IGNORED_PARTS for p in parts):
            continue
        groups.setdefault(parts[-2], []).append((parts[-1], data))
    return groups


IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]


def class_by_class_form() -> tuple[dict[str, list[tuple[str, bytes]]], str] | None:
    """Class names with one uploader each (plus kept webcam shots) for a new dataset.

    Returns:
        ``(files by class, dataset name)`` when the user presses Create dataset, else None.
    """
    st.caption("Name your classes, then drop the pictures of each one into its box.")
    classes = st.session_state.setdefault("data_new_classes", ["class 1", "class 2"])
    per_class: dict[str, list[tuple[str, bytes]]] = {}
    for index in range(len(classes)):
        cols = st.columns([1, 2])
        classes[index] = cols[0].text_input(
            f"Class {index + 1}", classes[index], key=f"data_cls_{index}"
        )
        uploads = cols[1].file_uploader(
            f"Images of class {index + 1}",
            accept_multiple_files=True,
            key=f"data_cls_files_{index}",
            type=IMAGE_TYPES,
            label_visibility="collapsed",
        )
        per_class.setdefault(classes[index].strip(), []).extend(
            (f.name, f.getvalue()) for f in uploads or []
        )
    kept = drafts.list_shots()
    for label, files in drafts.shots_as_files(kept).items():
        per_class.setdefault(label, []).extend(files)
    if kept:
        st.caption(
            ":material/photo_camera: Webcam pictures kept: "
            + ", ".join(f"{label} ({len(paths)})" for label, paths in kept.items())
            + ". They are added to the class of the same name."
        )
    name = st.text_input("Dataset name", key="data_cls_name", placeholder="e.g. Leaves")
    buttons = st.columns([1, 1, 3])
    if buttons[0].button("Add a class", icon=":material/add:", key="data_cls_add"):
        classes.append(f"class {len(classes) + 1}")
        st.rerun()
    ready = {label: files for label, files in per_class.items() if label and files}
    go = buttons[1].button(
        "Create dataset", type="primary", key="data_cls_go", disabled=len(ready) < 2
    )
    if len(ready) == 1:
        st.info(SECOND_CLASS_UPLOAD, icon=":material/looks_two:")
    if go:
        return ready, name.strip() or "My images"
    return None


SECOND_CLASS_UPLOAD = (
    "A model learns to tell classes apart, so it needs at least two. Give the second class "
    "a name and drop a few pictures of it into its box."
)
SECOND_CLASS_WEBCAM = (
    "A model learns to tell classes apart, so it needs at least two. Add a second class: "
    "choose “+ New class…” under *Into class*, give it a name, and take a few pictures of it."
)
NEW_CLASS = "+ New class…"
HOLD, ONE_PICTURE = "Hold to record", "One picture"
SHOTS_SHOWN = 12
MIN_PICTURES = 3  # one each for train, validation and test


def webcam_drafts() -> tuple[dict[str, list[tuple[str, bytes]]], str] | None:
    """Webcam pictures for a new dataset, kept on disk (a refresh keeps them) until deleted.

    Returns:
        ``(files by class, dataset name)`` when the user presses Create dataset, else None.
    """
    kept = drafts.list_shots()
    st.caption(
        "Hold the record button to take about ten pictures a second, or take them one by one; "
        "each goes into the class you choose and is kept until you delete it or make the "
        "dataset."
    )
    cols = st.columns([2, 1])
    known = list(dict.fromkeys([*kept, *st.session_state.get("data_new_classes", [])]))
    label = cols[1].selectbox("Into class", [*known, NEW_CLASS], key="data_cam_class")
    if label == NEW_CLASS:
        label = (
            cols[1]
            .text_input("New class name", key="data_cam_new", placeholder=f"class {len(known) + 1}")
            .strip()
        )
    mode = cols[1].segmented_control(
        "Capture", [HOLD, ONE_PICTURE], default=HOLD, key="data_cam_mode"
    )
    if mode == ONE_PICTURE:
        shot = cols[0].camera_input("Take a picture", key="data_cam")
    else:
        shot = None
        with cols[0]:
            hold_to_record(label, key="data_rec")
    if (
        shot is not None
        and label
        and cols[1].button("Add this picture", type="primary", key="data_cam_go")
    ):
        try:
            drafts.add_shot(label, shot.getvalue())
        except ValueError as error:
            cols[1].error(str(error))
        else:
            kept = drafts.list_shots()
            count = len(kept.get(label, []))
            st.toast(f"Kept picture {count} of “{label}”.")
    if not kept:
        st.caption("No pictures yet.")
        return None
    for name, paths in kept.items():
        with st.container(border=True):
            head = st.columns([4, 1], vertical_alignment="center")
            head[0].markdown(f"**{md(name)}** · {len(paths)} picture(s)")
            if head[1].button("Delete these", key=f"data_cam_del_{paths[0].parent.name}"):
                drafts.clear_shots(name)
                st.rerun()
            grid = st.columns(SHOTS_SHOWN)
            for index, path in enumerate(paths[-SHOTS_SHOWN:]):
                grid[index].image(thumbnail(str(path), path.stat().st_mtime), width="stretch")
    name = st.text_input("Dataset name", key="data_cam_name", placeholder="e.g. My desk")
    few = [label for label, paths in kept.items() if len(paths) < MIN_PICTURES]
    go = st.button(
        "Create dataset from these pictures",
        type="primary",
        key="data_cam_create",
        disabled=len(kept) < 2 or bool(few),
    )
    if len(kept) < 2:
        st.info(SECOND_CLASS_WEBCAM, icon=":material/looks_two:")
    elif few:
        st.info(
            f"Take at least {MIN_PICTURES} pictures of every class (some to learn from, one "
            f"to check, one to test). Still short: {', '.join(few)}.",
            icon=":material/photo_camera:",
        )
    if go:
        return drafts.shots_as_files(kept), name.strip() or "My webcam pictures"
    return None


def imbalance_message(counts: Mapping[str, int]) -> str | None:
    """A warning when the largest class has over 3x the images of the smallest."""
    if len(counts) < 2:
        return None
    largest = max(counts, key=counts.get)
    smallest = min(counts, key=counts.get)
    if counts[smallest] and counts[largest] / counts[smallest] < IMBALANCE_RATIO:
        return None
    return (
        f"Classes are unbalanced: '{largest}' has {counts[largest]} images, '{smallest}' "
        f"only {counts[smallest]}. Add images to the small classes, or switch on "
        "'Balance classes' on the Train page."
    )


def show_report(report: Mapping[str, Any]) -> None:
    """Draws an ingest report (``IngestReport.to_dict()``): counts, warnings, rejections."""
    classes = report.get("classes") or {}
    rejected = report.get("rejected") or []
    duplicates = report.get("duplicates") or []
    cols = st.columns(4)
    cols[0].metric("Images added", report.get("num_images", 0))
    cols[1].metric("Classes", len(classes))
    cols[2].metric("Rejected files", len(rejected))
    cols[3].metric("Duplicate groups", len(duplicates))
    if report.get("error"):
        st.error(report["error"])
    for warning in report.get("warnings") or []:
        st.warning(md(warning))
    if rejected:
        with st.expander(f"Rejected files ({len(rejected)}) and why", icon=":material/block:"):
            st.dataframe(pd.DataFrame(rejected), hide_index=True, width="stretch")
    if duplicates:
        with st.expander(f"Duplicates ({len(duplicates)} groups)", icon=":material/content_copy:"):
            rows = [{"files": ", ".join(map(str, _group_files(g)))} for g in duplicates]
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _group_files(group: Any) -> list[Any]:
    if isinstance(group, Mapping):
        return list(group.get("files") or group.values())
    return list(group)


@st.cache_resource(show_spinner=False, max_entries=16)
def _summary(folder: str, stamp: float) -> tuple[pd.DataFrame, list[str], Any]:
    dataset = engine.load_dataset(PurePosixPath(folder).name)
    counts = engine.dataset_counts(dataset)
    return counts, dataset.problems(), class_counts_frame(counts)


def summary(dataset: Any) -> tuple[pd.DataFrame, list[str], Any]:
    """Per-class counts, what keeps it from training, and the counts chart of ``dataset``.

    Built once per version of the dataset (its folder and manifest time) and shared read-only
    between reruns and sessions: making the chart alone took ~40 ms per rerun.
    """
    folder = str(datasets_dir() / dataset.id)
    return _summary(folder, engine.manifest_stamp(dataset.id))


def overview(dataset: Any) -> None:
    """Class counts chart, totals and the imbalance warning of a dataset."""
    counts, problems, chart = summary(dataset)
    totals = {str(k): int(v) for k, v in counts["total"].items()} if "total" in counts else {}
    cols = st.columns([2, 3], gap="large")
    with cols[0]:
        m = st.columns(2)
        m[0].metric("Images", len(dataset.manifest))
        m[1].metric("Classes", len(dataset.classes))
        table = counts.rename(columns={"val": "validation"})
        st.dataframe(table, width="stretch")
    with cols[1]:
        st.bar_chart(
            chart,
            horizontal=True,
            color=SPLIT_COLORS,
            x_label="",
            y_label="images",
            height=max(180, 40 * len(chart) + 90),
        )
    message = imbalance_message(totals)
    if message:
        st.warning(message, icon=":material/balance:")
    for warning in _stored_warnings(dataset):
        st.warning(md(warning))
    for problem in problems:
        st.error(f"Not ready to train: {md(problem)}.", icon=":material/report:")


def _stored_warnings(dataset: Any) -> list[str]:
    report = dataset.meta.get("report") or {}
    stored = report.get("warnings") or [] if isinstance(report, Mapping) else []
    return [w for w in stored if "unbalanced" not in w.lower() and "imbalance" not in w.lower()]


@st.cache_data(show_spinner=False, max_entries=2000)
def thumbnail(path: str, stamp: float, side: int = 160) -> bytes:
    """A small JPEG of the image at ``path`` (cached by path and modification time)."""
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (side, side))
        image = image.convert("RGB")
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def browser(dataset: Any) -> tuple[list[str], str]:
    """A paged thumbnail grid of one class with a checkbox per image.

    Returns:
        (manifest ``image`` values of the ticked images, the class shown).
    """
    top = st.columns([2, 1, 1], vertical_alignment="bottom")
    label = top[0].selectbox("Class", dataset.classes, key="data_browse_class")
    frame = dataset.manifest[dataset.manifest["label"] == label]
    pages = max(1, -(-len(frame) // PAGE_SIZE))
    page = top[1].number_input(f"Page (of {pages})", 1, pages, 1, key=f"data_page_{label}")
    top[2].caption(f"{len(frame)} images in {md(repr(label))}")
    shown = frame.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    selected = []
    grid = st.columns(GRID_COLUMNS)
    for index, row in enumerate(shown.itertuples(index=False)):
        path = dataset.dir / row.image
        with grid[index % GRID_COLUMNS]:
            try:
                st.image(thumbnail(str(path), path.stat().st_mtime), width="stretch")
            except OSError as error:
                st.caption(f"cannot show: {error}")
            caption = f"{PurePosixPath(str(row.original_name)).stem[:16]} · {row.split}"
            if st.checkbox(caption, key=f"data_sel_{row.image}"):
                selected.append(row.image)
    return selected, label


def clear_selection(images: Iterable[str]) -> None:
    """Unticks the browser's checkboxes of ``images``."""
    for image in images:
        st.session_state.pop(f"data_sel_{image}", None)
