"""Pure chart builders for the app: data in, a Plotly figure or a Vega-Lite (data, spec) out.

Nothing here imports streamlit or reads files, so every chart the pages show can be tested
on plain lists and dictionaries. Metric events are the dictionaries a run writes to
``metrics.jsonl`` (see :mod:`core.runs.store`): epoch events carry ``epoch`` plus Keras log keys
such as ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``; batch events carry ``step``
(and ``epoch``) plus ``loss``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ui.labels import block_title
from ui.text import plot_text

TRAIN_COLOR = "#2563EB"
VAL_COLOR = "#F97316"
TEST_COLOR = "#10B981"
FROZEN_COLOR = "#CBD5E1"
TRAINABLE_COLOR = "#2563EB"
HEAD_COLOR = "#7C3AED"
RUN_COLORS = ("#2563EB", "#F97316", "#10B981", "#DB2777", "#7C3AED", "#0891B2", "#CA8A04")
_FONT = {"family": "Inter, Segoe UI, sans-serif", "size": 13}
_METRIC_TITLES = {"loss": "Loss", "accuracy": "Accuracy"}
# At the foot of the figure (container coordinates), under the x-axis title, whatever the
# plot height: a fraction of the plot (y < 0) landed on the axis title in short charts.
LEGEND_BELOW = {
    "orientation": "h",
    "yref": "container",
    "yanchor": "bottom",
    "y": 0.02,
    "xanchor": "left",
    "x": 0,
}
FINE_TUNE_MARKER = "fine-tuning starts"


def _layout(fig: go.Figure, *, title: str, x: str, y: str, height: int = 320) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        xaxis_title=x,
        yaxis_title=y,
        height=height,
        # Room below the axis title for the legend: a legend inside or above the plot
        # hides curves near 100% and collides with the fine-tune marker.
        margin={"l": 50, "r": 20, "t": 50, "b": 90},
        template="plotly_white",
        font=_FONT,
        legend=LEGEND_BELOW,
        hovermode="x unified",
    )
    return fig


def event_kind(event: Mapping[str, Any]) -> str:
    """Returns ``"epoch"``, ``"batch"`` or another kind named by an event's type field."""
    for key in ("type", "event", "kind"):
        if key in event:
            return str(event[key])
    return "epoch" if "val_loss" in event else "unknown"


