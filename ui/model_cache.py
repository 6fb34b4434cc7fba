"""Opened run models and their Grad-CAM explainers, shared by every session of the server.

The Evaluate, Predict and Export pages need a finished run's model: loading a ``.keras`` file
takes about 0.75 s on a 2-core machine, and the explainer's first image about 0.4 s more (its
graph is traced once). :func:`warm_in_background` does both in a background thread when a
page can tell that they will be wanted soon (the Train page showing a completed run, whose
next step is Evaluate), so the user does not wait for them on arrival.

Entries are keyed by the run folder and the model file's modification time, so a retrained
model (a new file) is loaded again. A read-only model is safe to share between sessions.
Every key has its own lock: a page that asks while the background thread is loading waits
for that load instead of starting a second one; and one load or trace runs at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from core.runs.store import MODEL_FILE

logger = logging.getLogger(__name__)

MAX_MODELS = 4  # models kept in memory, least recently used dropped first
WARM_DELAY_S = 0.0  # seconds before the thread starts loading

Key = tuple[str, int]

_lock = threading.Lock()
_entries: OrderedDict[Key, dict[str, Any]] = OrderedDict()
_key_locks: dict[Key, threading.Lock] = {}
_warming: set[Key] = set()
# One model is loaded or traced at a time, in whichever thread: Keras' loading and tracing
# are not made to run side by side, and on a 2-core machine nothing is gained by it.
_load_lock = threading.Lock()


def model_key(run_dir: str | Path) -> Key:
    """``(run folder, model file mtime)``: what a cached model is valid for.

    Raises:
        FileNotFoundError: If the run has no saved model.
    """
    folder = Path(run_dir)
    return str(folder), (folder / MODEL_FILE).stat().st_mtime_ns


def _entry(key: Key) -> tuple[dict[str, Any], threading.Lock]:
    with _lock:
        entry = _entries.setdefault(key, {})
        _entries.move_to_end(key)
        while len(_entries) > MAX_MODELS:
            dropped, _ = _entries.popitem(last=False)
            _key_locks.pop(dropped, None)
        return entry, _key_locks.setdefault(key, threading.Lock())


def is_loaded(key: Key) -> bool:
    """Whether the model of ``key`` is in memory (a page can skip its "Loading" note)."""
    with _lock:
        return "model" in _entries.get(key, {})


def run_model(key: Key) -> Any:
    """The run's :class:`core.runs.predict.RunModel`, loaded once per key."""
    entry, key_lock = _entry(key)
    with key_lock:
        if "model" not in entry:
            from core.runs.predict import load_run_model

            with _load_lock:
                entry["model"] = load_run_model(key[0])
        return entry["model"]


def explainer(key: Key, *, warm: bool = True) -> Any:
    """A :class:`core.runs.gradcam.GradCam` of the run's model, built once per key.

    Args:
        key: From :func:`model_key`.
        warm: Trace its graph in a background thread when that is not done yet (until
            then it explains eagerly: no wait for the trace).
    """
    model = run_model(key)
    entry, key_lock = _entry(key)
    with key_lock:
        if "explainer" not in entry:
            from core.runs.gradcam import GradCam

            entry["explainer"] = GradCam(model.model)
        found = entry["explainer"]
    if warm and not found.is_warm:
        _start_warming(key, 0.0)
    return found


def _warm(key: Key, delay_s: float) -> None:
    time.sleep(delay_s)
    try:
        found = explainer(key, warm=False)
        with _load_lock:
            found.warm()
    except Exception:  # the page that needs the model loads it again and shows the error
        logger.exception("Loading the model of %s in the background failed", key[0])
    finally:
        with _lock:
            _warming.discard(key)


def warm_in_background(run_dir: str | Path, delay_s: float = WARM_DELAY_S) -> bool:
    """Loads the run's model and traces its explainer in a background thread, once.

    Args:
        run_dir: A run folder with a saved model.
        delay_s: Seconds the thread waits first, so the page that asked is drawn before.

    Returns:
        True when a thread was started; False when the model is ready, already being
        loaded, or the run has no model file.
    """
    try:
        key = model_key(run_dir)
    except OSError:
        return False
    return _start_warming(key, delay_s)


def _start_warming(key: Key, delay_s: float) -> bool:
    with _lock:
        entry = _entries.get(key, {})
        if key in _warming or ("explainer" in entry and entry["explainer"].is_warm):
            return False
        _warming.add(key)
    thread = threading.Thread(
        target=_warm, args=(key, delay_s), name="transfer-studio-warm-model", daemon=True
    )
    thread.start()
    return True
