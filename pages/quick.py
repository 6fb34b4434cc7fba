"""Quick mode: classes, Train and a live preview on one page (for classroom demos)."""

import streamlit as st

from ui.quick_view import cards_panel, init_quick, preview_panel, train_panel
from ui.router import require_router

require_router()
init_quick()

st.title("Quick mode")
st.caption(
    "Teach the computer to recognise things in three steps: record a few seconds of each "
    "class, press Train, then show things to the camera. Everything stays on this machine."
)
columns = st.columns([5, 3, 4], gap="medium")
with columns[0]:
    counts = cards_panel()
with columns[1]:
    train_panel(counts)
with columns[2]:
    preview_panel()
