import pytest

from core.config import AugmentConfig, ModelConfig, TrainConfig, parse_trainable


def test_round_trip_through_json(tmp_path):
    config = TrainConfig(
        dataset="ds1",
        model=ModelConfig(
            backbone="mobilenet_v2",
            trainable="top:3",
            dense_units=(64,),
            augment=AugmentConfig.standard(),
        ),
        fine_tune_epochs=2,
    )
    path = tmp_path / "config.json"
    config.save(path)
    assert TrainConfig.load(path) == config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"optimizer": "adagrad"}, "optimizer"),
        ({"batch_size": 0}, "batch_size"),
        ({"schedule": "step"}, "schedule"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"class_weights": "auto"}, "class_weights"),
        ({"fine_tune_trainable": "head"}, "fine_tune_trainable"),
    ],
)
def test_invalid_values_name_field_allowed_and_received(changes, field):
    with pytest.raises(ValueError) as info:
        TrainConfig(dataset="ds1", **changes)
    message = str(info.value)
    assert field in message and "Received" in message


@pytest.mark.parametrize("value", ["bottom", "top:0", "top:x", ""])
def test_trainable_rejects_bad_policies(value):
    with pytest.raises(ValueError, match="trainable"):
        ModelConfig(trainable=value)


def test_parse_trainable():
    assert parse_trainable("head") == ("head", 0)
    assert parse_trainable("all") == ("all", 0)
    assert parse_trainable("top:4") == ("top", 4)


def test_unknown_keys_are_refused():
    with pytest.raises(ValueError, match="Unknown config keys"):
        TrainConfig.from_dict({"dataset": "d", "lr": 0.1})


def test_weights_must_be_known_source_or_weights_file():
    with pytest.raises(ValueError, match="weights"):
        ModelConfig(weights="model.keras")
    assert ModelConfig(weights="/tmp/x.weights.h5").weights.endswith(".weights.h5")


def test_augment_enabled():
    assert not AugmentConfig().enabled
    assert AugmentConfig(flip="horizontal").enabled
