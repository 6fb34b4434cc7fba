"""Quick mode's three panels, like Teachable Machine: class cards, Train, and the live preview.

The cards' class names live in the session (``quick_cards``); their pictures are draft pictures
on disk (:mod:`core.data.drafts`), so a refresh keeps them. Train hands them to
:mod:`core.training.quick`, which makes (or adds to) Quick mode's dataset and starts a fast run;
the dataset and run also become the current ones of the full pages (``dataset_id``,
``run_id``), so "Open in Data" and "Open in Train" show the same things.

Session keys (prefix ``quick_``): ``quick_cards`` (class names, one per card),
``quick_dataset_id`` and ``quick_run_id`` (what the last Train made), ``quick_uploads``
(a counter that empties the upload boxes once their pictures are kept), and what the last
Train left out: ``quick_rejected`` (unreadable files) and ``quick_identical`` (exact copies).
"""

from __future__ import annotations

import streamlit as st

from core.data import capture, drafts
from core.training import quick
from ui import engine, run_view
from ui.data_view import IMAGE_TYPES, thumbnail
from ui.hold_record import hold_to_record
from ui.labels import PHASE_NAMES, STATE_BADGES
from ui.state import set_dataset, set_run
from ui.text import md

THUMBNAILS = 6
FIRST_CARDS = 2
PROGRESS_EVERY_S = 1.0


def _next_name(names: list[str]) -> str:
    number = len(names) + 1
    while f"Class {number}" in names:
        number += 1
    return f"Class {number}"


def init_quick() -> None:
    """Fills Quick mode's session keys once: cards from the pictures kept so far.

    A new session (a refresh) finds its way back: a run of Quick mode in the URL (``?run=``)
    brings back its dataset, whose classes become cards again, and so do draft pictures.
    """
    if "quick_cards" in st.session_state:
        return
    run_id, dataset_id = None, None
    shared = st.session_state.get("run_id")
    if shared:
        from core.runs.store import read_config

        try:
            config = read_config(engine.run_folder(shared))
        except (FileNotFoundError, ValueError):
            config = None
        if config is not None and config.name == quick.QUICK_NAME:
            run_id, dataset_id = shared, config.dataset
    dataset = quick.existing_dataset(dataset_id)
    names = list(dataset.classes) if dataset is not None else []
    names += [label for label in drafts.list_shots() if label not in names]
    while len(names) < FIRST_CARDS:
        names.append(_next_name(names))
    st.session_state["quick_cards"] = names
    st.session_state["quick_dataset_id"] = dataset.id if dataset is not None else None
    st.session_state["quick_run_id"] = run_id
    st.session_state["quick_uploads"] = 0


def cards() -> list[str]:
    """The cards' class names, in order."""
    return st.session_state["quick_cards"]


def _rename(index: int) -> None:
    """Callback of a card's name box: renames its pictures, or puts the old name back."""
    names = cards()
    key = f"quick_name_{index}"
    old, typed = names[index], st.session_state[key]
    try:
        names[index] = quick.rename_card(
            old,
            typed,
            [n for i, n in enumerate(names) if i != index],
            st.session_state["quick_dataset_id"],
        )
    except ValueError as error:
        st.session_state["quick_name_error"] = (index, str(error))
        st.session_state[key] = old
        return
    st.session_state.pop("quick_name_error", None)
    st.session_state[key] = names[index]


def _add_card() -> None:
    cards().append(_next_name(cards()))


def _thumbnails(label: str) -> list[str]:
    """Paths of the newest pictures of a class: drafts first, then the dataset's."""
    paths = [str(p) for p in drafts.list_shots().get(label, [])]
    dataset = quick.existing_dataset(st.session_state["quick_dataset_id"])
    if len(paths) < THUMBNAILS and dataset is not None and label in dataset.classes:
        frame = dataset.manifest[dataset.manifest["label"] == label]
        paths = [str(dataset.dir / image) for image in frame["image"]] + paths
    return paths[-THUMBNAILS:]


