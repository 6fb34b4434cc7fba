"""The app in a real browser: the newcomer flow, re-attaching after a refresh, zip upload,
and exporting a TFLite model."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from core.data.sample import write_class_folders

pytestmark = pytest.mark.e2e

TRAIN_SECONDS = 240


def open_page(page, path: str = "") -> None:
    """Opens ``/path`` of the app and waits until Streamlit has drawn it."""
    page.goto(f"{page.base_url}/{path}")
    page.get_by_test_id("stSidebarNav").wait_for()
    page.get_by_test_id("stMainBlockContainer").wait_for()


def nav(page, title: str) -> None:
    """Clicks a page in the sidebar navigation and waits for its title."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    page.get_by_role("heading", name=title, exact=True).first.wait_for()


CONTENT_HEIGHT = (
    "() => Math.max(...Array.from(document.querySelectorAll("
    '\'[data-testid="stMain"], [data-testid="stAppViewContainer"]\'))'
    ".map(e => e.scrollHeight))"
)


def shot(page, screenshots: Path, name: str) -> None:
    """Saves a screenshot of the whole page once the app is idle.

    Streamlit scrolls inside its main block, so the window is made as tall as the content
    for the picture, then put back.
    """
    wait_idle(page)
    size = page.viewport_size
    for _ in range(3):  # images and charts load as they come into view: grow until stable
        height = min(max(page.evaluate(CONTENT_HEIGHT), 900), 6000)
        if height == page.viewport_size["height"]:
            break
        page.set_viewport_size({"width": size["width"], "height": height})
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('[data-testid=\"stPlotlyChart\"]'))"
            ".every(chart => chart.querySelector('.main-svg'))",
            timeout=30_000,
        )
        page.wait_for_timeout(700)
    page.screenshot(path=str(screenshots / f"{name}.png"))
    page.set_viewport_size(size)


def wait_idle(page, timeout: float = 60_000) -> None:
    """Waits until the script run finished (the 'running' indicator is gone)."""
    page.wait_for_timeout(500)
    page.wait_for_function(
        "() => document.querySelector('.stApp')?.getAttribute('data-test-script-state')"
        " === 'notRunning' && !document.querySelector('[data-testid=\"stSpinner\"]')",
        timeout=timeout,
    )


def load_sample(page) -> None:
    open_page(page)
    page.get_by_role("button", name="Load the sample dataset").click()
    page.get_by_text(re.compile(r"Sample dataset (added|already)")).wait_for(timeout=120_000)


