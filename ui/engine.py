"""Read-side access to the engine for the pages, with errors turned into sentences.

Pages call these instead of repeating the same try/except around ``core`` lookups. Nothing
here keeps per-user state; dataset loads are cached by id and manifest time (read-only data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from core.workspace import datasets_dir

LOOKUP_ERRORS = (KeyError, ValueError, FileNotFoundError, OSError)


@st.cache_data(show_spinner=False, max_entries=32)
def _load_dataset(dataset_id: str, stamp: float) -> Any:
    from core.data.store import load_dataset

    return load_dataset(dataset_id)


def manifest_stamp(dataset_id: str) -> float:
    """When dataset ``dataset_id`` last changed (its manifest or metadata; 0 if absent)."""
    folder = datasets_dir() / dataset_id
    stamps = [
        (folder / name).stat().st_mtime_ns
        for name in ("manifest.csv", "dataset.json")
        if (folder / name).exists()
    ]
    return float(max(stamps, default=0))


def load_dataset(dataset_id: str) -> Any:
    """The dataset ``dataset_id`` (cached until its manifest changes).

    Raises:
        KeyError, ValueError, FileNotFoundError: From :func:`core.data.store.load_dataset`
            when the id is unknown.
    """
    if not dataset_id or "/" in dataset_id or dataset_id.startswith("."):
        raise ValueError(f"Not a dataset id: {dataset_id!r}")
    return _load_dataset(dataset_id, manifest_stamp(dataset_id))


@st.cache_resource(show_spinner=False, max_entries=32)
def _counts(folder: str, stamp: float) -> Any:
    return load_dataset(Path(folder).name).counts()


def dataset_counts(dataset: Any) -> Any:
    """``dataset.counts()`` (images per class and split), computed once per dataset version.

    The frame is shared between reruns and sessions: read it, never change it in place.
    """
    return _counts(str(datasets_dir() / dataset.id), manifest_stamp(dataset.id))


def dataset_choices() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(id, "name · N images · K classes")`` of every readable dataset, newest first, and
    ``(id, reason)`` of every dataset folder that cannot be read.

    Cached until a dataset folder is added or removed or any manifest changes, so the Data
    page does not read every manifest on each rerun.
    """
    folder = datasets_dir()
    ids = tuple(
        sorted(
            p.name
            for p in folder.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / "dataset.json").is_file()
        )
    )
    return _dataset_choices(tuple((i, manifest_stamp(i)) for i in ids))


@st.cache_data(show_spinner=False, max_entries=8)
def _dataset_choices(
    stamps: tuple[tuple[str, float], ...],
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    from core.data.store import scan_datasets

    readable, broken = scan_datasets()
    choices = [
        (d.id, f"{d.name} · {len(d.manifest)} images · {len(d.classes)} classes") for d in readable
    ]
    return choices, [(b.id, b.reason) for b in broken]


def dataset_or_error(dataset_id: str) -> tuple[Any | None, str]:
    """``(Dataset, "")`` or ``(None, why it cannot be loaded)``."""
    try:
        return load_dataset(dataset_id), ""
    except LOOKUP_ERRORS as error:
        return None, str(error)


def status_or_error(run_id: str) -> tuple[Any | None, str]:
    """``(RunStatus, "")`` or ``(None, why the run cannot be read)``."""
    from core.runs.store import read_status, run_dir

    try:
        return read_status(run_dir(run_id)), ""
    except LOOKUP_ERRORS as error:
        return None, str(error)


def backbone_title(name: str) -> str:
    """The display name of a registered backbone (its registry name if unknown)."""
    from core.models.registry import BACKBONES

    spec = BACKBONES.get(name)
    return spec.display_name if spec else name


def run_folder(run_id: str) -> Path:
    """The folder of ``run_id`` (validated; may not exist)."""
    from core.runs.store import run_dir

    return run_dir(run_id)
