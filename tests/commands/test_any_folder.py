"""The installed project works from a user's own folder, not only from the repository root.

These run the console script and ``python -m core`` with the working directory outside the
repository and without the repository on ``PYTHONPATH``: what a user with the environment
active does in the folder that holds their photos.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.data.sample import write_class_folders

REPO = Path(__file__).resolve().parents[2]


def _user_env(workspace: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TRANSFER_STUDIO_HOME"] = str(workspace)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


@pytest.fixture
def photos(tmp_path):
    """A user's folder outside the repository with ``photos.zip`` (3 classes) in it."""
    home = tmp_path / "user-folder"
    classes = home / "classes"
    write_class_folders(classes, {"circle": 12, "square": 12, "triangle": 12}, size=(48, 48))
    with zipfile.ZipFile(home / "photos.zip", "w") as archive:
        for path in sorted(classes.rglob("*.jpg")):
            archive.write(path, path.relative_to(classes).as_posix())
    shutil.rmtree(classes)
    assert REPO not in home.resolve().parents
    return home


def _console_script() -> str:
    script = Path(sys.executable).with_name("transfer-studio")
    if not script.is_file():
        pytest.fail(
            f"{script} is missing: install the project into the environment "
            "(`pip install -e .`, which the README's set-up scripts do)"
        )
    return str(script)


def test_console_script_inspects_a_zip_from_the_users_folder(photos, tmp_path):
    result = subprocess.run(
        [_console_script(), "inspect", "photos.zip", "--json"],
        cwd=photos,
        env=_user_env(tmp_path / "ws"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["classes"] == {"circle": 12, "square": 12, "triangle": 12}
    assert report["trainable"] is True


def test_python_m_core_trains_from_the_users_folder(photos, tmp_path):
    workspace = tmp_path / "ws"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "train",
            "--data",
            "photos.zip",
            "--backbone",
            "efficientnet_lite0",
            "--image-size",
            "64",
            "--epochs",
            "1",
            "--json",
        ],
        cwd=photos,
        env=_user_env(workspace),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert final["state"] == "completed"
    run_dir = Path(final["run_dir"])
    assert workspace.resolve() in run_dir.parents
    assert (run_dir / "model.keras").is_file()
    # Nothing was written into the user's folder except what they had.
    assert sorted(p.name for p in photos.iterdir()) == ["photos.zip"]
