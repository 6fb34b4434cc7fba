"""Weights sources: ImageNet download (offline failure, local mirror), cache, and user files."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from core.config import ModelConfig
from core.models import weights
from core.models.registry import get_backbone
from core.models.transfer import build_backbone, build_model, feature_extractor
from core.models.weights import WeightsFileError, WeightsUnavailableError, weights_status

REFUSED_URL = "http://127.0.0.1:9"  # the discard port: refused at once, never the network


@pytest.fixture
def keras_home(monkeypatch, tmp_path):
    """An empty Keras cache, so no previously downloaded file is used."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    weights.reset_probe_cache()
    yield home
    weights.reset_probe_cache()


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    """A local HTTP server standing in for the weights server; yields its folder."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(weights.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
    yield folder
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def _images(size: int, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")


def test_offline_imagenet_fails_with_the_alternatives(keras_home, monkeypatch):
    monkeypatch.setenv(weights.MIRROR_ENV, REFUSED_URL)
    config = ModelConfig(backbone="resnet50", weights="imagenet", image_size=32)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model(config, 2)
    message = str(info.value)
    assert "ResNet50" in message and "offline" in message
    assert "efficientnet_lite0" in message
    assert ".weights.h5" in message
    assert "'none'" in message
    cache = keras_home / "models"
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing half-written


def test_imagenet_download_reports_progress_then_uses_the_cache(keras_home, mirror, tmp_path):
    """The whole ImageNet path, with a local server instead of the internet."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    spec = get_backbone("mobilenet_v2")
    source = spec.build_fn()(include_top=False, weights=None, input_shape=(96, 96, 3))
    with h5py.File(mirror / spec.weights_filename(96), "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, source)

    events: list[tuple[int, int, str]] = []
    backbone = build_backbone(
        "mobilenet_v2", 96, "imagenet", progress=lambda d, t, m: events.append((d, t, m))
    )
    for got, want in zip(backbone.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert events[0][0] == 0 and "Downloading" in events[0][2]
    assert any(done == total > 0 for done, total, _ in events)
    assert (keras_home / "models" / spec.weights_filename(96)).is_file()
    assert weights_status("mobilenet_v2", 96) == "cached"

    # Second use: served from the cache even with the server gone.
    (mirror / spec.weights_filename(96)).unlink()
    events.clear()
    again = build_backbone("mobilenet_v2", 96, "imagenet", progress=lambda *a: events.append(a))
    np.testing.assert_array_equal(again.get_weights()[0], source.get_weights()[0])
    assert "cached" in events[0][2]


def test_corrupt_download_is_refused_and_removed(mirror, tmp_path):
    (mirror / "file.bin").write_bytes(b"not what was promised")
    target = tmp_path / "cache" / "file.bin"
    with pytest.raises(ValueError, match="hash does not match"):
        weights.download_file(
            weights.os.environ[weights.MIRROR_ENV] + "file.bin", target, expected_hash="0" * 32
        )
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_reachability_probe_is_fast_and_cached(keras_home, monkeypatch):
    monkeypatch.setenv(weights.MIRROR_ENV, REFUSED_URL)
    assert weights.download_reachable() is False
    monkeypatch.delenv(weights.MIRROR_ENV)
    assert weights.download_reachable() is False  # cached for the process


def test_none_is_random_init():
    first = build_backbone("mobilenet_v3_small", 32, "none")
    second = build_backbone("mobilenet_v3_small", 32, "none")
    assert not np.allclose(first.get_weights()[0], second.get_weights()[0])


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_lite0"])
def test_weights_file_round_trip(name, tmp_path):
    config = ModelConfig(backbone=name, weights="none", image_size=32)
    original = build_model(config, 2)
    path = tmp_path / f"{name}.weights.h5"
    original.get_layer("backbone").save_weights(str(path))
    loaded = build_model(ModelConfig(backbone=name, weights=str(path), image_size=32), 2)
    images = _images(32)
    np.testing.assert_allclose(
        feature_extractor(loaded)(images), feature_extractor(original)(images), rtol=1e-5
    )


def test_weights_of_another_architecture_give_a_clear_error(tmp_path):
    path = tmp_path / "lite.weights.h5"
    build_backbone("efficientnet_lite0", 32, "none").save_weights(str(path))
    with pytest.raises(WeightsFileError, match="do not fit the backbone mobilenet_v2"):
        build_backbone("mobilenet_v2", 32, str(path))


def test_random_bytes_are_not_hdf5(tmp_path):
    path = tmp_path / "junk.weights.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsFileError, match="not an HDF5 weights file"):
        build_model(ModelConfig(backbone="mobilenet_v2", weights=str(path), image_size=32), 2)


def test_a_whole_model_file_is_never_deserialised(tmp_path):
    """A .keras model renamed to .weights.h5 is a zip, not HDF5: refused before reading."""
    model = build_model(ModelConfig(weights="none", image_size=32), 2)
    keras_file = tmp_path / "model.keras"
    model.save(str(keras_file))
    disguised = tmp_path / "model.weights.h5"
    disguised.write_bytes(keras_file.read_bytes())
    with pytest.raises(WeightsFileError, match="not an HDF5"):
        weights.check_weights_file(disguised)
    with pytest.raises(WeightsFileError, match="must end in '.weights.h5'"):
        weights.check_weights_file(keras_file)


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsFileError, match="not found"):
        weights.check_weights_file(Path(tmp_path) / "nowhere.weights.h5")


def _shape_bomb(path: Path, model, shape=(8192, 8192)) -> None:
    """A weights file of a few KB whose first weight declares ``shape`` (fill values only)."""
    import h5py

    model.save_weights(str(path))
    with h5py.File(path, "r+") as handle:
        names: list[str] = []
        handle.visititems(lambda name, obj: names.append(name) if hasattr(obj, "dtype") else None)
        target = names[0]
        del handle[target]
        handle.create_dataset(
            target, shape=shape, dtype="float32", chunks=(256, 256), compression="gzip"
        )


def test_hdf5_shape_bomb_is_refused_before_any_data_is_read(tmp_path):
    import tracemalloc

    backbone = build_backbone("mobilenet_v3_small", 32, "none")
    path = tmp_path / "bomb.weights.h5"
    _shape_bomb(path, backbone)
    assert path.stat().st_size < 10 * 1024 * 1024  # small on disk, 256 MB declared
    tracemalloc.start()
    try:
        with pytest.raises(WeightsFileError, match=r"declares shape \(8192, 8192\)"):
            weights.load_weights_file(backbone, path, what="backbone mobilenet_v3_small")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, f"allocated {peak:,} bytes for a refused file"


LITE_SMALL = "backbone mobilenet_v3_small"


def _tampered(tmp_path, name: str, change, **open_args):
    """Saved MobileNetV3-Small weights, then ``change(handle, backbone)`` applied with h5py."""
    import h5py

    backbone = build_backbone("mobilenet_v3_small", 32, "none")
    path = tmp_path / f"{name}.weights.h5"
    backbone.save_weights(str(path))
    with h5py.File(path, "r+", **open_args) as handle:
        change(handle, backbone)
    return backbone, path


def test_hdf5_total_declared_size_is_capped(tmp_path):
    """Many datasets of a real weight's shape, together far beyond the architecture's size."""

    def add_copies(handle, backbone):
        biggest = max(backbone.weights, key=lambda w: int(np.prod(w.shape)))
        for index in range(200):
            handle.create_dataset(f"extra/{index}", shape=tuple(biggest.shape), dtype="float64")

    backbone, path = _tampered(tmp_path, "many", add_copies)
    with pytest.raises(WeightsFileError, match="declare more than"):
        weights.check_weights_shapes(backbone, path, what=LITE_SMALL)


def test_hdf5_external_link_and_external_storage_are_refused_as_such(tmp_path):
    import h5py

    def link(handle, _):
        handle["layers/elsewhere"] = h5py.ExternalLink("/etc/passwd.h5", "/data")

    backbone, linked = _tampered(tmp_path, "linked", link)
    with pytest.raises(WeightsFileError, match="external link to '/etc/passwd.h5'"):
        weights.load_weights_file(backbone, linked, what=LITE_SMALL)

    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"\0" * 64)

    def store_outside(handle, _):
        handle.create_dataset("extra", shape=(4,), dtype="float32", external=[(str(raw), 0, 64)])

    backbone, stored = _tampered(tmp_path, "stored", store_outside)
    with pytest.raises(WeightsFileError, match="keeps its data in another file"):
        weights.load_weights_file(backbone, stored, what=LITE_SMALL)


def test_hdf5_attribute_bomb_is_refused(tmp_path):
    def big_attribute(handle, _):
        handle.create_group("meta").attrs["junk"] = np.zeros(1_200_000, dtype="float32")

    backbone, path = _tampered(tmp_path, "attrs", big_attribute, libver="latest")
    with pytest.raises(WeightsFileError, match="attribute 'junk'"):
        weights.check_weights_shapes(backbone, path, what=LITE_SMALL)
