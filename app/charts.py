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

from app.labels import metric_label
from app.palette import AVERAGE_COLOUR, SERIES_COLOURS, WORST_COLOUR, group_colour
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
    note: str = ""  # said under the chart


_TOTAL_NOTE = ("The total reward is the weighted sum of the run's reward terms (each drawn here on its own), so it "
               "can exceed 1 even though each term lies in [0, 1].")
# "Worst group vs average": one chart per quantity, so a loss, an accuracy and a reward error never share an axis.
PANELS: tuple[Panel, ...] = (
    Panel("Reward", (mk.REWARD_MEAN, mk.reward_term("*"), mk.VAL_AVG_REWARD), "reward", note=_TOTAL_NOTE),
    Panel("Worst group vs average: reward", (mk.REWARD_WORST_GROUP,), "reward", also=(mk.REWARD_MEAN,)),
    Panel("Worst group vs average: held-out reward", (mk.VAL_WORST_GROUP_REWARD,), "reward",
          also=(mk.VAL_AVG_REWARD,)),
    Panel("Worst group vs average: validation loss", (mk.VAL_WORST_GROUP_LOSS, mk.VAL_AVG_LOSS), "loss"),
    Panel("Worst group: validation accuracy", (mk.VAL_WORST_GROUP_ACCURACY,), "accuracy"),
    Panel("Worst group vs average: reward error", (mk.REWARD_ERROR_WORST, mk.REWARD_ERROR_MEAN),
          "reward error (distance to the true reward)"),
    Panel("Worst group vs average: preference loss", (mk.LOSS_WORST_GROUP, mk.LOSS_MEAN), "loss"),
    Panel("Worst group vs average: preference accuracy", (mk.ACCURACY_MIN_GROUP, mk.ACCURACY), "accuracy"),
    Panel("Loss", (mk.LOSS, mk.TRAIN_LOSS, mk.TRAIN_WORST_GROUP_LOSS), "loss"),
    Panel("KL to reference", (mk.KL,), "KL (nats/token)"),
    Panel("Entropy", (mk.ENTROPY,), "entropy (nats/token)"),
    Panel("Clip fractions", ("clip/*", mk.ZERO_VAR_FRAC), "fraction of tokens / prompts"),
    Panel("Completion lengths", ("completion/len_*",), "tokens"),
    Panel("Truncated completions", (mk.COMPLETION_TRUNCATED_FRAC,), "fraction of completions"),
    Panel("Phase timings", (mk.phase_time("*"),), "seconds per step"),
    Panel("Throughput", (mk.TOKENS_PER_S,), "tokens/s"),
    Panel("Memory", ("memory/*",), "MB"),
    Panel("Learning rate", (mk.LR,), "learning rate"),
    Panel("Gradient norm", (mk.GRAD_NORM,), "L2 norm (before clipping)"),
    Panel("Reward margin", (mk.MARGIN_MEAN,), "implicit reward margin"),
    Panel("Comparison", ("compare/*",), "bias reward"),
)
# Metrics the per-group charts already draw from the group table: not repeated under "Other metrics".
GROUP_DUPLICATES = {mk.GROUP_WEIGHT: mk.group_weight("*"), mk.GROUP_REWARD_MEAN: mk.group_reward("*")}


def assign_panels(keys: Sequence[str], drawn_groups: Sequence[str] = ()) -> tuple[list[tuple[Panel, list[str]]],
                                                                                   list[str]]:
    """(panels with the keys they show, in panel order) and the keys no panel claims. ``drawn_groups``: the
    group fields charted per group, whose per-group metric copies (weight/<g>, ...) are left out."""
    claimed: set[str] = set()
    for f in drawn_groups:
        if f in GROUP_DUPLICATES:
            claimed |= {k for k in keys if fnmatch.fnmatchcase(k, GROUP_DUPLICATES[f])}
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


LEGEND_ROW_PX = 22


def _legend_rows(names: Sequence[str], width_chars: int = 60) -> int:
    """Rows a horizontal legend of these names takes in a half-width chart (a rough count: the figure grows by
    them, so the legend never needs a scroll bar of its own)."""
    rows, used = 1, 0
    for n in names:
        w = len(n) + 5
        if used and used + w > width_chars:
            rows, used = rows + 1, 0
        used += w
    return rows


def _layout(fig: go.Figure, title: str, y_title: str, revision: str, *, x_title: str = "training step",
            steps: Sequence[int] = (), log_y: bool = False) -> go.Figure:
    shown = [t.name for t in fig.data if t.showlegend is not False and t.name]
    rows = _legend_rows(shown) if len(shown) > 1 else 0
    legend_px = rows * LEGEND_ROW_PX
    fig.update_layout(title={"text": plotly_plain(title), "x": 0.0, "font": {"size": 15}},
                      height=HEIGHT + legend_px, margin={"l": 60, "r": 10, "t": 40, "b": 45 + legend_px},
                      hovermode="x unified", hoverlabel={"namelength": -1}, showlegend=rows > 0,
                      # below the x-axis title, in the figure's own margin: the two never overlap
                      legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0},
                      xaxis_title=x_title, yaxis_title=plotly_plain(y_title), template="plotly_white",
                      uirevision=revision)  # uirevision keeps zoom across refreshes
    # Steps are whole numbers: no tick at 0.5; short runs get a tick per step.
    fig.update_xaxes(tickformat="d", showspikes=True, spikemode="across", spikethickness=1)
    if steps and max(steps) - min(steps) <= 10:
        fig.update_xaxes(dtick=1, tick0=0)
    if log_y:
        fig.update_yaxes(type="log")
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


