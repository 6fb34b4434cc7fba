"""The reproducible recipe: a standalone plain-Keras script that retrains a run's model.

:func:`recipe_script` writes ``train.py``: no Transfer Studio import, only ``keras`` (on the
TensorFlow backend, for ``image_dataset_from_directory``), so a student can read every step
the app took: the same backbone and preprocessing, head, trainable policy (head / top N
blocks / all, BatchNorm frozen), optimizer, schedule, epochs and two-phase fine-tuning. The
hyperparameters are read from the run's ``config.json`` beside the script; the facts about
the backbone (constructor, preprocessing, block layout) are written into the script.

:func:`write_recipe` bundles ``train.py``, ``config.json`` and a README into a zip.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from core.config import (
    AUTO_EPOCHS,
    AUTO_HEAD_EPOCHS,
    AUTO_HEAD_LEARNING_RATE,
    AUTO_HEAD_PATIENCE,
    AUTO_LEARNING_RATE,
    EARLY_STOPPING_MIN_DELTA,
    TrainConfig,
)
from core.models.lite0 import converted_weights_path
from core.models.registry import get_backbone
from core.runs.store import read_config_dict, resolve_run_dir

RECIPE_FILE = "train.py"

_TEMPLATE = r'''"""Retrain the Transfer Studio model of run {run_id!s} with plain Keras.

Usage:
    python train.py DATA_DIR [--config config.json] [--output model.keras]
                    [--epochs N] [--weights imagenet|none|FILE.weights.h5]

