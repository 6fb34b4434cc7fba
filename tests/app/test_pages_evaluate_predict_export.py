"""The Evaluate, Predict and Export pages under Streamlit's AppTest, with the real engine.

Fresh session: each page, run from its own file, tells the user to train first. With a
finished run (made once per module, copied into each test's workspace), the pages go
through the real router (app.py) and show metrics, predictions and exports. The last test
closes the loop: relabel an image on Evaluate, retrain with the same settings, and the new
run (trained by the real worker process) sees the new label.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.data.sample import draw_shape
from tests.helpers.runs import make_dataset, make_run

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
PAGES = ["evaluate", "predict", "export"]
TIMEOUT = 240


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("page", PAGES)
def test_fresh_session_says_train_first(page):
    at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=TIMEOUT)
    at.run()
    no_exception(at)
    assert at.title
    assert any("Train a model first" in info.value for info in at.info)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    home = tmp_path_factory.mktemp("prepared")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFER_STUDIO_HOME", str(home))
        dataset_id = make_dataset(tmp_path_factory.mktemp("source"))
        run_dir = make_run(dataset_id)
    return home, {"dataset_id": dataset_id, "run_id": run_dir.name}


@pytest.fixture
def ready(prepared, workspace):
    home, ids = prepared
    for sub in ("datasets", "runs", "cache"):
        if (home / sub).exists():
            shutil.copytree(home / sub, workspace / sub, dirs_exist_ok=True)
    return ids


def app_on(page: str, ids: dict, *, from_url: bool = False) -> AppTest:
    """The app (router) opened on ``pages/<page>.py`` with the run chosen, run once."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["dataset_id"] = ids["dataset_id"]
    if from_url:
        at.query_params["run"] = ids["run_id"]
    else:
        at.session_state["run_id"] = ids["run_id"]
    at.run()
    at.switch_page(f"pages/{page}.py")
    at.run()
    return at


def test_evaluate_shows_metrics_matrix_gallery_and_gradcam(ready):
    from core.runs.evaluate import evaluate
    from core.runs.store import run_dir

    at = app_on("evaluate", ready, from_url=True)
    no_exception(at)
    expected = evaluate(run_dir(ready["run_id"]), "val")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Accuracy"] == f"{expected.accuracy:.1%}"
    assert metrics["Images"] == str(expected.n)
    # The confusion matrix is a native chart: the page loads no Plotly bundle.
    assert at.get("plotly_chart") == []
    matrix = [c for c in at.get("vega_lite_chart") if "Confusion matrix" in c.proto.spec]
    assert len(matrix) == 1 and matrix[0].proto.selection_mode == ["cell"]
    assert at.dataframe[0].value["class"].tolist() == expected.labels

    # Choose a cell with the selectboxes: the gallery shows exactly its images.
    label = expected.labels[0]
    at.selectbox(key="evaluate_true").set_value(label)
    at.selectbox(key="evaluate_pred").set_value(label)
    at.run()
    no_exception(at)
    cell = expected.cell(label, label)
    captions = _captions(at)
    assert sum(f"true {label} · pred {label}" in c for c in captions) >= len(cell)
    # Grad-CAM of the chosen image: the picture at once; the overlay once the model, loading
    # in the background meanwhile, is in memory (the page does not wait for it).
    from ui import model_cache
    from ui.gradcam_view import PREPARING

    key = model_cache.model_key(run_dir(ready["run_id"]))
    if not model_cache.is_loaded(key):
        assert any(PREPARING in c.value for c in at.caption)
        assert not any("Where the model looks" in c for c in captions)
        deadline = time.monotonic() + 120
        while not model_cache.is_loaded(key):
            assert time.monotonic() < deadline, "the model did not load in the background"
            time.sleep(0.1)
        at.run()
        no_exception(at)
    assert any("Where the model looks" in c for c in _captions(at))
    assert not any(PREPARING in c.value for c in at.caption)

    at.segmented_control(key="evaluate_split").set_value("test")
    at.run()
    no_exception(at)
    assert {m.label: m.value for m in at.metric}["Images"] == str(
        evaluate(run_dir(ready["run_id"]), "test").n
    )


