"""Traps that only show in a real browser: the Model page's table keeping an old row ticked
after the offline button, and the sidebar lagging one change behind the page."""

from __future__ import annotations

import pytest

from tests.e2e.test_flows import nav, open_page, shot, wait_idle

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
    wait_idle(page)
    assert "EfficientNet-Lite0" in sidebar_text(page)
    page.get_by_test_id("stButtonGroup").get_by_text("Head + top blocks").click()
    page.get_by_text("Blocks to retrain").wait_for()
    wait_idle(page)
    # The next change keeps the offline backbone, and the sidebar shows it at once.
    side = sidebar_text(page)
    assert "EfficientNet-Lite0" in side and "+ head" in side, side
    banner = page.get_by_test_id("stAlertContentSuccess").last.inner_text()
    assert "EfficientNet-Lite0" in banner and "top blocks" in banner, banner
    assert page.get_by_text("cannot be downloaded").count() == 0
    checked = page.get_by_role("radio", name="ImageNet (bundled (offline))")
    assert checked.is_checked()
    shot(page, screenshots, "model-offline-choice")
