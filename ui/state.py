"""Per-user session state: every key the pages share, its meaning and its default.

Streamlit keeps ``st.session_state`` per browser session, so this is the only place a user's
choices live between reruns (never module globals, never ``st.cache_resource``).
:func:`init_state` runs once per script run from ``app.py`` and only fills missing keys.

Shared keys:
    ``dataset_id`` (``str | None``): id of the current dataset (``workspace/datasets/<id>``),
        chosen on Home (sample) or Data.
    ``model_config`` (:class:`core.config.ModelConfig`): the network the Model page
        configures; the Train page copies it into the run's ``TrainConfig``.
    ``train_config`` (``dict[str, Any]``): the Train page's hyperparameters, i.e. the fields of
        :class:`core.config.TrainConfig` other than ``dataset`` and ``model``.
    ``run_id`` (``str | None``): the run the Train page shows. Mirrored in the URL as
        ``?run=<id>`` so a refresh or a second tab re-attaches to the same run.
    ``model_confirmed`` (``bool``): the user has looked at the Model page (ticks Home's list).

Widget keys are private to the page that creates them and are prefixed with its name
(``data_``, ``model_``, ``train_``, ``runs_``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from core.config import ModelConfig, TrainConfig

RUN_QUERY_PARAM = "run"


def default_train_config() -> dict[str, Any]:
    """The Train page's defaults: TrainConfig's own (epochs, rate and patience on auto)."""
    return {
        f.name: f.default
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ("dataset", "model") and f.default is not dataclasses.MISSING
    }


def _defaults() -> dict[str, Any]:
    return {
        "dataset_id": None,
        "model_config": ModelConfig(),
        "train_config": default_train_config(),
        "run_id": None,
        "model_confirmed": False,
    }


def init_state() -> None:
    """Fills every missing session key with its default; picks up ``?run=`` from the URL."""
    for key, value in _defaults().items():
        if key not in st.session_state:
            st.session_state[key] = value
    from_url = st.query_params.get(RUN_QUERY_PARAM)
    if from_url and from_url != st.session_state["run_id"]:
        st.session_state["run_id"] = from_url
        if st.session_state["dataset_id"] is None:
            _adopt_run_settings(from_url)


def _adopt_run_settings(run_id: str) -> None:
    """A fresh tab opened on ``?run=`` also gets the run's dataset and model choice."""
    from core.runs.store import read_config, run_dir

    try:
        config = read_config(run_dir(run_id))
    except (FileNotFoundError, ValueError):
        return  # the Train page says why the run cannot be shown
    st.session_state["dataset_id"] = config.dataset
    st.session_state["model_config"] = config.model


def set_dataset(dataset_id: str | None) -> None:
    """Makes ``dataset_id`` the current dataset."""
    st.session_state["dataset_id"] = dataset_id


def set_run(run_id: str | None) -> None:
    """Makes ``run_id`` the active run and mirrors it in the URL (``?run=``)."""
    st.session_state["run_id"] = run_id
    if run_id:
        st.query_params[RUN_QUERY_PARAM] = run_id
    elif RUN_QUERY_PARAM in st.query_params:
        del st.query_params[RUN_QUERY_PARAM]


def model_config() -> ModelConfig:
    """The current model choice."""
    return st.session_state["model_config"]


def set_model_config(config: ModelConfig) -> None:
    """Stores a new (already validated) model choice."""
    st.session_state["model_config"] = config


def build_train_config(dataset_id: str, overrides: dict[str, Any]) -> TrainConfig:
    """Combines the current dataset, model choice and hyperparameters into a TrainConfig.

    Args:
        dataset_id: The dataset to train on.
        overrides: Hyperparameters from the Train page (TrainConfig field names).

    Returns:
        A validated :class:`TrainConfig`.

    Raises:
        ValueError: If a setting is out of range (the message names it).
    """
    return TrainConfig(dataset=dataset_id, model=model_config(), **overrides)
