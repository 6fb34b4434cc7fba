"""Shared Streamlit helpers of the app: session state, sidebar and small widgets.

Only pages and ``app.py`` import this package; ``core`` never does.
"""
