"""Where Transfer Studio keeps what users make: datasets, runs and caches.

The root defaults to ``./workspace`` and moves with the environment variable
``TRANSFER_STUDIO_HOME``. Every path built from user input goes through
:func:`resolve_under`, so nothing is ever read or written outside the root it belongs to.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TRANSFER_STUDIO_HOME"


def workspace_root() -> Path:
    """Returns the workspace root, creating it if needed."""
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
