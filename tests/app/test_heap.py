"""The heap is frozen after new imports, so each rerun's garbage collection stays small."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
import gc, json
from ui.heap import freeze_new_modules

first = freeze_new_modules()
frozen_before = gc.get_freeze_count()
again = freeze_new_modules()  # nothing new imported: nothing to do
import keras  # noqa: F401  (about 400,000 objects)
tracked_before = len(gc.get_objects())
after_import = freeze_new_modules()
print(json.dumps({
    "first": first, "again": again, "after_import": after_import,
    "grew": gc.get_freeze_count() > frozen_before,
    "tracked_before": tracked_before, "tracked": len(gc.get_objects()),
}))
"""


def test_freezing_after_an_import_leaves_the_collector_little_to_scan():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["first"] is True
    assert report["again"] is False
    assert report["after_import"] is True
    assert report["grew"]
    # Keras brought hundreds of thousands of objects; after the freeze the collector tracks
    # only what was made since.
    assert report["tracked_before"] > 200_000, report
    assert report["tracked"] < report["tracked_before"] / 20, report


PRELOAD = """
import gc, json, sys
from ui.preload import HEAVY_MODULES, start_background_imports

thread = start_background_imports(delay_s=0)
same = start_background_imports() is thread
thread.join(timeout=240)
print(json.dumps({
    "same": same, "done": not thread.is_alive(),
    "loaded": [name for name in HEAVY_MODULES if name in sys.modules],
    "frozen": gc.get_freeze_count(),
}))
"""


def test_the_background_thread_loads_keras_once_and_freezes_it():
    result = subprocess.run(
        [sys.executable, "-c", PRELOAD], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["same"] and report["done"]
    from ui.preload import HEAVY_MODULES

    assert report["loaded"] == list(HEAVY_MODULES)
    assert report["frozen"] > 200_000, report


def test_streamlit_does_not_collect_the_whole_heap_after_every_rerun():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
