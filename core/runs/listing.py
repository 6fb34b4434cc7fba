"""Listing runs from their folders alone, damaged ones included.

:func:`list_runs` finds every run folder of the workspace, newest first; a run whose files
are damaged is listed as ``broken`` with its problems named, so it never hides and never
stops the others from being listed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.jsonfile import CorruptFileError, read_json
from core.runs.store import (
    BROKEN_STATE,
    CONFIG_FILE,
    MODEL_FILE,
    STATUS_FILE,
    SUMMARY_FILE,
    RunStatus,
    broken_status,
    read_status,
)
from core.workspace import runs_dir


@dataclass
class RunInfo:
    """One run as listed by :func:`list_runs`.

    Attributes:
        run_id: Folder name.
        dir: The run folder.
        status: Its status (``interrupted`` when the worker died).
        config: The config as a dictionary (None if unreadable).
        summary: ``summary.json`` when the run finished, else None.
        has_model: Whether ``model.keras`` exists.
        problems: Sentences about damaged files of the run (empty when all is well).
    """

    run_id: str
    dir: Path
    status: RunStatus
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    has_model: bool
    problems: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        """True when the run's status cannot be read (it is listed, but cannot be used)."""
        return self.status.state == BROKEN_STATE

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary."""
        return {
            "run_id": self.run_id,
            "run_dir": str(self.dir),
            "status": self.status.to_dict(),
            "config": self.config,
            "summary": self.summary,
            "has_model": self.has_model,
            "problems": list(self.problems),
        }


def _optional_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        return read_json(path)
    except CorruptFileError as error:
        problems.append(f"{path.name} {error.reason}")
        return None


def read_run_info(folder: str | os.PathLike[str]) -> RunInfo:
    """Reads one run folder for listing; never raises for damaged files.

    A damaged ``status.json`` gives a run in the ``broken`` state (its message says why and
    what to do); a damaged ``config.json`` or ``summary.json`` is left out and named in
    ``problems``.

    Args:
        folder: The run folder (it holds a ``status.json``).

    Returns:
        The run's :class:`RunInfo`.
    """
    folder = Path(folder)
    problems: list[str] = []
    try:
        status = read_status(folder)
    except CorruptFileError as error:
        status = broken_status(folder, error)
        problems.append(f"{error.path.name} {error.reason}")
    except FileNotFoundError:
        status = broken_status(folder, CorruptFileError(folder / STATUS_FILE, "is missing"))
        problems.append(f"{STATUS_FILE} is missing")
    config = _optional_json(folder / CONFIG_FILE, problems)
    summary = _optional_json(folder / SUMMARY_FILE, problems)
    return RunInfo(
        run_id=folder.name,
        dir=folder,
        status=status,
        config=config,
        summary=summary,
        has_model=(folder / MODEL_FILE).is_file() and status.state != BROKEN_STATE,
        problems=problems,
    )


def list_runs(root: str | os.PathLike[str] | None = None) -> list[RunInfo]:
    """Lists every run folder, newest first, from the folders alone.

    Folders without a ``status.json`` entry are not runs and are skipped; a run whose files
    are damaged is listed as ``broken`` (see :func:`read_run_info`), so it never hides and
    never stops the others from being listed.
    """
    base = Path(root) if root is not None else runs_dir()
    if not base.is_dir():
        return []
    runs = []
    for folder in base.iterdir():
        if not folder.is_dir() or not os.path.lexists(folder / STATUS_FILE):
            continue
        runs.append(read_run_info(folder))
    runs.sort(key=lambda info: (str(info.status.created or ""), info.run_id), reverse=True)
    return runs