def curve_points(page) -> list[list[int]]:
    """Points drawn per curve (train, validation) of every chart on the page.

    The Train page's curves are Vega-Lite charts, drawn as SVG: every point is a mark whose
    ARIA label names its fields, the curve's name among them.
    """
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]'))
          .map(chart => {
            const labels = Array.from(
              chart.querySelectorAll('[aria-roledescription="point"]')
            ).map(mark => mark.getAttribute('aria-label') || '');
            return ['train', 'validation'].map(
              name => labels.filter(label => label.includes(name)).length);
          })"""
    )


def run_state(page) -> str:
    """The run id in the URL."""
    match = re.search(r"[?&]run=([^&#]+)", page.url)
    return match.group(1) if match else ""


def start_training(page, epochs: int) -> str:
    """On the Train page: sets the epochs, presses Start, returns the run id from the URL."""
    epochs_box = page.get_by_label("Epochs", exact=True)
    epochs_box.fill(str(epochs))  # no Enter: it would submit the form a first time
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"[?&]run="), timeout=60_000)
    return run_state(page)


def wait_for_state(page, state: str, timeout: float = TRAIN_SECONDS * 1000) -> None:
    """Waits for the run's state badge (its text follows a material icon's name)."""
    page.get_by_test_id("stMainBlockContainer").get_by_text(
        re.compile(rf"(^|\s){state}$")
    ).first.wait_for(timeout=timeout)


def test_newcomer_trains_the_sample_with_the_default_model(page, screenshots):
    open_page(page)
    page.get_by_role("heading", name="Transfer Studio").first.wait_for()
    shot(page, screenshots, "01-home")
    load_sample(page)
    shot(page, screenshots, "02-home-sample-loaded")

    nav(page, "Data")
    page.get_by_text("Look through the images").wait_for()
    page.get_by_test_id("stMetricValue").filter(has_text="240").first.wait_for()
    shot(page, screenshots, "03-data")

    nav(page, "Model")
    page.get_by_text("EfficientNet-Lite0 (offline)").first.wait_for(timeout=60_000)
    page.get_by_text("Trainable parameters").wait_for(timeout=120_000)
    shot(page, screenshots, "04-model")

    nav(page, "Train")
    run_id = start_training(page, epochs=2)
    assert run_id
    page.get_by_text(re.compile(r"(queued|running)$")).first.wait_for(timeout=60_000)
    shot(page, screenshots, "05-train-live")
    wait_for_state(page, "completed")
    wait_idle(page)
    points = curve_points(page)
    assert points and points[0][:2] == [2, 2], points  # loss: train and validation, 2 epochs
    assert points[1][:2] == [2, 2], points  # accuracy
    shot(page, screenshots, "06-train-completed")

    nav(page, "Runs")
    page.get_by_text("Tick a row to open the run").wait_for()
    shot(page, screenshots, "07-runs")


def test_refresh_during_training_re_attaches_to_the_live_run(page, screenshots):
    load_sample(page)
    nav(page, "Model")
    page.get_by_text("Trainable parameters").wait_for(timeout=120_000)
    # The whole network trains: epochs take long enough to refresh in the middle.
    page.get_by_role("radio", name="Everything").click()
    page.get_by_text("Every weight learns").wait_for()
    wait_idle(page, timeout=120_000)
    nav(page, "Train")
    run_id = start_training(page, epochs=20)
    wait_for_state(page, "running", timeout=120_000)

    page.reload()
    page.get_by_test_id("stMainBlockContainer").wait_for()
    assert run_state(page) == run_id
    page.get_by_text(run_id).first.wait_for(timeout=30_000)
    page.get_by_text(re.compile(r"(running|queued)$")).first.wait_for(timeout=30_000)
    shot(page, screenshots, "08-train-after-refresh")

    # Cancel once batches run (the worker honours a cancel at the end of a batch).
    page.get_by_text("Loss per batch").first.wait_for(timeout=TRAIN_SECONDS * 1000)
    page.get_by_role("button", name="Cancel training").click()
    wait_for_state(page, "cancelled", timeout=90_000)


def _zip_of_classes(folder: Path) -> Path:
    images = write_class_folders(
        folder / "src", {"apple": 12, "pear": 12, "plum": 12}, size=(64, 64)
    )
    archive = folder / "fruit.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(images.rglob("*.jpg")):
            zf.write(path, f"fruit/{path.relative_to(images)}")
    return archive


def test_zip_upload_shows_class_counts(page, screenshots, tmp_path):
    archive = _zip_of_classes(tmp_path)
    open_page(page, "data")
    page.get_by_role("heading", name="Data", exact=True).first.wait_for()
    # By its label: the other tabs' uploaders are in the page too (hidden), in any order.
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Zip of class folders")
    uploader.locator("input[type=file]").set_input_files(str(archive))
    page.get_by_text("fruit.zip").first.wait_for()
    page.get_by_role("button", name="Create dataset from zip").click()
    page.get_by_text("Look through the images").wait_for(timeout=120_000)
    page.get_by_test_id("stSidebar").get_by_text("fruit", exact=True).wait_for()
    page.get_by_text("36 images · 3 classes").first.wait_for()
    page.get_by_text(re.compile(r"^apple_0000")).first.wait_for()  # the thumbnail browser
    page.get_by_test_id("stMetricValue").filter(has_text="36").first.wait_for()
    shot(page, screenshots, "09-data-zip")


def _completed_run(home: Path) -> str | None:
    for status in sorted((home / "runs").glob("*/status.json")):
        if json.loads(status.read_text()).get("state") == "completed":
            return status.parent.name
    return None


def _a_completed_run(page, home: Path) -> str:
    """A completed run of the session's server, trained now through the UI if none exists."""
    run_id = _completed_run(home)
    if run_id is None:
        load_sample(page)
        nav(page, "Train")
        run_id = start_training(page, epochs=1)
        wait_for_state(page, "completed")
    return run_id


