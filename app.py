"""Transfer Studio: the router. Sets the page config, initialises state, and routes."""

import streamlit as st

st.set_page_config(page_title="Transfer Studio", page_icon=":material/school:", layout="wide")

navigation = st.navigation([st.Page("pages/home.py", title="Home", icon=":material/home:")])
navigation.run()
