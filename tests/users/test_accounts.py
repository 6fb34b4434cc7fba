"""Users kept apart: hashed password list, per-user namespaces, refusal to serve an open
server beyond localhost, and a queue that takes turns between users."""

from __future__ import annotations

import os

import pytest

from core import cli, users
from core.config import TrainConfig
from core.runs.listing import list_runs
from core.runs.store import create_run
from core.training import queue
from core.workspace import set_user_resolver, user_folder_name, workspace_root


@pytest.fixture
def as_user():
    """Sets who the current user is, like the app does for each session."""
    who: dict[str, str | None] = {"name": None}
    set_user_resolver(lambda: who["name"])

    def switch(name: str | None) -> None:
        who["name"] = name

    yield switch
    set_user_resolver(None)


def test_passwords_are_stored_hashed_and_checked(workspace):
    users.set_password("teacher", "correct horse", admin=True)
    users.set_password("kid", "battery staple")
    stored = users.users_path().read_text()
    assert "correct horse" not in stored and "scrypt$" in stored
    assert oct(users.users_path().stat().st_mode)[-3:] == "600"
    assert users.check_password("teacher", "correct horse") == users.Account("teacher", True)
    assert users.check_password("teacher", "wrong password") is None
    assert users.check_password("nobody", "correct horse") is None
    assert [a.name for a in users.accounts()] == ["kid", "teacher"]
    users.remove("kid")
    assert users.check_password("kid", "battery staple") is None
    with pytest.raises(ValueError, match="at least 8"):
        users.set_password("x", "short")
    with pytest.raises(ValueError, match="user name"):
        users.set_password("../etc", "long enough")


def test_a_damaged_password_list_lets_nobody_in_and_still_counts_as_accounts(workspace):
    users.set_password("teacher", "correct horse")
    users.users_path().write_text('{"users": ')
    assert users.check_password("teacher", "correct horse") is None
    assert users.has_accounts()


def test_users_command_adds_lists_and_removes(capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert cli.main(["users", "add", "teacher", "--admin", "--password-stdin"]) == 0
    assert cli.main(["users", "list"]) == 0
    assert "teacher  (admin)" in capsys.readouterr().out
    assert cli.main(["users", "remove", "nobody"]) == 2
    assert "No user 'nobody'" in capsys.readouterr().err


def test_each_user_sees_only_their_own_runs(workspace, as_user):
    as_user("alice")
    alice_run = create_run(TrainConfig(dataset="ds1"))
    assert workspace_root() == workspace / "users" / user_folder_name("alice")
    as_user("bob")
    assert list_runs() == []
    bob_run = create_run(TrainConfig(dataset="ds1"))
    assert [r.run_id for r in list_runs()] == [bob_run.name]
    as_user("alice")
    assert [r.run_id for r in list_runs()] == [alice_run.name]
    assert sorted(users.namespace_owners()) == ["alice", "bob"]


def test_a_planted_owner_file_cannot_alias_another_user(workspace, as_user):
    as_user("alice")
    workspace_root()
    fake = workspace / "users" / "mallory-00000000"
    fake.mkdir()
    (fake / ".owner").write_text("alice\n")
    assert users.namespace_owners() == ["alice"]


def test_user_folder_names_are_plain_and_distinct():
    names = ["a@b.example", "a_b.example", "../../x", "Ünïcode", "a" * 300]
    folders = [user_folder_name(name) for name in names]
    assert len(set(folders)) == len(names)
    assert all("/" not in f and not f.startswith(".") and len(f) < 60 for f in folders)


@pytest.mark.parametrize("address", ["0.0.0.0", "", "192.168.1.20", "::"])
def test_app_refuses_an_open_server_beyond_localhost(capsys, address):
    assert cli.main(["app", "--address", address]) == 2
    err = capsys.readouterr().err
    assert "secrets.toml" in err and "users add" in err and "--allow-open-server" in err


def test_app_serves_beyond_localhost_with_accounts_or_the_explicit_flag(monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append(argv))
    monkeypatch.chdir(os.getcwd())
    assert cli.main(["app", "--address", "0.0.0.0", "--allow-open-server"]) == 0
    assert os.environ.pop(users.OPEN_SERVER_ENV) == "1"
    users.set_password("teacher", "correct horse", admin=True)
    assert cli.main(["app", "--address", "0.0.0.0"]) == 0
    assert users.OPEN_SERVER_ENV not in os.environ
    assert [argv[argv.index("--server.address") + 1] for argv in calls] == ["0.0.0.0"] * 2
    assert cli.main(["app"]) == 0  # localhost needs neither


def test_local_addresses():
    assert users.is_local_address("localhost") and users.is_local_address("127.0.0.1")
    assert users.is_local_address("::1")
    assert not users.is_local_address("0.0.0.0") and not users.is_local_address(None)


def test_the_queue_takes_turns_between_users(workspace):
    tickets = [
        queue.enter("alice", "a1"),
        queue.enter("alice", "a2"),
        queue.enter("alice", "a3"),
        queue.enter("bob", "b1"),
        queue.enter("carol", "c1"),
    ]
    assert [t.run_id for t in queue.waiting()] == ["a1", "b1", "c1", "a2", "a3"]
    queue.leave(tickets[0], served=True)  # alice got the device: the others go first now
    assert [t.run_id for t in queue.waiting()] == ["b1", "c1", "a2", "a3"]
    assert queue.position(tickets[1]) == (3, 4)
    queue.leave(tickets[3], served=True)
    assert [t.run_id for t in queue.waiting()] == ["c1", "a2", "a3"]


def test_tickets_of_dead_workers_and_damaged_tickets_are_dropped(workspace):
    live = queue.enter("alice", "a1")
    dead = queue.queue_dir() / "00000000000000000001-99999999.json"
    dead.write_text(
        '{"user": "bob", "run_id": "b1", "created": 1, "pid": 99999999, "pid_start": 5}'
    )
    (queue.queue_dir() / "00000000000000000002-1.json").write_text("[]")
    assert [t.run_id for t in queue.waiting()] == ["a1"]
    assert not dead.exists()
    queue.leave(live, served=False)
    assert queue.waiting() == []
