"""The per-size uint8 image cache and the PyDataset that feeds Keras from it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.data.image_cache import build_image_cache, load_resized, resize_for_model
from core.data.sample import write_class_folders
from core.training.feeder import ArrayFeeder


def _images(tmp_path, count=7, size=(80, 60)):
    folder = write_class_folders(tmp_path / "imgs", {"a": count}, size=size)
    return folder, sorted(f"a/{p.name}" for p in (folder / "a").iterdir())


def test_cache_is_built_once_memory_mapped_and_matches_direct_decoding(tmp_path, workspace):
    folder, names = _images(tmp_path)
    progress = []
    cache = build_image_cache(folder, names, "fp1", 32, progress=lambda *a: progress.append(a))
    assert cache.array.shape == (7, 32, 32, 3) and cache.array.dtype == np.uint8
    assert isinstance(cache.array, np.memmap)
    assert cache.path.parent == workspace / "cache" / "images"
    assert progress[-1][:2] == (7, 7)
    for row, name in enumerate(names):
        np.testing.assert_array_equal(cache.array[row], load_resized(folder / name, 32))
    again = build_image_cache(folder, names, "fp1", 32, progress=lambda *a: progress.append(a))
    assert again.path == cache.path and again.built_seconds == 0.0
    assert len(progress) == 1  # reused, not rebuilt
    assert build_image_cache(folder, names, "fp1", 48).array.shape[1] == 48
    assert cache.rows([names[3], names[0]]).tolist() == [3, 0]
    assert not list(cache.path.parent.glob(".*tmp*"))


def test_resize_for_model_handles_modes_and_sizes():
    gray = Image.new("L", (50, 20), 128)
    pixels = resize_for_model(gray, 16)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    assert (pixels == 128).all()


def test_feeder_shuffles_with_seed_and_covers_every_row():
    array = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    rows = np.array([9, 1, 4, 6, 0])
    targets = np.eye(5, dtype="float32")
    feeder = ArrayFeeder(
        array, rows, targets, 2, shuffle=True, seed=5, sample_weights=np.arange(5, dtype="float32")
    )
    assert len(feeder) == 3
    epoch = [feeder[i] for i in range(len(feeder))]
    seen_targets = np.concatenate([y for _, y, _ in epoch]).argmax(1)
    assert sorted(seen_targets.tolist()) == [0, 1, 2, 3, 4]
    for x, y, w in epoch:
        assert x.dtype == np.float32
        for image, target, weight in zip(x, y, w, strict=True):
            np.testing.assert_array_equal(image, array[rows[target.argmax()]])
            assert weight == target.argmax()
    twin = ArrayFeeder(array, rows, targets, 2, shuffle=True, seed=5)
    assert [twin[i][1].argmax(1).tolist() for i in range(3)] == [
        y.argmax(1).tolist() for _, y, _ in epoch
    ]
    plain = ArrayFeeder(array, rows, targets, 4)
    assert plain[0][1].argmax(1).tolist() == [0, 1, 2, 3]


def test_a_damaged_cache_index_is_rebuilt_not_a_crash(tmp_path, workspace):
    folder, names = _images(tmp_path, count=3)
    cache = build_image_cache(folder, names, "fp1", 32)
    index = cache.path.with_suffix(".json")
    for damage in (b"", b'{"images": [', b"[]", b'{"images": 5}', bytes(range(256))):
        index.write_bytes(damage)
        rebuilt = build_image_cache(folder, names, "fp1", 32)
        assert rebuilt.array.shape == (3, 32, 32, 3)
        np.testing.assert_array_equal(rebuilt.array[0], load_resized(folder / names[0], 32))
    cache.path.write_bytes(b"not numpy")
    rebuilt = build_image_cache(folder, names, "fp1", 32)
    np.testing.assert_array_equal(rebuilt.array[2], load_resized(folder / names[2], 32))
