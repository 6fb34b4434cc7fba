"""Traps a new user fell into, each shown under AppTest with the real engine.

Webcam pictures kept across a refresh, the sidebar showing the current choice, runs that can
only fail refused before Start, Grad-CAM following the clicked cell with original names,
the queue, and warnings on settings that are unlikely to be meant.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.app.test_pages import app_on, no_exception


def _jpeg(seed: int) -> bytes:
    import io

    pixels = np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def _take(at, label: str | None, seed: int, new: str | None = None) -> None:
    if new is not None:
        at.selectbox(key="data_cam_class").set_value("+ New class…")
        at.run()
        at.text_input(key="data_cam_new").input(new)
    elif label is not None:
        at.selectbox(key="data_cam_class").set_value(label)
    at.segmented_control(key="data_cam_mode").set_value("One picture")
    at.run()
    at.camera_input(key="data_cam").upload("photo.jpg", _jpeg(seed))
    at.run()
    at.button(key="data_cam_go").click()
    at.run()
    no_exception(at)


def test_webcam_shots_are_kept_across_a_refresh_and_need_a_second_class():
    at = app_on("data")
    for seed in range(3):
        _take(at, "class 1", seed)
    refreshed = app_on("data")  # a new session: what a browser refresh gets
    no_exception(refreshed)
    kept = " ".join(m.value for m in refreshed.markdown)
    assert "class 1" in kept and "3 picture(s)" in kept
    assert refreshed.button(key="data_cam_create").disabled
    assert any("Add a second class" in i.value for i in refreshed.info)
    assert refreshed.button(key="data_cls_go").disabled  # class by class refuses one class too
    assert any("class 1 (3)" in c.value for c in refreshed.caption)

    _take(refreshed, None, 10, new="class 2")
    _take(refreshed, "class 2", 11)
    assert refreshed.button(key="data_cam_create").disabled
    assert any("at least 3 pictures" in i.value and "class 2" in i.value for i in refreshed.info)
    _take(refreshed, "class 2", 12)
    assert not refreshed.button(key="data_cam_create").disabled
    refreshed.button(key="data_cam_create").click()
    refreshed.run()
    no_exception(refreshed)
    from core.data.drafts import list_shots
    from core.data.store import load_dataset

    assert refreshed.session_state["dataset_id"], refreshed.session_state["data_report"]
    dataset = load_dataset(refreshed.session_state["dataset_id"])
    assert dataset.classes == ["class 1", "class 2"] and len(dataset.manifest) == 6
    assert list_shots() == {}  # now in the dataset: the kept copies are gone


def test_webcam_shots_can_be_deleted():
    at = app_on("data")
    _take(at, "class 1", 1)
    from core.data.drafts import list_shots

    folder = list_shots()["class 1"][0].parent.name
    at.button(key=f"data_cam_del_{folder}").click()
    at.run()
    no_exception(at)
    assert list_shots() == {}
    assert any("No pictures yet" in c.value for c in at.caption)


def test_train_refuses_a_run_that_can_only_fail_and_offers_what_works(ready):
    from core.config import ModelConfig
    from core.models import weights

    weights.reset_probe_cache()
    doomed = ModelConfig(backbone="mobilenet_v2", weights="imagenet", image_size=224)
    at = app_on("train", dataset_id=ready["dataset_id"], model_config=doomed)
    no_exception(at)
    warning = " ".join(w.value for w in at.warning)
    assert "MobileNetV2" in warning and "cannot be downloaded" in warning
    assert at.form_submit_button[0].disabled  # a browser cannot press it
    at.button(key="train_use_offline").click()
    at.run()
    no_exception(at)
    assert at.session_state["model_config"].backbone == "efficientnet_lite0"
    assert not at.form_submit_button[0].disabled
    assert not any("cannot be downloaded" in w.value for w in at.warning)


def test_train_offers_random_weights_instead(ready):
    from core.config import ModelConfig

    doomed = ModelConfig(backbone="mobilenet_v2", weights="imagenet", image_size=224)
    at = app_on("train", dataset_id=ready["dataset_id"], model_config=doomed)
    at.button(key="train_use_random").click()
    at.run()
    no_exception(at)
    assert at.session_state["model_config"].weights == "none"
    assert at.session_state["model_config"].backbone == "mobilenet_v2"


def test_resume_is_not_offered_when_it_would_fail_the_same_way(ready, workspace):
    import json

    folder = workspace / "runs" / ready["run_id"]
    config = json.loads((folder / "config.json").read_text())
    config["model"].update(backbone="mobilenet_v2", weights="imagenet", image_size=224)
    (folder / "config.json").write_text(json.dumps(config))
    status = json.loads((folder / "status.json").read_text())
    status.update(state="failed", message="WeightsUnavailableError: Name or service not known")
    (folder / "status.json").write_text(json.dumps(status))
    at = app_on("train", dataset_id=ready["dataset_id"], run_id=ready["run_id"])
    no_exception(at)
    assert not [b for b in at.button if b.key == "train_resume"]
    assert any("Resume is not offered" in c.value for c in at.caption)
    tips = " ".join(m.value for m in at.markdown if "What to try" in m.value)
    assert "offline backbone" in tips and "Data page" not in tips


def _gradcam_label(at) -> str:
    box = at.selectbox(key="evaluate_gradcam_image")
    return box.format_func(box.value)


def test_gradcam_follows_the_chosen_cell_and_gallery_clicks_with_original_names(ready):
    at = app_on("evaluate", dataset_id=ready["dataset_id"], run_id=ready["run_id"])
    no_exception(at)
    labels = list(at.selectbox(key="evaluate_true").options)
    first = (at.selectbox(key="evaluate_true").value, at.selectbox(key="evaluate_pred").value)
    assert f"({first[0]} → {first[1]})" in _gradcam_label(at)
    # Original names (as uploaded), never the stored hash names.
    assert _gradcam_label(at).split(" (")[0].endswith(".jpg")
    assert all(
        len(name.split(".")[0]) < 32 for name in at.selectbox(key="evaluate_gradcam_image").options
    )
    moved = False
    for true in labels:
        for pred in labels:
            if (true, pred) == first:
                continue
            at.selectbox(key="evaluate_true").set_value(true)
            at.selectbox(key="evaluate_pred").set_value(pred)
            at.run()
            no_exception(at)
            if any(b.key and b.key.startswith("evaluate_cell_why_") for b in at.button):
                assert f"({true} → {pred})" in _gradcam_label(at)
                moved = True
                break
        if moved:
            break
    assert moved, "no other cell with images"
    loss_buttons = [b for b in at.button if b.key and b.key.startswith("evaluate_losses_why_")]
    assert loss_buttons
    target = loss_buttons[-1]
    target.click()
    at.run()
    no_exception(at)
    chosen = at.selectbox(key="evaluate_gradcam_image").value
    from core.data.store import load_dataset

    manifest = load_dataset(ready["dataset_id"]).manifest
    original = dict(zip(manifest["image"], manifest["original_name"], strict=True))[chosen]
    assert _gradcam_label(at).startswith(str(original))
    assert any(str(original) in caption for image in at.image for caption in image.captions)


def test_extreme_settings_are_warned_about_not_blocked(ready, workspace):
    import json

    folder = workspace / "runs" / ready["run_id"]
    config = json.loads((folder / "config.json").read_text())
    config.update(batch_size=128, epochs=500)
    (folder / "config.json").write_text(json.dumps(config))
    at = app_on("train", dataset_id=ready["dataset_id"], run_id=ready["run_id"])
    no_exception(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "Batch size 128 is more than the 18 training images" in warnings
    assert "500 epochs" in warnings
    assert not at.form_submit_button[0].disabled  # a warning, not a block


def test_ordinary_settings_get_no_warning():
    from core.config import TrainConfig
    from ui.run_view import setting_warnings

    assert setting_warnings(TrainConfig(dataset="ds1", batch_size=16, epochs=10), 200) == []
    lr = setting_warnings(TrainConfig(dataset="ds1", learning_rate=0.01, fine_tune_epochs=0), 200)
    assert lr == []  # head only: a high learning rate is fine
    # The defaults (auto: a head-only run stops early, capped at many epochs) get no warning.
    assert setting_warnings(TrainConfig(dataset="ds1"), 200) == []


def _name_field(at):
    return next(t for t in at.text_input if t.label == "Name this run (optional)")


def test_the_run_name_does_not_carry_over_to_the_next_run(ready):
    from core.config import ModelConfig
    from core.runs.store import read_config, run_dir
    from core.training.jobs import cancel_run

    model = ModelConfig(backbone="mobilenet_v3_small", weights="none", image_size=32)
    at = app_on("train", dataset_id=ready["dataset_id"], model_config=model)
    at.number_input(key="train_epochs").set_value(1)
    _name_field(at).input("first try")
    at.form_submit_button[0].click()
    at.run()
    no_exception(at)
    run_id = at.session_state["run_id"]
    try:
        assert read_config(run_dir(run_id)).name == "first try"
        assert _name_field(at).value == ""
        assert at.session_state["train_config"]["epochs"] == 1  # the settings do carry over
    finally:
        cancel_run(run_id, wait=True)


def _wait_for(predicate, seconds: float = 120.0):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not reached within {seconds} s")


def _states(run_ids):
    from core.runs.store import read_status, run_dir

    return {run_id: read_status(run_dir(run_id)).state for run_id in run_ids}


def test_the_queue_shows_both_runs_with_their_controls_and_cancels_the_waiting_one(ready):
    from core.config import ModelConfig
    from core.training.jobs import cancel_run, runs_in_progress

    model = ModelConfig(backbone="mobilenet_v3_small", weights="none", image_size=32)
    at = app_on("train", dataset_id=ready["dataset_id"], model_config=model)
    started = []
    try:
        for name in ("first run", "second run"):
            at.number_input(key="train_epochs").set_value(200)
            _name_field(at).input(name)
            at.form_submit_button[0].click()
            at.run()
            no_exception(at)
            started.append(at.session_state["run_id"])
        first, second = started
        # One trains, the other waits in the queue (whichever worker got the device first).
        _wait_for(lambda: sorted(_states(started).values()) == ["queued", "running"])
        _wait_for(lambda: all(r.place or r.state == "running" for r in runs_in_progress()))
        at.run()
        no_exception(at)
        text = " ".join(m.value for m in at.markdown)
        assert "Runs in progress" in text and "first run" in text and "second run" in text
        assert "place 1 of 1 in the queue" in text
        for run_id in started:
            assert at.button(key=f"train_queue_show_{run_id}")
            assert at.button(key=f"train_queue_cancel_{run_id}")
        assert at.button(key=f"train_queue_show_{second}").disabled  # shown already
        # Show the other run: it becomes the run of the page.
        at.button(key=f"train_queue_show_{first}").click()
        at.run()
        no_exception(at)
        assert at.session_state["run_id"] == first
        waiting = next(r for r, s in _states(started).items() if s == "queued")
        training = next(r for r in started if r != waiting)
        at.button(key=f"train_queue_cancel_{waiting}").click()
        at.run()
        no_exception(at)
        _wait_for(lambda: _states([waiting])[waiting] == "cancelled", 60)
        assert _states([training])[training] == "running"
        at.run()
        no_exception(at)
        assert not [b for b in at.button if b.key == f"train_queue_cancel_{waiting}"]
        assert at.button(key=f"train_queue_cancel_{training}")
    finally:
        for run_id in started:
            cancel_run(run_id, wait=True)


def test_a_run_without_epochs_shows_one_placeholder_not_empty_chart_frames(ready):
    from core.config import ModelConfig, TrainConfig
    from core.runs.store import create_run

    config = TrainConfig(
        dataset=ready["dataset_id"],
        model=ModelConfig(backbone="mobilenet_v3_small", weights="none", image_size=32),
        epochs=1,
    )
    run_id = create_run(config).name  # queued, its worker not started yet
    at = app_on("train", dataset_id=ready["dataset_id"], run_id=run_id)
    no_exception(at)
    assert at.get("plotly_chart") == [] and at.get("vega_lite_chart") == []
    placeholders = [i for i in at.info if "Waiting for the first epoch" in i.value]
    assert len(placeholders) == 1


def test_fine_tune_fields_are_off_until_fine_tuning_is_on(ready):
    at = app_on("train", dataset_id=ready["dataset_id"])
    no_exception(at)
    fields = ("train_ft_epochs", "train_ft_what", "train_ft_mult")
    getters = (at.number_input, at.selectbox, at.select_slider)
    assert all(get(key=key).disabled for get, key in zip(getters, fields, strict=True))
    at.toggle(key="train_ft").set_value(True)
    at.run()
    no_exception(at)
    getters = (at.number_input, at.selectbox, at.select_slider)
    assert not any(get(key=key).disabled for get, key in zip(getters, fields, strict=True))


def test_runs_comparison_uses_plain_names_and_no_unused_fine_tune_settings(ready, workspace):
    import json
    import shutil

    source = workspace / "runs" / ready["run_id"]
    twin = workspace / "runs" / (ready["run_id"] + "-b")
    shutil.copytree(source, twin)
    config = json.loads((twin / "config.json").read_text())
    config["model"]["augment"]["contrast"] = 0.2
    config["fine_tune_lr_mult"] = 0.3  # unused: neither run has a fine-tune phase
    (twin / "config.json").write_text(json.dumps(config))
    status = json.loads((twin / "status.json").read_text())
    status["run_id"] = twin.name
    (twin / "status.json").write_text(json.dumps(status))
    at = app_on("runs")
    at.session_state["runs_table"] = {"selection": {"rows": [0, 1], "columns": []}}
    at.run()
    no_exception(at)
    differences = at.dataframe[1].value
    assert list(differences.index) == ["Random contrast"]
    every = at.dataframe[-1].value
    assert "Random contrast" in every.columns
    assert not [c for c in every.columns if "." in c or "_" in c]
    assert "Fine-tune: learning-rate factor" not in every.columns


def test_finished_runs_record_their_epoch_times_for_the_estimates(ready, workspace):
    from core.runs.timings import run_timings

    (found,) = run_timings(workspace / "runs" / ready["run_id"])
    assert found.trainable == "head" and found.image_size == 32
    assert len(found.epoch_seconds) == 2 and all(s > 0 for s in found.epoch_seconds)
    assert found.train_images == 18
