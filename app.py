"""Transfer Studio: the router. Sets the page config, initialises state, and routes."""

import streamlit as st

from ui.auth import gate
from ui.errors import run_guarded
from ui.heap import freeze_new_modules
from ui.preload import start_background_imports
from ui.router import mark_routed
from ui.sidebar import render_sidebar
from ui.state import init_state

st.set_page_config(
    page_title="Transfer Studio",
    page_icon="assets/icon.svg",
    layout="wide",
    initial_sidebar_state="expanded",
)
gate()  # who is this, and which workspace do they see (stops at the login form)
init_state()
mark_routed()

PAGES = [
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/quick.py", "Quick mode", ":material/bolt:"),
    ("pages/data.py", "Data", ":material/photo_library:"),
    ("pages/model.py", "Model", ":material/account_tree:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/runs.py", "Runs", ":material/history:"),
    ("pages/evaluate.py", "Evaluate", ":material/fact_check:"),
    ("pages/predict.py", "Predict", ":material/image_search:"),
    ("pages/export.py", "Export", ":material/download:"),
]
navigation = st.navigation(
    [
        st.Page(path, title=title, icon=icon, default=(title == "Home"))
        for path, title, icon in PAGES
    ]
)
st.logo("assets/logo.svg", size="large", icon_image="assets/icon.svg")
# The sidebar is drawn before the page (so a page that stops early still has it) and drawn
# again over it once the page ran, so it shows what the page just changed (a new model
# choice, a run just started).
sidebar = st.sidebar.empty()
render_sidebar(sidebar, live=False)
run_guarded(navigation.run, navigation.url_path or "home")
render_sidebar(sidebar, live=True)
start_background_imports()  # Keras loads while the user looks at Home or Data
freeze_new_modules()  # once TensorFlow is in, each rerun's garbage collection stays small
