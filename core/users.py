"""Accounts for a server beyond localhost: a built-in password list, and who is an admin.

On a teacher's laptop (localhost) there are no accounts. To serve a classroom, either set up
Streamlit's OpenID Connect login (``st.login``, an ``[auth]`` section in
``.streamlit/secrets.toml``) or keep a password list here, managed with
``transfer-studio users add NAME [--admin]``. Each user then gets a namespace of their own
(:func:`core.workspace.user_root`); an admin may look into everyone's.

The list is ``<shared root>/auth/users.json``. Passwords are stored as scrypt hashes with a
random salt per user, never in clear; checking one takes the same time whether the name
exists or not.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from core.atomic import atomic_write_json
from core.jsonfile import CorruptFileError, read_json
from core.workspace import shared_root

USERS_FILE = "users.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD_LENGTH = 8
#: Names of admins for an OpenID Connect login, by e-mail: ``TRANSFER_STUDIO_ADMINS=a@x,b@y``.
ADMINS_ENV = "TRANSFER_STUDIO_ADMINS"


@dataclass(frozen=True)
class Account:
    """One user of the password list.

    Attributes:
        name: The login name.
        admin: Whether the user may look into every user's datasets and runs.
    """

    name: str
    admin: bool


def users_path() -> Path:
    """Where the password list lives (``<shared root>/auth/users.json``)."""
    return shared_root() / "auth" / USERS_FILE


def validate_name(name: str) -> str:
    """Checks a login name.

    Raises:
        ValueError: Unless it is 1-64 letters, digits, ``.``, ``_`` or ``-``.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            "A user name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit. Received: {str(name)[:80]!r}"
        )
    return name


def _hash(password: str, salt: bytes) -> str:
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def _load() -> dict[str, dict]:
    data = read_json(users_path())
    if data is None:
        return {}
    users = data.get("users")
    if not isinstance(users, dict):
        raise CorruptFileError(users_path(), "has no 'users' object")
    return users


def accounts() -> list[Account]:
    """Every account of the password list, by name.

    Raises:
        CorruptFileError: If the list is damaged (the app then refuses every login).
    """
    return [Account(name, bool(entry.get("admin"))) for name, entry in sorted(_load().items())]


def has_accounts() -> bool:
    """Whether a password list with at least one user exists (a damaged one counts)."""
    try:
        return bool(_load())
    except CorruptFileError:
        return True


def set_password(name: str, password: str, *, admin: bool = False) -> Account:
    """Adds a user, or changes an existing user's password and admin flag.

    Args:
        name: The login name.
        password: At least :data:`MIN_PASSWORD_LENGTH` characters.
        admin: Whether the user sees every user's work.

    Returns:
        The account.

    Raises:
        ValueError: For a bad name or a short password.
    """
    validate_name(name)
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    users = _load()
    users[name] = {"hash": _hash(password, secrets.token_bytes(16)), "admin": bool(admin)}
    atomic_write_json(users_path(), {"users": users})
    os.chmod(users_path(), 0o600)
    return Account(name, bool(admin))


def remove(name: str) -> None:
    """Removes a user from the list (their datasets and runs stay on disk).

    Raises:
        ValueError: If there is no such user.
    """
    users = _load()
    if name not in users:
        raise ValueError(f"No user {name[:80]!r}. Users: {', '.join(sorted(users)) or 'none'}")
    del users[name]
    atomic_write_json(users_path(), {"users": users})


_DUMMY = _hash("not a password", b"\0" * 16)


def check_password(name: str, password: str) -> Account | None:
    """The account when ``password`` is the user's, else None.

    Unknown names cost the same scrypt work as known ones (no timing hint of who exists);
    a damaged list lets nobody in.
    """
    try:
        users = _load()
    except CorruptFileError:
        users = {}
    entry = users.get(name) if isinstance(name, str) else None
    stored = entry.get("hash") if isinstance(entry, dict) else None
    if not isinstance(stored, str):
        stored = _DUMMY
    try:
        _, n, r, p, salt, _digest = stored.split("$")
        digest = hashlib.scrypt(
            str(password).encode("utf-8"),
            salt=bytes.fromhex(salt),
            dklen=32,
            n=int(n),
            r=int(r),
            p=int(p),
        )
    except ValueError:
        return None
    matched = hmac.compare_digest(stored.rsplit("$", 1)[1], digest.hex())
    if entry is None or not matched:
        return None
    return Account(name, bool(entry.get("admin")))


def oidc_admins() -> set[str]:
    """E-mail addresses of admins under an OpenID Connect login (``TRANSFER_STUDIO_ADMINS``)."""
    raw = os.environ.get(ADMINS_ENV, "")
    return {part.strip().lower() for part in raw.split(",") if part.strip()}


def namespace_owners() -> list[str]:
    """The users who have a namespace (what an admin can look into), by name."""
    from core.workspace import OWNER_FILE, USERS_DIR, user_folder_name

    folder = shared_root() / USERS_DIR
    if not folder.is_dir():
        return []
    owners = []
    for path in folder.iterdir():
        try:
            name = (path / OWNER_FILE).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        # The owner file must match its folder: a planted one cannot alias another user.
        if name and user_folder_name(name) == path.name:
            owners.append(name)
    return sorted(owners)


LOCAL_ADDRESSES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})
#: Set (to ``1``) by ``transfer-studio app --allow-open-server``: serve beyond localhost
#: without accounts, everyone sharing one workspace.
OPEN_SERVER_ENV = "TRANSFER_STUDIO_OPEN_SERVER"


def is_local_address(address: str | None) -> bool:
    """Whether a server address only accepts connections from this machine.

    An empty address means every interface (Streamlit's default), so it is not local.
    """
    text = (address or "").strip().strip("[]").lower()
    return text in LOCAL_ADDRESSES or text.startswith("127.")


def oidc_configured(project_dir: str | os.PathLike[str]) -> bool:
    """Whether Streamlit's OpenID Connect login is set up (an ``[auth]`` section in
    ``.streamlit/secrets.toml`` of the project or of the home folder)."""
    import tomllib

    for folder in (Path(project_dir), Path.home()):
        path = folder / ".streamlit" / "secrets.toml"
        try:
            secrets_toml = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        auth = secrets_toml.get("auth")
        if isinstance(auth, dict) and auth:
            return True
    return False


def open_server_refusal(address: str) -> str:
    """Why the app will not serve ``address`` without accounts, naming both ways forward."""
    return (
        f"refusing to serve on {address!r} (beyond this machine) without logins: anyone who "
        "can reach it would see and change everyone's datasets and runs. Either set up "
        "Streamlit's login (an [auth] section with your OpenID Connect provider in "
        ".streamlit/secrets.toml), or create accounts with `transfer-studio users add NAME` "
        "(`--admin` for the teacher). To serve an open, shared workspace anyway, pass "
        "--allow-open-server."
    )
