"""What a browser sees when a page fails: one sentence and an error id, never a traceback.

``.streamlit/config.toml`` sets ``client.showErrorDetails = "none"``, so Streamlit itself shows
no traceback, message or server path. :func:`run_guarded` runs the chosen page; an error it
does not handle is logged on the server (the log and ``workspace/logs/app-errors.log``) under
a short random id, and the page shows that id so a person can quote it to whoever runs the
server. Other pages keep working.

Set ``TRANSFER_STUDIO_RAISE_ERRORS=1`` (the test suite does) to let errors through, so a test
of a page sees them.
"""

from __future__ import annotations

import logging
import os
import secrets
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

import streamlit as st

RAISE_ENV = "TRANSFER_STUDIO_RAISE_ERRORS"
LOG_NAME = "app-errors.log"
logger = logging.getLogger("transfer_studio.app")


def log_error(error: BaseException, where: str) -> str:
    """Logs ``error`` with its traceback under a new id; returns the id.

    Args:
        error: The exception.
        where: What was running (the page), for the log line.

    Returns:
        An 8-character id that appears in the log line.
    """
    error_id = secrets.token_hex(4)
    trace = "".join(traceback.format_exception(error))
    logger.error("error %s on %s:\n%s", error_id, where, trace)
    try:
        from core.workspace import workspace_root

        folder = workspace_root() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / LOG_NAME, "a", encoding="utf-8") as log:
            log.write(f"{datetime.now(UTC).isoformat()} error {error_id} on {where}\n{trace}\n")
    except OSError as log_failure:  # a read-only workspace: the server log above still has it
        logger.warning("could not write %s: %s", LOG_NAME, log_failure)
    return error_id


def run_guarded(run: Callable[[], object], where: str) -> None:
    """Runs a page; an unhandled error becomes a logged id and one sentence on the page.

    Streamlit's own control flow (``st.rerun``, ``st.stop``, ``st.switch_page``) derives from
    ``BaseException`` and passes through untouched.

    Args:
        run: Runs the page (``navigation.run``).
        where: The page, for the log.
    """
    try:
        run()
    except Exception as error:
        if os.environ.get(RAISE_ENV) == "1":
            raise
        error_id = log_error(error, where)
        st.error(
            f"Something went wrong on this page (error id {error_id}). Nothing you made was "
            "lost, and the other pages keep working. Reload the page to try again; if it "
            "happens again, give the error id to whoever runs this server (the details are "
            "in its log).",
            icon=":material/error:",
        )
