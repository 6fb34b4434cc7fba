"""Every visible label of every page reads aloud in everyday words (issue 12, trap 9).

A teacher should be able to read each title, caption, button, option and chart label to a
class. The precise terms (backbone, head, macro F1, ...) stay in the help texts, which this
test does not read.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.app.test_pages import EVAL_PAGES, OWN_PAGES, app_on, no_exception

# Words a newcomer cannot read aloud with meaning, and what the pages say instead.
BANNED = {
    r"\bbackbones?\b": "pretrained model",
    r"\bheads?\b": "new last layer",
    r"\bhead-only\b": "new last layer only",
    r"\bnhwc\b": "images as a batch of pixel grids",
    r"reduce_on_plateau": "lower when stuck",
    r"\bmacro[- ]f1\b": "balanced score",
    r"\|\s*delta": "largest difference",
    r"\blogits?\b": "raw scores",
    r"\bembeddings?\b": "features",
    r"\bblock\d+[a-z]?\b": "Block 6a",
    r"\bsoftmax\b": "probabilities",
}

TEXT_ELEMENTS = (
    "title",
    "header",
    "subheader",
    "markdown",
    "caption",
    "info",
    "warning",
    "success",
    "error",
)
LABELLED = (
    "button",
    "checkbox",
    "toggle",
    "selectbox",
    "multiselect",
    "radio",
    "slider",
    "select_slider",
    "number_input",
    "text_input",
    "text_area",
    "metric",
    "expander",
    "tab",
    "segmented_control",
    "camera_input",
    "file_uploader",
    "download_button",
    "form_submit_button",
    "page_link",
    "color_picker",
    "date_input",
)


def _options(element) -> list[str]:
    options = getattr(element, "options", None)
    if not options:
        return []
    fmt = getattr(element, "format_func", None)
    shown = []
    for option in options:
        try:
            shown.append(str(fmt(option)) if fmt else str(option))
        except (TypeError, ValueError, KeyError):
            shown.append(str(option))
    return shown


def _figure_words(spec: dict) -> list[str]:
    layout = spec.get("layout", {})
    words = [str((layout.get("title") or {}).get("text", ""))]
    for name, axis in layout.items():
        if name.startswith(("xaxis", "yaxis")) and isinstance(axis, dict):
            words.append(str((axis.get("title") or {}).get("text", "")))
            words.extend(str(t) for t in axis.get("ticktext", []) or [])
    words.extend(str(a.get("text", "")) for a in layout.get("annotations", []) or [])
    words.extend(str(trace.get("name", "")) for trace in spec.get("data", []))
    return words


def _vega_words(node) -> list[str]:
    """Titles (chart, axes, legends) and inline labels of a Vega-Lite spec, at any depth."""
    words: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                words.append(value)
            elif key in ("title", "text") and isinstance(value, dict) and "text" in value:
                words.append(str(value["text"]))
            elif key == "label" and isinstance(value, str):
                words.append(value)
            else:
                words.extend(_vega_words(value))
    elif isinstance(node, list):
        for item in node:
            words.extend(_vega_words(item))
    return words


def visible_words(at) -> list[str]:
    """Every text a person sees on the page (help texts and tooltips excluded)."""
    words: list[str] = []
    for kind in TEXT_ELEMENTS:
        words.extend(str(e.value) for e in at.get(kind))
    for kind in LABELLED:
        for element in at.get(kind):
            label = getattr(element, "label", None)
            if label is None and hasattr(element, "proto"):
                label = getattr(element.proto, "label", "")
            words.append(str(label or ""))
            words.append(str(getattr(getattr(element, "proto", None), "placeholder", "") or ""))
            words.extend(_options(element))
    for frame in at.dataframe:
        try:
            words.extend(str(c) for c in frame.value.columns)
            words.extend(str(i) for i in frame.value.index)
        except (AttributeError, ValueError):
            continue
    for chart in at.get("plotly_chart"):
        words.extend(_figure_words(json.loads(chart.proto.spec)))
    for chart in at.get("vega_lite_chart"):
        words.extend(_vega_words(json.loads(chart.proto.spec)))
    return [w for w in words if w]


def jargon(words: list[str]) -> list[tuple[str, str]]:
    """``(banned pattern, text)`` for every visible text that uses a banned word."""
    found = []
    for text in words:
        for pattern in BANNED:
            if re.search(pattern, text, flags=re.IGNORECASE):
                found.append((pattern, text[:160]))
    return found


@pytest.mark.parametrize("page", OWN_PAGES + EVAL_PAGES)
def test_no_jargon_on_a_fresh_page(page):
    at = app_on(page)
    no_exception(at)
    assert jargon(visible_words(at)) == []


@pytest.mark.parametrize("page", OWN_PAGES + EVAL_PAGES)
def test_no_jargon_with_a_dataset_and_a_run(page, ready):
    at = app_on(page, dataset_id=ready["dataset_id"], run_id=ready["run_id"])
    no_exception(at)
    words = visible_words(at)
    assert len(words) > 5  # the page drew its labels
    assert jargon(words) == []


def test_the_scan_finds_jargon():
    assert jargon(["Train the head"]) and jargon(["block6a"]) and jargon(["Macro F1"])
    assert jargon(["The header and the ahead"]) == []
