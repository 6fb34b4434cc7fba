"""Home: what Transfer Studio does."""

import streamlit as st

st.title("Transfer Studio")
st.write("Train an image classifier on your own pictures, without writing code.")
