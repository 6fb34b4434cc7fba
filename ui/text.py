"""Names from users (datasets, classes, runs, files, ``?run=``) shown as text, never markup.

Streamlit renders Markdown in ``st.markdown``, ``st.caption``, ``st.error`` and the like, and
Plotly renders a little HTML (``<a href>``, ``<b>``) in labels. A name typed or uploaded by a
person goes through :func:`md` before it is put into Markdown, and through :func:`plot_text`
before it becomes a Plotly label, so ``**bold**``, a backtick that closes a code span, a
link or ``<a href=...>`` show up as the characters they are.
"""

from __future__ import annotations

import html
import re

# Characters that start Markdown (or Streamlit's ":red[...]", ":material/...:", "$...$")
# anywhere in a line; "." "," ";" "?" and the like never do and stay as they are.
_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()<>!|~$:&#])")
# At the start of a text, these begin a list, quote or heading ("- x", "+ x", "1. x").
_LEADING = re.compile(r"^(\s*)([-+=]|\d+(?=[.)]))")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")
_AUTOLINK = re.compile(r"(?i)(:/|www\.|@)")


def md(value: object) -> str:
    """``value`` as Markdown that displays exactly its characters, on one line.

    Args:
        value: A name (or any object; it is converted with ``str``).

    Returns:
        The text with every character that starts Markdown backslash-escaped (and a
        leading ``-``, ``+`` or ``1.`` that would start a list), line breaks turned into
        spaces, and bare URLs kept from becoming links.
    """
    text = _LINE_BREAKS.sub(" ", str(value))
    # Markdown turns bare URLs into links even when escaped; a word joiner (invisible)
    # keeps "https://x" and "www.x" plain text.
    text = _AUTOLINK.sub(lambda m: m.group(0)[:-1] + "\u2060" + m.group(0)[-1], text)
    text = _PUNCTUATION.sub(r"\\\1", text)
    match = _LEADING.match(text)
    if match and match.group(2)[0].isdigit():
        end = match.end()
        return text[:end] + "\\" + text[end:]  # "1. x" -> "1\. x"
    if match:
        return text[: match.start(2)] + "\\" + text[match.start(2) :]
    return text


def plot_text(value: object) -> str:
    """``value`` as a Plotly label that displays exactly its characters (HTML-escaped)."""
    return html.escape(str(value), quote=False)


def plot_texts(values: object) -> list[str]:
    """:func:`plot_text` of each item of an iterable."""
    return [plot_text(value) for value in values]  # type: ignore[attr-defined]
