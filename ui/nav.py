"""Links between pages that tolerate a page not being installed (yet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

ROOT = Path(__file__).resolve().parents[1]


def page_exists(page: str) -> bool:
    """Whether ``pages/<x>.py`` exists (the router only registers pages that do)."""
    return (ROOT / page).is_file()


def link(page: str, label: str, icon: str | None = None, *, where: Any = st) -> None:
    """``st.page_link`` to ``page`` when it exists; nothing otherwise."""
    if page_exists(page):
        where.page_link(page, label=label, icon=icon)