DATA_DIR holds one sub-folder of images per class. Every hyperparameter comes from
config.json (written by Transfer Studio for the run); the backbone's facts are below.
Differences from the app: the validation split is Keras' random split of DATA_DIR (the app
used a stratified split stored in its dataset), and images are resized by TensorFlow.
"""

import argparse
import json
import math
import os
import re

import keras
import numpy as np
from keras import ops

# Facts about the backbone (from the app's backbone registry).
BACKBONE = {backbone!r}
# Auto settings: (head-only first phase, backbone trains from the start).
AUTO = {auto!r}
# A validation loss falling by less than this per epoch counts as not improving.
MIN_DELTA = {min_delta!r}
{extra_source}

class Preprocess(keras.layers.Layer):
    """Raw RGB 0..255 -> what the backbone expects (the app's own preprocessing layer)."""

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":  # scale to [-1, 1]
            return x / 127.5 - 1.0
        if self.mode == "torch":  # ImageNet mean / std on 0..1
            mean = ops.convert_to_tensor((0.485, 0.456, 0.406), dtype=x.dtype)
            std = ops.convert_to_tensor((0.229, 0.224, 0.225), dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":  # RGB -> BGR, minus the ImageNet mean
            mean = ops.convert_to_tensor((103.939, 116.779, 123.68), dtype=x.dtype)
            return ops.flip(x, axis=-1) - mean
        return x

    def get_config(self):
        return {{**super().get_config(), "mode": self.mode}}


def build_backbone(size, weights):
    """The pretrained network without its classifier."""
    module, _, attribute = BACKBONE["constructor"].partition(":")
    kwargs = dict(BACKBONE["constructor_kwargs"])
    if module == "keras.applications":
        constructor = getattr(keras.applications, attribute)
        load = "imagenet" if weights == "imagenet" else None
    else:
        constructor = globals()[attribute]  # its definition is inlined above
        load = None
        if weights == "imagenet":
            here = os.path.dirname(os.path.abspath(__file__))
            weights = os.path.join(here, BACKBONE["imagenet_file"])
            if not os.path.exists(weights):
                raise SystemExit(
                    f"ImageNet weights for {{BACKBONE['name']}} are not bundled here: put "
                    f"{{BACKBONE['imagenet_file']}} beside train.py, or pass --weights none"
                )
    base = constructor(include_top=False, weights=load, input_shape=(size, size, 3), **kwargs)
    base.name = "backbone"  # some constructors use their name argument as a table key
    if weights.endswith(".weights.h5"):
        base.load_weights(weights)
    return base


def blocks_of(base):
    """Groups the backbone's layers into blocks (what 'top:N' counts); stem is block -1."""
    names, block_of, current = [], {{}}, None
    if BACKBONE["block_regex"]:
        pattern = re.compile(BACKBONE["block_regex"])
        for layer in base.layers:
            match = pattern.match(layer.name)
            if match and match.group(1) != current:
                current = match.group(1)
                names.append(current)
            block_of[layer.name] = len(names) - 1 if names else -1
    else:
        pattern = re.compile(BACKBONE["block_end_regex"])
        start = BACKBONE["stem_layers"]
        for index, layer in enumerate(base.layers):
            block_of[layer.name] = -1 if index < start else len(names)
            if index >= start and pattern.match(layer.name):
                names.append(layer.name)
    return names, block_of


def set_trainable(model, trainable, pretrained=True):
    """head: only the head trains; top:N: head + last N blocks; all: everything.

    With pretrained weights, BatchNormalization layers always stay frozen (Keras
    transfer-learning guide); a randomly initialised backbone needs them to learn.
    """
    base = model.get_layer("backbone")
    if trainable == "head":
        base.trainable = False
        return
    base.trainable = True
    names, block_of = blocks_of(base)
    first = 0
    if trainable.startswith("top:"):
        count = int(trainable.split(":")[1])
        if count > len(names):
            raise SystemExit(f"trainable 'top:N' allows N up to {{len(names)}} here")
        first = len(names) - count
    for layer in base.layers:
        layer.trainable = not (trainable.startswith("top:") and block_of[layer.name] < first)
        if pretrained and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def build_model(config, num_classes, weights):
    m = config["model"]
    size = m["image_size"]
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    a = m["augment"]
    augment = []
    if a["flip"] != "none":
        augment.append(keras.layers.RandomFlip(a["flip"]))
    if a["rotation"]:
        augment.append(keras.layers.RandomRotation(a["rotation"]))
    if a["zoom"]:
        augment.append(keras.layers.RandomZoom(a["zoom"]))
    if a["translation"]:
        augment.append(keras.layers.RandomTranslation(a["translation"], a["translation"]))
    if a["contrast"]:
        augment.append(keras.layers.RandomContrast(a["contrast"]))
    if a["brightness"]:
        augment.append(keras.layers.RandomBrightness(a["brightness"], value_range=(0, 255)))
    if a.get("shear"):
        augment.append(keras.layers.RandomShear(a["shear"], a["shear"]))
    if augment:
        x = keras.Sequential(augment, name="augmentation")(x)
    x = Preprocess(BACKBONE["preprocessing"], name="preprocess")(x)
    base = build_backbone(size, weights)
    pretrained = weights != "none"
    # Pretrained: BatchNorm statistics stay put, even when fine-tuning. Random init: BatchNorm
    # must learn, so it follows the training flag.
    x = base(x, training=False) if pretrained else base(x)
    pooling = {{
        "avg": keras.layers.GlobalAveragePooling2D,
        "max": keras.layers.GlobalMaxPooling2D,
        "flatten": keras.layers.Flatten,
    }}[m["pooling"]]
    x = pooling(name="pool")(x)
    head = [keras.layers.Dense(units, activation="relu") for units in m["dense_units"]]
    if m["dropout"]:
        head.append(keras.layers.Dropout(m["dropout"]))
    head.append(keras.layers.Dense(num_classes, activation="softmax"))
    outputs = keras.Sequential(head, name="head")(x)
    model = keras.Model(inputs, outputs)
    set_trainable(model, m["trainable"], pretrained)
    return model


def make_optimizer(config, learning_rate, steps):
    if config["schedule"] == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, steps))
    decay = config["weight_decay"] or None
    name = config["optimizer"]
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=decay or 0.0)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=config["momentum"], weight_decay=decay)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(
            learning_rate, momentum=config["momentum"], weight_decay=decay
        )
    return keras.optimizers.Adam(learning_rate, weight_decay=decay)


def compile_model(model, config, learning_rate, steps):
    model.compile(
        optimizer=make_optimizer(config, learning_rate, steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config["label_smoothing"]),
        metrics=["accuracy"],
    )


