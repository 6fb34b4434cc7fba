"""Keeps the garbage collector's work per rerun small once TensorFlow is loaded.

After every script run Streamlit calls ``keras.backend.clear_session()`` when Keras is
imported, and that runs a full ``gc.collect()``. With TensorFlow in the process the heap holds
about 400,000 tracked objects, so each collection cost 250-400 ms on a 2-core machine: most of
the time a click took to draw. Nearly all of those objects are modules and their contents,
which live as long as the server. :func:`freeze_new_modules` moves them out of the collector's
reach (``gc.freeze()``) once, right after they were imported, so later collections only look
at what the app made since.

Streamlit's own collection after each run (``runner.postScriptGC``) is off in
``.streamlit/config.toml`` for the same reason.
"""

from __future__ import annotations

import gc
import sys

_modules_when_frozen = 0


def freeze_new_modules() -> bool:
    """Freezes the heap when modules were imported since the last freeze.

    Garbage is collected first, so only live objects are frozen. Cheap when nothing new was
    imported (one length check), so it can run at the end of every script run.

    Returns:
        True when it froze the heap now.
    """
    global _modules_when_frozen
    if len(sys.modules) <= _modules_when_frozen:
        return False
    gc.collect()
    gc.freeze()
    _modules_when_frozen = len(sys.modules)
    return True
