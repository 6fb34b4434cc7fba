"""The web export runs in real Chromium from a plain static server and answers like the app.

A small real run is exported with ``--format web``; its folder is served with the command its
README documents (``python -m http.server``); pictures are uploaded through the page's file
input, and ``#top-label`` must equal ``core predict``'s class. The page's own time per image
(the model run, ``#time[data-ms]``) and the end-to-end time (file chosen -> result shown) are
printed as ``web export: ...`` lines.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import SCREENSHOTS, _free_port
from tests.helpers.runs import workspace_with_run

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def static_server(folder: Path):
    """``python -m http.server`` in ``folder`` (what the bundle's README tells people to run)."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(url, timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def web_bundle(tmp_path_factory):
    root, run_dir = workspace_with_run(tmp_path_factory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFER_STUDIO_HOME", str(root))
        from core.data.store import load_dataset
        from core.runs.export import export_run
        from core.runs.predict import load_run_model, predict_sources

        opened = load_run_model(run_dir)
        result = export_run(
            run_dir, "web", tmp_path_factory.mktemp("out") / "web", run_model=opened
        )
        dataset = load_dataset(opened.config["dataset"])
        images = [dataset.dir / p for p in dataset.frame("val")["image"]]
        images += [dataset.dir / p for p in dataset.frame("test")["image"]]
        expected = predict_sources(opened, images)
    return result.folder, images, expected


def test_web_export_classifies_uploads_like_core_predict(browser, web_bundle):
    folder, images, expected = web_bundle
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(60_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    with static_server(folder) as url:
        page.goto(url)
        page.wait_for_selector("body[data-ready='true']")
        model_ms, end_to_end_ms = [], []
        for count, (image, want) in enumerate(zip(images, expected, strict=True), start=1):
            started = time.perf_counter()
            page.set_input_files("#file", str(image))
            page.wait_for_selector(f"body[data-classified='{count}']")
            end_to_end_ms.append(1000 * (time.perf_counter() - started))
            model_ms.append(float(page.get_attribute("#time", "data-ms")))
            assert page.inner_text("#top-label") == want["label"], image.name
            shown = float(page.inner_text("#top-prob").rstrip("%")) / 100
            assert shown == pytest.approx(want["confidence"], abs=0.05)
            assert len(page.query_selector_all("#bars .bar-row")) == len(want["probabilities"])
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "web-export.png"), full_page=True)
    context.close()
    assert not errors, errors
    assert all(request.startswith(url) or request.startswith("blob:") for request in requests)
    print(
        f"\nweb export: {statistics.median(model_ms):.1f} ms per image in the model "
        f"(median of {len(model_ms)}, first {model_ms[0]:.1f} ms), "
        f"{statistics.median(end_to_end_ms):.0f} ms from file chosen to result shown"
    )


CASES = [(40, 40, 64), (64, 64, 64), (640, 480, 224), (333, 517, 96), (1000, 700, 96), (97, 31, 50)]


def test_browser_resizes_exactly_like_the_app(browser, web_bundle):
    """The page's resize reproduces Pillow's (training, evaluation and ``core predict``)."""
    import numpy as np
    from PIL import Image

    from core.data.image_cache import resize_for_model

    folder = web_bundle[0]
    rng = np.random.default_rng(0)
    context = browser.new_context()
    page = context.new_page()
    with static_server(folder) as url:
        page.goto(url)
        page.wait_for_selector("body[data-ready='true']")
        for width, height, size in CASES:
            # Smooth content with noise: both flat areas and edges get resampled.
            base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
            image = Image.fromarray(base).resize((width, height), Image.Resampling.NEAREST)
            pixels = np.asarray(image, dtype=np.uint8).copy()
            pixels[::3] = rng.integers(0, 256, pixels[::3].shape, dtype=np.uint8)
            expected = resize_for_model(Image.fromarray(pixels), size).astype(int)
            got = page.evaluate(
                """async ([data, w, h, s]) => {
                  const m = await import("./classifier.js");
                  return Array.from(m.resizeLikePillow(Uint8ClampedArray.from(data), w, h, s, s));
                }""",
                [pixels.reshape(-1).tolist(), width, height, size],
            )
            got = np.asarray(got, dtype=int).reshape(size, size, 3)
            assert np.abs(got - expected).max() <= 1, (width, height, size)
            assert (got == expected).mean() > 0.99, (width, height, size)
    context.close()


def test_webcam_gives_live_predictions_with_permission(browser, web_bundle):
    """With the camera allowed (Chromium's fake camera), the page classifies frames live."""
    from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS

    folder, _, expected = web_bundle
    labels = set(expected[0]["probabilities"])
    args = [*CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    with static_server(folder) as url:
        camera_browser = browser.browser_type.launch(executable_path=CHROMIUM, args=args)
        page = camera_browser.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready='true']")
        page.click("#webcam-start")
        page.wait_for_selector("#webcam-stop", state="visible")
        page.wait_for_function("document.getElementById('top-label').textContent.length > 0")
        first = page.get_attribute("#time", "data-ms")
        page.wait_for_function(
            "(first) => document.getElementById('time').dataset.ms !== first", arg=first
        )
        assert page.inner_text("#top-label") in labels
        assert page.evaluate("document.querySelector('video').srcObject !== null")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "web-export-webcam.png"))
        page.click("#webcam-stop")
        assert page.evaluate("document.querySelector('video').srcObject === null")
        camera_browser.close()
