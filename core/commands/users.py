"""``transfer-studio users``: the built-in password list for a server beyond localhost."""

from __future__ import annotations

import argparse
import getpass
import sys

from core.cli import EXIT_OK, CommandError, emit_json, progress


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``users`` command and its ``add``, ``remove`` and ``list`` actions."""
    parser = subparsers.add_parser(
        "users",
        help="manage the password list used to log in when the app serves beyond localhost",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user or change their password")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may see every user's work")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (scripts)",
    )
    remove = actions.add_parser("remove", help="remove a user (their work stays on disk)")
    remove.add_argument("name")
    listing = actions.add_parser("list", help="list users")
    listing.add_argument("--json", action="store_true")
    parser.set_defaults(handler=handle)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise CommandError("the two passwords differ; nothing was changed")
    return first


def handle(args: argparse.Namespace) -> int:
    """Handler of ``users``."""
    from core import users

    try:
        if args.action == "add":
            account = users.set_password(args.name, _password(args), admin=args.admin)
            role = "admin" if account.admin else "user"
            progress(f"{account.name}: saved as {role} in {users.users_path()}")
        elif args.action == "remove":
            users.remove(args.name)
            progress(f"{args.name}: removed (their datasets and runs stay on disk)")
        else:
            rows = [{"name": a.name, "admin": a.admin} for a in users.accounts()]
            if args.json:
                emit_json(rows)
            for row in rows if not args.json else []:
                print(f"{row['name']}{'  (admin)' if row['admin'] else ''}")
    except ValueError as error:
        raise CommandError(str(error)) from error
    return EXIT_OK