def callbacks(config):
    found = []
    if config["early_stopping_patience"]:
        found.append(
            keras.callbacks.EarlyStopping(
                patience=config["early_stopping_patience"],
                min_delta=MIN_DELTA,
                restore_best_weights=config["restore_best"],
            )
        )
    if config["schedule"] == "reduce_on_plateau":
        found.append(keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=2))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--config", default="config.json")
    parser.add_argument("--output", default="model.keras")
    parser.add_argument("--epochs", type=int, help="override the first phase's epochs")
    parser.add_argument("--weights", help="override the backbone weights")
    args = parser.parse_args()

    with open(args.config, encoding="utf-8") as handle:
        config = json.load(handle)
    # Settings left on auto (null) resolve as in the app: a head-only first phase trains
    # until validation loss stops improving, at a rate for a new head.
    head_first = config["model"]["trainable"] == "head"
    for key, (head_value, other_value) in AUTO.items():
        if config.get(key) is None:
            config[key] = head_value if head_first else other_value
    if args.epochs is not None:
        config["epochs"] = args.epochs
        config["fine_tune_epochs"] = min(config["fine_tune_epochs"], args.epochs)
    weights = args.weights or config["model"]["weights"]
    size = config["model"]["image_size"]
    keras.utils.set_random_seed(config["seed"])

    train, val = keras.utils.image_dataset_from_directory(
        args.data_dir,
        validation_split=0.15,
        subset="both",
        seed=config["seed"],
        image_size=(size, size),
        batch_size=config["batch_size"],
        label_mode="categorical",
    )
    labels = train.class_names
    model = build_model(config, len(labels), weights)

    class_weight = None
    if config["class_weights"] == "balanced":
        counts = np.zeros(len(labels))
        for _, y in train:
            counts += np.asarray(y).sum(axis=0)
        class_weight = {{i: counts.sum() / (len(labels) * max(c, 1)) for i, c in enumerate(counts)}}

    steps = math.ceil(train.cardinality().numpy())
    compile_model(model, config, config["learning_rate"], steps * config["epochs"])
    model.summary(show_trainable=True)
    history = model.fit(
        train,
        validation_data=val,
        epochs=config["epochs"],
        class_weight=class_weight,
        callbacks=callbacks(config),
    )
    if config["fine_tune_epochs"]:
        # Phase 2 (fastai's fine_tune): unfreeze, recompile with a lower learning rate.
        set_trainable(model, config["fine_tune_trainable"], weights != "none")
        lr = config["learning_rate"] * config["fine_tune_lr_mult"]
        compile_model(model, config, lr, steps * config["fine_tune_epochs"])
        model.fit(
            train,
            validation_data=val,
            initial_epoch=len(history.epoch),
            epochs=len(history.epoch) + config["fine_tune_epochs"],
            class_weight=class_weight,
            callbacks=callbacks(config),
        )
    model.save(args.output)
    with open(args.output + ".labels.txt", "w", encoding="utf-8") as handle:
        handle.write("\n".join(labels) + "\n")
    print("saved", args.output, "classes:", labels)


if __name__ == "__main__":
    main()
