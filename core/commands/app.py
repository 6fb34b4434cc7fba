"""``transfer-studio app``: starts the web app (Streamlit) on this machine.

The same as the README's start script: ``streamlit run app.py`` from the project folder, so
the project's ``.streamlit/config.toml`` applies (localhost only, XSRF protection on).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.cli import CommandError
from core.workspace import HOME_ENV


def app_script() -> Path:
    """The app's ``app.py``: in the source tree the installed ``core`` package comes from."""
    import core

    return Path(core.__file__).resolve().parent.parent / "app.py"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``app`` command."""
    parser = subparsers.add_parser("app", help="Start the web app (http://localhost:8501).")
    parser.add_argument(
        "--address",
        default=os.environ.get("TRANSFER_STUDIO_ADDRESS", "localhost"),
        help="Address to serve on (default localhost).",
    )
    parser.add_argument("--port", type=int, default=8501, help="Port (default 8501).")
    parser.add_argument(
        "--allow-open-server",
        action="store_true",
        help=(
            "serve beyond localhost without logins (everyone shares one workspace); without "
            "it, a non-local address needs Streamlit's login or `users add` accounts"
        ),
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Handler of ``app``: replaces this process with the Streamlit server."""
    script = app_script()
    if not script.is_file():
        raise CommandError(
            f"the app's files are not next to the installed engine (looked for {script}); "
            "install from a source checkout with `pip install -e .` to run the app"
        )
    from core import users

    protected = users.has_accounts() or users.oidc_configured(script.parent)
    if not users.is_local_address(args.address) and not protected and not args.allow_open_server:
        raise CommandError(users.open_server_refusal(args.address))
    if args.allow_open_server:
        os.environ[users.OPEN_SERVER_ENV] = "1"
    # The workspace stays where the user's shell would put it, even though the server runs
    # in the project folder (where Streamlit finds the project's config).
    home = os.environ.get(HOME_ENV)
    if home:
        os.environ[HOME_ENV] = str(Path(home).expanduser().resolve())
    os.chdir(script.parent)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.address",
        args.address,
        "--server.port",
        str(args.port),
    ]
    os.execv(sys.executable, command)
    return 0  # not reached: execv replaces the process
