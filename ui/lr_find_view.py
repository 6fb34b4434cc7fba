"""The learning-rate finder's figure and words: loss against learning rate on a log axis.

A pure figure builder (no streamlit, no files), so the chart the Train page shows is testable
on a plain dictionary: an :class:`core.training.lr_find.LrFindResult` as ``to_dict()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from ui.figures import TRAIN_COLOR, VAL_COLOR, _layout

TEACHING_SENTENCE = (
    "Read the curve from left to right: where it is flat the rate is too small to learn, "
    "where it falls steeply the model learns fast, and where it shoots up the rate is too "
    "large; the suggested rate sits on the steep fall, before the lowest point."
)


def _nearest_index(rates: list[float], rate: float) -> int:
    return min(range(len(rates)), key=lambda i: abs(rates[i] - rate))


def lr_find_figure(result: Mapping[str, Any]) -> go.Figure:
    """Smoothed loss against learning rate (log axis), the suggested rate marked.

    Args:
        result: ``learning_rates``, ``losses`` and ``suggestion`` of one sweep.

    Returns:
        The figure; an empty chart with a note when the sweep has no points.
    """
    rates = [float(r) for r in result.get("learning_rates") or []]
    losses = [float(v) for v in result.get("losses") or []]
    fig = go.Figure()
    _layout(
        fig, title="Loss while the learning rate rises", x="learning rate (log scale)", y="loss"
    )
    fig.update_xaxes(type="log", exponentformat="power")
    fig.update_layout(hovermode="closest")
    if not rates or len(rates) != len(losses):
        fig.add_annotation(
            text="No sweep yet", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper"
        )
        return fig
    fig.add_trace(
        go.Scatter(
            x=rates,
            y=losses,
            mode="lines",
            name="loss (smoothed)",
            line={"color": TRAIN_COLOR, "width": 2},
            hovertemplate="lr %{x:.2e}<br>loss %{y:.3f}<extra></extra>",
        )
    )
    suggestion = result.get("suggestion")
    if isinstance(suggestion, int | float) and suggestion > 0:
        at = _nearest_index(rates, float(suggestion))
        fig.add_trace(
            go.Scatter(
                x=[float(suggestion)],
                y=[losses[at]],
                mode="markers+text",
                name="suggested rate",
                marker={"color": VAL_COLOR, "size": 12, "symbol": "circle"},
                text=[f"suggested {float(suggestion):.1e}"],
                textposition="top right",
                hovertemplate="suggested lr %{x:.2e}<extra></extra>",
            )
        )
    # The last points of a diverging sweep dwarf the rest: keep the interesting range visible.
    low, high = min(losses), losses[0]
    span = max(high - low, 1e-6)
    fig.update_yaxes(range=[low - 0.1 * span, max(high, low) + 0.6 * span])
    return fig


def sweep_caption(result: Mapping[str, Any]) -> str:
    """One line of facts about a sweep: steps, where it ran, how long it took."""
    where = (
        "the head on cached embeddings"
        if result.get("fast_path")
        else f"the whole model ({result.get('trainable', '')})"
    )
    ended = " (stopped early: the loss blew up)" if result.get("diverged") else ""
    return (
        f"{result.get('steps', 0)} steps through {where} in "
        f"{float(result.get('seconds') or 0):.1f} s{ended}."
    )
