"""User names are shown as text: Markdown and Plotly HTML in them never render."""

from __future__ import annotations

import re

from ui.evaluate_figures import confusion_spec, selected_cell
from ui.figures import class_counts_frame
from ui.text import md, plot_text

HOSTILE = "x` **bold** [a](https://e.example) <a href='https://e.example'>y</a> :red[z]\n# h"


def test_md_escapes_every_markdown_character_and_keeps_one_line():
    shown = md(HOSTILE)
    assert "\n" not in shown
    # No markup character is left unescaped (a backtick cannot close a code span, ...).
    assert re.search(r"(?<!\\)[`*\[\]()<>:#_]", shown) is None
    assert shown.replace("\\", "").replace("\u2060", "") == HOSTILE.replace("\n", " ")
    assert "https:/" not in shown.replace("\\", "")  # bare URLs are not turned into links


def test_md_leaves_ordinary_text_alone_and_stops_lists():
    assert md("Loss became NaN at epoch 2, step 3; lower the rate.") == (
        "Loss became NaN at epoch 2, step 3; lower the rate."
    )
    assert md("- not a list") == "\\- not a list"
    assert md("1. not a list") == "1\\. not a list"


def test_plotly_labels_are_html_escaped():
    assert plot_text("<a href='x'>y</a> & b") == "&lt;a href='x'&gt;y&lt;/a&gt; &amp; b"


def test_confusion_matrix_keeps_names_as_text_and_clicks_map_back():
    # A native (Vega-Lite) chart draws names as text: nothing to escape, nothing to mangle.
    labels = ["<a href='https://e.example'>cat</a>", "dog"]
    data, spec = confusion_spec(labels, [[1, 0], [0, 1]])
    assert set(data["true"]) == set(labels)
    assert spec["layer"][0]["encoding"]["x"]["sort"] == labels
    event = {"selection": {"cell": [{"true": "dog", "predicted": labels[0]}]}}
    assert selected_cell(event, labels) == ("dog", labels[0])


def test_class_count_bars_keep_the_name_as_text():
    # A native (Vega-Lite) chart draws names as text: nothing to escape, nothing to mangle.
    frame = class_counts_frame({"<b>x</b>": {"train": 2, "val": 1, "test": 0}})
    assert list(frame.index) == ["<b>x</b>"]
