"""The app with accounts: a login form, each user in their own workspace, an admin who can
look into everyone's, and a refusal to serve an open server beyond localhost."""

from __future__ import annotations

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from core import users
from core.config import TrainConfig
from core.runs.store import create_run
from core.workspace import set_user_resolver
from tests.app.test_pages import APP, TIMEOUT, app_on, no_exception


@pytest.fixture
def accounts(workspace):
    users.set_password("alice", "alice password")
    users.set_password("bob", "bob password")
    users.set_password("teacher", "teacher password", admin=True)
    yield
    set_user_resolver(None)


def _alice_has_a_run_and_a_dataset(tmp_path) -> tuple[str, str]:
    from tests.helpers.runs import make_dataset

    set_user_resolver(lambda: "alice")
    try:
        dataset_id = make_dataset(tmp_path / "alice-images", {"cat": 3, "dog": 3})
        run = create_run(TrainConfig(dataset=dataset_id))
    finally:
        set_user_resolver(None)
    return dataset_id, run.name


def test_with_accounts_nothing_shows_before_login(accounts):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    no_exception(at)
    assert at.text_input(key="login_name") and at.text_input(key="login_password")
    assert not at.sidebar.button and not at.dataframe and not at.selectbox
    # Typing a password and logging in is exercised in a real browser
    # (tests/e2e/test_hardening.py): AppTest reruns only the page after the first run.


def test_passwords_are_checked_by_the_login(accounts):
    assert users.check_password("alice", "alice password") == users.Account("alice", False)
    assert users.check_password("alice", "bob password") is None


def test_a_second_user_cannot_see_or_open_the_first_users_work(accounts, tmp_path):
    dataset_id, run_id = _alice_has_a_run_and_a_dataset(tmp_path)
    bob = {"name": "bob", "admin": False}
    data = app_on("data", auth_account=bob)
    no_exception(data)
    options = data.selectbox[0].options
    assert not any("eval-test" in str(option) for option in options)
    runs = app_on("runs", auth_account=bob)
    no_exception(runs)
    assert not runs.dataframe  # bob has no runs: alice's are not listed
    train = app_on("train", auth_account=bob, run_id=run_id)
    no_exception(train)
    assert any("cannot be shown" in w.value for w in train.warning)
    alice = app_on("runs", auth_account={"name": "alice", "admin": False})
    assert list(alice.dataframe[0].value["state"]) == ["queued"]
    assert dataset_id


def test_an_admin_can_look_into_another_users_workspace(accounts, tmp_path):
    _alice_has_a_run_and_a_dataset(tmp_path)
    own = app_on("runs", auth_account={"name": "teacher", "admin": True})
    no_exception(own)
    assert not own.dataframe  # the teacher's own workspace is empty
    # The admin's "Workspace of" choice (made before the run: AppTest reruns only the page).
    at = app_on("home", auth_account={"name": "teacher", "admin": True}, auth_view_user="alice")
    no_exception(at)
    picker = at.selectbox(key="auth_view_user")
    assert set(picker.options) == {"alice", "teacher"} and picker.value == "alice"
    at.switch_page("pages/runs.py")
    at.run()
    no_exception(at)
    assert list(at.dataframe[0].value["state"]) == ["queued"]
    bob = app_on("runs", auth_account={"name": "bob", "admin": False}, auth_view_user="alice")
    assert not bob.dataframe  # only an admin gets the choice


def test_the_app_refuses_an_open_server_beyond_localhost(workspace, monkeypatch):
    monkeypatch.delenv(users.OPEN_SERVER_ENV, raising=False)
    st_config.set_option("server.address", "0.0.0.0")
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        no_exception(at)
        (error,) = at.error
        assert "refusing to serve" in error.value and "users add" in error.value
        assert not at.sidebar.button
        monkeypatch.setenv(users.OPEN_SERVER_ENV, "1")
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        no_exception(at)
        assert not at.error
    finally:
        st_config.set_option("server.address", "localhost")
