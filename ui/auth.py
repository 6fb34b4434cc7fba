"""Who is using the app, and which workspace they see.

- On localhost with no accounts (a teacher's laptop): no login, one workspace, as always.
- With Streamlit's OpenID Connect login set up (``[auth]`` in ``.streamlit/secrets.toml``):
  ``st.login``; the user is their e-mail address; admins are listed in
  ``TRANSFER_STUDIO_ADMINS``.
- With a password list (``transfer-studio users add``): a login form checked against the
  scrypt hashes of :mod:`core.users`.
- Beyond localhost with neither: the app refuses to show anything, unless the server was
  started with ``--allow-open-server``.

Each logged-in user works in their own namespace (:func:`core.workspace.user_root`); an admin
picks whose namespace to look into in the sidebar. :func:`gate` runs first in ``app.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from ui.text import md

ACCOUNT_KEY = "auth_account"  # {"name": str, "admin": bool} once logged in
VIEW_KEY = "_workspace_user"  # whose namespace this session works in
PROJECT_DIR = Path(__file__).resolve().parent.parent


def _session_user() -> str | None:
    """The namespace of the session running in this thread (None outside a session)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None:
        return None
    try:
        return ctx.session_state[VIEW_KEY]
    except (KeyError, AttributeError):
        return None


def auth_mode() -> str:
    """``"oidc"``, ``"passwords"`` or ``"none"``: how this server knows its users."""
    from core import users

    try:
        if "auth" in st.secrets:
            return "oidc"
    except (FileNotFoundError, KeyError, StreamlitSecretNotFoundError):
        pass
    return "passwords" if users.has_accounts() else "none"


def _hide_pages() -> None:
    """Registers the pages, hidden, before a screen that ends the run (login, refusal).

    Without it Streamlit lists the page files in the sidebar (its default when a script
    ends without ``st.navigation``). Called before anything is drawn, so the widgets of
    the login form belong to the page the run settles on; it names every page, so the
    address asked for (``/train?run=...``) is kept and opens once the user is in.
    """
    pages = sorted((PROJECT_DIR / "pages").glob("*.py"))
    st.navigation(
        [st.Page(str(page), default=page.stem == "home") for page in pages], position="hidden"
    )


def _password_form() -> None:
    from core import users

    _hide_pages()
    st.title("Transfer Studio")
    st.caption("This server has accounts. Log in with the name and password you were given.")
    with st.form("login"):
        name = st.text_input("Name", key="login_name")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        account = users.check_password(name, password)
        if account is None:
            st.error("That name and password do not match an account.")
        else:
            st.session_state[ACCOUNT_KEY] = {"name": account.name, "admin": account.admin}
            st.rerun()
    st.stop()


def _oidc_account() -> dict[str, Any]:
    from core import users

    if not st.user.is_logged_in:
        _hide_pages()
        st.title("Transfer Studio")
        st.caption("This server needs you to log in first.")
        if st.button("Log in", type="primary", key="login_oidc"):
            st.login()
        st.stop()
    name = str(st.user.get("email") or st.user.get("sub") or "")
    if not name:
        _hide_pages()
        st.error("The login provider sent no e-mail or subject for this account.")
        st.stop()
    return {"name": name, "admin": name.lower() in users.oidc_admins()}


def _admin_picker(account: dict[str, Any]) -> str:
    """An admin chooses whose work to look into; returns that user's name."""
    from core import users

    names = sorted({account["name"], *users.namespace_owners()})
    current = st.session_state.get(VIEW_KEY) or account["name"]
    chosen = st.sidebar.selectbox(
        "Workspace of",
        names,
        index=names.index(current) if current in names else 0,
        key="auth_view_user",
        help="As an admin you can look into every user's datasets and runs.",
    )
    return str(chosen)


def gate() -> None:
    """Lets the session in (or stops the script) and points the workspace at its namespace."""
    from core import users
    from core.workspace import set_user_resolver, user_root

    set_user_resolver(_session_user)  # the same function for every session of the server
    mode = auth_mode()
    if mode == "none":
        address = st.get_option("server.address")
        if not users.is_local_address(address) and os.environ.get(users.OPEN_SERVER_ENV) != "1":
            _hide_pages()
            st.title("Transfer Studio")
            st.error(md(users.open_server_refusal(str(address or "every address"))))
            st.stop()
        st.session_state.pop(VIEW_KEY, None)
        return
    if mode == "oidc":
        account = _oidc_account()
    else:
        account = st.session_state.get(ACCOUNT_KEY)
        if not account:
            _password_form()
    view = _admin_picker(account) if account["admin"] else account["name"]
    previous = st.session_state.get(VIEW_KEY)
    if previous != view:
        st.session_state[VIEW_KEY] = view
        if previous is not None:  # an admin switched: those ids name another namespace
            for key in ("dataset_id", "run_id"):
                st.session_state[key] = None
    user_root(view)
    who = "admin" if account["admin"] else "user"
    st.sidebar.caption(f":material/person: {md(account['name'])} ({who})")
    if st.sidebar.button("Log out", key="auth_logout"):
        st.session_state.pop(ACCOUNT_KEY, None)
        st.session_state.pop(VIEW_KEY, None)
        if mode == "oidc":
            st.logout()
        st.rerun()
