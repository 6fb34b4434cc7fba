"""Quick mode under AppTest, through the real router and engine (a real worker trains).

Pictures are put in as draft pictures (what the hold-to-record component stores) or through
a card's upload box; Train makes the dataset with the real ingest and starts the real worker
with Quick mode's defaults (offline EfficientNet-Lite0, head only).
"""

from __future__ import annotations

import io
import re
import time

from PIL import Image

from core.data import drafts
from tests.app.test_pages import app_on, no_exception

RUN_SECONDS = 300


def _jpeg(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    picture = Image.new("RGB", (size, size), colour)
    picture.putpixel((colour[0] % size, colour[1] % size), (255 - colour[0], 0, 0))
    picture.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _shots(label: str, count: int, base: int) -> None:
    for i in range(count):
        drafts.add_shot(label, _jpeg((base + 7 * i, 40 + 11 * i, 200 - 9 * i)))


def _names(at) -> list[str]:
    return [box.value for box in at.text_input if (box.key or "").startswith("quick_name_")]


def _train_button(at):
    return at.button(key="quick_train")


def _texts(elements) -> str:
    return " ".join(element.value for element in elements)


def test_quick_mode_renders_with_two_cards_and_train_explained():
    at = app_on("quick")
    no_exception(at)
    assert at.title[0].value == "Quick mode"
    assert _names(at) == ["Class 1", "Class 2"]
    assert [s.value for s in at.subheader] == ["1. Classes", "2. Train", "3. Preview"]
    assert _train_button(at).disabled
    assert "at least two classes" in _texts(at.info)


def test_cards_are_added_and_renamed_with_their_pictures():
    _shots("Class 1", 2, 10)
    at = app_on("quick")
    at.button(key="quick_add").click()
    at.run()
    no_exception(at)
    assert _names(at) == ["Class 1", "Class 2", "Class 3"]
    at.text_input(key="quick_name_0").set_value("Apple").run()
    no_exception(at)
    assert _names(at) == ["Apple", "Class 2", "Class 3"]
    assert len(drafts.list_shots()["Apple"]) == 2 and "Class 1" not in drafts.list_shots()
    # A name another card has is refused, and the box shows the old name again.
    at.text_input(key="quick_name_2").set_value("Apple").run()
    assert _names(at) == ["Apple", "Class 2", "Class 3"]
    assert "already called" in _texts(at.warning)


def test_train_is_off_and_explained_with_one_class_or_too_few_pictures():
    _shots("Class 1", 5, 10)
    at = app_on("quick")
    no_exception(at)
    assert _train_button(at).disabled
    assert "only one class has pictures" in _texts(at.info)
    assert any("**5** picture(s)" in m.value for m in at.markdown)
    _shots("Class 2", 1, 90)
    at.run()
    assert _train_button(at).disabled
    assert "“Class 2” has 1 picture(s): it needs at least 3" in _texts(at.info)


def test_upload_box_keeps_pictures_in_its_class():
    at = app_on("quick")
    uploader = at.file_uploader[0]
    uploader.set_value(
        [("a.jpg", _jpeg((10, 20, 30)), "image/jpeg"), ("b.jpg", b"not a picture", "image/jpeg")]
    )
    at.run()
    no_exception(at)
    assert len(drafts.list_shots()["Class 1"]) == 1
    assert "“b.jpg” was not kept" in _texts(at.warning)
    assert any("**1** picture(s)" in m.value for m in at.markdown)


def _wait(run_id: str) -> str:
    from core.runs.store import read_status, run_dir

    deadline = time.monotonic() + RUN_SECONDS
    status = read_status(run_dir(run_id))
    while status.active and time.monotonic() < deadline:
        time.sleep(1)
        status = read_status(run_dir(run_id))
    return status.state


def test_train_creates_the_dataset_and_runs_the_fast_defaults():
    from core.data.store import load_dataset
    from core.runs.store import read_config, read_status, run_dir

    _shots("Class 1", 6, 10)
    _shots("Class 2", 6, 120)
    _shots("Class 2", 2, 120)  # the camera saw the very same frames again: kept once
    at = app_on("quick")
    assert any("**8** picture(s)" in m.value for m in at.markdown)
    assert not _train_button(at).disabled
    _train_button(at).click()
    at.run()
    no_exception(at)
    dataset_id, run_id = at.session_state["quick_dataset_id"], at.session_state["quick_run_id"]
    try:
        # The full pages see the same dataset and run.
        assert at.session_state["dataset_id"] == dataset_id
        assert at.session_state["run_id"] == run_id
        dataset = load_dataset(dataset_id)
        assert dataset.classes == ["Class 1", "Class 2"] and len(dataset.manifest) == 12
        assert drafts.list_shots() == {}  # the pictures now live in the dataset
        assert _names(at) == ["Class 1", "Class 2"]
        assert any("**6** picture(s)" in m.value for m in at.markdown)
        assert "2 picture(s) were exact copies of another one" in _texts(at.caption)
        config = read_config(run_dir(run_id))
        assert config.name == "Quick mode" and config.dataset == dataset_id
        assert config.model.backbone == "efficientnet_lite0"
        assert config.model.trainable == "head" and config.model.weights == "imagenet"
        assert config.epochs is None  # auto
        assert at.progress, "no training progress shown"
        links = {link.proto.label for link in at.get("page_link")}
        assert {"Open in Data", "Open in Train"} <= links
        shown = [bar.proto.text for bar in at.progress]
        assert any(re.fullmatch(r"Epoch \d+ of at most \d+", text) for text in shown), shown
        at.switch_page("pages/data.py")
        at.run()
        no_exception(at)
        assert at.selectbox(key=f"data_pick_{dataset_id}").value == dataset_id
        assert _wait(run_id) == "completed", read_status(run_dir(run_id)).message
    finally:
        from core.training.jobs import cancel_run

        if read_status(run_dir(run_id)).active:
            cancel_run(run_id, wait=True)