'''


# Non-Keras backbones whose definition is copied into the script: module -> entry function.
# Everything that function uses from its module (helpers, constants) is found and copied too.
_INLINED = {"core.models.lite0": "build_architecture"}
_LITERALS = (bool, int, float, str, bytes, tuple, list, dict, type(None))


def _names_used(code: Any) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names_used(const)
    return names


def _module_closure(module: Any, entry: str) -> tuple[list[str], list[Any]]:
    """Constants (as ``NAME = repr``) and functions ``entry`` needs from ``module``."""
    import inspect

    constants: dict[str, str] = {}
    functions: dict[str, Any] = {}
    pending = [entry]
    while pending:
        name = pending.pop()
        if name in functions or name in constants or not hasattr(module, name):
            continue
        value = getattr(module, name)
        if inspect.isfunction(value) and value.__module__ == module.__name__:
            functions[name] = value
            pending.extend(_names_used(value.__code__))
        elif isinstance(value, _LITERALS):
            constants[name] = f"{name} = {value!r}"
    ordered = sorted(functions.values(), key=lambda fn: fn.__code__.co_firstlineno)
    return [constants[name] for name in sorted(constants)], ordered


def _extra_source(constructor: str) -> str:
    """Definition of a non-Keras backbone, copied so the script stays standalone."""
    module_name, _, attribute = constructor.partition(":")
    if module_name.startswith("keras."):
        return ""
    import importlib
    import inspect

    if module_name not in _INLINED:
        raise ValueError(
            f"No recipe support for backbone constructor {constructor!r}: add it to "
            f"core.runs.recipe._INLINED. Supported: keras.applications and {sorted(_INLINED)}"
        )
    module = importlib.import_module(module_name)
    constants, functions = _module_closure(module, _INLINED[module_name])
    parts = [
        f"# ---- the network's definition, copied from Transfer Studio's {module_name} ----",
        "from typing import Any",
        "",
        *constants,
        "",
    ]
    parts += [inspect.getsource(function) for function in functions]
    parts.append(
        f"""
def {attribute}(include_top=False, weights=None, input_shape=(224, 224, 3), **_ignored):
    # Random init; ImageNet weights are loaded from a .weights.h5 file by build_backbone.
    return {_INLINED[module_name]}(tuple(input_shape), include_top=include_top)
"""
    )
    parts.append("# ---- end of copied code ----")
    return "\n".join(parts)


def backbone_facts(name: str) -> dict[str, Any]:
    """What the script needs to know about a registered backbone."""
    spec = get_backbone(name)
    return {
        "name": spec.name,
        "constructor": spec.constructor,
        "constructor_kwargs": [list(pair) for pair in spec.constructor_kwargs],
        "preprocessing": spec.preprocessing,
        "block_regex": spec.block_regex,
        "block_end_regex": spec.block_end_regex,
        "stem_layers": spec.stem_layers,
        "imagenet_file": f"{spec.name}_imagenet.weights.h5" if spec.bundled else "",
    }


def recipe_script(config: dict[str, Any], *, run_id: str = "") -> str:
    """The standalone training script for a run's config.

    Args:
        config: The run's ``config.json`` as a dictionary (a ``TrainConfig.to_dict()``).
        run_id: Shown in the script's docstring.

    Returns:
        Python source code (valid for ``compile``).
    """
    parsed = TrainConfig.from_dict(config)
    facts = backbone_facts(parsed.model.backbone)
    auto = {
        "epochs": (AUTO_HEAD_EPOCHS, AUTO_EPOCHS),
        "learning_rate": (AUTO_HEAD_LEARNING_RATE, AUTO_LEARNING_RATE),
        "early_stopping_patience": (AUTO_HEAD_PATIENCE, 0),
    }
    return _TEMPLATE.format(
        auto=auto,
        min_delta=EARLY_STOPPING_MIN_DELTA,
        run_id=run_id or "(unnamed)",
        backbone=facts,
        extra_source=_extra_source(facts["constructor"]),
    )


def _bundled_weights(config: dict[str, Any]) -> tuple[Path, str] | None:
    """(file, name in the recipe) of the ImageNet weights of a bundled backbone, if used."""
    model = config.get("model", {})
    facts = backbone_facts(model.get("backbone", ""))
    if model.get("weights") != "imagenet" or not facts["imagenet_file"]:
        return None

    return converted_weights_path(), facts["imagenet_file"]


def write_recipe(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Writes ``train.py`` + ``config.json`` + README as a zip for a run.

    Args:
        run: The run folder or run id.
        out: Target zip; defaults to ``<run>/exports/recipe.zip``.

    Returns:
        The zip path.
    """
    run_dir = resolve_run_dir(run)
    config = read_config_dict(run_dir)
    if not config:
        raise FileNotFoundError(f"Run {run_dir.name!r} has no config.json to build a recipe from.")
    # The recipe is plain numbers: settings left on auto become the values the run used.
    config = TrainConfig.from_dict(config).resolved().to_dict()
    script = recipe_script(config, run_id=run_dir.name)
    target = Path(out) if out is not None else run_dir / "exports" / "recipe.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    readme = (
        f"# Recipe of run {run_dir.name}\n\n"
        "Retrains the same model with plain Keras (TensorFlow backend):\n\n"
        "    pip install tensorflow keras pillow\n"
        "    python train.py path/to/class_folders --config config.json --output model.keras\n\n"
        "`config.json` holds every hyperparameter the app used; edit it to experiment.\n"
    )
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("recipe/" + RECIPE_FILE, script)
        archive.writestr("recipe/config.json", json.dumps(config, indent=2) + "\n")
        archive.writestr("recipe/README.md", readme)
        weights_file = _bundled_weights(config)
        if weights_file is not None:
            archive.write(weights_file[0], "recipe/" + weights_file[1])
    os.replace(tmp, target)
    return target