def smooth(values: Sequence[float | None], weight: float) -> list[float | None]:
    """Exponential moving average with TensorBoard's debiasing (the first points are not pulled towards 0);
    gaps (None) stay gaps and do not reset the average."""
    if weight <= 0:
        return list(values)
    out: list[float | None] = []
    acc, norm = 0.0, 0.0
    for v in values:
        if v is None:
            out.append(None)
            continue
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(acc / norm)
    return out


def line_figure(title: str, series: Mapping[str, Series], colours: Mapping[str, str] | None = None, *,
                y_title: str = "", revision: str = "", bands: Mapping[str, tuple[list, list]] | None = None,
                names: Mapping[str, str] | None = None, dashes: Mapping[str, str] | None = None,
                smoothing: float = 0.0, log_y: bool = False, x_title: str = "training step") -> go.Figure:
    """One line per series. Downsampled series get their bucket min/max as a band, so spikes stay visible;
    ``bands`` overrides that with explicit (low, high) lists (e.g. mean ± std). ``names``: legend names (the
    series key otherwise); ``smoothing`` in [0, 1) draws the moving average strong and the raw points faint."""
    fig = go.Figure()
    all_steps: list[int] = []
    for i, (key, s) in enumerate(series.items()):
        colour = (colours or {}).get(key) or SERIES_COLOURS[i % len(SERIES_COLOURS)]
        shown = plotly_plain((names or {}).get(key, key))  # series names are group labels, metric keys, run names
        all_steps += [s.steps[0], s.steps[-1]] if s.steps else []
        if bands and key in bands:
            _band(fig, s.steps, bands[key][0], bands[key][1], colour, shown)
        elif s.downsampled:
            _band(fig, s.steps, s.lo, s.hi, colour, shown)
        dash = (dashes or {}).get(key, "solid")
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=s.steps, y=s.values, mode="lines", name=f"{shown} (raw)", legendgroup=shown,
                                     showlegend=False, line={"color": _alpha(colour, 0.3), "width": 1, "dash": dash},
                                     hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=s.steps, y=smooth(s.values, smoothing),
                                 mode="lines+markers" if len(s) < 30 else "lines",
                                 name=shown, legendgroup=shown, line={"color": colour, "width": 2, "dash": dash},
                                 marker={"size": 5}))
    return _layout(fig, title, y_title, revision, steps=all_steps, log_y=log_y, x_title=x_title)


def group_weight_figure(weights: Mapping[str, Series], colours: Mapping[str, str], revision: str = "", *,
                        smoothing: float = 0.0, log_y: bool = False) -> go.Figure:
    fig = line_figure("Group weights", weights, colours, y_title="weight (sums to 1 over groups)",
                      revision=revision, smoothing=smoothing, log_y=log_y)
    if not log_y:
        fig.update_yaxes(rangemode="tozero")
    return fig


def group_reward_figure(means: Mapping[str, Series], stds: Mapping[str, Series], colours: Mapping[str, str],
                        revision: str = "", *, title: str = "Reward per group (mean ± std)",
                        y_title: str = "total reward", smoothing: float = 0.0, log_y: bool = False) -> go.Figure:
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
    return line_figure(title, means, colours, y_title=y_title, revision=revision, bands=bands,
                       smoothing=smoothing, log_y=log_y)


def _metric_group(key: str) -> str | None:
    """The group a per-group metric key is about (weight/<g>, reward/group/<g>/mean), if it is one."""
    parts = key.split("/")
    if key.startswith("weight/") and len(parts) >= 2:
        return "/".join(parts[1:])
    if key.startswith("reward/group/") and key.endswith("/mean") and len(parts) >= 4:
        return "/".join(parts[2:-1])
    return None


def metric_colours(keys: Sequence[str]) -> dict[str, str]:
    """Per-group keys in their group's colour; in a worst-vs-average panel the worst group red and the average
    grey; other keys the series colours in order."""
    out: dict[str, str] = {}
    i = 0
    for k in keys:
        g = _metric_group(k)
        if g is not None:
            out[k] = group_colour(g)
        elif k in WORST_KEYS:
            out[k] = WORST_COLOUR
        elif k in AVERAGE_KEYS:
            out[k] = AVERAGE_COLOUR
        else:
            out[k] = SERIES_COLOURS[i % len(SERIES_COLOURS)]
            i += 1
    return out


