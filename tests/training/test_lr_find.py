"""The learning-rate finder: the sweep on the fast path and through the model, the suggestion,
the CLI contract and the child process the app uses."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.training.lr_find import (
    LrFindResult,
    lr_find,
    lr_find_in_subprocess,
    rate_schedule,
    suggest_learning_rate,
)
from tests.helpers.training import make_dataset, small_config


def test_rate_schedule_is_exponential_and_validated():
    rates = rate_schedule(1e-6, 1.0, 13)
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1.0)
    ratios = rates[1:] / rates[:-1]
    assert np.allclose(ratios, ratios[0])
    with pytest.raises(ValueError, match="start_lr=1.0, end_lr=0.1"):
        rate_schedule(1.0, 0.1, 100)
    with pytest.raises(ValueError, match="Received: 3"):
        rate_schedule(1e-6, 1.0, 3)


def test_suggestion_lies_in_the_falling_part_of_the_curve():
    rates = np.geomspace(1e-7, 10, 100)
    # Flat until 1e-4, falling until 1e-1, then exploding: the classic lr_find shape.
    logs = np.log10(rates)
    losses = np.where(logs < -4, 2.0, 2.0 - 0.5 * (logs + 4))
    losses = np.where(logs > -1, 0.5 + 3 * (logs + 1) ** 2, losses)
    suggestion = suggest_learning_rate(list(rates), list(losses))
    assert 1e-4 < suggestion < 1e-1
    # A curve too short for a valley falls back to a tenth of the rate at the lowest loss.
    assert suggest_learning_rate([1e-3, 1e-2, 1e-1], [1.0, 0.5, 2.0]) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="3 rates and 2 losses"):
        suggest_learning_rate([1e-3, 1e-2, 1e-1], [1.0, 0.5])


def _check_curve(result: LrFindResult, steps: int) -> None:
    assert 10 <= result.steps <= steps
    assert len(result.learning_rates) == len(result.losses) == len(result.raw_losses)
    assert all(
        b > a for a, b in zip(result.learning_rates, result.learning_rates[1:], strict=False)
    )
    assert all(np.isfinite(result.losses))
    assert result.learning_rates[0] <= result.suggestion <= result.learning_rates[-1]
    assert LrFindResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


@pytest.mark.slow
def test_lr_find_on_the_fast_path_trains_the_head_on_embeddings(tmp_path):
    config = small_config(make_dataset(tmp_path, per_class=8))
    result = lr_find(config, steps=80)
    assert result.fast_path and result.trainable == "head"
    _check_curve(result, 80)
    assert result.steps == 80 or result.diverged
    # The head learnt during the sweep: the lowest loss is below the starting loss.
    assert min(result.losses) < result.losses[0]


@pytest.mark.slow
def test_lr_find_for_a_fine_tuning_config_runs_through_the_model(tmp_path):
    config = small_config(make_dataset(tmp_path, per_class=8), model={"trainable": "top:1"})
    seen: list[str] = []
    result = lr_find(config, steps=20, progress=lambda d, t, m: seen.append(m))
    assert not result.fast_path and result.trainable == "top:1"
    _check_curve(result, 20)
    assert "Sweeping the learning rate" in seen
    assert not any("embeddings" in m for m in seen)


@pytest.mark.slow
def test_cli_lr_find_json_and_the_app_subprocess(tmp_path):
    dataset_id = make_dataset(tmp_path, per_class=8)
    flags = ["--backbone", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]
    done = subprocess.run(
        [sys.executable, "-m", "core", "lr-find", "--data", dataset_id, *flags]
        + ["--batch-size", "8", "--steps", "30", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = LrFindResult.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))
    assert result.fast_path
    _check_curve(result, 30)
    bad = subprocess.run(
        [sys.executable, "-m", "core", "lr-find", "--data", dataset_id, "--steps", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "steps must be an integer between 10" in bad.stderr
    from_app = lr_find_in_subprocess(small_config(dataset_id), steps=25)
    _check_curve(from_app, 25)
    tuned = subprocess.run(
        [sys.executable, "-m", "core", "lr-find", "--data", dataset_id, *flags]
        + ["--trainable", "top:1", "--batch-size", "8", "--steps", "12", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    through_model = LrFindResult.from_dict(json.loads(tuned.stdout.strip().splitlines()[-1]))
    assert not through_model.fast_path and through_model.trainable == "top:1"
    _check_curve(through_model, 12)


def test_results_that_are_not_lr_find_results_are_refused():
    with pytest.raises(ValueError, match="JSON object"):
        LrFindResult.from_dict([1, 2])
    with pytest.raises(ValueError, match="lacks the field"):
        LrFindResult.from_dict({"learning_rates": []})
