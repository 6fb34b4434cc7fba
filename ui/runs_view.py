"""Tables of the Runs page: one row per run, and the settings that differ between runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ui.figures import epoch_events
from ui.labels import FINE_TUNE_SETTINGS, setting_label, trainable_phrase


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"backbone": "x"}}`` -> ``{"model.backbone": "x"}`` (lists become text)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = ", ".join(map(str, value)) or "none"
        else:
            flat[name] = value
    return flat


def used_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened settings of a run that mattered to it.

    A run without a fine-tune phase never used the fine-tune settings, so they are left out.
    """
    flat = flatten(config)
    if not flat.get("fine_tune_epochs"):
        for key in FINE_TUNE_SETTINGS:
            flat.pop(key, None)
    return flat


def settings_table(configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Every setting of every run: rows = runs, columns = plain setting names.

    Args:
        configs: Run label -> its config dictionary (``config.json``).

    Returns:
        The table; a setting a run did not use is empty.
    """
    rows = [used_settings(config) for config in configs.values()]
    table = pd.DataFrame(rows, index=list(configs))
    return table.rename(columns=setting_label)


def setting_differences(configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The settings whose values are not the same in every run.

    Args:
        configs: Run label -> its config dictionary (``config.json``).

    Returns:
        Rows = plain setting names (``Random contrast``, not ``model.augment.contrast``),
        columns = run labels; empty when all runs agree. A setting a run did not use (the
        fine-tune settings of a run without a fine-tune phase) shows as ``not used`` and is
        listed only when the runs that used it differ or another run used it.
    """
    flat = {label: used_settings(config) for label, config in configs.items()}
    keys = sorted({key for values in flat.values() for key in values} - {"name"})
    rows = {}
    for key in keys:
        values = [flat[label].get(key) for label in flat]
        if len({repr(v) for v in values}) > 1:
            rows[setting_label(key)] = [
                _shown(key, v, key in flat[label]) for v, label in zip(values, flat, strict=True)
            ]
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(flat))


def _shown(key: str, value: Any, used: bool) -> str:
    if not used:
        return "not used"
    if value is None:
        return "auto"
    if key in ("model.trainable", "fine_tune_trainable"):
        return trainable_phrase(str(value))
    return str(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _val_accuracy(info: Any) -> float | None:
    """Validation accuracy of the saved (restored best) model; for runs made before the
    summary recorded it, the best epoch's."""
    summary = info.summary if isinstance(info.summary, dict) else {}
    for key in ("val_accuracy", "best_val_accuracy"):
        if _number(summary.get(key)) is not None:
            return _number(summary[key])
    from core.runs.metrics import MetricsReader

    values = [
        e["val_accuracy"]
        for e in epoch_events(MetricsReader(info.dir).all())
        if e.get("val_accuracy") is not None
    ]
    return max(values) if values else None


def _short_id(run_id: str) -> str:
    # "20261124-004448-efficientnet-lite0-edab33" -> "efficientnet-lite0-edab33"
    parts = run_id.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[0].isdigit() else run_id


def _backbone_name(name: str) -> str:
    from core.models.registry import BACKBONES

    spec = BACKBONES.get(name)
    return spec.display_name.replace(" (offline)", "") if spec else name


def parent_of(info: Any) -> str:
    """The run this run started from ("" when it started from the pretrained backbone)."""
    summary = info.summary if isinstance(info.summary, dict) else {}
    if summary.get("parent_run"):
        return str(summary["parent_run"])
    init_from = (info.config or {}).get("init_from") or ""
    return init_from.rstrip("/").rsplit("/", 1)[-1] if init_from else ""


def runs_frame(runs: Sequence[Any], dataset_names: Mapping[str, str]) -> pd.DataFrame:
    """One row per run: date, name, dataset, backbone, what trained, epochs, val and test
    accuracy of the saved (restored best) model, state, and the run it started from."""
    rows = []
    for info in runs:
        config = info.config or {}
        model = config.get("model") or {}
        status = info.status
        trainable = model.get("trainable", "head")
        if config.get("fine_tune_epochs"):
            then = trainable_phrase(config.get("fine_tune_trainable", "all"))
            trainable = f"{trainable_phrase(trainable)}, then {then}"
        else:
            trainable = trainable_phrase(trainable)
        rows.append(
            {
                "date": pd.to_datetime(status.created or None, utc=True),
                "state": status.state,
                "name": config.get("name") or _short_id(info.run_id),
                "dataset": dataset_names.get(config.get("dataset", ""), config.get("dataset", "")),
                "pretrained model": _backbone_name(model.get("backbone", "")),
                "size": model.get("image_size"),
                "what trained": trainable,
                "epochs": f"{status.epoch}/{status.total_epochs}",
                "val accuracy": _val_accuracy(info),
                "test accuracy": _number(
                    (info.summary if isinstance(info.summary, dict) else {}).get("test_accuracy")
                ),
                "started from": _short_id(parent_of(info))
                if parent_of(info)
                else "pretrained model",
                "run id": info.run_id,
            }
        )
    return pd.DataFrame(rows)


def short_labels(chosen: Sequence[Any], table: pd.DataFrame) -> dict[str, str]:
    """Unique, short labels for runs in a comparison (name, or name plus id suffix)."""
    names = dict(zip(table["run id"], table["name"], strict=True))
    labels = {}
    for info in chosen:
        label = str(names.get(info.run_id, info.run_id))
        if label in labels.values():
            label = f"{label} ({info.run_id[-6:]})"
        labels[info.run_id] = label
    return labels
