"""A run's report as one self-contained HTML file: configuration, the data and the reward model it trained with,
its metric charts (group weights first), every stored evaluation as before -> after with 95% intervals and the
paired test, held-out answers side by side, and a sample of its completions.

One file with plotly.js inlined, so it opens offline, can be mailed or attached to a paper's supplement, and
shows exactly what the Run and Results pages show, built by the same functions from the same stored rows."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import plotly.io as pio
from plotly.offline import get_plotlyjs

from app import charts, eval_view
from app.labels import metric_label
from app.palette import group_colours
from db import metric_keys as mk
from db.queue import get_run
from db.reads import evaluations, group_series, metric_series, run_events, samples
from engine.config import ALGORITHM_LABELS

SAMPLES_SHOWN = 40
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#1f2430}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .5em;
vertical-align:top;text-align:left}th{background:#f4f5f7}pre{background:#f7f7f9;padding:.8em;overflow-x:auto;
white-space:pre-wrap;font-size:.85em}.muted{color:#666;font-size:.9em}.pair{display:grid;grid-template-columns:1fr 1fr;
gap:1em}.answer{border:1px solid #ddd;padding:.5em;margin:.5em 0}.sig{color:#b00;font-weight:bold}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as an HTML table; every cell escaped (they hold prompts, completions, user text)."""
    if not rows:
        return '<p class="muted">(none)</p>'
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _figure(fig: Any) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _reward_model_section(config: Mapping[str, Any]) -> str:
    from engine.rewards.info import card_summary, reward_model_info, validation_rows

    terms = config.get("rewards") or []
    if not terms:
        return '<p class="muted">This run uses no reward model.</p>'
    out = [table([{"reward": t.get("name"), "weight": t.get("weight"),
                   "params": json.dumps(t.get("params") or {})} for t in terms])]
    if not any(t.get("name") in ("bias_rm", "relevance") for t in terms):
        return "".join(out)
    path = next((t.get("params", {}).get("path") for t in terms if t.get("name") == "bias_rm"
                 and (t.get("params") or {}).get("path")), None)
    info = reward_model_info(path)
    out.append(f"<p>Bias reward model: <b>{_e(info.label)}</b>{' (shipped with the studio)' if info.shipped else ''}"
               "</p>")
    for note in info.notes:
        out.append(f'<p class="muted">{_e(note)}</p>')
    if info.validation:
        out.append("<h3>Validation (studio reward check)</h3>" + table(validation_rows(info.validation)))
    if info.card:
        out.append("<details><summary>Model card</summary><pre>" + _e(card_summary(info.card)) + "</pre></details>")
    return "".join(out)


def _data_section(config: Mapping[str, Any]) -> str:
    keys = [k for k in config if k.startswith("dataset") or k.startswith("data_") or "sha256" in k
            or k.endswith("_column") or k in ("group_sampling", "eval_prompts")]
    return table([{"field": k, "value": json.dumps(config[k]) if not isinstance(config[k], str) else config[k]}
                  for k in keys])


def _chart_section(store: Any, run_id: int) -> str:
    out = []
    groups = {f: group_series(store, run_id, f) for f in mk.CHART_GROUP_FIELDS}
    names = sorted(set().union(*[set(g) for g in groups.values()]))
    colours = group_colours(names)
    rev = f"report-{run_id}"
    if groups.get(mk.GROUP_WEIGHT):
        out.append(_figure(charts.group_weight_figure(groups[mk.GROUP_WEIGHT], colours, rev)))
    if groups.get(mk.GROUP_REWARD_MEAN):
        out.append(_figure(charts.group_reward_figure(groups[mk.GROUP_REWARD_MEAN],
                                                      groups.get(mk.GROUP_REWARD_STD, {}), colours, rev)))
    if groups.get(mk.GROUP_LOSS):
        out.append(_figure(charts.line_figure("Loss per group", groups[mk.GROUP_LOSS], colours, y_title="loss",
                                              revision=rev)))
    if groups.get(mk.GROUP_ACCURACY):
        out.append(_figure(charts.line_figure("Accuracy per group", groups[mk.GROUP_ACCURACY], colours,
                                              y_title="accuracy", revision=rev)))
    metrics = metric_series(store, run_id)
    drawn = [f for f in (mk.GROUP_WEIGHT, mk.GROUP_REWARD_MEAN) if groups.get(f)]
    placed, other = charts.assign_panels(list(metrics), drawn_groups=drawn)
    for panel, keys in placed:
        out.append(_figure(charts.metric_panel_figure(panel, {k: metrics[k] for k in keys}, rev)))
        if panel.note:
            out.append(f'<p class="muted">{_e(panel.note)}</p>')
    if other:
        last = [{"metric": metric_label(k), "key": k, "last step": metrics[k].steps[-1] if metrics[k].steps else "",
                 "last value": metrics[k].values[-1] if metrics[k].values else ""} for k in other]
        out.append("<h3>Other metrics (last value)</h3>" + table(last))
    return "".join(out) or '<p class="muted">This run logged no metrics.</p>'


