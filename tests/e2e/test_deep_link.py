"""A page's own address works on a freshly started server, through the app's router."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("path", ["train", "evaluate"])
def test_first_visit_to_a_page_address_goes_through_the_router(browser, fresh_server, path):
    # A new server process: Streamlit has not run app.py yet, which is exactly the state
    # after a restart when a user refreshes /train?run=... .
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    tab = context.new_page()
    tab.goto(f"{fresh_server}/{path}")
    sidebar = tab.get_by_test_id("stSidebar")
    # The router's sidebar: pages by their titles and the "Your work" panel.
    sidebar.get_by_text("Your work").wait_for(timeout=60_000)
    assert sidebar.get_by_role("link", name="Home").count() == 1
    assert sidebar.get_by_text("app", exact=True).count() == 0
    tab.get_by_role("heading", name=path.capitalize()).first.wait_for()
    context.close()