def epoch_events(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The epoch events of a run, in order, the last one per epoch number winning.

    A resumed run can log an epoch twice; the later record replaces the earlier one.
    """
    by_epoch: dict[int, Mapping[str, Any]] = {}
    for event in events:
        if event_kind(event) == "epoch" and "epoch" in event:
            by_epoch[int(event["epoch"])] = event
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def batch_events(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The batch events of a run, in the order they were written."""
    return [event for event in events if event_kind(event) == "batch" and "loss" in event]


def _epoch_x(event: Mapping[str, Any]) -> int:
    # Keras counts epochs from 0; people count from 1. The engine writes 1-based numbers.
    return int(event["epoch"])


def _batch_x(event: Mapping[str, Any], index: int) -> float:
    # Position in epochs: batch 50 of 100 in epoch 3 sits at 2.5, under the epoch-3 point.
    steps = event.get("steps") or 0
    if "epoch" in event and steps:
        return int(event["epoch"]) - 1 + int(event.get("step", 0)) / int(steps)
    return float(index + 1)


def _phase_switches(epochs: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Where the run changed phase: ``{"epoch": x, "label": text}``, half-way between epochs."""
    phases = [(_epoch_x(e), e.get("phase")) for e in epochs]
    switches = []
    for (_, before), (epoch, after) in zip(phases, phases[1:], strict=False):
        if before and after and before != after:
            label = FINE_TUNE_MARKER if after == "fine-tune" else str(after)
            switches.append({"epoch": epoch - 0.5, "label": label})
    return switches


def history_spec(
    events: Iterable[Mapping[str, Any]], metric: str = "loss", *, title: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train and validation curves of one metric, one point per epoch.

    A native (Vega-Lite) chart, for ``st.vega_lite_chart(data, spec)``: the Train page then
    loads no Plotly bundle (about 1 s of its first visit).

    Args:
        events: Metric events of a run (epoch events are picked out; others are ignored).
        metric: Keras log key without the ``val_`` prefix, e.g. ``"loss"`` or ``"accuracy"``.
        title: Chart title; defaults to the metric's name.

    Returns:
        The data (one row per point: ``epoch``, ``value``, ``series`` = ``train`` or
        ``validation``) and the spec: a line with points per series, the legend below the
        plot (so it hides no curve at 100%), and a dotted vertical line labelled just above
        the plot where the run switched to its fine-tune phase.
    """
    epochs = epoch_events(events)
    rows = [
        {"epoch": _epoch_x(e), "value": float(e[key]), "series": series}
        for key, series in ((metric, "train"), (f"val_{metric}", "validation"))
        for e in epochs
        if e.get(key) is not None
    ]
    data = pd.DataFrame(rows, columns=["epoch", "value", "series"])
    label = _METRIC_TITLES.get(metric, metric.replace("_", " ").capitalize())
    value_format = ".0%" if metric == "accuracy" else ".3~f"
    y: dict[str, Any] = {
        "field": "value",
        "type": "quantitative",
        "title": label.lower(),
        "axis": {"format": value_format},
    }
    if metric == "accuracy" or not rows:
        y["scale"] = {"domain": [0, 1]}
    x = {
        "field": "epoch",
        "type": "quantitative",
        "title": "epoch",
        "scale": {"domainMin": 0, "nice": False},
        "axis": {"tickMinStep": 1, "format": "d"},
    }
    layers: list[dict[str, Any]] = [
        {
            "mark": {"type": "line", "strokeWidth": 2.5, "point": {"size": 50, "filled": True}},
            "encoding": {
                "x": x,
                "y": y,
                "color": {
                    "field": "series",
                    "type": "nominal",
                    "scale": {"domain": ["train", "validation"], "range": [TRAIN_COLOR, VAL_COLOR]},
                    "legend": {"orient": "bottom", "title": None, "direction": "horizontal"},
                },
                "tooltip": [
                    {"field": "series", "title": "curve"},
                    {"field": "epoch", "title": "epoch"},
                    {"field": "value", "title": label.lower(), "format": value_format},
                ],
            },
        }
    ]
    switches = _phase_switches(epochs)
    if switches:
        marker = {"data": {"values": switches}}
        layers.append(
            {
                **marker,
                "mark": {"type": "rule", "strokeDash": [2, 3], "color": "#64748B"},
                "encoding": {"x": {"field": "epoch", "type": "quantitative"}},
            }
        )
        # Just above the plot, beside the line (on its left in the plot's right half, so it
        # stays inside the chart): it hides no curve, and the legend is below the plot.
        last = max(row["epoch"] for row in rows) if rows else 1
        right_half = switches[-1]["epoch"] > last / 2
        layers.append(
            {
                **marker,
                "mark": {
                    "type": "text",
                    "align": "right" if right_half else "left",
                    "baseline": "bottom",
                    "dx": -3 if right_half else 3,
                    "dy": -3,
                    "fontSize": 11,
                    "color": "#475569",
                },
                "encoding": {
                    "x": {"field": "epoch", "type": "quantitative"},
                    "y": {"value": 0},
                    "text": {"field": "label"},
                },
            }
        )
    spec = {
        "height": 320,
        "title": {"text": title or label, "anchor": "start", "fontSize": 15, "offset": 18},
        "layer": layers,
    }
    return data, spec


def batch_loss_spec(
    events: Iterable[Mapping[str, Any]], *, max_points: int = 2000
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Loss of every training batch, numbered across epochs (the last ``max_points`` shown).

    Returns:
        The data (``epoch``: the batch's place in epochs, e.g. 2.5 for the middle of the
        third epoch, and ``loss``) and a Vega-Lite line spec for ``st.vega_lite_chart``.
    """
    batches = batch_events(events)[-max_points:]
    data = pd.DataFrame(
        {
            "epoch": [_batch_x(e, i) for i, e in enumerate(batches)],
            "loss": [float(e["loss"]) for e in batches],
        },
        columns=["epoch", "loss"],
    )
    spec = {
        "height": 260,
        "title": {"text": "Loss per batch", "anchor": "start", "fontSize": 15},
        "mark": {"type": "line", "strokeWidth": 1.5, "color": TRAIN_COLOR},
        "encoding": {
            "x": {
                "field": "epoch",
                "type": "quantitative",
                "title": "epoch",
                "scale": {"domainMin": 0, "nice": False},
            },
            "y": {"field": "loss", "type": "quantitative", "title": "loss"},
            "tooltip": [
                {"field": "epoch", "title": "epoch", "format": ".2f"},
                {"field": "loss", "title": "loss", "format": ".4f"},
            ],
        },
    }
    return data, spec


SPLIT_COLUMNS = {"train": "train", "val": "validation", "test": "test"}
SPLIT_COLORS = [TRAIN_COLOR, VAL_COLOR, TEST_COLOR]  # in the order of SPLIT_COLUMNS


def class_counts_frame(counts: Mapping[str, Mapping[str, int]] | Any) -> pd.DataFrame:
    """Images per class and split, shaped for ``st.bar_chart`` (stacked horizontal bars).

    A native chart rather than Plotly: the Data page is the first page most users open, and
    Plotly's browser bundle (4.7 MB to parse) alone made its first visit take over 2 s.

    Args:
        counts: ``{class: {"train": n, "val": n, "test": n}}`` or a pandas DataFrame with
            classes as the index and ``train``/``val``/``test`` columns (``Dataset.counts()``);
            other columns (``total``) and a ``total`` row are left out.

    Returns:
        One row per class (its name as the index, kept as text) and the columns ``train``,
        ``validation``, ``test`` (colours: ``SPLIT_COLORS``).
    """
    if not (hasattr(counts, "to_dict") and hasattr(counts, "index")):
        counts = pd.DataFrame.from_dict(dict(counts), orient="index").fillna(0)
    frame = pd.DataFrame(index=[str(name) for name in counts.index if str(name) != "total"])
    for key, column in SPLIT_COLUMNS.items():
        values = counts[key] if key in counts.columns else pd.Series(0, index=counts.index)
        frame[column] = [int(values[name]) for name in counts.index if str(name) != "total"]
    frame.index.name = "class"
    return frame


def block_diagram_spec(
    blocks: Sequence[Mapping[str, Any]], *, title: str = ""
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The network as a row of blocks from input to output, frozen blocks greyed.

    A native (Vega-Lite) chart, for ``st.vega_lite_chart(data, spec)``: the Model page then
    loads no Plotly bundle, which with the network build made its first visit over 2 s.

    Args:
        blocks: ``[{"name": str, "params": int, "trainable": bool}, ...]`` from input to
            output (``core.models.transfer.block_table``). A block named ``head`` is drawn in its
            own colour.
        title: Chart title.

    Returns:
        The data (one row per block: ``order``, ``block`` (readable name), ``parameters``,
        ``state``, ``color``) and the spec: a bar per block whose height is its parameter
        count on a log axis labelled in powers of ten, coloured by whether it trains.
    """
    rows = []
    for index, block in enumerate(blocks):
        trainable = bool(block.get("trainable"))
        if str(block["name"]) == "head":
            color = HEAD_COLOR if trainable else FROZEN_COLOR
        else:
            color = TRAINABLE_COLOR if trainable else FROZEN_COLOR
        rows.append(
            {
                "order": index,
                "block": block_title(str(block["name"])),
                "parameters": max(int(block.get("params", 0)), 1),
                "state": "learns" if trainable else "frozen",
                "color": color,
            }
        )
    data = pd.DataFrame(rows, columns=["order", "block", "parameters", "state", "color"])
    largest = int(data["parameters"].max()) if rows else 10
    top = 10 ** max(1, len(str(largest)))  # the power of ten above the largest block
    spec = {
        "height": 300,
        "title": {"text": title, "anchor": "start", "fontSize": 14} if title else None,
        "mark": {"type": "bar", "stroke": "#475569", "strokeWidth": 0.5},
        "encoding": {
            "x": {
                "field": "block",
                "type": "nominal",
                "sort": {"field": "order"},
                "title": "input  →  output",
                "axis": {"labelAngle": -45, "labelOverlap": False},
            },
            "y": {
                "field": "parameters",
                "type": "quantitative",
                "scale": {"type": "log", "domain": [1, top]},
                "title": "parameters",
                # Powers of ten only: no stray "2, 5" ticks.
                "axis": {
                    "values": [10**k for k in range(0, len(str(top)))],
                    "format": "~s",
                },
            },
            "y2": {"datum": 1},  # bars rise from 1 (a log axis has no zero)
            "color": {"field": "color", "type": "nominal", "scale": None, "legend": None},
            "tooltip": [
                {"field": "block", "title": "block"},
                {"field": "parameters", "format": ",", "title": "parameters"},
                {"field": "state", "title": "state"},
            ],
        },
    }
    if not title:
        del spec["title"]
    return data, spec


def compare_figure(
    histories: Mapping[str, Iterable[Mapping[str, Any]]], metric: str = "val_accuracy"
) -> go.Figure:
    """Overlaid curves of one metric for several runs, one colour per run.

    Args:
        histories: Run label -> its metric events.
        metric: Keras log key, e.g. ``"val_accuracy"`` or ``"loss"``.

    Returns:
        One line per run (epoch on x).
    """
    fig = go.Figure()
    for index, (label, events) in enumerate(histories.items()):
        points = [
            (_epoch_x(e), e[metric]) for e in epoch_events(events) if e.get(metric) is not None
        ]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="lines+markers",
                name=plot_text(label),
                line={"color": RUN_COLORS[index % len(RUN_COLORS)], "width": 2.5},
            )
        )
    nice = metric.replace("val_", "validation ").replace("_", " ")
    _layout(fig, title=nice.capitalize(), x="epoch", y=nice)
    if metric.endswith("accuracy"):
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig
