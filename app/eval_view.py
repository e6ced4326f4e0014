"""The Compare page's evaluation tab: stored results with their 95% intervals, and paired before/after changes.

Pure functions of stored Evaluation rows (no Streamlit, no torch), so they are tested directly. A change is
computed here from the two results' stored item tables (engine/evaluation/uncertainty.py): a paired bootstrap of
after - before over the same items, McNemar's exact test where the metric is a share of a binary item outcome.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from app.charts import HEIGHT, plotly_plain
from app.palette import AVERAGE_COLOUR, WORST_COLOUR
from engine.evaluation import metrics as M
from engine.evaluation import uncertainty as U
from engine.evaluation.harness import DIGITS, TABLE

NESTED = ("ci", "bootstrap", "items", "paired")  # the non-number parts of an evaluation's metrics
AFTER_COLOUR = "#0072B2"


def numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The flat numeric metrics (what the before/after pivot and the results table show)."""
    return {k: v for k, v in metrics.items()
            if k not in NESTED and isinstance(v, (int, float)) and not isinstance(v, bool)}


def label(ev: Any) -> str:
    who = ev.checkpoint or ev.model
    return f"#{ev.id} {who}" + (f" (step {ev.step})" if ev.step is not None else "")


def table_metrics(benchmark: str, metrics: Mapping[str, Any]) -> list[str]:
    return [k for k in TABLE.get(benchmark, ()) if k in metrics] or sorted(
        k for k in numbers(metrics) if "/" not in k and k != "seconds")


def groups(ev: Any) -> list[str]:
    table = U.stored_table(ev.metrics)
    if table is not None and table.benchmark in M.SPECS:
        return [g for g, _ in M.group_tables(table)]
    return sorted({k.split("/", 1)[0] for k in numbers(ev.metrics) if "/" in k})


def interval_rows(ev: Any, metric: str) -> list[dict[str, Any]]:
    """One row per group ("all" first): value and interval of `metric` (None where not stored)."""
    ci = ev.metrics.get("ci") or {}
    out = []
    for g in ["all", *groups(ev)]:
        key = metric if g == "all" else f"{g}/{metric}"
        v = ev.metrics.get(key)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        lo, hi = (ci.get(key) or [None, None])
        out.append({"group": g, "value": float(v), "low": lo, "high": hi})
    return out


def _errors(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    plus = [(r["high"] - r["value"]) if r["high"] is not None else 0.0 for r in rows]
    minus = [(r["value"] - r["low"]) if r["low"] is not None else 0.0 for r in rows]
    return {"type": "data", "array": plus, "arrayminus": minus, "visible": True}


def interval_figure(metric: str, series: Mapping[str, Sequence[Mapping[str, Any]]]) -> go.Figure:
    """`metric` per group for each evaluation, intervals as error bars."""
    colours = [AVERAGE_COLOUR, AFTER_COLOUR]
    fig = go.Figure([go.Bar(name=plotly_plain(name), x=[plotly_plain(r["group"]) for r in rows],
                            y=[r["value"] for r in rows], error_y=_errors(rows),
                            marker_color=colours[i % len(colours)])
                     for i, (name, rows) in enumerate(series.items())])
    fig.update_layout(barmode="group", title={"text": f"{plotly_plain(metric)} with 95% intervals", "x": 0},
                      height=HEIGHT, margin={"l": 50, "r": 10, "t": 40, "b": 40}, template="plotly_white",
                      yaxis_title=plotly_plain(metric), legend={"orientation": "h", "y": -0.2})
    return fig


def changes(before: Any, after: Any) -> tuple[dict[str, U.Change] | None, str]:
    """Paired changes from `before` to `after` (None and the reason when they cannot be paired)."""
    if before.benchmark != after.benchmark:
        return None, "pick two results of the same benchmark"
    tb, ta = U.stored_table(before.metrics), U.stored_table(after.metrics)
    if tb is None or ta is None:
        return None, ("one of these results was stored without its per-item outcomes (before intervals were kept): "
                      "evaluate it again to compare item by item")
    boot = after.metrics.get("bootstrap") or {}
    try:
        return U.paired_changes(tb, ta, int(boot.get("n_boot", U.DEFAULT_N_BOOT)), int(after.seed or 0),
                                float(boot.get("level", U.DEFAULT_LEVEL))), ""
    except U.PairingError as e:
        return None, str(e)


def change_rows(benchmark: str, got: Mapping[str, U.Change]) -> list[dict[str, Any]]:
    """The table metrics' changes, overall first then per group; `marked` when the interval excludes 0."""
    cols = TABLE.get(benchmark, ())
    keys = [k for k in got if k.rsplit("/", 1)[-1] in cols] or list(got)
    keys.sort(key=lambda k: ("/" in k, k.split("/")[0] if "/" in k else "",
                             cols.index(k.rsplit("/", 1)[-1]) if k.rsplit("/", 1)[-1] in cols else 0))
    return [{"metric": k, "before": c.before, "after": c.after, "change": c.diff, "low": c.low, "high": c.high,
             "McNemar p": c.p_mcnemar, "marked": "✱" if c.significant else ""} for k, c in ((k, got[k]) for k in keys)]


def change_figure(metric: str, rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Change of `metric` per group with its paired interval; a change whose interval excludes 0 in red, starred."""
    picked = [r for r in rows if r["metric"] == metric or r["metric"].endswith("/" + metric)]
    x = [plotly_plain("all" if "/" not in r["metric"] else r["metric"].rsplit("/", 1)[0]) for r in picked]
    plus = [(r["high"] - r["change"]) if r["high"] is not None else 0.0 for r in picked]
    minus = [(r["change"] - r["low"]) if r["low"] is not None else 0.0 for r in picked]
    fig = go.Figure(go.Scatter(
        x=x, y=[r["change"] for r in picked], mode="markers+text", name="after - before",
        text=[r["marked"] for r in picked], textposition="top center",
        marker={"size": 11, "color": [WORST_COLOUR if r["marked"] else AVERAGE_COLOUR for r in picked],
                "symbol": ["star" if r["marked"] else "circle" for r in picked]},
        error_y={"type": "data", "array": plus, "arrayminus": minus, "visible": True}))
    fig.add_hline(y=0, line_dash="dot", line_color="#999999")
    fig.update_layout(title={"text": f"Change in {plotly_plain(metric)} (after - before), 95% paired intervals; "
                             "✱ = interval excludes 0", "x": 0},
                      height=HEIGHT, margin={"l": 50, "r": 10, "t": 40, "b": 40}, template="plotly_white",
                      yaxis_title="change", showlegend=False)
    return fig


def digits(benchmark: str) -> int:
    return DIGITS.get(benchmark, 1)
