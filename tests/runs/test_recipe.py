"""The reproducible recipe: valid standalone Python that retrains the model with plain Keras."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile

import pytest

from core.config import ModelConfig, TrainConfig
from core.data.sample import write_class_folders
from core.models.registry import BACKBONES


def _config(backbone: str = "mobilenet_v2", **changes) -> TrainConfig:
    model = ModelConfig(backbone=backbone, weights="none", image_size=32, trainable="top:2")
    return TrainConfig(dataset="any", model=model, epochs=1, batch_size=8, **changes)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_script_is_standalone_valid_python(backbone):
    from core.runs.recipe import recipe_script

    script = recipe_script(_config(backbone).to_dict(), run_id="r1")
    compile(script, "train.py", "exec")
    imported = set()
    for node in ast.walk(ast.parse(script)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "core" not in imported and "transfer_studio" not in imported
    assert "keras" in imported


@pytest.mark.parametrize(
    ("backbone", "size", "trainable", "dense"),
    [
        ("mobilenet_v2", 32, "top:2", ()),
        ("efficientnet_lite0", 32, "top:3", (16,)),
        ("inception_v3", 75, "top:1", ()),
        ("vgg16", 32, "all", ()),
    ],
)
def test_script_builds_the_same_network_as_the_app(backbone, size, trainable, dense):
    """Same layers, same parameter counts, same trainable parameters as core.models.transfer."""
    from core.models.transfer import build_model, parameter_counts
    from core.runs.recipe import recipe_script

    config = TrainConfig(
        dataset="any",
        model=ModelConfig(
            backbone=backbone,
            weights="none",
            image_size=size,
            trainable=trainable,
            dense_units=dense,
            dropout=0.3,
        ),
    )
    namespace = {"__name__": "recipe_under_test"}
    exec(compile(recipe_script(config.to_dict()), "train.py", "exec"), namespace)
    theirs = namespace["build_model"](config.to_dict(), 3, "none")
    ours = build_model(config.model, 3)
    assert parameter_counts(theirs) == parameter_counts(ours)
    assert [type(layer).__name__ for layer in theirs.get_layer("head").layers] == [
        type(layer).__name__ for layer in ours.get_layer("head").layers
    ]
    assert theirs.get_layer("backbone").output.shape == ours.get_layer("backbone").output.shape


def test_script_retrains_a_model_in_a_subprocess(tmp_path):
    from core.runs.recipe import recipe_script

    data = write_class_folders(tmp_path / "data", {"circle": 6, "square": 6}, size=(40, 40))
    config = _config(fine_tune_epochs=1, fine_tune_trainable="all", schedule="cosine").to_dict()
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "train.py").write_text(recipe_script(config))
    completed = subprocess.run(
        [
            sys.executable,
            "train.py",
            str(data),
            "--config",
            "config.json",
            "--output",
            "out.keras",
            "--epochs",
            "1",
            "--weights",
            "none",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(tmp_path)},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / "out.keras").stat().st_size > 10_000
    assert (tmp_path / "out.keras.labels.txt").read_text().split() == ["circle", "square"]


def test_write_recipe_bundles_script_and_config(tmp_path):
    from core.runs.recipe import write_recipe

    run = tmp_path / "run"
    run.mkdir()
    _config().save(run / "config.json")
    bundle = write_recipe(run)
    with zipfile.ZipFile(bundle) as archive:
        assert sorted(archive.namelist()) == [
            "recipe/README.md",
            "recipe/config.json",
            "recipe/train.py",
        ]
        assert json.loads(archive.read("recipe/config.json"))["model"]["backbone"] == "mobilenet_v2"
