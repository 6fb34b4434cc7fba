"""The app starts the way the README says, with a configuration that keeps an idle server idle."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_config_does_not_watch_files():
    """Watching the folder walked the whole .venv and kept a core busy while idle."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"
    assert config["server"]["runOnSave"] is False
    assert config["server"]["enableXsrfProtection"] is True


def test_browser_tests_start_the_app_like_the_readme():
    from tests.e2e.conftest import app_command

    command, env = app_command(8599)
    assert "bash scripts/run-app.sh" in (ROOT / "README.md").read_text()
    assert command[:2] == ["bash", str(ROOT / "scripts" / "run-app.sh")]
    assert not any("fileWatcher" in part for part in command)
    assert env["TRANSFER_STUDIO_NO_INSTALL"] == "1"


def test_venv_script_skips_install_when_nothing_changed(tmp_path):
    """A second start does not reinstall: the stamp matches, so pip is never called."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    fake = venv / "bin" / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    (venv / "bin" / "activate").write_text(f'PATH="{venv / "bin"}:$PATH"\n')
    script = ". scripts/_venv.sh requirements.txt; echo sourced-ok"
    env = {"PATH": "/usr/bin:/bin", "TRANSFER_STUDIO_VENV": str(venv)}

    def start() -> list[str]:
        calls.unlink(missing_ok=True)
        done = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0 and "sourced-ok" in done.stdout, done.stderr
        return calls.read_text().splitlines() if calls.exists() else []

    first = start()
    assert any("install" in line and "requirements.txt" in line for line in first), first
    assert (venv / ".transfer-studio-requirements.txt.sha256").is_file()
    assert start() == []  # nothing changed: no pip at all
    (venv / ".transfer-studio-requirements.txt.sha256").write_text("something else\n")
    assert start() != []  # requirements changed (stamp differs): installs again
