"""The server-wide cache of run models: loaded once, warmed in the background, keyed by file."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.helpers.runs import make_dataset, make_run
from ui import model_cache


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("workspace")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFER_STUDIO_HOME", str(root))
        return make_run(make_dataset(tmp_path_factory.mktemp("source")))


@pytest.fixture
def loads(monkeypatch):
    """Counts real model loads (the loader itself runs unchanged)."""
    from core.runs import predict

    seen: list[str] = []
    real = predict.load_run_model

    def counting(run_dir, *args, **kwargs):
        seen.append(str(run_dir))
        return real(run_dir, *args, **kwargs)

    monkeypatch.setattr(predict, "load_run_model", counting)
    with model_cache._lock:
        model_cache._entries.clear()
        model_cache._key_locks.clear()
        model_cache._warming.clear()
    return seen


def _wait(condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the background warm-up did not finish"
        time.sleep(0.05)


def test_a_page_asking_during_the_warm_up_gets_the_same_model_loaded_once(run_folder, loads):
    key = model_cache.model_key(run_folder)
    assert model_cache.warm_in_background(run_folder, delay_s=0.0)
    assert not model_cache.warm_in_background(run_folder)  # already under way
    model = model_cache.run_model(key)  # waits for the background load
    _wait(lambda: model_cache.explainer(key).is_warm)
    assert model_cache.run_model(key) is model and model_cache.is_loaded(key)
    assert loads == [str(run_folder)]
    assert not model_cache.warm_in_background(run_folder)  # ready: nothing to do
    # The warmed explainer traced its graph once, for the model's input size.
    graph = model_cache.explainer(key)._forward_graph
    assert graph.experimental_get_tracing_count() == 1


def test_a_new_model_file_is_loaded_again_and_old_ones_are_dropped(run_folder, loads, tmp_path):
    first = model_cache.run_model(model_cache.model_key(run_folder))
    copies = []
    for index in range(model_cache.MAX_MODELS):
        copy = tmp_path / f"copy{index}"
        shutil.copytree(run_folder, copy)
        copies.append(copy)
        model_cache.run_model(model_cache.model_key(copy))
    # The least recently used (the first) was dropped: asking again loads it again.
    assert not model_cache.is_loaded(model_cache.model_key(run_folder))
    model_file = copies[-1] / model_cache.MODEL_FILE
    stamp = model_file.stat().st_mtime_ns
    os.utime(model_file, ns=(stamp + 10**9, stamp + 10**9))  # a retrained model
    renewed = model_cache.run_model(model_cache.model_key(copies[-1]))
    assert renewed is not first and len(loads) == model_cache.MAX_MODELS + 2


def test_a_run_without_a_model_file_is_not_warmed(tmp_path, loads):
    assert not model_cache.warm_in_background(tmp_path)
    with pytest.raises(FileNotFoundError):
        model_cache.model_key(tmp_path)
    assert loads == []
