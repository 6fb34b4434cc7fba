"""Pure builders of the Evaluate / Predict pages' figures and tables (no Streamlit).

Each takes plain data (labels, a confusion matrix, probabilities) and returns a Plotly figure
or a pandas frame, so it can be tested without a browser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ui.text import plot_text, plot_texts


def confusion_figure(
    labels: Sequence[str],
    matrix: Sequence[Sequence[int]],
    *,
    highlight: tuple[str, str] | None = None,
    title: str = "Confusion matrix",
) -> go.Figure:
    """A clickable confusion-matrix heatmap: rows = true label, columns = predicted label.

    Colour is the share of each true class (row-normalised) so small classes stay visible;
    the text in each cell is the count.

    Args:
        labels: Row and column order.
        matrix: Counts, ``matrix[i][j]`` = images of true ``labels[i]`` predicted ``labels[j]``.
        highlight: Optional ``(true, predicted)`` cell to outline.
        title: Figure title.

    Returns:
        A Plotly figure: the heatmap, plus one invisible clickable marker per cell whose
        ``x`` is the predicted and ``y`` the true label (see :func:`selected_cell`).
    """
    counts = np.asarray(matrix, dtype=float).reshape(len(labels), len(labels))
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    raw_labels = [str(label) for label in labels]
    # Class names are the user's: shown as text (Plotly renders some HTML in labels).
    labels = plot_texts(raw_labels)
    fig = go.Figure(
        go.Heatmap(
            z=shares,
            x=labels,
            y=labels,
            text=counts.astype(int),
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": "share of row", "tickformat": ".0%"},
            hoverinfo="skip",
        )
    )
    # Heatmaps emit no selection events in Streamlit, so an invisible marker sits on each
    # cell: clicking a cell selects its marker, whose x/y are (predicted, true).
    xs = [predicted for _ in labels for predicted in labels]
    ys = [true for true in labels for _ in labels]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            marker={"symbol": "square", "size": 34, "color": "rgba(0,0,0,0)"},
            customdata=np.stack([counts.ravel(), np.round(shares.ravel() * 100, 1)], axis=-1),
            hovertemplate=(
                "true <b>%{y}</b> → predicted <b>%{x}</b><br>%{customdata[0]} images "
                "(%{customdata[1]}% of %{y})<br><i>click to see them</i><extra></extra>"
            ),
            selected={"marker": {"opacity": 1}},
            unselected={"marker": {"opacity": 1}},
            showlegend=False,
            name="cells",
        )
    )
    if highlight is not None and highlight[0] in raw_labels and highlight[1] in raw_labels:
        row, col = raw_labels.index(highlight[0]), raw_labels.index(highlight[1])
        fig.add_shape(
            type="rect",
            x0=col - 0.5,
            x1=col + 0.5,
            y0=row - 0.5,
            y1=row + 0.5,
            line={"color": "#d62728", "width": 3},
        )
    size = max(320, 60 * len(labels) + 160)
    fig.update_layout(
        title=title,
        height=size,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": "predicted", "side": "bottom", "type": "category"},
        yaxis={"title": "true", "autorange": "reversed", "type": "category"},
    )
    return fig


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
    """The ``(true, predicted)`` cell of a Streamlit Plotly selection event, if any.

    Args:
        event: What ``st.plotly_chart(..., on_select=...)`` returns (or its session-state
            value): a mapping with ``selection.points``, each with ``x`` and ``y``.
        labels: The matrix labels (a point outside them is ignored).
    """
    if not event:
        return None
    selection = event.get("selection") if isinstance(event, Mapping) else None
    if selection is None:
        selection = getattr(event, "selection", None)
    points = (selection or {}).get("points") if isinstance(selection, Mapping) else None
    if points is None and selection is not None:
        points = getattr(selection, "points", None)
    # The figure shows escaped names (:func:`ui.text.plot_text`); map them back.
    by_shown = {plot_text(label): str(label) for label in labels}
    for point in points or []:
        true_label = by_shown.get(str(point.get("y")))
        predicted = by_shown.get(str(point.get("x")))
        if true_label is not None and predicted is not None:
            return true_label, predicted
    return None
