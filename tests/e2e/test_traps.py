"""Traps that only show in a real browser: the Model page's table keeping an old row ticked
after the offline button, and the sidebar lagging one change behind the page."""

from __future__ import annotations

import pytest

from tests.e2e.test_flows import load_sample, nav, open_page, shot, wait_idle

pytestmark = pytest.mark.e2e
ROW_HEIGHT = 35  # st.dataframe's row (and header) height in pixels


def sidebar_text(page) -> str:
    return page.get_by_test_id("stSidebarUserContent").inner_text()


def test_offline_backbone_choice_sticks_and_the_sidebar_follows(page, screenshots):
    open_page(page)
    nav(page, "Model")
    wait_idle(page)
    table = page.get_by_test_id("stDataFrame").first
    box = table.bounding_box()
    # The second row is MobileNetV2 (the registry's order): tick it in the row-marker column.
    page.mouse.click(box["x"] + 15, box["y"] + ROW_HEIGHT * 2 + ROW_HEIGHT / 2)
    page.get_by_text("cannot be downloaded").first.wait_for()
    wait_idle(page)
    assert "MobileNetV2" in sidebar_text(page)
    page.get_by_role("button", name="Use EfficientNet-Lite0").click()
    page.get_by_test_id("stSidebarUserContent").get_by_text("EfficientNet-Lite0").wait_for()
    wait_idle(page)
    page.get_by_test_id("stButtonGroup").get_by_text("Last layer + top blocks").click()
    page.get_by_text("Blocks to retrain").wait_for()
    wait_idle(page)
    # The next change keeps the offline backbone, and the sidebar shows it at once.
    side = sidebar_text(page)
    assert "EfficientNet-Lite0" in side and "+ new last layer" in side, side
    banner = page.get_by_test_id("stAlertContentSuccess").last.inner_text()
    assert "EfficientNet-Lite0" in banner and "top blocks" in banner, banner
    assert page.get_by_text("cannot be downloaded").count() == 0
    checked = page.get_by_role("radio", name="ImageNet (bundled (offline))")
    assert checked.is_checked()
    shot(page, screenshots, "model-offline-choice")


@pytest.fixture
def fresh(browser, tmp_path, monkeypatch):
    """A tab on a server of its own, with an empty workspace (no runs of other tests)."""
    from tests.e2e.conftest import _require_chromium, running_server

    _require_chromium()
    home = tmp_path / "fresh-workspace"
    home.mkdir()
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(home))
    with running_server(home) as url:
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        context.set_default_timeout(30_000)
        tab = context.new_page()
        tab.base_url = url
        yield tab, home
        context.close()


def test_kept_webcam_pictures_and_the_weights_check_before_start(fresh, screenshots):
    import io

    from PIL import Image

    from core.data import drafts

    page, _ = fresh
    drafts.clear_shots()
    for index in range(3):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (40 * index, 120, 200)).save(buffer, "JPEG")
        drafts.add_shot("class 1", buffer.getvalue())
    open_page(page)
    nav(page, "Data")
    page.get_by_role("tab", name="Webcam").click()
    page.get_by_text("3 picture(s)").wait_for()
    page.get_by_text("Add a second class").first.wait_for()
    assert page.get_by_role("button", name="Create dataset from these pictures").is_disabled()
    shot(page, screenshots, "data-webcam-kept")
    drafts.clear_shots()

    load_sample(page)
    nav(page, "Model")
    wait_idle(page)
    box = page.get_by_test_id("stDataFrame").first.bounding_box()
    page.mouse.click(box["x"] + 15, box["y"] + ROW_HEIGHT * 2 + ROW_HEIGHT / 2)
    page.get_by_text("cannot be downloaded").first.wait_for()
    nav(page, "Train")
    wait_idle(page)
    page.get_by_text("Start is off until you pick one").wait_for(timeout=90_000)
    assert "MobileNetV2" in sidebar_text(page)  # the sidebar is there on every page
    assert page.get_by_role("button", name="Start training").is_disabled()
    shot(page, screenshots, "train-weights-check")


def test_the_train_page_shows_the_queue_with_controls_for_both_runs(fresh, screenshots):
    from core.runs.listing import list_runs
    from core.training.jobs import cancel_run

    page, home = fresh
    load_sample(page)
    nav(page, "Train")
    wait_idle(page)
    try:
        for name in ("first run", "second run"):
            page.get_by_label("Name this run (optional)").fill(name)
            page.get_by_role("button", name="Start training").click()
            wait_idle(page)
            page.get_by_text(name).first.wait_for(timeout=60_000)
            # The next run starts with an empty name (the settings do carry over). The field
            # of the started run is gone once the page has drawn: one field, and it is empty.
            page.wait_for_function(
                "() => { const f = document.querySelectorAll("
                "'input[aria-label=\"Name this run (optional)\"]');"
                " return f.length === 1 && f[0].value === ''; }",
                timeout=30_000,
            )
        page.get_by_text("Runs in progress").first.wait_for(timeout=60_000)
        page.get_by_text("place 1 of 1 in the queue").first.wait_for(timeout=120_000)
        page.get_by_text("Training (").first.wait_for(timeout=120_000)
        assert page.locator("[class*='st-key-train_queue_cancel_']").count() == 2
        assert page.locator("[class*='st-key-train_queue_show_']").count() == 2
        shot(page, screenshots, "train-runs-in-progress")
        queued = next(r for r in list_runs(home / "runs") if r.status.state == "queued")
        page.locator(f".st-key-train_queue_cancel_{queued.run_id} button").first.click()
        page.get_by_text("place 1 of 1 in the queue").first.wait_for(
            state="detached", timeout=60_000
        )
        # Streamlit removes the elements of the previous draw when the script run ends: the
        # cancelled run's controls go with them, the running run's stay.
        wait_idle(page)
        page.wait_for_function(
            "() => document.querySelectorAll(\"[class*='st-key-train_queue_cancel_']\").length"
            " === 1",
            timeout=30_000,
        )
        assert page.locator("[class*='st-key-train_queue_cancel_']").count() == 1
        assert page.locator(f"[class*='st-key-train_queue_cancel_{queued.run_id}']").count() == 0
        shot(page, screenshots, "train-runs-in-progress-after-cancel")
    finally:
        for info in list_runs(home / "runs"):
            cancel_run(info.run_id, root=home / "runs", wait=True)
