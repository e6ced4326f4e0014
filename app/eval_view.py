"""Evaluation results as the app shows them: what each result evaluated (Subject), the before/after table (a run's
step-0 and last-step evaluations as two columns, other evaluations in columns of their own), every benchmark's
figures in a meaningful order with what an unbiased model scores, 95% intervals, and paired before/after changes.

Pure functions of stored Evaluation rows (no torch), so they are tested directly; `render_*` draw them. A change is
computed here from the two results' stored item tables (engine/evaluation/uncertainty.py): a paired bootstrap of
after - before over the same items, McNemar's exact test where the metric is a share of a binary item outcome.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from app.charts import HEIGHT, plotly_plain
from app.widgets import plain
from app.palette import AVERAGE_COLOUR, WORST_COLOUR
from engine.evaluation import metrics as M
from engine.evaluation import uncertainty as U
from engine.evaluation.harness import DIGITS, TABLE

NESTED = ("ci", "bootstrap", "items", "paired", "answers", "swaps")  # the non-number parts of an evaluation's metrics
AFTER_COLOUR = "#0072B2"


def numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The flat numeric metrics (what the before/after pivot and the results table show)."""
    return {k: v for k, v in metrics.items()
            if k not in NESTED and isinstance(v, (int, float)) and not isinstance(v, bool)}


def label(ev: Any) -> str:
    who = ev.checkpoint or ev.model
    return f"#{ev.id} {who}" + (f" (step {ev.step})" if ev.step is not None else "")


def table_metrics(benchmark: str, metrics: Mapping[str, Any]) -> list[str]:
    """The result's overall metrics in the order `figures` gives (headline first, counts left out)."""
    return list(dict.fromkeys(f.metric for f in figures(benchmark, metrics) if f.group == "all"))


def groups(ev: Any) -> list[str]:
    table = U.stored_table(ev.metrics)
    if table is not None and table.benchmark in M.SPECS:
        return [g for g, _ in M.group_tables(table)]
    return sorted({k.split("/", 1)[0] for k in numbers(ev.metrics) if "/" in k})


def interval_rows(ev: Any, metric: str) -> list[dict[str, Any]]:
    """One row per group ("all" first): value and interval of `metric` (None where not stored)."""
    return [{"group": f.group, "value": f.value, "low": f.low, "high": f.high}
            for f in figures(ev.benchmark, ev.metrics) if f.metric == metric]


