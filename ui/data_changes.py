"""The Data page's buttons that change a dataset, applied in their click callback.

A callback runs before the page's script, so the page draws once and already shows the
change; a change made inside the script needs a second run (``st.rerun``) to show it. A
refused change is kept in session state under the button's key and shown once by
:func:`show_error`.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core.data import edits


def apply(key: str, change: Callable[[str], object], dataset_id: str) -> None:
    """Button callback: applies ``change(dataset_id)``; a refusal is kept for :func:`show_error`.

    Args:
        key: The button's key (the error is kept under ``<key>_error``).
        change: One of this module's changes, e.g. :func:`rename_class`.
        dataset_id: The dataset it changes.
    """
    try:
        change(dataset_id)
    except ValueError as error:  # DatasetError too: the message says what is wrong
        st.session_state[f"{key}_error"] = str(error)


def show_error(key: str) -> None:
    """Shows (once) why the change of button ``key`` was refused, if it was."""
    if error := st.session_state.pop(f"{key}_error", None):
        st.error(error)


def rename_class(dataset_id: str) -> None:
    """Renames the class chosen in "Rename a class" to the name typed there."""
    state = st.session_state
    edits.rename_class(dataset_id, state["data_rename_old"], state["data_rename_new"].strip())


def resplit(dataset_id: str) -> None:
    """Draws the split set by the validation and test sliders and the seed."""
    state = st.session_state
    edits.resplit(dataset_id, state["data_val"], state["data_test"], int(state["data_seed"]))
