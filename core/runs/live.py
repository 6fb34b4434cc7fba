"""The in-browser model of a run: its web export, made once and reused while it is current.

Live prediction (the Predict page's camera view) classifies frames in the browser with the web
export's runtime, so no server work is done per frame. The export is the ordinary one
(``<run>/exports/web/``, checked in a clean process like every export); it is reused as long
as its marker is readable, lists the files the page needs and is newer than the run's model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.runs.export import export_run
from core.runs.export_folder import MARKER_FILE, MARKER_KIND, default_export_dir
from core.runs.store import MODEL_FILE, parse_time, resolve_run_dir

#: Files the browser needs from the web export.
LIVE_FILES = ("model.json", "model.onnx", "classifier.js", "ort")


def current_web_export(run: str | os.PathLike[str]) -> Path | None:
    """The run's web export folder if it can serve live prediction as it is, else None.

    It must hold a readable web-export marker listing :data:`LIVE_FILES`, a ``model.json``
    that is a JSON object, and be newer than the run's saved model (a model trained further
    after the export makes it stale).

    Args:
        run: The run folder or run id.
    """
    run_dir = resolve_run_dir(run)
    folder = default_export_dir(run_dir, "web")
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
        info = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        model_time = (run_dir / MODEL_FILE).stat().st_mtime
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(info, dict):
        return None
    if marker.get("kind") != MARKER_KIND or marker.get("format") != "web":
        return None
    listed = marker.get("files")
    if not isinstance(listed, list) or not set(LIVE_FILES) <= set(listed):
        return None
    if not all((folder / name).exists() for name in LIVE_FILES):
        return None
    created = parse_time(marker.get("created"))
    if created is None or created < model_time:
        return None
    return folder


def ensure_web_export(
    run: str | os.PathLike[str], *, run_model: Any = None, progress: Any = None
) -> Path:
    """The run's current web export folder, exporting it first when it is missing or stale.

    Args:
        run: The run folder or run id.
        run_model: An already opened :class:`core.runs.predict.RunModel` (saves a reload).
        progress: Optional callback receiving one message per export stage.

    Returns:
        ``<run>/exports/web/`` holding ``model.json``, ``model.onnx``, ``classifier.js``
        and ``ort/``.

    Raises:
        Whatever :func:`core.runs.export.export_run` raises when the export fails.
    """
    folder = current_web_export(run)
    if folder is not None:
        return folder
    return export_run(run, "web", run_model=run_model, progress=progress).folder