def class_card(index: int, count: int, stored: dict[str, int]) -> None:
    """One class card: its name, the recorder, an upload box, the count and thumbnails."""
    label = cards()[index]
    key = f"quick_name_{index}"
    if key not in st.session_state:
        st.session_state[key] = label
    with st.container(border=True):
        head = st.columns([3, 2], vertical_alignment="center")
        head[0].text_input(
            f"Name of class {index + 1}",
            key=key,
            on_change=_rename,
            args=(index,),
            max_chars=60,
            help="Type a new name and press Enter. The pictures keep their class.",
        )
        head[1].markdown(f"**{count}** picture(s)")
        problem = st.session_state.get("quick_name_error")
        if problem and problem[0] == index:
            st.warning(md(problem[1]), icon=":material/edit_off:")
        hold_to_record(label, key=f"quick_rec_{index}", stored=stored)
        with st.expander("Upload pictures instead", icon=":material/upload:"):
            uploads = st.file_uploader(
                f"Pictures of {label}",
                type=IMAGE_TYPES,
                accept_multiple_files=True,
                key=f"quick_up_{index}_{st.session_state['quick_uploads']}",
            )
            if uploads:
                kept = capture.keep_files(label, [(f.name, f.getvalue()) for f in uploads])
                st.session_state["quick_refused"] = kept.refused
                st.session_state["quick_uploads"] += 1  # a new, empty upload box
                st.rerun()
        shown = _thumbnails(label)
        if shown:
            grid = st.columns(THUMBNAILS)
            for column, path in zip(grid, shown, strict=False):
                try:
                    column.image(thumbnail(path, _stamp(path)), width="stretch")
                except OSError as error:
                    column.caption(f"cannot show: {error}")


def _stamp(path: str) -> float:
    from pathlib import Path

    return Path(path).stat().st_mtime


def cards_panel() -> dict[str, int]:
    """Column (a): every card and "Add a class". Returns the pictures per class."""
    st.subheader("1. Classes")
    st.caption(
        "Give each class a name, then hold its record button while you show it to the camera "
        "(about ten pictures a second)."
    )
    dataset = quick.existing_dataset(st.session_state["quick_dataset_id"])
    stored = dataset.manifest["label"].value_counts().to_dict() if dataset is not None else {}
    counts = quick.card_counts(cards(), st.session_state["quick_dataset_id"])
    for index, label in enumerate(cards()):
        class_card(index, counts[label], {k: int(v) for k, v in stored.items()})
    for message in st.session_state.get("quick_refused", []):
        st.warning(md(message))
    st.button(
        "Add a class", icon=":material/add:", on_click=_add_card, key="quick_add", width="stretch"
    )
    return counts


def readiness(counts: dict[str, int]) -> tuple[list[str], list[str]]:
    """What stops Train, and what Train leaves out, in everyday words.

    Args:
        counts: Pictures per card.

    Returns:
        ``(blocking messages, notes)``; Train can start when the first list is empty.
    """
    blocking, notes = [], []
    ready = [label for label, count in counts.items() if count >= quick.MIN_PICTURES]
    short = [(label, count) for label, count in counts.items() if 0 < count < quick.MIN_PICTURES]
    empty = [label for label, count in counts.items() if count == 0]
    for label, count in short:
        blocking.append(
            f"“{md(label)}” has {count} picture(s): it needs at least {quick.MIN_PICTURES}. "
            "Hold its record button a little longer."
        )
    if len(ready) + len(short) < 2:
        have = "no class has" if not ready and not short else "only one class has"
        blocking.append(
            f"The model learns by telling classes apart, so it needs pictures of at least two "
            f"classes; {have} pictures yet. Hold the record button of "
            f"{'two classes' if not ready and not short else 'another class'}, or upload "
            "pictures."
        )
    elif empty:
        names = ", ".join(f"“{md(label)}”" for label in empty)
        notes.append(f"{names} has no pictures yet and is left out.")
    return blocking, notes


def _train(counts: dict[str, int]) -> None:
    """Makes or updates the dataset from the cards and starts the run."""
    labels = [label for label, count in counts.items() if count]
    bar = st.progress(0.0, text="Reading your pictures…")

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=message or f"{done} of {total}")

    try:
        update = quick.update_dataset(
            labels, st.session_state["quick_dataset_id"], progress=progress
        )
    except ValueError as error:  # DatasetError: refused, with the reason
        bar.empty()
        st.session_state["quick_train_error"] = str(error)
        return
    run_id = quick.start_quick_run(update.dataset_id)
    st.session_state.pop("quick_train_error", None)
    st.session_state["quick_rejected"] = update.rejected
    st.session_state["quick_identical"] = update.identical
    st.session_state["quick_dataset_id"] = update.dataset_id
    st.session_state["quick_run_id"] = run_id
    set_dataset(update.dataset_id)
    set_run(run_id)
    st.rerun()