def test_evaluate_and_predict_a_trained_run(page, screenshots, studio_home, tmp_path):
    run_id = _a_completed_run(page, studio_home)
    open_page(page, f"evaluate?run={run_id}")
    page.get_by_role("heading", name="Evaluate", exact=True).first.wait_for()
    page.get_by_text("Confusion matrix").first.wait_for(timeout=120_000)
    page.get_by_text("Accuracy", exact=True).first.wait_for()
    # A click on a cell (on its count, at its centre) shows that cell's images.
    cell = page.locator(
        '[data-testid="stVegaLiteChart"] [aria-roledescription="rect mark"]'
        '[aria-label^="predicted: star; true: circle;"]'
    )
    cell.click()
    page.get_by_role("tab", name="Cell: circle → star").wait_for(timeout=60_000)
    shot(page, screenshots, "11-evaluate")

    images = write_class_folders(tmp_path / "new", {"circle": 1, "star": 1}, size=(96, 96))
    open_page(page, f"predict?run={run_id}")
    page.get_by_role("heading", name="Predict", exact=True).first.wait_for()
    uploader = page.get_by_test_id("stFileUploader").first
    uploader.locator("input[type=file]").set_input_files(
        [str(path) for path in sorted(images.rglob("*.jpg"))]
    )
    page.get_by_text(re.compile(r"circle_0000\.jpg →")).first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"star_0000\.jpg →")).first.wait_for(timeout=120_000)
    shot(page, screenshots, "12-predict")


def test_export_tflite_and_download(page, screenshots, studio_home, tmp_path):
    run_id = _a_completed_run(page, studio_home)
    open_page(page, f"export?run={run_id}")
    page.get_by_role("heading", name="Export", exact=True).first.wait_for()
    page.get_by_text("TFLite / LiteRT float32", exact=True).click()
    wait_idle(page)
    page.get_by_role("button", name="Export and check parity").click()
    download_button = page.get_by_role(
        "button", name=re.compile(r"Download TFLite \S LiteRT float32")
    )
    download_button.wait_for(timeout=240_000)
    # The metric under the table (the table's own header cell is drawn on a canvas, hidden).
    page.get_by_test_id("stMetricLabel").filter(has_text="Top-1 agreement").wait_for()
    shot(page, screenshots, "10-export")
    with page.expect_download(timeout=60_000) as info:
        download_button.click()
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    assert target.stat().st_size > 1000
    assert target.suffix in (".tflite", ".zip")


def test_continue_from_an_earlier_run(page, screenshots, studio_home):
    parent = _a_completed_run(page, studio_home)
    load_sample(page)  # selects the sample dataset in this session (the parent's data)
    nav(page, "Train")
    wait_idle(page)
    picker = page.get_by_test_id("stSelectbox").filter(has_text="Start from")
    picker.click()
    page.get_by_role("option", name=re.compile(r"^Run ")).first.click()
    page.get_by_text(re.compile(r"Keeps what it learned about \d+ class")).wait_for()
    shot(page, screenshots, "train-start-from")
    child = start_training(page, epochs=1)
    assert child and child != parent
    wait_for_state(page, "completed")
    config = json.loads((studio_home / "runs" / child / "config.json").read_text())
    assert config["init_from"] == parent
    open_page(page, "runs")
    table = page.get_by_test_id("stDataFrame").first
    table.wait_for()
    wait_idle(page)
    shot(page, screenshots, "runs-started-from")
    summary = json.loads((studio_home / "runs" / child / "summary.json").read_text())
    assert summary["parent_run"] == parent
