"""Loads TensorFlow and Keras in the background shortly after the server drew its first page.

The Model, Train, Evaluate and Export pages need Keras, and importing it takes 2-3 s on a
2-core machine. Done on the first visit of one of those pages, the user waits for it; done in a
background thread while they look at Home or Data, they do not. The thread waits
:data:`START_DELAY_S` first, so it does not slow the first page itself (an import holds
Python's interpreter lock most of the time). It only imports: it builds no model and holds no
session data.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time

from ui.heap import freeze_new_modules

logger = logging.getLogger(__name__)

HEAVY_MODULES = (
    "keras",
    "core.models.transfer",
    "core.models.cut",
    "core.models.model_io",
    "core.runs.predict",
    "core.training.devices",
)
START_DELAY_S = 1.5  # after the first page was drawn
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _import_heavy_modules(delay_s: float) -> None:
    time.sleep(delay_s)
    for name in HEAVY_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # the page that needs it imports it again and shows the error
            logger.exception("Loading %s in the background failed", name)
            return
    freeze_new_modules()


def start_background_imports(delay_s: float = START_DELAY_S) -> threading.Thread:
    """Starts the background import once per server process; later calls return that thread.

    Args:
        delay_s: Seconds the thread waits before it imports.

    Returns:
        The (daemon) thread that imports :data:`HEAVY_MODULES`.
    """
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(
                target=_import_heavy_modules,
                args=(delay_s,),
                name="transfer-studio-preload",
                daemon=True,
            )
            _thread.start()
        return _thread
