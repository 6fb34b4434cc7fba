"""Pure builders of the Evaluate / Predict pages' figures and tables (no Streamlit).

Each takes plain data (labels, a confusion matrix, probabilities) and returns a Vega-Lite
(data, spec) pair, a Plotly figure or a pandas frame, so it can be tested without a browser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ui.text import plot_texts

CELL_SELECTION = "cell"  # the chart's selection parameter: a click picks one cell
HIGHLIGHT_COLOR = "#d62728"
BLUES = ["#f7fbff", "#c6dbef", "#6baed6", "#2171b5", "#08306b"]


def confusion_spec(
    labels: Sequence[str],
    matrix: Sequence[Sequence[int]],
    *,
    highlight: tuple[str, str] | None = None,
    title: str = "Confusion matrix",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A clickable confusion-matrix heatmap: rows = true label, columns = predicted label.

    A native (Vega-Lite) chart, for ``st.vega_lite_chart(data, spec, on_select=...)``: the
    Evaluate page then loads no Plotly bundle (about 1 s of its first visit). Colour is the
    share of each true class (row-normalised) so small classes stay visible; the text in
    each cell is the count. Class names are data, drawn as plain text.

    Args:
        labels: Row and column order.
        matrix: Counts, ``matrix[i][j]`` = images of true ``labels[i]`` predicted ``labels[j]``.
        highlight: Optional ``(true, predicted)`` cell to outline.
        title: Chart title.

    Returns:
        The data (one row per cell: ``true``, ``predicted``, ``count``, ``share``,
        ``chosen``) and the spec: a rect per cell with the count on it and a point
        selection named :data:`CELL_SELECTION` over (``true``, ``predicted``), which a click
        sets (see :func:`selected_cell`).
    """
    names = [str(label) for label in labels]
    counts = np.asarray(matrix, dtype=float).reshape(len(names), len(names))
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    rows = [
        {
            "true": true,
            "predicted": predicted,
            "count": int(counts[i, j]),
            "share": float(shares[i, j]),
            "chosen": highlight == (true, predicted),
        }
        for i, true in enumerate(names)
        for j, predicted in enumerate(names)
    ]
    data = pd.DataFrame(rows, columns=["true", "predicted", "count", "share", "chosen"])
    axis = {"labelLimit": 140, "labelFontSize": 12, "titleFontSize": 13}
    x = {
        "field": "predicted",
        "type": "nominal",
        "sort": names,
        "title": "predicted",
        "axis": {**axis, "labelAngle": 0, "orient": "bottom"},
    }
    y = {"field": "true", "type": "nominal", "sort": names, "title": "true", "axis": axis}
    spec = {
        "height": max(300, 70 * len(names) + 100),
        "title": {"text": title, "anchor": "start", "fontSize": 15},
        "layer": [
            {
                "params": [
                    {
                        "name": CELL_SELECTION,
                        "select": {"type": "point", "fields": ["true", "predicted"]},
                    }
                ],
                "mark": {"type": "rect", "cursor": "pointer"},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": {
                        "field": "share",
                        "type": "quantitative",
                        # ColorBrewer Blues from its near-white end: an empty cell is
                        # white, not tinted.
                        "scale": {"domain": [0, 0.25, 0.5, 0.75, 1], "range": BLUES},
                        "legend": {"title": "share of row", "format": ".0%"},
                    },
                    "stroke": {
                        "condition": {"test": "datum.chosen", "value": HIGHLIGHT_COLOR},
                        "value": None,
                    },
                    "strokeWidth": {"condition": {"test": "datum.chosen", "value": 3}, "value": 0},
                    "tooltip": [
                        {"field": "true", "title": "true"},
                        {"field": "predicted", "title": "predicted as"},
                        {"field": "count", "title": "images"},
                        {"field": "share", "title": "share of the true class", "format": ".0%"},
                    ],
                },
            },
            {
                "mark": {"type": "text", "fontSize": 13},
                "encoding": {
                    "x": x,
                    "y": y,
                    "text": {"field": "count", "type": "quantitative"},
                    # Dark on light cells, white on dark ones.
                    "color": {
                        "condition": {"test": "datum.share > 0.5", "value": "white"},
                        "value": "#1e293b",
                    },
                },
            },
        ],
    }
    return data, spec


def probability_figure(
    probabilities: Mapping[str, float] | Sequence[Mapping[str, Any]], *, k: int = 5
) -> go.Figure:
    """Horizontal bars of the top-k class probabilities, best on top.

    Args:
        probabilities: label -> probability, or a ``top_k`` list of ``{"label",
            "probability"}``.
        k: How many bars.
    """
    if isinstance(probabilities, Mapping):
        pairs = sorted(probabilities.items(), key=lambda item: -item[1])
    else:
        pairs = [(entry["label"], entry["probability"]) for entry in probabilities]
    pairs = pairs[: max(1, k)]
    labels = plot_texts(str(label) for label, _ in pairs)[::-1]
    values = [float(value) for _, value in pairs][::-1]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            text=[f"{v:.1%}" for v in values],
            textposition="auto",
            marker={"color": ["#1f77b4"] * (len(values) - 1) + ["#2ca02c"]},
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
        )
    )
    fig.update_layout(
        height=60 + 32 * len(values),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"range": [0, 1], "tickformat": ".0%"},
        yaxis={"type": "category"},
    )
    return fig


def per_class_frame(per_class: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """The per-class metrics as a table: one row per class, in the given order."""
    rows = [
        {
            "class": label,
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1"]),
            "support": int(row["support"]),
        }
        for label, row in per_class.items()
    ]
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def selected_cell(event: Any, labels: Sequence[str]) -> tuple[str, str] | None:
    """The ``(true, predicted)`` cell of a Streamlit chart selection event, if any.

    Args:
        event: What ``st.vega_lite_chart(..., on_select=...)`` returns (or its session-state
            value): a mapping with ``selection.cell``, a list of ``{"true", "predicted"}``.
        labels: The matrix labels (a cell outside them is ignored).
    """
    if not event:
        return None
    selection = event.get("selection") if isinstance(event, Mapping) else None
    if selection is None:
        selection = getattr(event, "selection", None)
    if isinstance(selection, Mapping):
        cells = selection.get(CELL_SELECTION)
    else:
        cells = getattr(selection, CELL_SELECTION, None)
    names = {str(label) for label in labels}
    for cell in cells or []:
        if not isinstance(cell, Mapping):
            continue
        true_label, predicted = cell.get("true"), cell.get("predicted")
        if true_label in names and predicted in names:
            return str(true_label), str(predicted)
    return None
