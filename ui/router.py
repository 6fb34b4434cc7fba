"""Makes sure every page runs inside ``app.py``'s router.

Streamlit remembers, per server process, whether an app uses the legacy ``pages/`` folder
layout. Until ``app.py`` has run once, the first visitor who opens a page's own address
(``/train?run=...`` after a server restart, say) gets that page run on its own, without the
router's state set-up and sidebar. :func:`require_router` detects that case and reruns the
app through ``app.py``, which keeps the same address and lands on the same page.
"""

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

_ROUTED_KEY = "_routed_by_app"


def mark_routed() -> None:
    """Called by ``app.py``: this session has been through the router."""
    st.session_state[_ROUTED_KEY] = True


def require_router() -> None:
    """Reruns through ``app.py`` when a page starts a session without the router."""
    if PagesManager.uses_pages_directory and not st.session_state.get(_ROUTED_KEY):
        PagesManager.uses_pages_directory = False
        st.rerun()
