"""Every page under Streamlit's AppTest, through the real router (app.py) and engine.

A tiny dataset (48 px shapes) and one finished 2-epoch run (random weights, 32 px) are made
once per session with the real ingest and training engine, then copied into each test's
fresh workspace.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.config import ModelConfig
from core.data.sample import write_class_folders

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
OWN_PAGES = ["home", "quick", "data", "model", "train", "runs"]
EVAL_PAGES = [
    name for name in ("evaluate", "predict", "export") if (ROOT / "pages" / f"{name}.py").exists()
]
TIMEOUT = 180


def app_on(page: str, **state) -> AppTest:
    """The app opened on ``pages/<page>.py`` with ``state`` in the session, run once."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()  # the router registers the pages on its first run
    if page != "home":
        at.switch_page(f"pages/{page}.py")
        at.run()
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def chart_data(chart) -> pd.DataFrame:
    """The data a ``st.vega_lite_chart`` element was given."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    return convert_arrow_bytes_to_pandas_df(chart.proto.data.data)


def plotly_figures(at: AppTest) -> list[dict]:
    return [json.loads(element.proto.spec) for element in at.get("plotly_chart")]


@pytest.mark.parametrize("page", OWN_PAGES + EVAL_PAGES)
def test_page_renders_on_a_fresh_session(page):
    at = app_on(page)
    no_exception(at)
    assert at.title, f"{page} has no title"


@pytest.mark.parametrize("page", OWN_PAGES + EVAL_PAGES)
def test_page_renders_with_a_dataset_and_a_run(page, ready):
    at = app_on(page, dataset_id=ready["dataset_id"], run_id=ready["run_id"])
    no_exception(at)
    assert at.title, f"{page} has no title"


def test_sidebar_shows_dataset_model_and_run(ready):
    at = app_on("home", dataset_id=ready["dataset_id"], run_id=ready["run_id"])
    no_exception(at)
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "Tiny shapes" in sidebar and "completed" in sidebar
    assert "EfficientNet-Lite0" in sidebar


def test_home_loads_the_sample_dataset():
    at = app_on("home")
    at.button[0].click()
    at.run()
    no_exception(at)
    from core.data.store import load_dataset

    dataset = load_dataset(at.session_state["dataset_id"])
    assert len(dataset.manifest) == 240 and len(dataset.classes) == 4
    assert any("Sample dataset" in s.value for s in at.success)


def _zip_bytes(tmp_path: Path) -> bytes:
    images = write_class_folders(tmp_path / "src", {"apple": 9, "pear": 9}, size=(40, 40))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(images.rglob("*.jpg")):
            zf.write(path, f"fruit/{path.relative_to(images)}")
    return buffer.getvalue()


def test_data_page_ingests_an_uploaded_zip(tmp_path):
    at = app_on("data")
    at.file_uploader(key="data_zip").set_value(
        ("fruit.zip", _zip_bytes(tmp_path), "application/zip")
    )
    at.run()
    at.button(key="data_zip_go").click()
    at.run()
    no_exception(at)
    from core.data.store import load_dataset

    dataset = load_dataset(at.session_state["dataset_id"])
    assert dataset.classes == ["apple", "pear"] and len(dataset.manifest) == 18
    assert dataset.name == "fruit"
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1, "no class count chart"
    assert "validation" in charts[0].proto.spec  # one colour per split, named in the legend


def test_data_page_moves_and_deletes_images(ready):
    from core.data.store import load_dataset

    at = app_on("data", dataset_id=ready["dataset_id"])
    boxes = [box for box in at.checkbox if box.key and box.key.startswith("data_sel_")]
    boxes[0].check()
    boxes[1].check()
    at.run()
    at.selectbox(key="data_move_to").set_value("star")
    at.button(key="data_move").click()
    at.run()
    no_exception(at)
    counts = load_dataset(ready["dataset_id"]).counts()["total"]
    assert int(counts["circle"]) == 10 and int(counts["star"]) == 14
    box = next(b for b in at.checkbox if b.key and b.key.startswith("data_sel_"))
    box.check()
    at.run()
    at.button(key="data_delete").click()
    at.run()
    no_exception(at)
    assert len(load_dataset(ready["dataset_id"]).manifest) == 35


def test_train_page_shows_the_curves_of_a_finished_run(ready):
    at = app_on("train", dataset_id=ready["dataset_id"], run_id=ready["run_id"])
    no_exception(at)
    charts = at.get("vega_lite_chart")
    specs = [json.loads(chart.proto.spec) for chart in charts]
    titles = [spec["title"]["text"] for spec in specs]
    assert titles[:2] == ["Loss", "Accuracy"] and "Loss per batch" in titles
    # The curves' data: train and validation, one point per epoch of the 2-epoch run.
    loss = chart_data(charts[titles.index("Loss")])
    assert loss.groupby("series")["epoch"].apply(list).to_dict() == {
        "train": [1, 2],
        "validation": [1, 2],
    }
    assert at.get("plotly_chart") == []  # the Train page loads no Plotly bundle
    assert at.query_params["run"] == [ready["run_id"]] or at.query_params["run"] == ready["run_id"]
    assert any("completed" in m.value for m in at.markdown)
    # The run trained its head on cached features: the throughput says what it counts.
    speed = next(m for m in at.metric if m.label.startswith("Images / s"))
    assert speed.label == "Images / s (features)"
    assert speed.proto.help.startswith("Head-only training reuses precomputed features")


def test_train_page_starts_a_run(ready):
    from core.runs.store import read_config, run_dir

    model = ModelConfig(backbone="mobilenet_v3_small", weights="none", image_size=32)
    at = app_on("train", dataset_id=ready["dataset_id"], model_config=model)
    at.number_input(key="train_epochs").set_value(1)
    at.form_submit_button[0].click()
    at.run()
    no_exception(at)
    run_id = at.session_state["run_id"]
    assert run_id and run_id != ready["run_id"]
    config = read_config(run_dir(run_id))
    assert config.epochs == 1 and config.model == model
    from core.training.jobs import cancel_run

    cancel_run(run_id, grace_seconds=5)


def test_runs_page_compares_two_runs(ready, workspace):
    source = workspace / "runs" / ready["run_id"]
    twin = workspace / "runs" / (ready["run_id"] + "-b")
    shutil.copytree(source, twin)
    config = json.loads((twin / "config.json").read_text())
    config["learning_rate"] = 0.01
    (twin / "config.json").write_text(json.dumps(config))
    status = json.loads((twin / "status.json").read_text())
    status["run_id"] = twin.name
    (twin / "status.json").write_text(json.dumps(status))
    at = app_on("runs")
    no_exception(at)
    table = at.dataframe[0].value
    assert len(table) == 2 and set(table["state"]) == {"completed"}
    at.session_state["runs_table"] = {"selection": {"rows": [0, 1], "columns": []}}
    at.run()
    no_exception(at)
    titles = [fig["layout"]["title"]["text"] for fig in plotly_figures(at)]
    assert "Validation accuracy" in titles


def test_model_page_switches_policy_and_counts_parameters(ready):
    at = app_on("model", dataset_id=ready["dataset_id"])
    no_exception(at)
    assert os.environ["TRANSFER_STUDIO_HOME"]
    frozen_head = [m for m in at.metric if m.label == "Trainable parameters"][0].value
    at.session_state["model_policy"] = "all"
    at.run()
    no_exception(at)
    everything = [m for m in at.metric if m.label == "Trainable parameters"][0].value
    assert int(everything.replace(",", "")) > int(frozen_head.replace(",", ""))
    assert at.session_state["model_config"].trainable == "all"


def test_model_page_says_when_fast_fine_tuning_applies_and_why_not(ready, monkeypatch):
    at = app_on("model", dataset_id=ready["dataset_id"])
    at.session_state["model_policy"] = "top"
    at.run()
    no_exception(at)
    captions = " ".join(c.value for c in at.caption)
    assert "**Fast fine-tuning**" in captions and "MB on disk" in captions
    assert at.session_state["model_config"].trainable.startswith("top:")
    monkeypatch.setenv("TRANSFER_STUDIO_ACTIVATION_CACHE_MB", "0")
    at.run()
    captions = " ".join(c.value for c in at.caption)
    assert "No fast fine-tuning" in captions and "more than the 0.0 MB allowed" in captions


def test_model_page_offers_alternatives_when_weights_cannot_download(ready):
    from core.models import weights

    weights.reset_probe_cache()
    at = app_on("model", dataset_id=ready["dataset_id"])
    names = list(at.dataframe[0].value["pretrained model"])
    at.session_state["model_table_efficientnet_lite0_0"] = {
        "selection": {"rows": [names.index("MobileNetV2")], "columns": []}
    }
    at.run()
    no_exception(at)
    warning = " ".join(w.value for w in at.warning)
    assert "cannot be downloaded" in warning and "offline backbone" in warning
    at.button(key="model_use_offline").click()
    at.run()
    no_exception(at)
    assert at.session_state["model_config"].backbone == "efficientnet_lite0"


def test_model_page_previews_augmentation_on_the_users_images(ready):
    at = app_on("model", dataset_id=ready["dataset_id"])
    at.toggle(key="model_aug_on").set_value(True)
    at.run()
    no_exception(at)
    assert at.session_state["model_config"].augment.enabled
    captions = [caption for image in at.image for caption in image.captions]
    assert captions.count("original") == 3  # one sample per class, each with 3 random copies
    assert captions.count("random 3") == 3


def _jpeg(label: str, tmp_path: Path, count: int) -> list[tuple[str, bytes]]:
    seed = sum(map(ord, label))  # different pictures for every class
    folder = write_class_folders(tmp_path / label, {label: count}, size=(40, 40), seed=seed)
    return [(path.name, path.read_bytes()) for path in sorted(folder.rglob("*.jpg"))]


def test_data_page_ingests_a_folder_upload(tmp_path):
    at = app_on("data")
    files = [
        (f"holiday/{label}/{name}", data, "image/jpeg")
        for label in ("cats", "dogs")
        for name, data in _jpeg(label, tmp_path, 8)
    ]
    at.file_uploader(key="data_folder").set_value(files)
    at.run()
    at.text_input(key="data_folder_name").input("Pets")
    at.button(key="data_folder_go").click()
    at.run()
    no_exception(at)
    assert at.session_state["dataset_id"], at.session_state["data_report"]
    from core.data.store import load_dataset

    dataset = load_dataset(at.session_state["dataset_id"])
    assert dataset.name == "Pets" and dataset.classes == ["cats", "dogs"]


def test_data_page_builds_a_dataset_class_by_class(tmp_path):
    at = app_on("data")
    at.text_input(key="data_cls_0").input("red")
    at.text_input(key="data_cls_1").input("blue")
    at.run()
    at.file_uploader(key="data_cls_files_0").set_value(
        [(n, d, "image/jpeg") for n, d in _jpeg("red", tmp_path, 8)]
    )
    at.file_uploader(key="data_cls_files_1").set_value(
        [(n, d, "image/jpeg") for n, d in _jpeg("blue", tmp_path, 8)]
    )
    at.run()
    at.button(key="data_cls_go").click()
    at.run()
    no_exception(at)
    assert at.session_state["dataset_id"], at.session_state["data_report"]
    from core.data.store import load_dataset

    dataset = load_dataset(at.session_state["dataset_id"])
    assert dataset.classes == ["blue", "red"] and len(dataset.manifest) == 16


def test_data_page_adds_a_webcam_picture_renames_and_resplits(ready, tmp_path):
    from core.data.store import load_dataset

    at = app_on("data", dataset_id=ready["dataset_id"])
    at.selectbox(key="data_cam_class").set_value("star")
    at.camera_input(key="data_cam").upload("photo.jpg", _jpeg("star", tmp_path, 13)[-1][1])
    at.run()
    at.button(key="data_cam_go").click()
    at.run()
    no_exception(at)
    assert int(load_dataset(ready["dataset_id"]).counts().loc["star", "total"]) == 13

    at.selectbox(key="data_rename_old").set_value("square")
    at.text_input(key="data_rename_new").input("box")
    at.run()
    at.button(key="data_rename_go").click()
    at.run()
    no_exception(at)
    assert "box" in load_dataset(ready["dataset_id"]).classes

    at.slider(key="data_test").set_value(0.0)
    at.button(key="data_split").click()
    at.run()
    no_exception(at)
    dataset = load_dataset(ready["dataset_id"])
    assert dataset.test_fraction == 0.0 and int(dataset.counts()["test"].sum()) == 0
    # The change is applied before the page draws: this very run shows the new split.
    assert any("**0** test images" in m.value for m in at.markdown), [m.value for m in at.markdown]


def test_data_page_shows_why_a_rename_or_split_was_refused(ready):
    from core.data.store import load_dataset

    classes = load_dataset(ready["dataset_id"]).classes
    at = app_on("data", dataset_id=ready["dataset_id"])
    at.text_input(key="data_rename_new").input("x" * 500)
    at.run()
    at.button(key="data_rename_go").click()
    at.run()
    no_exception(at)
    assert any("at most 120 characters" in e.value for e in at.error), [e.value for e in at.error]
    assert load_dataset(ready["dataset_id"]).classes == classes

    # A class of two images cannot give one to each of train, validation and test.
    from core.data.edits import relabel_images

    relabel_images(
        ready["dataset_id"], list(load_dataset(ready["dataset_id"]).manifest["image"][:2]), "tiny"
    )
    at.button(key="data_split").click()
    at.run()
    no_exception(at)
    assert any("Cannot split" in e.value for e in at.error), [e.value for e in at.error]
    # Shown once: the next run of the page no longer carries it.
    at.run()
    assert not any("Cannot split" in e.value for e in at.error)


def _set_status(workspace: Path, run_id: str, **changes) -> None:
    path = workspace / "runs" / run_id / "status.json"
    status = json.loads(path.read_text())
    status.update(changes)
    path.write_text(json.dumps(status))


def test_train_page_explains_a_failed_run(ready, workspace):
    message = "Loss became NaN at epoch 2, step 3; lower the learning rate."
    _set_status(workspace, ready["run_id"], state="failed", message=message)
    at = app_on("train", dataset_id=ready["dataset_id"], run_id=ready["run_id"])
    no_exception(at)
    assert any(message in e.value for e in at.error)
    assert any("What to try" in m.value and "learning rate" in m.value for m in at.markdown)
    assert at.button(key="train_resume")


def test_train_page_offers_resume_for_an_interrupted_run(ready, workspace):
    # A run that says "running" but whose worker is gone reads as interrupted.
    _set_status(workspace, ready["run_id"], state="running", pid=2**22 + 12345)
    at = app_on("train", dataset_id=ready["dataset_id"], run_id=ready["run_id"])
    no_exception(at)
    assert any("interrupted" in m.value for m in at.markdown)
    assert at.button(key="train_resume").label == "Resume this run"


def test_runs_page_opens_a_run_in_train(ready):
    at = app_on("runs")
    at.session_state["runs_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    at.button(key="runs_open_train").click()
    at.run()
    no_exception(at)
    assert at.session_state["run_id"] == ready["run_id"]
    assert at.title[0].value == "Train"


START_FROM_MODEL = ModelConfig(backbone="mobilenet_v3_small", weights="none", image_size=32)


def test_train_page_starts_a_run_from_an_earlier_run(ready):
    from core.runs.store import read_config, run_dir
    from core.training.jobs import cancel_run

    at = app_on("train", dataset_id=ready["dataset_id"], model_config=START_FROM_MODEL)
    no_exception(at)
    picker = at.selectbox(key="train_start_from")
    assert picker.options[0].startswith("The pretrained model")
    assert any("tiny run" in option for option in picker.options)
    picker.set_value(ready["run_id"])
    at.run()
    no_exception(at)
    assert any("Keeps what it learned about 3 class(es)" in c.value for c in at.caption)
    at.number_input(key="train_epochs").set_value(1)
    at.form_submit_button[0].click()
    at.run()
    no_exception(at)
    run_id = at.session_state["run_id"]
    assert run_id != ready["run_id"]
    assert read_config(run_dir(run_id)).init_from == ready["run_id"]
    cancel_run(run_id, grace_seconds=5)


def test_runs_of_another_model_are_not_offered(ready):
    other = ModelConfig(backbone="mobilenet_v3_small", weights="none", image_size=48)
    at = app_on("train", dataset_id=ready["dataset_id"], model_config=other)
    no_exception(at)
    picker = at.selectbox(key="train_start_from")
    assert len(picker.options) == 1
    assert any("No earlier run with this model yet" in c.value for c in at.caption)
