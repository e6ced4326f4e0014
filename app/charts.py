"""Plotly figures for the dashboard, built from db.reads.Series: pure functions, easy to test by their spec.

Metric keys are placed in panels by name (``PANELS``); keys no panel claims go to "Other metrics", so a
new metric written by a runner shows up without touching the app.
"""

from __future__ import annotations

import fnmatch
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from app.palette import AVERAGE_COLOUR, PALETTE, WORST_COLOUR
from db.reads import Series
from db import metric_keys as mk

HEIGHT = 300


def plotly_plain(text: str) -> str:
    """``text`` for a plotly title, legend, axis or category label: plotly reads a subset of HTML there
    (<b>, <a href>, <span style>), so a group label or run name like '<a href=...>' must arrive as entities,
    which plotly shows literally."""
    return html.escape(str(text), quote=False)


@dataclass(frozen=True)
class Panel:
    title: str
    patterns: tuple[str, ...]  # fnmatch patterns over metric keys, in legend order
    y_title: str = ""
    # keys drawn here too though an earlier panel claims them (the average a worst group is set against)
    also: tuple[str, ...] = ()


PANELS: tuple[Panel, ...] = (
    Panel("Reward", (mk.REWARD_MEAN, mk.reward_term("*"), mk.VAL_AVG_REWARD), "reward"),
    Panel("Worst group vs average", mk.WORST_VS_AVERAGE_KEYS, "", also=mk.WORST_VS_AVERAGE_ALSO),
    Panel("Loss", (mk.LOSS, mk.TRAIN_LOSS, mk.TRAIN_WORST_GROUP_LOSS), "loss"),
    Panel("KL to reference", (mk.KL,), "KL"),
    Panel("Entropy", (mk.ENTROPY,), "nats/token"),
    Panel("Clip fractions", ("clip/*", mk.ZERO_VAR_FRAC), "fraction"),
    Panel("Completion lengths", ("completion/len_*",), "tokens"),
    Panel("Truncated completions", (mk.COMPLETION_TRUNCATED_FRAC,), "fraction"),
    Panel("Phase timings", (mk.phase_time("*"),), "seconds"),
    Panel("Throughput", (mk.TOKENS_PER_S,), "tokens/s"),
    Panel("Memory", ("memory/*",), "MB"),
    Panel("Optimizer", (mk.LR, mk.GRAD_NORM, mk.MARGIN_MEAN), ""),
    Panel("Comparison", ("compare/*",), "reward"),
)


def assign_panels(keys: Sequence[str]) -> tuple[list[tuple[Panel, list[str]]], list[str]]:
    """(panels with the keys they show, in panel order) and the keys no panel claims."""
    claimed: set[str] = set()
    placed = []
    for panel in PANELS:
        mine = []
        for pattern in panel.patterns:
            for k in sorted(keys):
                if k not in claimed and fnmatch.fnmatchcase(k, pattern):
                    mine.append(k)
                    claimed.add(k)
        if mine:  # only next to a worst-group key of its own: an average alone is the Reward panel's
            mine += [k for k in panel.also if k in keys and k not in mine]
            placed.append((panel, mine))
    return placed, [k for k in sorted(keys) if k not in claimed]


def _layout(fig: go.Figure, title: str, y_title: str, revision: str) -> go.Figure:
    fig.update_layout(title={"text": plotly_plain(title), "x": 0.0, "font": {"size": 15}}, height=HEIGHT,
                      margin={"l": 50, "r": 10, "t": 40, "b": 40}, hovermode="x unified",
                      legend={"orientation": "h", "y": -0.2}, xaxis_title="step", yaxis_title=plotly_plain(y_title),
                      template="plotly_white", uirevision=revision)  # uirevision keeps zoom across refreshes
    return fig


