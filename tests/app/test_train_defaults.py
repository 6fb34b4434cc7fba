"""The Train page's defaults sentence and learning-rate finder, under AppTest."""

from __future__ import annotations

import pytest

from core.config import ModelConfig
from tests.app.test_pages import app_on, no_exception, plotly_figures

MODEL = ModelConfig(backbone="mobilenet_v3_small", weights="none", image_size=32)


def _sweep(suggestion: float) -> dict:
    rates = [1e-6 * 10 ** (i / 5) for i in range(30)]
    losses = [1.1 - 0.02 * i if i < 20 else 0.7 + 0.3 * (i - 20) for i in range(30)]
    return {
        "learning_rates": rates,
        "losses": losses,
        "raw_losses": losses,
        "suggestion": suggestion,
        "fast_path": True,
        "trainable": "head",
        "steps": 30,
        "seconds": 1.5,
        "diverged": True,
    }


def test_train_page_says_what_the_defaults_do_and_one_click_uses_the_found_rate(ready):  # noqa: F811
    from core.runs.store import read_config, run_dir
    from core.training.jobs import cancel_run

    at = app_on(
        "train",
        dataset_id=ready["dataset_id"],
        model_config=MODEL,
        train_lr_found={"signature": None, "result": _sweep(0.0023)},
    )
    no_exception(at)
    text = " ".join(m.value for m in at.markdown)
    assert "trains until the validation loss stops improving" in text
    assert at.selectbox(key="train_lr").value is None  # auto
    assert at.number_input(key="train_epochs").value is None  # auto
    titles = [fig["layout"]["title"]["text"] for fig in plotly_figures(at)]
    assert "Loss while the learning rate rises" in titles
    figure = plotly_figures(at)[titles.index("Loss while the learning rate rises")]
    assert figure["layout"]["xaxis"]["type"] == "log"
    assert figure["data"][1]["x"] == [0.0023]  # the suggestion is marked
    assert any("where it shoots up the rate is too large" in c.value for c in at.caption)
    at.button(key="train_lr_use").click()
    at.run()
    no_exception(at)
    assert at.session_state["train_config"]["learning_rate"] == 0.0023
    assert at.selectbox(key="train_lr").value == 0.0023
    at.form_submit_button[0].click()
    at.run()
    no_exception(at)
    config = read_config(run_dir(at.session_state["run_id"]))
    assert config.learning_rate == 0.0023 and config.epochs is None
    cancel_run(at.session_state["run_id"], grace_seconds=5)


@pytest.mark.parametrize("trainable", ["head", "top:1"])
def test_find_a_learning_rate_runs_a_real_sweep(ready, trainable):  # noqa: F811
    model = ModelConfig(backbone=MODEL.backbone, weights="none", image_size=32, trainable=trainable)
    at = app_on("train", dataset_id=ready["dataset_id"], model_config=model)
    no_exception(at)
    words = " ".join(c.value for c in at.caption)
    assert ("this takes seconds" in words) == (trainable == "head")
    assert "train_lr_found" not in at.session_state
    at.button(key="train_lr_find").click()
    at.run(timeout=300)
    no_exception(at)
    found = at.session_state["train_lr_found"]["result"]
    assert found["fast_path"] is (trainable == "head") and found["trainable"] == trainable
    assert found["steps"] >= 10
    assert found["learning_rates"][0] <= found["suggestion"] <= found["learning_rates"][-1]
    assert at.button(key="train_lr_use").label.startswith("Use ")