def _captions(at: AppTest) -> list[str]:
    return [caption for image in at.get("image") for caption in image.captions]


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    draw_shape("square", (50, 40), np.random.default_rng(seed)).save(buffer, "PNG")
    return buffer.getvalue()


def test_predict_shows_top_k_bars_gradcam_and_bad_files(ready):
    at = app_on("predict", ready)
    no_exception(at)
    assert any("Add one or more pictures" in info.value for info in at.info)
    at.file_uploader(key="predict_uploads").set_value(
        [
            ("a.png", _png(1), "image/png"),
            ("b.png", _png(2), "image/png"),
            ("broken.png", b"not an image", "image/png"),
        ]
    )
    at.slider(key="predict_top_k").set_value(2)
    at.run()
    no_exception(at)
    answers = [m.value for m in at.markdown if "→" in m.value]
    assert len(answers) == 2 and "a.png" in answers[0]
    assert len(at.get("plotly_chart")) == 2
    assert any("broken.png" in w.value for w in at.warning)
    captions = _captions(at)
    assert captions.count("Grad-CAM") == 2


def test_export_runs_parity_and_offers_download(ready):
    at = app_on("export", ready)
    no_exception(at)
    assert any("Not exported" in info.value for info in at.info)
    at.radio(key="export_format").set_value("keras")
    at.button(key="export_go").click()
    at.run()
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Top-1 agreement"] == "100.0%"
    assert any(label.startswith("Accuracy of this export") for label in metrics)
    assert metrics["Model size"].endswith("MB")
    assert at.get("download_button"), "no download button"
    assert any("keras.saving.load_model" in code.value for code in at.code)

    # Full-integer int8: its accuracy next to the app's, and its integer tensors explained.
    at.radio(key="export_format").set_value("tflite-int8-full")
    at.button(key="export_go").click()
    at.run(timeout=600)
    no_exception(at)
    assert any("Integer tensors: input int8" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert len(table) == 2 and set(table["Format"]) >= {"Keras (.keras)"}
    assert all(value.endswith("%") for value in table["Accuracy (export)"])

    at.button(key="export_recipe").click()
    at.run()
    no_exception(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert any("recipe" in label for label in labels)
    # Nothing big in the session: downloads are read from disk on click.
    assert not [key for key in at.session_state if isinstance(at.session_state[key], bytes)]


def _wait_for(folder: Path, timeout: float = 600) -> str:
    from core.runs.store import read_status

    deadline = time.monotonic() + timeout
    state = read_status(folder).state
    while state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(1)
        state = read_status(folder).state
    return state


def test_relabel_then_retrain_closes_the_loop(ready):
    from core.config import TrainConfig
    from core.data.store import load_dataset
    from core.runs.evaluate import evaluate
    from core.runs.listing import list_runs
    from core.runs.store import read_status, run_dir

    old_dir = run_dir(ready["run_id"])
    before = evaluate(old_dir, "val")
    record = before.predictions[0]
    other = next(label for label in before.labels if label != record["true"])

    at = app_on("evaluate", ready)
    at.selectbox(key="evaluate_true").set_value(record["true"])
    at.selectbox(key="evaluate_pred").set_value(record["predicted"])
    at.run()
    at.multiselect(key="evaluate_fix_images").set_value([record["image"]])
    at.selectbox(key="evaluate_fix_label").set_value(other)
    at.run()
    at.button(key="evaluate_relabel").click()
    at.run()
    no_exception(at)
    frame = load_dataset(ready["dataset_id"]).manifest
    assert frame.loc[frame["image"] == record["image"], "label"].item() == other

    at.button(key="evaluate_retrain").click()
    at.run()
    no_exception(at)
    new_ids = [info.run_id for info in list_runs() if info.run_id != ready["run_id"]]
    assert len(new_ids) == 1
    new_id = new_ids[0]
    assert at.session_state["run_id"] == new_id
    assert TrainConfig.load(run_dir(new_id) / "config.json") == TrainConfig.load(
        old_dir / "config.json"
    )

    state = _wait_for(run_dir(new_id))
    assert state == "completed", read_status(run_dir(new_id)).message
    after = evaluate(run_dir(new_id), "val")
    changed = next(r for r in after.predictions if r["image"] == record["image"])
    assert changed["true"] == other
