"""Fixtures of the page tests: offline weights, and a tiny dataset and finished run.

A tiny dataset (48 px shapes) and one finished 2-epoch run (random weights, 32 px) are made
once per session with the real ingest and training engine, then copied into each test's
fresh workspace.
"""

from __future__ import annotations

import shutil

import pytest

from core.config import ModelConfig, TrainConfig
from core.data.sample import write_class_folders


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test touches the network: the weights server is a refused local port."""
    monkeypatch.setenv("TRANSFER_STUDIO_WEIGHTS_MIRROR", "http://127.0.0.1:9")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A workspace holding a tiny dataset and a finished run; returns (home, ids)."""
    from core.data.ingest import ingest
    from core.runs.store import create_run, read_status
    from core.training.worker import run_worker

    home = tmp_path_factory.mktemp("prepared")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFER_STUDIO_HOME", str(home))
        images = write_class_folders(
            home.parent / "tiny-src", {"circle": 12, "square": 12, "star": 12}, size=(48, 48)
        )
        report = ingest(images, name="Tiny shapes", val_fraction=0.25, test_fraction=0.25)
        config = TrainConfig(
            dataset=report.dataset_id,
            model=ModelConfig(backbone="mobilenet_v3_small", weights="none", image_size=32),
            epochs=2,
            batch_size=8,
            name="tiny run",
        )
        folder = create_run(config)
        final = run_worker(folder)
        assert final.state == "completed", final.message
        assert read_status(folder).state == "completed"
    return home, {"dataset_id": report.dataset_id, "run_id": folder.name}


@pytest.fixture
def ready(prepared, workspace):
    """Copies the prepared dataset and run into this test's workspace; returns the ids."""
    home, ids = prepared
    for sub in ("datasets", "runs"):
        shutil.copytree(home / sub, workspace / sub, dirs_exist_ok=True)
    return ids
