"""The worker's CPU priority: its nice value and, as a session leader, its autogroup's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.training.priority import lower_priority

ROOT = Path(__file__).resolve().parents[2]
AUTOGROUP = Path("/proc/self/autogroup")
needs_autogroup = pytest.mark.skipif(
    not AUTOGROUP.exists(), reason="no autogroup scheduling on this machine"
)

PROBE = """
import json, os, sys
from core.training.priority import lower_priority
problem = lower_priority(int(sys.argv[1]))
group = open("/proc/self/autogroup").read()
print(json.dumps({"problem": problem, "nice": os.nice(0), "group": group}))
"""


def _child(code: str, *args: str, new_session: bool) -> str:
    """Runs ``code`` in a new Python process (in a session of its own or ours); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        start_new_session=new_session,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    return done.stdout


def _probe(niceness: int, *, new_session: bool) -> dict:
    return json.loads(_child(PROBE, str(niceness), new_session=new_session))


def _group_nice(line: str) -> int:
    """``/autogroup-340 nice 0`` -> 0."""
    return int(line.split()[-1])


@needs_autogroup
def test_a_session_leader_lowers_its_group_too():
    seen = _probe(7, new_session=True)
    assert seen["problem"] is None
    assert seen["nice"] == os.nice(0) + 7
    assert _group_nice(seen["group"]) == 7


@needs_autogroup
def test_a_process_sharing_its_parents_session_leaves_the_group_alone():
    # Compared as text: a session in the kernel's default group (one no process of the
    # machine ever left with setsid, as on some CI machines) reads as an empty file.
    before = AUTOGROUP.read_text()
    seen = _probe(7, new_session=False)
    assert seen["problem"] is None and seen["nice"] == os.nice(0) + 7
    assert seen["group"] == before == AUTOGROUP.read_text()


def test_a_group_that_cannot_be_lowered_is_said_not_raised(tmp_path):
    # The child leads its session; its "autogroup file" is a folder, which cannot be written.
    code = (
        "import sys; from pathlib import Path; from core.training.priority import "
        "lower_priority; print(lower_priority(3, autogroup=Path(sys.argv[1])))"
    )
    said = _child(code, str(tmp_path), new_session=True)
    assert "could not lower the CPU priority" in said and str(tmp_path) in said


@pytest.mark.parametrize("bad", [-1, 20, 2.5, True, "5"])
def test_a_niceness_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="niceness must be"):
        lower_priority(bad)


def test_zero_changes_nothing():
    before = os.nice(0)
    assert lower_priority(0) is None
    assert os.nice(0) == before
