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


def test_auto_settings_resolve_by_what_trains_and_explicit_ones_win(tmp_path):
    head = TrainConfig(dataset="d")
    assert head.auto_fields == ("epochs", "learning_rate", "early_stopping_patience")
    assert (head.effective_epochs, head.effective_learning_rate, head.effective_patience) == (
        200,
        3e-3,
        10,
    )
    assert head.total_epochs == 200
    assert "until the validation loss stops improving" in head.defaults_sentence()
    whole = TrainConfig(dataset="d", model=ModelConfig(trainable="top:2"), fine_tune_epochs=3)
    assert (whole.effective_epochs, whole.effective_learning_rate) == (10, 1e-4)
    assert whole.effective_patience == 0 and whole.total_epochs == 13
    mine = TrainConfig(dataset="d", epochs=5, learning_rate=0.02, early_stopping_patience=0)
    assert mine.auto_fields == ()
    assert (mine.effective_epochs, mine.effective_learning_rate, mine.effective_patience) == (
        5,
        0.02,
        0,
    )
    assert "nothing is chosen automatically" in mine.defaults_sentence()
    no_stop = TrainConfig(dataset="d", early_stopping_patience=0)
    assert no_stop.defaults_sentence().startswith("By default the new last layer trains 200 epochs")
    # Two epochs with the auto patience of 10 cannot stop early: the sentence does not say so.
    short = TrainConfig(dataset="d", epochs=2)
    assert short.effective_patience == 10
    assert short.defaults_sentence() == (
        "By default the new last layer trains 2 epochs at learning rate 0.003, and the best "
        "epoch is kept."
    )
    resolved = head.resolved()
    assert resolved.auto_fields == () and resolved.effective_epochs == 200
    # Auto survives the JSON round trip as null, not as the number it resolves to.
    path = tmp_path / "config.json"
    head.save(path)
    assert TrainConfig.load(path) == head and TrainConfig.load(path).epochs is None


def test_augmented_views_are_validated():
    assert AugmentConfig().views == 4
    with pytest.raises(ValueError, match=r"augment.views must be an integer between 1 and 32"):
        AugmentConfig(flip="horizontal", views=0)
