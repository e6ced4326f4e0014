"""Results: a report of chosen runs from their stored evaluations only. Per run and per demographic group, before ->
after with 95% intervals and the paired test for every stored benchmark (the run's own held-out bias reward at step
0 and at its last step; CrowS-Pairs, StereoSet, BBQ, the held-out bias reward and perplexity from `studio eval` or
queued evaluations of the base model and of the run's checkpoint), a per-group chart with error bars, and held-out
prompts with the base and the tuned answer side by side where the results stored them."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import eval_view
from app.auth import require_access
from app.state import get_store
from app.widgets import plain
from db.reads import evaluations, runs_by_algorithm
from engine.config import ALGORITHM_LABELS, TRAINING_ALGORITHMS

# Every page checks access itself, so a page opened by its address never skips the password.
require_access()

store = get_store()
ss = st.session_state
st.title("Results")
st.caption("Before and after training, per group, from the stored evaluations: each figure with its 95% bootstrap "
           "interval, the change with a paired 95% interval on the same items and McNemar's exact test where it "
           "applies (✱: the interval excludes 0). Nothing here is computed by a model: evaluate the base model and a "
           "run's checkpoint with the same limit (Compare > Evaluations > New evaluation, or `studio eval`) to add "
           "the bias benchmarks.")

evs = evaluations(store)
algorithms, names = eval_view.run_maps(store)
concerned = {eval_view.subject(e, algorithms).run_id for e in evs}
trained = [r for r in runs_by_algorithm(store, list(TRAINING_ALGORITHMS))]
runs = {r.id: r for r in trained}
with_results = [r.id for r in trained if r.id in concerned]
if not with_results:
    st.info("No run has stored evaluations yet. A training run evaluates itself on held-out prompts at step 0 "
            "and at its last step (eval_prompts); queue evaluations of its checkpoint and of its base model on the "
            "Compare page (Evaluations tab) to add the bias benchmarks.", icon=":material/info:")
    st.stop()

if "results.runs" not in ss or not set(ss["results.runs"]) <= set(runs):
    ss["results.runs"] = with_results[:3]
picked = st.multiselect("Runs", list(runs), key="results.runs",
                        format_func=lambda i: f"#{i} {runs[i].name} ({ALGORITHM_LABELS.get(runs[i].algorithm, '')})")
if not picked:
    st.caption("Pick one or more runs.")

for rid in picked:
    run = runs[rid]
    try:
        base = json.loads(run.config_json).get("model")
    except ValueError:
        base = None
    st.header(f"#{rid} {plain(run.name)}", divider="gray")
    st.caption(f"{ALGORITHM_LABELS.get(run.algorithm, run.algorithm)} · base model {plain(str(base))} · "
               f"{run.status.value}, step {run.last_step} of {run.total_steps}")
    pairs = eval_view.report_pairs(evs, run, algorithms, names)
    if not pairs:
        st.info("No stored evaluation of this run.", icon=":material/info:")
        continue
    for i, pair in enumerate(pairs):
        st.subheader(eval_view.BENCHMARK_LABELS.get(pair.benchmark, pair.benchmark))
        st.caption(f"before: {plain(pair.before_label)} → after: {plain(pair.after_label)}")
        rows, note = eval_view.pair_rows(pair)
        if note:
            st.caption(plain(note))
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key=f"results.table.{rid}.{i}",
                     height=eval_view.table_height(len(rows)))
        metrics = eval_view.pair_metrics(pair)
        if metrics:
            metric = st.selectbox("Metric per group", metrics, key=f"results.metric.{rid}.{pair.benchmark}")
            series = {}
            if pair.before is not None:
                series[f"before: {pair.before_label}"] = eval_view.interval_rows(pair.before, metric)
            if pair.after is not None:
                series[f"after: {pair.after_label}"] = eval_view.interval_rows(pair.after, metric)
            title = (f"{eval_view.BENCHMARK_LABELS.get(pair.benchmark, pair.benchmark)}: {metric} per group, "
                     "before and after, 95% intervals")
            st.plotly_chart(eval_view.interval_figure(metric, series, title=title),
                            key=f"results.chart.{rid}.{pair.benchmark}", config={"displaylogo": False})
        answers = eval_view.pair_answers(pair)
        if answers:
            with st.expander(f"{len(answers)} held-out prompts: base and tuned answers side by side"):
                for a in answers:
                    with st.container(border=True):
                        st.caption(f"{plain(a['group'])}")
                        st.text(a["prompt"])
                        left, right = st.columns(2)
                        left.caption("before · bias reward " + (f"{a['reward_before']:.3f}"
                                                                if a["reward_before"] is not None else "n/a"))
                        left.text(a["before"] or "(no answer)")
                        right.caption("after · bias reward " + (f"{a['reward_after']:.3f}"
                                                                if a["reward_after"] is not None else "n/a"))
                        right.text(a["after"] or "(no answer)")
