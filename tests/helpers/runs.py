"""Builders shared by the evaluate / predict / export tests: a real dataset and a real run.

A "finished run" here is what the training engine leaves behind (config.json, status.json
completed, model.keras saved with ``core.models.model_io``, labels.txt), made in-process with the
offline EfficientNet-Lite0 (bundled ImageNet weights, 64 px) whose head is trained on
embeddings computed once (the engine's fast path), so the tests stay fast and the model's
outputs really depend on the image (a random-init backbone gives near-constant features).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

COUNTS = {"circle": 10, "square": 10, "triangle": 10}


def make_dataset(
    folder: Path, counts: dict[str, int] | None = None, *, size: tuple[int, int] = (40, 40)
) -> str:
    """Ingests generated class folders as a dataset; returns its id."""
    from core.data.ingest import ingest
    from core.data.sample import write_class_folders

    source = write_class_folders(folder, counts or COUNTS, size=size, seed=1)
    report = ingest(source, name="eval-test", val_fraction=0.3, test_fraction=0.2, seed=0)
    return report.dataset_id


def make_run(
    dataset_id: str,
    *,
    backbone: str = "efficientnet_lite0",
    weights: str = "imagenet",
    image_size: int = 64,
    epochs: int = 3,
) -> Path:
    """Trains a tiny model on the dataset's train split and writes a completed run folder."""
    import keras

    from core.config import ModelConfig, TrainConfig
    from core.data.store import load_dataset
    from core.models.model_io import save_model
    from core.models.transfer import build_model, feature_extractor, head_of
    from core.runs.predict import load_batch, predict_arrays
    from core.runs.store import create_run, now_iso, read_status, write_status

    config = TrainConfig(
        dataset=dataset_id,
        model=ModelConfig(backbone=backbone, weights=weights, image_size=image_size, dropout=0.0),
        epochs=epochs,
        batch_size=8,
        learning_rate=3e-3,
        seed=0,
    )
    folder = create_run(config)
    dataset = load_dataset(dataset_id)
    labels = list(dataset.classes)
    keras.utils.set_random_seed(0)
    model = build_model(config.model, len(labels))
    # The engine's fast path: embeddings once, then the head trains on them (seconds).
    features = predict_arrays(
        feature_extractor(model), load_batch(dataset.paths("train"), image_size)
    )
    y = np.array([labels.index(label) for label in dataset.labels("train")])
    head = head_of(model)
    head.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    head.fit(features, y, epochs=epochs * 10, batch_size=8, verbose=0)
    save_model(model, folder / "model.keras", labels=labels)
    (folder / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    status = read_status(folder)
    status.state, status.epoch, status.finished = "completed", epochs, now_iso()
    status.message = "Finished."
    write_status(folder, status)
    return folder


def workspace_with_run(tmp_path_factory, counts: dict[str, int] | None = None, **run_kwargs):
    """A fresh workspace holding one finished run (for module-scoped fixtures).

    Returns:
        ``(workspace root, run folder)``.
    """
    import pytest

    root = tmp_path_factory.mktemp("workspace")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFER_STUDIO_HOME", str(root))
        dataset_id = make_dataset(tmp_path_factory.mktemp("source"), counts)
        run_dir = make_run(dataset_id, **run_kwargs)
    return root, run_dir


def subprocess_env(workspace: Path) -> dict[str, str]:
    """Environment for ``python -m core ...`` in a child process on the given workspace."""
    env = dict(os.environ)
    env["TRANSFER_STUDIO_HOME"] = str(workspace)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    repo = Path(__file__).resolve().parents[2]
    extra = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(repo) + (os.pathsep + extra if extra else "")
    return env


def save_legacy_model(model, path: Path, *, labels: list[str], mode: str = "tf") -> Path:
    """Saves ``model`` the way earlier versions did: custom ``transfer_studio>Preprocess`` layer
    and the ``Augmentation`` wrapper inside the file (same backbone, pooling and head layers)."""
    import json
    import zipfile

    import keras

    from core.models.preprocessing import LegacyPreprocess
    from core.models.transfer import Augmentation, SymmetricShear, backbone_name

    name = backbone_name(model)
    inputs = keras.Input(model.input_shape[1:], name="image")
    augmentation = Augmentation(
        [
            keras.layers.RandomFlip("horizontal", name="flip"),
            SymmetricShear(0.1, 0.1, name="shear"),
        ],
        name="augmentation",
    )
    x = augmentation(inputs)
    x = LegacyPreprocess(mode, backbone=name, pretrained=True, name="preprocess")(x)
    x = model.get_layer("backbone")(x, training=False)
    x = model.get_layer("pool")(x)
    legacy = keras.Model(inputs, model.get_layer("head")(x), name=f"transfer_{name}")
    legacy.save(str(path))
    metadata = {
        "format": "transfer_studio",
        "format_version": 1,
        "backbone": name,
        "preprocessing": mode,
        "image_size": int(model.input_shape[1]),
        "num_classes": len(labels),
        "labels": list(labels),
        "extra": {},
    }
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("transfer_studio.json", json.dumps(metadata))
    return path


def custom_layer_names(path: Path) -> list[str]:
    """``registered_name`` of every non-Keras class in a ``.keras`` file's config."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            module = node.get("module")
            if isinstance(module, str) and not module.startswith("keras"):
                found.append(str(node.get("registered_name")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found
