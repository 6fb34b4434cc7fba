"""The pre-flight check of a run's weights (no download is ever attempted)."""

from __future__ import annotations

import pytest

from core.models import weights


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_WEIGHTS_MIRROR", "http://127.0.0.1:9")
    weights.reset_probe_cache()
    yield
    weights.reset_probe_cache()


def test_bundled_and_random_weights_can_start():
    assert weights.missing_weights("efficientnet_lite0", "imagenet", 224) is None
    assert weights.missing_weights("mobilenet_v2", "none", 224) is None


def test_imagenet_weights_that_cannot_download_are_named():
    message = weights.missing_weights("mobilenet_v2", "imagenet", 224)
    assert message and "MobileNetV2" in message and "offline" in message


def test_a_weights_file_that_is_gone_is_named(tmp_path):
    path = tmp_path / "mine.weights.h5"
    assert "mine.weights.h5" in weights.missing_weights("mobilenet_v2", str(path), 224)
    path.write_bytes(b"x")
    assert weights.missing_weights("mobilenet_v2", str(path), 224) is None