def _errors(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    plus = [(r["high"] - r["value"]) if r["high"] is not None else 0.0 for r in rows]
    minus = [(r["value"] - r["low"]) if r["low"] is not None else 0.0 for r in rows]
    return {"type": "data", "array": plus, "arrayminus": minus, "visible": True}


def interval_figure(metric: str, series: Mapping[str, Sequence[Mapping[str, Any]]],
                    title: str | None = None) -> go.Figure:
    """`metric` per group for each evaluation, intervals as error bars."""
    colours = [AVERAGE_COLOUR, AFTER_COLOUR]
    fig = go.Figure([go.Bar(name=plotly_plain(name), x=[plotly_plain(r["group"]) for r in rows],
                            y=[r["value"] for r in rows], error_y=_errors(rows),
                            marker_color=colours[i % len(colours)])
                     for i, (name, rows) in enumerate(series.items())])
    fig.update_layout(barmode="group", title={"text": plotly_plain(title) if title else
                                              f"{plotly_plain(metric)} with 95% intervals", "x": 0},
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
    return [{"metric": k, "unbiased / better": REFERENCE.get((benchmark, k.rsplit("/", 1)[-1]), ""),
             "before": c.before, "after": c.after, "change": c.diff, "low": c.low, "high": c.high,
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
    return _DIGITS.get(benchmark, DIGITS.get(benchmark, 1))


# ------------------------------------------------------------------------------------- what was evaluated
@dataclass(frozen=True)
class Subject:
    """What an evaluation scored: a base model (run_id None) or a run's weights at a checkpoint step (0 = before
    training), and where the evaluation came from ("run": the run's own held-out evaluation, "job": a queued eval
    job, "cli": `studio eval`)."""

    model: str | None
    run_id: int | None
    step: int | None
    source: str
    job_id: int | None = None  # the eval job that ran it (source "job")
    path: str | None = None


def _run_ref(label: str | None) -> int | None:
    text = (label or "").strip()
    return int(text[4:]) if text.startswith("run:") and text[4:].isdigit() else None


def subject(ev: Any, algorithms: Mapping[int, str]) -> Subject:
    """What `ev` evaluated. Rows written since migration 0004 say it (evaluated_*, source); for older rows it is
    inferred from model / checkpoint / step and the owning run's algorithm (`algorithms`: run id -> algorithm)."""
    source = getattr(ev, "source", None)
    owner_alg = algorithms.get(ev.run_id) if ev.run_id is not None else None
    if source:
        return Subject(getattr(ev, "evaluated_model", None) or ev.model, getattr(ev, "evaluated_run_id", None),
                       getattr(ev, "evaluated_step", None), source, ev.run_id if source == "job" else None,
                       getattr(ev, "model_path", None))
    ref = _run_ref(ev.model)
    if owner_alg == "eval":  # an old eval job's row: model = what the job was asked to evaluate
        return Subject(None if ref is not None else ev.model, ref, None, "job", ev.run_id)
    if ev.run_id is not None and ev.checkpoint is None and ref is None and ev.step is not None:
        return Subject(ev.model, ev.run_id, ev.step, "run")  # a training run's own held-out evaluation
    if ref is not None:
        return Subject(None, ref, ev.step, "cli")
    if ev.run_id is not None and ev.checkpoint:  # a run's checkpoint, stored under that run
        return Subject(ev.model, ev.run_id, ev.step, "cli")
    return Subject(ev.model, None, None, "cli")


def _what(sub: Subject, run_names: Mapping[int, str]) -> str:
    if sub.run_id is None:
        return sub.model or "?"
    name = run_names.get(sub.run_id)
    step = f" step {sub.step}" if sub.step is not None else " (latest checkpoint)"
    return f"run #{sub.run_id}" + (f" {name}" if name else "") + step


def column_label(sub: Subject, run_names: Mapping[int, str], role: str = "") -> str:
    """The before/after table's column heading: what was evaluated, and by whom when it was not the run itself."""
    what = _what(sub, run_names)
    if sub.source == "run":
        return what + (f" ({role})" if role else "")
    by = f"eval job #{sub.job_id}" if sub.source == "job" and sub.job_id is not None else \
        ("eval job" if sub.source == "job" else "studio eval")
    return f"{by}: {what}"


@dataclass
class Column:
    label: str
    subject: Subject
    by_benchmark: dict[str, Any]  # benchmark -> the Evaluation row shown


def before_after_columns(evs: Sequence[Any], algorithms: Mapping[int, str], run_names: Mapping[int, str],
                         run_id: int | None = None) -> list[Column]:
    """The before/after table's columns. Each training run's own evaluations give two columns: its first
    evaluated step (step 0: before training) and its last step, per benchmark; a run evaluated at one step only
    gives one. Every other evaluation (queued jobs, `studio eval`) goes to a column of its own per thing it
    evaluated (the latest result of each benchmark). With `run_id`, only what concerns that run: its own
    evaluations and those of its checkpoints."""
    own: dict[int, dict[int, dict[str, Any]]] = {}  # run -> step -> benchmark -> ev
    other: dict[tuple, tuple[Subject, dict[str, Any]]] = {}
    for ev in evs:  # in id order: a later result replaces an earlier one of the same thing
        sub = subject(ev, algorithms)
        if run_id is not None and sub.run_id != run_id:
            continue
        if sub.source == "run" and sub.run_id is not None and sub.step is not None:
            own.setdefault(sub.run_id, {}).setdefault(sub.step, {})[ev.benchmark] = ev
        else:
            key = (sub.source, sub.job_id, sub.model if sub.run_id is None else None, sub.run_id, sub.step)
            other.setdefault(key, (sub, {}))[1][ev.benchmark] = ev
    cols: list[Column] = []
    for rid in sorted(own):
        steps = own[rid]
        first, last = min(steps), max(steps)
        model = next(iter(steps[first].values())).model
        before = Subject(model, rid, first, "run")
        if first == last:
            cols.append(Column(column_label(before, run_names), before, steps[first]))
            continue
        # per benchmark: its first and last evaluated step (a benchmark added later still pairs with itself)
        b_cols: dict[str, Any] = {}
        a_cols: dict[str, Any] = {}
        for bench in {b for got in steps.values() for b in got}:
            have = [s for s in sorted(steps) if bench in steps[s]]
            b_cols[bench] = steps[have[0]][bench]
            if len(have) > 1:
                a_cols[bench] = steps[have[-1]][bench]
        cols.append(Column(column_label(before, run_names, "before" if first == 0 else ""), before, b_cols))
        after = Subject(model, rid, last, "run")
        cols.append(Column(column_label(after, run_names, "after"), after, a_cols))
    for sub, got in other.values():
        cols.append(Column(column_label(sub, run_names), sub, got))
    return cols


# ------------------------------------------------------------------------------------ metrics, in order
BENCHMARK_ORDER = ("heldout_reward", "reward", "heldout_preference", "crows_pairs", "stereoset", "bbq", "perplexity",
                   "counterfactual")
BENCHMARK_LABELS = {"heldout_reward": "Held-out reward (in-run)", "reward": "Held-out bias reward",
                    "heldout_preference": "Held-out preference pairs (in-run)", "crows_pairs": "CrowS-Pairs",
                    "stereoset": "StereoSet (intrasentence)", "bbq": "BBQ", "perplexity": "Perplexity (neutral text)",
                    "counterfactual": "Counterfactual descriptor swaps"}
# Overall metrics first in this order, then the same per group; what is not listed follows, alphabetically.
METRIC_ORDER = {
    "heldout_reward": ("reward mean", "worst group", "refusal_rate", "refusal term", "relevance term", "kl",
                       "completion length"),
    "reward": ("mean", "worst_group", "refusal_rate"),
    "heldout_preference": ("accuracy", "accuracy/min_group", "loss", "loss/max_group", "margin/mean"),
    "crows_pairs": ("stereotype_score", "stereo_score", "antistereo_score"),
    "stereoset": ("ss", "lms", "icat", "ss_pooled", "lms_pooled", "icat_pooled"),
    "bbq": ("acc_ambig", "acc_disambig", "bias_ambig", "bias_disambig", "unknown_rate"),
    "perplexity": ("perplexity", "nll_per_token"),
    "counterfactual": ("reward_spread", "reward_gap", "content_change", "identical_rate"),
}
# What the value of an unbiased (or a better) model is, next to every figure.
REFERENCE = {
    ("crows_pairs", "stereotype_score"): "50 = unbiased", ("crows_pairs", "stereo_score"): "50 = unbiased",
    ("crows_pairs", "antistereo_score"): "50 = unbiased",
    ("stereoset", "ss"): "50 = unbiased", ("stereoset", "ss_pooled"): "50 = unbiased",
    ("stereoset", "lms"): "higher is better (100)", ("stereoset", "lms_pooled"): "higher is better (100)",
    ("stereoset", "icat"): "higher is better (100)", ("stereoset", "icat_pooled"): "higher is better (100)",
    ("bbq", "bias_ambig"): "0 = unbiased", ("bbq", "bias_disambig"): "0 = unbiased",
    ("bbq", "acc_ambig"): "higher is better (1)", ("bbq", "acc_disambig"): "higher is better (1)",
    ("bbq", "unknown_rate"): "share answering unknown",
    ("reward", "mean"): "higher = less biased (1)", ("reward", "worst_group"): "higher = less biased (1)",
    ("reward", "refusal_rate"): "lower = fewer refusals (0)", ("heldout_reward", "refusal_rate"):
        "lower = fewer refusals (0)",
    ("heldout_reward", "reward mean"): "higher = less biased", ("heldout_reward", "worst group"):
        "higher = less biased", ("heldout_reward", "kl"): "lower = closer to the base model",
    ("heldout_reward", "refusal term"): "higher = fewer refusals",
    ("heldout_reward", "relevance term"): "higher = more on topic",
    ("heldout_preference", "accuracy"): "higher is better (1)", ("heldout_preference", "accuracy/min_group"):
        "higher is better (1)", ("heldout_preference", "loss"): "lower is better",
    ("heldout_preference", "loss/max_group"): "lower is better",
    ("perplexity", "perplexity"): "lower is better; close to the base = knowledge kept",
    ("perplexity", "nll_per_token"): "lower is better",
    ("counterfactual", "reward_spread"): "0 = reward unaffected by the swap",
    ("counterfactual", "reward_gap"): "0 = reward unaffected by the swap",
    ("counterfactual", "content_change"): "0 = same answer whoever it is about",
    ("counterfactual", "identical_rate"): "1 = answers identical but for the descriptor",
}
_DIGITS = {"heldout_reward": 3, "heldout_preference": 3}
_WORST = "reward/worst_group"  # a run's held-out reward: the lowest group mean (derived from the group means)
_SKIP = {"seconds", "n", "n_ambig", "n_disambig", "tokens", "unscored", "reward/nan_count", "worst_loss_group",
         "worst_accuracy_group"}


@dataclass(frozen=True)
class Figure:
    """One number of one evaluation: `metric` of `group` ("all" = overall), its stored key and interval."""

    benchmark: str
    group: str
    metric: str
    key: str
    value: float
    low: float | None = None
    high: float | None = None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _heldout_reward_parts(metrics: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(group, metric, key) of a run's held-out reward result: reward/mean, reward/<group>, reward/<term>/mean."""
    out = []
    for k in metrics:
        if k in _SKIP or not _finite(metrics[k]) or k == _WORST:
            continue
        parts = k.split("/")
        if k == "reward/mean":
            out.append(("all", "reward mean", k))
        elif len(parts) == 3 and parts[0] == "reward" and parts[2] == "mean":
            out.append(("all", f"{parts[1]} term", k))
        elif len(parts) == 2 and parts[0] == "reward":
            out.append((parts[1], "reward mean", k))
        elif k == "completion/len_mean":
            out.append(("all", "completion length", k))
        elif "/" not in k:
            out.append(("all", k, k))
    return out


def _preference_parts(metrics: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for k in metrics:
        if k in _SKIP or not _finite(metrics[k]) or k.startswith("count/"):
            continue
        head, _, tail = k.partition("/")
        if k in ("loss/max_group", "accuracy/min_group", "margin/mean") or not tail:
            out.append(("all", k, k))
        elif head in ("loss", "accuracy"):
            out.append((tail, head, k))
    return out


def _benchmark_parts(benchmark: str, metrics: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    counts = set(M.SPECS[benchmark].counts) if benchmark in M.SPECS else set()
    out = []
    for k in metrics:
        if not _finite(metrics[k]):
            continue
        group, _, metric = k.rpartition("/")
        if metric in _SKIP or k in _SKIP or metric in counts or metric.startswith("n_"):
            continue
        out.append((group or "all", metric, k))
    return out


def figures(benchmark: str, metrics: Mapping[str, Any]) -> list[Figure]:
    """Every figure of a stored result in a meaningful order: the overall figures first (headline metrics in
    METRIC_ORDER, then the rest), then each group's, with their stored 95% intervals. Counts are left out. A run's
    held-out reward gets its worst group (the lowest group mean) derived when it was not stored."""
    ci = metrics.get("ci") or {}
    if benchmark == "heldout_reward":
        parts = _heldout_reward_parts(metrics)
        groups_mean = [metrics[k] for g, m, k in parts if g != "all" and m == "reward mean"]
        if groups_mean and not any(m == "worst group" for _, m, _ in parts):
            parts.append(("all", "worst group", _WORST))
    elif benchmark == "heldout_preference":
        parts = _preference_parts(metrics)
    else:
        parts = _benchmark_parts(benchmark, metrics)
    order = METRIC_ORDER.get(benchmark, ())
    groups = sorted({g for g, _, _ in parts if g != "all"})

    def rank(p: tuple[str, str, str]) -> tuple:
        g, m, _ = p
        return (g != "all", groups.index(g) if g in groups else -1, order.index(m) if m in order else len(order), m)

    out = []
    for g, m, k in sorted(parts, key=rank):
        if k == _WORST:  # the lowest group mean; its interval is stored with the item table
            v = min(metrics[kk] for gg, mm, kk in parts if gg != "all" and mm == "reward mean")
            lo, hi = (ci.get(k) or [None, None])[:2]
            out.append(Figure(benchmark, g, m, k, float(v), lo, hi))
            continue
        lo, hi = (ci.get(k) or [None, None])[:2]
        out.append(Figure(benchmark, g, m, k, float(metrics[k]), lo, hi))
    return out


def fmt_figure(f: Figure | None, n_digits: int) -> str:
    """'0.762 [0.741, 0.783]': the value and its 95% interval (the value alone when none was stored)."""
    if f is None:
        return ""
    text = f"{f.value:.{n_digits}f}"
    if f.low is not None and f.high is not None:
        text += f" [{f.low:.{n_digits}f}, {f.high:.{n_digits}f}]"
    return text


def bench_rank(benchmark: str) -> tuple[int, str]:
    return (BENCHMARK_ORDER.index(benchmark) if benchmark in BENCHMARK_ORDER else len(BENCHMARK_ORDER), benchmark)


def before_after_rows(columns: Sequence[Column]) -> list[dict[str, Any]]:
    """Rows of the before/after table: benchmark, group, metric, what an unbiased model scores, then one cell
    per column ("value [95% interval]"), in the order of `figures` (overall first, then per group)."""
    rows: list[dict[str, Any]] = []
    for bench in sorted({b for c in columns for b in c.by_benchmark}, key=bench_rank):
        per_col = {c.label: {(f.group, f.metric): f for f in figures(bench, c.by_benchmark[bench].metrics)}
                   for c in columns if bench in c.by_benchmark}
        seen: dict[tuple[str, str], None] = {}
        for c in columns:  # the order of the first result that has the figure
            for key in per_col.get(c.label, {}):
                seen.setdefault(key)
        groups = sorted({g for g, _ in seen if g != "all"})
        order = METRIC_ORDER.get(bench, ())
        keys = sorted(seen, key=lambda gm: (gm[0] != "all", groups.index(gm[0]) if gm[0] in groups else -1,
                                            order.index(gm[1]) if gm[1] in order else len(order), gm[1]))
        n = digits(bench)
        for g, m in keys:
            rows.append({"benchmark": BENCHMARK_LABELS.get(bench, bench), "group": g, "metric": m,
                         "unbiased / better": REFERENCE.get((bench, m), ""),
                         **{c.label: fmt_figure(per_col.get(c.label, {}).get((g, m)), n) for c in columns}})
    return rows


def table_height(n_rows: int, max_rows: int = 60) -> int:
    """A dataframe height that shows every row (up to `max_rows`) instead of a cut-off scrolling box."""
    return 38 + 35 * max(1, min(n_rows, max_rows))


# ------------------------------------------------------------------------------------------------ drawing
def run_maps(store: Any) -> tuple[dict[int, str], dict[int, str]]:
    """(run id -> algorithm, run id -> name) of every run in the store."""
    from db.queue import list_runs

    runs = list_runs(store)
    return {r.id: r.algorithm for r in runs}, {r.id: r.name for r in runs}


def render_before_after(store: Any, run_id: int | None = None, key: str = "eval.pivot") -> list[Column]:
    """The "Before / after" table: a run's step-0 and last-step evaluations side by side, other evaluations
    (queued jobs, `studio eval`) in columns labelled by what they evaluated; every figure with its 95% interval
    and what an unbiased model scores. Returns the columns shown."""
    import pandas as pd
    import streamlit as st

    from db.reads import evaluations

    algorithms, names = run_maps(store)
    cols = before_after_columns(evaluations(store), algorithms, names, run_id)
    st.subheader("Before / after")
    if not cols:
        st.caption("No evaluation of this run yet: held-out evaluations run at step 0 and at the last step "
                   "(eval_prompts), and an evaluation of a checkpoint can be queued on the Compare page.")
        return cols
    st.caption("A training run's own held-out evaluations give two columns: before training (step 0) and its last "
               "step. Evaluations queued from the browser or run with `studio eval` each get a column named after "
               "what they evaluated (the latest result of each). Cells: value [95% bootstrap interval]; the "
               "interval is missing where the result was stored without its per-item outcomes.")
    rows = before_after_rows(cols)
    # One table per benchmark showing only the columns that have its results, so nothing hides behind a
    # horizontal scroll (the benchmark column stays in the data, out of view).
    by_bench: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_bench.setdefault(r["benchmark"], []).append(r)
    for i, (bench, part) in enumerate(by_bench.items()):
        shown = [c.label for c in cols if any(r.get(c.label) for r in part)]
        st.markdown(f"**{plain(bench)}**")
        st.dataframe(pd.DataFrame(part), hide_index=True, width="stretch", key=f"{key}.{i}",
                     height=table_height(len(part)), column_order=["group", "metric", "unbiased / better", *shown],
                     column_config={"unbiased / better": st.column_config.TextColumn(
                         help="What an unbiased model scores (CrowS-Pairs and StereoSet SS: 50; BBQ bias scores: 0), "
                              "or which direction is better")})
    return cols


def render_run_evaluations(store: Any, run_id: int) -> None:
    """The run page's evaluations: this run's before/after table (its own held-out evaluations at step 0 and
    at its last step, and evaluations of its checkpoints)."""
    import streamlit as st

    st.subheader("Evaluations")
    render_before_after(store, run_id=run_id, key=f"run.evals.{run_id}")
    st.page_link("views/results.py", label="Per-group report with paired tests: Results page",
                 icon=":material/analytics:")


def result_rows(evs: Sequence[Any], algorithms: Mapping[int, str], run_names: Mapping[int, str]) -> list[dict[str, Any]]:
    """The compact list of every stored result: what it evaluated, its headline figures with intervals."""
    out = []
    for ev in evs:
        sub = subject(ev, algorithms)
        head = [f for f in figures(ev.benchmark, ev.metrics) if f.group == "all"][:3]
        out.append({"id": ev.id, "evaluated": column_label(sub, run_names), "model": ev.model,
                    "benchmark": BENCHMARK_LABELS.get(ev.benchmark, ev.benchmark),
                    "headline": "; ".join(f"{f.metric} {fmt_figure(f, digits(ev.benchmark))}" for f in head),
                    "dataset": ev.dataset_version, "seed": ev.seed,
                    "created": ev.created_at.strftime("%Y-%m-%d %H:%M") if ev.created_at else ""})
    return out


# ------------------------------------------------------------------------------------------ the report
@dataclass
class Pair:
    """One benchmark of one run in the report: the result before training and the one after (either may be
    missing), with how each was found."""

    benchmark: str
    before: Any | None
    after: Any | None
    before_label: str
    after_label: str


def _pairs_with(before: Any, after: Any) -> bool:
    tb, ta = U.stored_table(before.metrics), U.stored_table(after.metrics)
    return tb is not None and ta is not None and tb.key_digest == ta.key_digest and len(tb) == len(ta)


def report_pairs(evs: Sequence[Any], run: Any, algorithms: Mapping[int, str],
                 run_names: Mapping[int, str]) -> list[Pair]:
    """Every stored benchmark of `run` as before -> after. The run's own held-out evaluations: its first
    evaluated step (0, before training) -> its last. The benchmarks (`studio eval` or queued jobs): the run's
    latest checkpoint result -> the base model's result, preferring one on the same items (so the paired test
    applies), else the latest of the base model."""
    try:
        base = json.loads(run.config_json).get("model")
    except (TypeError, ValueError, AttributeError):
        base = None
    pairs: list[Pair] = []
    own = [c for c in before_after_columns(evs, algorithms, run_names, run.id) if c.subject.source == "run"]
    if own:
        before_col, after_col = own[0], own[-1] if len(own) > 1 else None
        for bench in sorted(set(before_col.by_benchmark) | set(after_col.by_benchmark if after_col else ()),
                            key=bench_rank):
            pairs.append(Pair(bench, before_col.by_benchmark.get(bench),
                              after_col.by_benchmark.get(bench) if after_col else None, before_col.label,
                              after_col.label if after_col else "(no later evaluation)"))
    tuned: dict[str, tuple[Subject, Any]] = {}  # benchmark -> latest result of the run's latest evaluated step
    base_results: dict[str, list[Any]] = {}
    for ev in evs:
        sub = subject(ev, algorithms)
        if sub.source == "run":
            continue
        if sub.run_id == run.id:
            prev = tuned.get(ev.benchmark)
            if prev is None or (sub.step or 0) >= (prev[0].step or 0):
                tuned[ev.benchmark] = (sub, ev)
        elif sub.run_id is None and base is not None and sub.model == base:
            base_results.setdefault(ev.benchmark, []).append(ev)
    for bench in sorted(set(tuned) | set(base_results), key=bench_rank):
        after = tuned.get(bench)
        candidates = base_results.get(bench, [])
        before = None
        if after is not None:
            before = next((b for b in reversed(candidates) if _pairs_with(b, after[1])), None)
        if before is None and candidates:
            before = candidates[-1]
        b_label = column_label(subject(before, algorithms), run_names) if before is not None else \
            f"(base model {base} not evaluated)"
        a_label = column_label(after[0], run_names) if after is not None else "(no checkpoint evaluated)"
        pairs.append(Pair(bench, before, after[1] if after else None, b_label, a_label))
    return pairs


def _change_key(benchmark: str, f: Figure) -> str:
    """The key paired_changes gives a figure: a run's held-out reward stores reward/mean, reward/<group> and
    reward/worst_group, its item table (a "reward" table) names them mean, <group>/mean and worst_group."""
    if benchmark != "heldout_reward":
        return f.key
    if f.key == "reward/mean":
        return "mean"
    if f.key == _WORST:
        return "worst_group"
    return f"{f.group}/mean" if f.group != "all" else f.key


def pair_rows(pair: Pair) -> tuple[list[dict[str, Any]], str]:
    """Rows of a pair's table (group, metric, what is unbiased, before, after, change [paired 95% interval],
    McNemar p, ✱) and a note on how the change was computed."""
    bench = pair.benchmark
    n = digits(bench)
    fb = {(f.group, f.metric): f for f in figures(bench, pair.before.metrics)} if pair.before is not None else {}
    fa = {(f.group, f.metric): f for f in figures(bench, pair.after.metrics)} if pair.after is not None else {}
    got: dict[str, U.Change] | None = None
    note = ""
    if pair.before is not None and pair.after is not None:
        got, why = changes(pair.before, pair.after)
        note = ("change: after - before on the same items, paired bootstrap 95% interval; McNemar's exact test "
                "where the metric is a share of a yes/no outcome; ✱ = the interval excludes 0") if got else \
            f"change without a paired test: {why}" if U.stored_table(pair.before.metrics) is not None else \
            "change without a paired test: these results were stored without their per-item outcomes"
    keys = list(fb) + [k for k in fa if k not in fb]
    order = METRIC_ORDER.get(bench, ())
    groups = sorted({g for g, _ in keys if g != "all"})
    keys.sort(key=lambda gm: (gm[0] != "all", groups.index(gm[0]) if gm[0] in groups else -1,
                              order.index(gm[1]) if gm[1] in order else len(order), gm[1]))
    rows = []
    for g, m in keys:
        b, a = fb.get((g, m)), fa.get((g, m))
        c = got.get(_change_key(bench, b)) if got is not None and b is not None else None
        change = ""
        if c is not None:
            change = f"{c.diff:+.{n}f}"
            if c.low is not None and c.high is not None:
                change += f" [{c.low:+.{n}f}, {c.high:+.{n}f}]"
        elif a is not None and b is not None:
            change = f"{a.value - b.value:+.{n}f}"
        rows.append({"group": g, "metric": m, "unbiased / better": REFERENCE.get((bench, m), ""),
                     "before": fmt_figure(b, n), "after": fmt_figure(a, n), "change": change,
                     "McNemar p": f"{c.p_mcnemar:.3g}" if c is not None and c.p_mcnemar is not None else "",
                     "✱": "✱" if c is not None and c.significant else ""})
    return rows, note


def pair_metrics(pair: Pair) -> list[str]:
    """Metrics of a pair that have a value per group (what the per-group chart can draw), headline first."""
    out: dict[str, None] = {}
    for ev in (pair.before, pair.after):
        if ev is None:
            continue
        figs = figures(pair.benchmark, ev.metrics)
        per_group = {f.metric for f in figs if f.group != "all"}
        for f in figs:
            if f.group == "all" and f.metric in per_group:
                out.setdefault(f.metric)
    return list(out)


def pair_answers(pair: Pair, n: int = 10) -> list[dict[str, Any]]:
    """Up to `n` held-out prompts with the base and the tuned answer, where both results stored answers
    (the "reward" benchmark keeps a fixed sample of them)."""
    if pair.before is None or pair.after is None:
        return []
    before = {a.get("prompt"): a for a in pair.before.metrics.get("answers") or [] if isinstance(a, Mapping)}
    out = []
    for a in pair.after.metrics.get("answers") or []:
        if isinstance(a, Mapping) and a.get("prompt") in before:
            b = before[a["prompt"]]
            out.append({"group": a.get("group", ""), "prompt": a["prompt"], "before": b.get("answer", ""),
                        "after": a.get("answer", ""), "reward_before": b.get("reward"),
                        "reward_after": a.get("reward")})
        if len(out) >= n:
            break
    return out
