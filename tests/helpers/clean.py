"""Running code the way a user's own machine would: a Python that cannot import this project.

The child is :func:`core.runs.parity.clean_python`: ``python -I -S`` with only the
interpreter's installed packages on the path (no PYTHONPATH, no ``.pth`` hooks such as an
editable install of this project), in a temporary folder; it refuses to run if ``core`` is
importable, so a passing test proves the code ran without the project.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from core.runs import parity


def run_clean(
    script: str, args: list[str], cwd: Path, *, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Runs ``script ARGS`` in a clean process in ``cwd``; fails the test on a non-zero exit."""
    completed = parity.run_clean(cwd, script, *args, timeout=timeout)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def run_clean_code(code: str, cwd: Path, *, timeout: float = 600) -> str:
    """Runs Python ``code`` in a clean process in ``cwd``; returns its stdout."""
    script = cwd / "_clean_check.py"
    script.write_text(code, encoding="utf-8")
    try:
        return run_clean(script.name, [], cwd, timeout=timeout).stdout
    finally:
        script.unlink(missing_ok=True)
