"""In a real browser: a login before anything shows, each user in their own workspace, a
broken run listed as broken, and a hostile ``?run=`` shown as text."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import _require_chromium, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def accounts_server(tmp_path, monkeypatch):
    """A fresh server whose workspace has accounts, and a broken run of alice's."""
    _require_chromium()
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path))
    from core import users
    from core.config import TrainConfig
    from core.runs.store import create_run
    from core.workspace import set_user_resolver

    users.set_password("alice", "alice password")
    users.set_password("bob", "bob password")
    set_user_resolver(lambda: "alice")
    try:
        good = create_run(TrainConfig(dataset="gone", name="alice's run"))
        broken = create_run(TrainConfig(dataset="gone", name="damaged"))
        (broken / "status.json").write_text('{"state": "runn')
    finally:
        set_user_resolver(None)
    with running_server(tmp_path) as url:
        yield url, good.name


def _log_in(tab, url: str, name: str, password: str) -> None:
    """Opens ``url`` (a new session) and logs in; the page asked for shows afterwards."""
    tab.goto(url)
    tab.get_by_label("Name").fill(name)
    tab.get_by_role("textbox", name="Password").fill(password)
    tab.get_by_role("button", name="Log in").click()
    tab.get_by_test_id("stSidebar").get_by_text(f"{name} (user)").wait_for(timeout=60_000)


def test_login_namespaces_broken_runs_and_hostile_links(browser, accounts_server, screenshots):
    url, alice_run = accounts_server
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    tab = context.new_page()
    tab.goto(url)
    tab.get_by_role("button", name="Log in").wait_for(timeout=60_000)
    assert tab.get_by_text("Your work").count() == 0
    assert tab.get_by_role("link", name="train").count() == 0  # no list of page files
    tab.screenshot(path=str(screenshots / "login.png"))

    tab.get_by_label("Name").fill("alice")
    tab.get_by_role("textbox", name="Password").fill("bob password")
    tab.get_by_role("button", name="Log in").click()
    tab.get_by_text("do not match an account").wait_for()
    _log_in(tab, url, "alice", "alice password")
    tab.get_by_test_id("stSidebar").get_by_role("link", name="Runs").click()
    tab.get_by_role("heading", name="Runs").wait_for()
    tab.get_by_text("broken").first.wait_for(state="attached", timeout=30_000)
    tab.screenshot(path=str(screenshots / "runs-with-a-broken-run.png"), full_page=True)

    hostile = "x` **Session expired** [log in](https://evil.example) `"
    _log_in(tab, f"{url}/train?run={hostile}", "alice", "alice password")
    tab.get_by_role("heading", name="Train").wait_for()  # the page asked for, after login
    shown = tab.get_by_text("**Session expired** [log in](https:", exact=False)
    shown.first.wait_for()
    tab.get_by_text("cannot be shown").wait_for()
    assert tab.locator("code", has_text="Session expired").count() == 0  # no code-span escape
    assert tab.locator("a[href*='evil.example']").count() == 0  # not even an autolink
    assert tab.get_by_role("link", name="log in").count() == 0
    assert tab.get_by_text("/tmp/").count() == 0  # no server paths in the page
    tab.screenshot(path=str(screenshots / "train-hostile-run-link.png"))
    context.close()

    other = browser.new_context(viewport={"width": 1440, "height": 1000})
    bob = other.new_page()
    _log_in(bob, url, "bob", "bob password")
    bob.get_by_test_id("stSidebar").get_by_role("link", name="Runs").click()
    bob.get_by_text("No runs yet").wait_for(timeout=30_000)
    _log_in(bob, f"{url}/train?run={alice_run}", "bob", "bob password")
    bob.get_by_text("cannot be shown").wait_for(timeout=30_000)
    bob.screenshot(path=str(screenshots / "train-other-users-run.png"))
    assert bob.get_by_text("/tmp/").count() == 0  # no server paths in the page
    bob.screenshot(path=str(screenshots / "train-other-users-run.png"))
    other.close()
