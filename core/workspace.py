"""Where Transfer Studio keeps what users make: datasets, runs and caches.

The root defaults to ``./workspace`` and moves with the environment variable
``TRANSFER_STUDIO_HOME``. Every path built from user input goes through
:func:`resolve_under`, so nothing is ever read or written outside the root it belongs to.

With accounts (a server beyond localhost, see :mod:`core.users`), each user works in a
namespace of their own, ``<shared root>/users/<name>/`` (datasets, runs, caches); the app
tells this module who the current user is with :func:`set_user_resolver` (Streamlit serves
every user from one process, so an environment variable cannot say it). Workers get their
user's root as ``TRANSFER_STUDIO_HOME`` and the shared root as ``TRANSFER_STUDIO_SHARED_HOME``:
what all users share (the device lock and the training queue) lives in the shared root.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

HOME_ENV = "TRANSFER_STUDIO_HOME"
SHARED_HOME_ENV = "TRANSFER_STUDIO_SHARED_HOME"
USER_ENV = "TRANSFER_STUDIO_USER"
USERS_DIR = "users"
OWNER_FILE = ".owner"  # in a user's namespace: the name it belongs to

_user_resolver: Callable[[], str | None] | None = None


def set_user_resolver(resolver: Callable[[], str | None] | None) -> None:
    """Registers the function that names the current user (None: the single-user root).

    Args:
        resolver: Returns the user whose namespace the current caller works in, or None.
    """
    global _user_resolver
    _user_resolver = resolver


def current_user() -> str:
    """The user the current caller works for (``""`` when there are no accounts)."""
    name = _user_resolver() if _user_resolver is not None else None
    return name or os.environ.get(USER_ENV, "")


def user_folder_name(user: str) -> str:
    """The folder of a user's namespace: readable, and distinct for distinct names.

    Args:
        user: A user name or an e-mail address (OIDC).

    Returns:
        A plain folder name (letters, digits, ``._-``) ending in a short hash of ``user``.
    """
    if not isinstance(user, str) or not user:
        raise ValueError(f"A user name must be non-empty text. Received: {user!r}")
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", user).strip(".-")[:40] or "user"
    digest = hashlib.sha256(user.encode("utf-8")).hexdigest()[:8]
    return f"{readable}-{digest}"


def shared_root() -> Path:
    """The root every user shares (the device lock, the queue, the password list)."""
    base = os.environ.get(SHARED_HOME_ENV) or os.environ.get(HOME_ENV) or "workspace"
    root = Path(base).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def user_root(user: str) -> Path:
    """The namespace of ``user`` under the shared root (made if needed)."""
    root = shared_root() / USERS_DIR / user_folder_name(user)
    root.mkdir(parents=True, exist_ok=True)
    owner = root / OWNER_FILE
    if not owner.exists():
        owner.write_text(user + "\n", encoding="utf-8")
    return root


def workspace_root() -> Path:
    """Returns the current workspace root, creating it if needed.

    The current user's namespace when the app named one (:func:`set_user_resolver`),
    otherwise ``TRANSFER_STUDIO_HOME`` (a worker gets its user's namespace there).
    """
    name = _user_resolver() if _user_resolver is not None else None
    if name:
        return user_root(name)
    root = Path(os.environ.get(HOME_ENV) or "workspace").expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _subdir(name: str) -> Path:
    path = workspace_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def datasets_dir() -> Path:
    """Folder holding one sub-folder per dataset."""
    return _subdir("datasets")


def runs_dir() -> Path:
    """Folder holding one sub-folder per training run."""
    return _subdir("runs")


def cache_dir() -> Path:
    """Folder for derived data that can always be rebuilt (image arrays, embeddings, weights)."""
    return _subdir("cache")


def resolve_under(root: Path, relative: str | os.PathLike[str]) -> Path:
    """Resolves ``relative`` inside ``root`` and refuses anything that escapes it.

    Args:
        root: The folder the result must stay inside.
        relative: A user-influenced relative path.

    Returns:
        The absolute, resolved path.

    Raises:
        ValueError: If the path is absolute or resolves outside ``root``.
    """
    root = Path(root).resolve()
    candidate = Path(relative)
    if candidate.is_absolute():
        raise ValueError(f"Expected a path relative to {root}. Received: {str(relative)!r}")
    resolved = (root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"Path {str(relative)!r} resolves outside {root}; refusing to use it.")
    return resolved
