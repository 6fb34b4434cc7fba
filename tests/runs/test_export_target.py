"""``export --out`` never destroys what it did not write.

Before the fix, an export replaced whatever folder ``--out`` named (``rmtree``) and overwrote a
sibling ``<out>.zip``. Each test builds the folder a user might point it at and checks the
command refuses with exit 2, one line, and leaves every file as it was; an export's own
previous output is still replaced.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.runs import subprocess_env, workspace_with_run


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return workspace_with_run(tmp_path_factory, epochs=1)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _export(root: Path, run_dir: Path, out: Path, fmt: str = "keras"):
    return subprocess.run(
        [sys.executable, "-m", "core", "export", "--run", str(run_dir), "--format", fmt]
        + ["--out", str(out), "--parity-images", "4"],
        capture_output=True,
        text=True,
        env=subprocess_env(root),
        timeout=600,
    )


def _refused(completed) -> str:
    assert completed.returncode == 2, completed.stderr
    lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    return lines[0]


def test_a_folder_of_user_files_is_refused_and_kept(shared, tmp_path):
    root, run_dir = shared
    documents = tmp_path / "Documents"
    (documents / "taxes").mkdir(parents=True)
    (documents / "letter.txt").write_text("dear ...")
    (documents / "taxes" / "2026.pdf").write_bytes(b"%PDF-1.7 ...")
    before = _snapshot(documents)
    reason = _refused(_export(root, run_dir, documents))
    assert "not empty" in reason and str(documents) in reason
    assert _snapshot(documents) == before


def test_the_workspace_root_is_refused_and_kept(shared):
    root, run_dir = shared
    before = _snapshot(root)
    _refused(_export(root, run_dir, root))
    assert _snapshot(root) == before
    assert (run_dir / "model.keras").exists()


def test_a_run_folder_is_refused_and_kept(shared):
    root, run_dir = shared
    before = _snapshot(run_dir)
    _refused(_export(root, run_dir, run_dir))
    assert _snapshot(run_dir) == before


def test_a_zip_it_did_not_write_is_never_replaced(shared, tmp_path):
    root, run_dir = shared
    out = tmp_path / "model"
    mine = tmp_path / "model.zip"
    mine.write_bytes(b"my holiday photos")
    reason = _refused(_export(root, run_dir, out))
    assert "model.zip" in reason
    assert mine.read_bytes() == b"my holiday photos"
    assert not out.exists()


def test_its_own_previous_export_is_replaced_but_not_a_foreign_one(shared, tmp_path):
    from core.runs.export_folder import MARKER_FILE

    root, run_dir = shared
    out = tmp_path / "empty"
    out.mkdir()
    first = _export(root, run_dir, out)
    assert first.returncode == 0, first.stderr
    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["format"] == "keras" and "model.keras" in marker["files"]
    again = _export(root, run_dir, out)  # same kind, marked: replaced, zip included
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "empty.zip").exists()

    # Another format may not take over a keras export...
    _refused(_export(root, run_dir, out, fmt="onnx"))
    # ...and a file the user added makes the folder theirs again.
    (out / "notes.txt").write_text("mine")
    reason = _refused(_export(root, run_dir, out))
    assert "notes.txt" in reason
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.keras").exists()


def test_a_garbled_marker_does_not_prove_ownership(shared, tmp_path):
    from core.runs.export_folder import MARKER_FILE

    root, run_dir = shared
    out = tmp_path / "odd"
    out.mkdir()
    (out / MARKER_FILE).write_text('{"kind": "transfer-studio-export", "form')
    (out / "thesis.docx").write_bytes(b"PK...")
    _refused(_export(root, run_dir, out))
    assert (out / "thesis.docx").read_bytes() == b"PK..."