def _band(fig: go.Figure, steps: list[int], lo: Sequence[float | None], hi: Sequence[float | None], colour: str,
          name: str) -> None:
    fig.add_trace(go.Scatter(x=steps, y=list(hi), mode="lines", line={"width": 0}, hoverinfo="skip",
                             showlegend=False, legendgroup=name, name=f"{name} max"))
    fig.add_trace(go.Scatter(x=steps, y=list(lo), mode="lines", line={"width": 0}, fill="tonexty",
                             fillcolor=_alpha(colour, 0.18), hoverinfo="skip", showlegend=False, legendgroup=name,
                             name=f"{name} min"))


def _alpha(hex_colour: str, a: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{a})"


def line_figure(title: str, series: Mapping[str, Series], colours: Mapping[str, str] | None = None, *,
                y_title: str = "", revision: str = "", bands: Mapping[str, tuple[list, list]] | None = None
                ) -> go.Figure:
    """One line per series. Downsampled series get their bucket min/max as a band, so spikes stay visible;
    ``bands`` overrides that with explicit (low, high) lists (e.g. mean ± std)."""
    fig = go.Figure()
    for i, (name, s) in enumerate(series.items()):
        colour = (colours or {}).get(name) or PALETTE[i % len(PALETTE)]
        shown = plotly_plain(name)  # series names are group labels, metric keys, run names
        if bands and name in bands:
            _band(fig, s.steps, bands[name][0], bands[name][1], colour, shown)
        elif s.downsampled:
            _band(fig, s.steps, s.lo, s.hi, colour, shown)
        fig.add_trace(go.Scatter(x=s.steps, y=s.values, mode="lines+markers" if len(s) < 30 else "lines",
                                 name=shown, legendgroup=shown, line={"color": colour, "width": 2},
                                 marker={"size": 5}))
    return _layout(fig, title, y_title, revision)


def group_weight_figure(weights: Mapping[str, Series], colours: Mapping[str, str], revision: str = "") -> go.Figure:
    fig = line_figure("Group weights", weights, colours, y_title="weight", revision=revision)
    fig.update_yaxes(rangemode="tozero")
    return fig


def group_reward_figure(means: Mapping[str, Series], stds: Mapping[str, Series], colours: Mapping[str, str],
                        revision: str = "") -> go.Figure:
    """Mean reward per group with a ± one standard deviation band."""
    bands = {}
    for g, m in means.items():
        sd = stds.get(g)
        if sd is None:
            continue
        by_step = dict(zip(sd.steps, sd.values))
        lo, hi = [], []
        for step, v in zip(m.steps, m.values):
            d = by_step.get(step)
            lo.append(None if v is None or d is None else v - d)
            hi.append(None if v is None or d is None else v + d)
        bands[g] = (lo, hi)
    return line_figure("Reward per group (mean ± std)", means, colours, y_title="reward", revision=revision,
                       bands=bands)


def metric_panel_figure(panel: Panel, series: Mapping[str, Series], revision: str = "") -> go.Figure:
    colours = {}
    if panel.title == "Worst group vs average":
        for k in series:
            colours[k] = WORST_COLOUR if ("worst" in k or "min_group" in k) else AVERAGE_COLOUR
    return line_figure(panel.title, series, colours, y_title=panel.y_title, revision=revision)


def overlay_figure(key: str, series_by_run: Mapping[str, Series]) -> go.Figure:
    return line_figure(f"{key} across runs", series_by_run, y_title=key, revision=f"overlay-{key}")


def comparison_bar_figure(groups: Sequence[str], mean_a: Sequence[float | None], mean_b: Sequence[float | None],
                          label_a: str, label_b: str) -> go.Figure:
    x = [plotly_plain(g) for g in groups]
    fig = go.Figure([go.Bar(name=plotly_plain(label_a), x=x, y=list(mean_a), marker_color=AVERAGE_COLOUR),
                     go.Bar(name=plotly_plain(label_b), x=x, y=list(mean_b), marker_color="#0072B2")])
    fig.update_layout(barmode="group", title={"text": "Mean bias reward per group (higher = less biased)", "x": 0},
                      height=HEIGHT, margin={"l": 50, "r": 10, "t": 40, "b": 40}, template="plotly_white",
                      yaxis_title="bias reward", legend={"orientation": "h", "y": -0.2})
    return fig