# The worst-group figures and the averages they are set against, told apart by colour and dash.
WORST_KEYS = {mk.REWARD_WORST_GROUP, mk.VAL_WORST_GROUP_REWARD, mk.VAL_WORST_GROUP_LOSS, mk.VAL_WORST_GROUP_ACCURACY,
              mk.REWARD_ERROR_WORST, mk.LOSS_WORST_GROUP, mk.ACCURACY_MIN_GROUP, mk.TRAIN_WORST_GROUP_LOSS}
AVERAGE_KEYS = {mk.REWARD_MEAN, mk.VAL_AVG_REWARD, mk.VAL_AVG_LOSS, mk.REWARD_ERROR_MEAN, mk.LOSS_MEAN, mk.ACCURACY}


def metric_panel_figure(panel: Panel, series: Mapping[str, Series], revision: str = "", *, smoothing: float = 0.0,
                        log_y: bool = False) -> go.Figure:
    worst_vs = panel.title.startswith("Worst group")
    colours = metric_colours(list(series)) if worst_vs else {
        k: c for k, c in metric_colours(list(series)).items() if _metric_group(k) is not None}
    dashes = {k: "dot" for k in series if worst_vs and k in AVERAGE_KEYS}
    return line_figure(panel.title, series, colours, y_title=panel.y_title, revision=revision,
                       names={k: metric_label(k) for k in series}, dashes=dashes, smoothing=smoothing, log_y=log_y)


LINKED_PANEL_PX = 190


def linked_figure(panels: Sequence[tuple[Panel, Mapping[str, Series]]], revision: str = "", *,
                  smoothing: float = 0.0, log_y: bool = False) -> go.Figure:
    """The metric panels stacked in one figure on one shared step axis, so a hover shows every panel's values
    at that step (plotly's hoversubplots="axis": the stacked y axes share the x axis itself, not copies of it).
    Series keep their panel's colours and names; the unified hover label is the legend."""
    fig = go.Figure()
    n = len(panels)
    gap = 0.35 / max(n, 1) if n > 1 else 0.0
    height = (1.0 - gap * (n - 1)) / max(n, 1)
    annotations = []
    steps: list[int] = []
    for i, (panel, series) in enumerate(panels):
        axis = "y" if i == 0 else f"y{i + 1}"
        top = 1.0 - i * (height + gap)
        sub = metric_panel_figure(panel, series, revision, smoothing=smoothing)
        for t in sub.data:
            t.update(xaxis="x", yaxis=axis, showlegend=False)
            fig.add_trace(t)
        for s in series.values():
            steps += [s.steps[0], s.steps[-1]] if s.steps else []
        fig.update_layout({("yaxis" if i == 0 else f"yaxis{i + 1}"): {
            "domain": [max(0.0, top - height), top], "title": {"text": plotly_plain(panel.y_title), "font": {"size": 11}},
            "type": "log" if log_y else "linear", "anchor": "x"}})
        annotations.append({"text": f"<b>{plotly_plain(panel.title)}</b>", "x": 0, "y": top, "xref": "paper",
                            "yref": "paper", "xanchor": "left", "yanchor": "bottom", "showarrow": False})
    fig.update_layout(height=LINKED_PANEL_PX * n + 90, margin={"l": 70, "r": 10, "t": 30, "b": 50},
                      hovermode="x unified", hoversubplots="axis", hoverlabel={"namelength": -1},
                      template="plotly_white", uirevision=revision,
                      annotations=annotations, showlegend=False,
                      xaxis={"anchor": "y" if n <= 1 else f"y{n}", "title": {"text": "training step"}})
    fig.update_xaxes(tickformat="d", showspikes=True, spikemode="across", spikethickness=1)
    if steps and max(steps) - min(steps) <= 10:
        fig.update_xaxes(dtick=1, tick0=0)
    return fig


def overlay_figure(key: str, series_by_run: Mapping[str, Series], *, smoothing: float = 0.0,
                   log_y: bool = False) -> go.Figure:
    return line_figure(f"{metric_label(key)} across runs", series_by_run, y_title=metric_label(key),
                       revision=f"overlay-{key}", smoothing=smoothing, log_y=log_y)


def comparison_bar_figure(groups: Sequence[str], mean_a: Sequence[float | None], mean_b: Sequence[float | None],
                          label_a: str, label_b: str) -> go.Figure:
    x = [plotly_plain(g) for g in groups]
    fig = go.Figure([go.Bar(name=plotly_plain(label_a), x=x, y=list(mean_a), marker_color=AVERAGE_COLOUR),
                     go.Bar(name=plotly_plain(label_b), x=x, y=list(mean_b), marker_color="#0072B2")])
    fig.update_layout(barmode="group", title={"text": "Mean bias reward per group (higher = less biased)", "x": 0},
                      height=HEIGHT, margin={"l": 50, "r": 10, "t": 40, "b": 40}, template="plotly_white",
                      yaxis_title="bias reward", legend={"orientation": "h", "y": -0.2})
    return fig