def _evaluation_section(store: Any, run: Any) -> str:
    algorithms, names = eval_view.run_maps(store)
    pairs = eval_view.report_pairs(evaluations(store), run, algorithms, names)
    if not pairs:
        return ('<p class="muted">No stored evaluation of this run: evaluate it with `studio eval run:ID` and its '
                'base model with `studio eval MODEL` to add the bias benchmarks.</p>')
    out = []
    for pair in pairs:
        out.append(f"<h3>{_e(eval_view.BENCHMARK_LABELS.get(pair.benchmark, pair.benchmark))}</h3>"
                   f'<p class="muted">before: {_e(pair.before_label)} &rarr; after: {_e(pair.after_label)}</p>')
        rows, note = eval_view.pair_rows(pair)
        if note:
            out.append(f'<p class="muted">{_e(note)}</p>')
        out.append(table(rows))
        for metric in eval_view.pair_metrics(pair)[:2]:  # the headline figures per group
            series = {}
            if pair.before is not None:
                series[f"before: {pair.before_label}"] = eval_view.interval_rows(pair.before, metric)
            if pair.after is not None:
                series[f"after: {pair.after_label}"] = eval_view.interval_rows(pair.after, metric)
            label = eval_view.BENCHMARK_LABELS.get(pair.benchmark, pair.benchmark)
            out.append(_figure(eval_view.interval_figure(
                metric, series, title=f"{label}: {metric} per group, before and after, 95% intervals")))
        answers = eval_view.pair_answers(pair)
        if answers:
            out.append(f"<details><summary>{len(answers)} held-out prompts: base and tuned answers side by side"
                       "</summary>")
            for a in answers:
                rb, ra = a["reward_before"], a["reward_after"]
                out.append(f'<div class="answer"><div class="muted">{_e(a["group"])}</div><pre>{_e(a["prompt"])}'
                           '</pre><div class="pair">'
                           f'<div><div class="muted">before &middot; reward {"n/a" if rb is None else f"{rb:.3f}"}'
                           f'</div><pre>{_e(a["before"] or "(no answer)")}</pre></div>'
                           f'<div><div class="muted">after &middot; reward {"n/a" if ra is None else f"{ra:.3f}"}'
                           f'</div><pre>{_e(a["after"] or "(no answer)")}</pre></div></div></div>')
            out.append("</details>")
    return "".join(out)


def _samples_section(store: Any, run_id: int) -> str:
    rows = samples(store, run_id, limit=SAMPLES_SHOWN)
    if not rows:
        return '<p class="muted">No samples logged.</p>'
    return table([{"step": x.step, "group": x.group, "prompt": x.prompt, "completion": x.completion,
                   "reward": x.reward, "advantage": x.advantage,
                   **{f"reward/{k}": v for k, v in (x.rewards or {}).items()}} for x in rows])


def _events_section(store: Any, run_id: int) -> str:
    evs = list(reversed(run_events(store, run_id, limit=300)))
    return "<pre>" + _e("\n".join(f"{e.time.strftime('%Y-%m-%d %H:%M:%S')}  {e.level.upper():<7}  {e.message}"
                                   for e in evs)) + "</pre>"


def _sections(store: Any, run: Any, config: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    yield "Configuration", "<pre>" + _e(json.dumps(config, indent=2, sort_keys=True)) + "</pre>"
    yield "Data", _data_section(config)
    yield "Reward", _reward_model_section(config)
    yield "Training", _chart_section(store, run.id)
    yield "Evaluations: before and after", _evaluation_section(store, run)
    yield f"Samples (newest {SAMPLES_SHOWN})", _samples_section(store, run.id)
    yield "Events", _events_section(store, run.id)


def build_report(store: Any, run_id: int) -> str:
    """The run's report, one HTML document. QueueError if there is no such run."""
    run = get_run(store, run_id)
    try:
        config = json.loads(run.config_json)
    except ValueError:
        config = {}
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>Run #{run.id}: {_e(run.name)}</h1>",
            f'<p class="muted">{_e(ALGORITHM_LABELS.get(run.algorithm, run.algorithm))} &middot; model '
            f'{_e(config.get("model"))} &middot; {_e(run.status.value)}, step {run.last_step} of {run.total_steps}'
            f' &middot; created {_e(run.created_at.strftime("%Y-%m-%d %H:%M"))} &middot; report made {made}</p>']
    for title, content in _sections(store, run, config):
        body.append(f"<h2>{_e(title)}</h2>{content}")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Run #{run.id}: {_e(run.name)}</title><style>{STYLE}</style>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
            + "".join(body) + "</body></html>")