@st.fragment
def train_panel(counts: dict[str, int]) -> None:
    """Column (b): the Train button, why it is off, the progress, links to the full pages.

    A fragment: pressing Train reruns only this column, so the progress shows at once (the
    class cards did not change; any change to them reruns the whole page and this with it).
    """
    st.subheader("2. Train")
    run_id = st.session_state["quick_run_id"]
    status = engine.status_or_error(run_id)[0] if run_id else None
    active = bool(status and status.active)
    blocking, notes = readiness(counts)
    clicked = st.button(
        "Train",
        type="primary",
        icon=":material/model_training:",
        key="quick_train",
        disabled=bool(blocking) or active,
        width="stretch",
        help="Makes a dataset from your classes and trains EfficientNet-Lite0 (offline, "
        "head only): usually under a minute.",
    )
    for message in blocking:
        st.info(message, icon=":material/lightbulb:")
    for message in notes:
        st.caption(message)
    if st.session_state.get("quick_train_error"):
        st.error(md(st.session_state["quick_train_error"]))
    rejected = st.session_state.get("quick_rejected") or []
    if rejected:
        st.caption(f"{len(rejected)} picture(s) could not be read and were left out.")
    identical = st.session_state.get("quick_identical") or 0
    if identical:
        st.caption(
            f"{identical} picture(s) were exact copies of another one (the camera saw the very "
            "same frame) and were kept once, so the cards count fewer."
        )
    if clicked:
        _train(counts)
    if run_id:
        if active:
            st.fragment(run_every=PROGRESS_EVERY_S)(_progress)(run_id, True)
        else:
            _progress(run_id, False)
    if st.session_state["quick_dataset_id"]:
        st.page_link("pages/data.py", label="Open in Data", icon=":material/photo_library:")
    if run_id:
        st.page_link("pages/train.py", label="Open in Train", icon=":material/model_training:")
        if status is not None and status.state == "completed":
            st.page_link(
                "pages/evaluate.py", label="Open in Evaluate", icon=":material/fact_check:"
            )


def _progress(run_id: str, was_active: bool) -> None:
    """The run's state, epochs and accuracy (polled while it trains)."""
    from core.runs.metrics import MetricsReader

    status, error = engine.status_or_error(run_id)
    if status is None:
        st.warning(f"The run cannot be shown: {md(error)}")
        return
    if was_active and not status.active:
        st.rerun(scope="app")  # finished: the preview can start
    # The run is the current one of the full pages too (the user may have switched).
    if st.session_state.get("run_id") in (None, run_id):
        st.session_state["run_id"] = run_id
    events = MetricsReader(engine.run_folder(run_id)).all()
    phase = PHASE_NAMES.get(status.phase, status.phase)
    badge = STATE_BADGES.get(status.state, status.state)
    st.markdown(f"{badge} &nbsp; {phase if status.state == 'running' else ''}")
    # Auto epochs are an upper bound: the head stops once it stops improving.
    bound = "at most " if status.active and config_patience(run_id) else ""
    st.progress(status.progress, text=f"Epoch {status.epoch} of {bound}{status.total_epochs}")
    best = run_view.best_val_accuracy(events)
    metrics = st.columns(2)
    metrics[0].metric("Epoch", f"{status.epoch} / {status.total_epochs}")
    metrics[1].metric(
        "Accuracy",
        f"{best:.0%}" if best is not None else "–",
        help="On the pictures kept aside to check the model (validation).",
    )
    if status.state == "completed":
        st.success("Trained. Try it in the preview.", icon=":material/check_circle:")
    elif status.state == "queued":
        st.caption(md(status.message or "Waiting for another training to end."))
    elif status.state == "failed":
        st.error(md(status.message or "The run failed."))
        st.markdown("\n".join(f"- {tip}" for tip in run_view.failure_advice(status.message)))
    elif status.state in ("interrupted", "cancelled"):
        st.warning(md(status.message or f"The run was {status.state}: press Train again."))


def config_patience(run_id: str) -> int:
    """The run's early-stopping patience (0 when it cannot be read or is off)."""
    from core.runs.store import read_config

    try:
        return read_config(engine.run_folder(run_id)).effective_patience
    except (FileNotFoundError, ValueError):
        return 0


def preview_panel() -> None:
    """Column (c): the live camera prediction of the finished run, in the browser."""
    st.subheader("3. Preview")
    run_id = st.session_state["quick_run_id"]
    status = engine.status_or_error(run_id)[0] if run_id else None
    if status is None or status.state != "completed":
        st.caption(
            "Once the model is trained, show things to your camera here: the model runs in "
            "your browser and says which class it sees."
        )
        return
    from ui.live_predict import live_prediction

    live_prediction(engine.run_folder(run_id), top=min(3, len(cards())), key="quick_live")
