"""Compare: two models' answers side by side per prompt and group, run curves overlaid, evaluation results."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, counterfactual_view, eval_launcher, eval_view, forms
from app.auth import require_access
from app.palette import group_colours
from app.state import flash, get_store, show_flash
from app.labels import metric_label
from app.widgets import engine_banner, fmt_duration, fmt_value, plain, status_badge
from db.models import utcnow
from db.queue import CLAIMED_EVENT, QueueError, get_run
from db.reads import (checkpoints, common_metric_keys, comparison, comparison_summary, evaluations, overlay_series,
                      run_events, runs_by_algorithm, runs_with_checkpoints)
from engine.config import TRAINING_ALGORITHMS

# Every page checks access itself, so a page opened by its address never skips the password.
require_access()

ALG = "compare"
PROBLEMS_KEY = "cmp.problems"
JOB_KEY = "cmp.job"

store = get_store()
ss = st.session_state
st.title("Compare")
show_flash()


def _on_submit() -> None:
    run_id, problems = forms.submit(store, forms.collect(ALG))
    ss[PROBLEMS_KEY] = problems
    if run_id is not None:
        ss[JOB_KEY] = run_id
        flash(f"Comparison #{run_id} queued: the engine generates both models' answers and scores them.")


def model_label(store, model: str, at) -> str:  # type: ignore[no-untyped-def]
    """What a comparison's model was: "run:2" as the run's number, name and the checkpoint step it used (its
    latest checkpoint when the job started); other models as they were given."""
    rid = model[4:] if model.startswith("run:") else ""
    if not rid.isdigit():
        return model
    try:
        run = get_run(store, int(rid))
    except QueueError:
        return f"{model} (deleted)"
    steps = [c.step for c in checkpoints(store, run.id) if at is None or c.created_at <= at]
    return f"run #{run.id} {run.name}" + (f" (step {max(steps)})" if steps else "")


def summary_rows(summary, label_a: str, label_b: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """Per group, then all groups together and each model's worst group."""
    def row(group: str, n: int | None, a: float | None, b: float | None, higher: str) -> dict:
        # counts as text: the worst-group row has none, and an empty number cell would read "None"
        return {"group": group, "prompts": "" if n is None else str(n), f"A: {label_a}": a, f"B: {label_b}": b,
                "B - A": None if a is None or b is None else b - a, "B scored higher": higher}

    out = [row(s.group, s.n, s.mean_a, s.mean_b, f"{s.b_better} of {s.n}") for s in summary]
    total = sum(s.n for s in summary)
    weighted = [(s.mean_a, s.mean_b, s.n) for s in summary]
    mean_a = _weighted([(a, n) for a, _, n in weighted])
    mean_b = _weighted([(b, n) for _, b, n in weighted])
    out.append(row("all groups", total, mean_a, mean_b, f"{sum(s.b_better for s in summary)} of {total}"))
    worst_a = min((s for s in summary if s.mean_a is not None), key=lambda s: s.mean_a, default=None)
    worst_b = min((s for s in summary if s.mean_b is not None), key=lambda s: s.mean_b, default=None)
    if worst_a is not None and worst_b is not None:
        out.append(row(f"worst group (A: {worst_a.group}, B: {worst_b.group})", None, worst_a.mean_a, worst_b.mean_b,
                       ""))
    return out


def _weighted(pairs: list[tuple[float | None, int]]) -> float | None:
    got = [(v, n) for v, n in pairs if v is not None and n]
    return sum(v * n for v, n in got) / sum(n for _, n in got) if got else None


def _progress(job) -> None:  # type: ignore[no-untyped-def]
    """While the engine generates (minutes on a CPU): how long it has been at it and what it is doing."""
    evs = run_events(store, job.id, limit=20)
    doing = next((e.message for e in evs if not e.message.startswith(("queued", CLAIMED_EVENT))), None)
    if job.status.value == "queued":
        st.info("Waiting for the engine to take the comparison.", icon=":material/hourglass_empty:")
        return
    since = fmt_duration((utcnow() - job.started_at).total_seconds()) if job.started_at else "-"
    st.info(f"Generating and scoring answers ({since} so far)" + (f": {plain(doing)}" if doing else "."),
            icon=":material/hourglass_top:")


# Keyed and tracked, so the open tab survives a full rerun whose elements above it changed (a flash message going,
# an evaluation job's end): untracked, the browser put the user back on the first tab when a job finished.
tab_cmp, tab_overlay, tab_eval = st.tabs(["Side by side", "Overlay runs", "Evaluations"], key="cmp.tabs",
                                         on_change="rerun")

with tab_cmp:
    with st.expander("New comparison", expanded=not runs_by_algorithm(store, [ALG]), icon=":material/add:",
                     key="cmp.new.open", on_change="rerun"):  # stays as the user left it (see the tabs)
        st.caption("Pick two models (for example the base model and a run's latest checkpoint) and a prompt set. "
                   "The engine answers every prompt with both and scores each answer with the bias reward.")
        if ss.get(forms.form_key(ALG, "model_b") + ".kind") is None:
            trained = runs_with_checkpoints(store)
            if trained:  # the useful default: base model vs the newest tuned run
                forms.seed_state(ALG, {"model_b": f"run:{trained[0][0]}"})
        from engine.data.registry import DATASETS

        forms.render_form(ALG, ss.get(PROBLEMS_KEY, {}),
                          dataset_choices=[n for n, s in DATASETS.items() if s.kind == "prompts" and not s.needs_path],
                          run_choices=runs_with_checkpoints(store) or None, skip=("max_steps", "checkpoint_every"))
        st.button("Queue comparison", type="primary", key="cmp.submit", on_click=_on_submit,
                  icon=":material/compare:")

    jobs = runs_by_algorithm(store, [ALG])
    if not jobs:
        st.info("No comparisons yet. Open **New comparison** above, choose the base model and a tuned run, and "
                "queue it; the answers appear here side by side.", icon=":material/info:")
    else:
        by_id = {j.id: j for j in jobs}
        if ss.get(JOB_KEY) not in by_id:
            ss[JOB_KEY] = jobs[0].id
        job_id = st.selectbox("Comparison", list(by_id), key=JOB_KEY,
                              # no status in the option: a browser keeps the chosen option's old text when
                              # it changes (it said "queued" after the job ended); the status is shown below
                              format_func=lambda i: f"#{i} {by_id[i].name}")
        job_active = by_id[job_id].status.value in ("queued", "running")
        engine_banner(store, needed=job_active)

        @st.fragment(run_every=2.0 if job_active else None)
        def results() -> None:
            job = get_run(store, job_id)
            if job.status != by_id[job_id].status:
                st.rerun()  # claimed or ended: redraw the page, so the picker's "(status)" says so too
            rows = comparison(store, job_id)
            st.markdown(f"Status: {status_badge(job.status.value)}"
                        + (f" · {plain(job.error, multiline=True)}" if job.error else ""))
            if not rows:
                if job_active:
                    _progress(job)
                else:
                    st.info("This comparison produced no answers.", icon=":material/hourglass_empty:")
                return
            label_a = model_label(store, rows[0].model_a or "A", job.started_at)
            label_b = model_label(store, rows[0].model_b or "B", job.started_at)
            summary = comparison_summary(rows)
            st.subheader("Summary per group")
            st.dataframe(pd.DataFrame(summary_rows(summary, label_a, label_b)), hide_index=True, width="stretch",
                         key="cmp.summary",
                         column_config={f"A: {label_a}": st.column_config.NumberColumn(format="%.3f"),
                                        f"B: {label_b}": st.column_config.NumberColumn(format="%.3f"),
                                        "B - A": st.column_config.NumberColumn(format="%+.3f"),
                                        "B scored higher": st.column_config.TextColumn(
                                            help="Prompts of the group on which B's answer got the higher bias "
                                                 "reward (less biased), of the group's prompts.")})
            st.caption("Mean bias reward of each model's answers (higher = less biased). The worst group is each "
                       "model's lowest group mean, so the two may be different groups.")
            single = [s.group for s in summary if s.n < 2]
            if single:
                st.warning(f"Only one prompt in {len(single)} group(s) ({plain(', '.join(single))}): their means are "
                           "single answers, too few to compare groups. Raise Num prompts for a few per group.",
                           icon=":material/warning:")
            st.plotly_chart(charts.comparison_bar_figure([s.group for s in summary], [s.mean_a for s in summary],
                                                         [s.mean_b for s in summary], f"A: {label_a}",
                                                         f"B: {label_b}"), key="cmp.bars")
            colours = group_colours([s.group for s in summary])
            groups = [s.group for s in summary]
            shown = st.multiselect("Groups", groups, default=groups, key=f"cmp.groups.{job_id}")
            for g in shown:
                # The colour directive instead of an HTML span: no HTML is allowed next to the group label.
                st.markdown(f'#### :color[●]{{foreground="{colours[g]}"}} {plain(g)}')
                for r in (x for x in rows if x.group == g):
                    with st.container(border=True):
                        st.markdown(f"**Prompt {r.prompt_index}.** {plain(r.prompt, multiline=True)}")
                        a, b = st.columns(2)
                        a.caption(f"A: {plain(label_a)} · bias reward {fmt_value(r.reward_a, 3)}")
                        a.text(r.completion_a or "(no answer)")
                        b.caption(f"B: {plain(label_b)} · bias reward {fmt_value(r.reward_b, 3)}"
                                  + (f" · difference {r.diff:+.3f}" if r.diff is not None else ""))
                        b.text(r.completion_b or "(no answer)")

        results()

with tab_overlay:
    trained = runs_by_algorithm(store, list(TRAINING_ALGORITHMS))
    if not trained:
        st.info("No training runs yet: overlaying curves needs at least one run.", icon=":material/info:")
    else:
        names = {r.id: f"#{r.id} {r.name}" for r in trained}
        picked = st.multiselect("Runs", list(names), default=list(names)[:2], key="cmp.overlay_runs",
                                format_func=lambda i: names[i])
        keys = common_metric_keys(store, picked)
        if not picked:
            st.caption("Pick one or more runs.")
        elif not keys:
            st.info("These runs have no metric in common: pick runs of the same algorithm family.")
        else:
            k1, k2, k3 = st.columns([3, 1, 2])
            key = k1.selectbox("Metric", keys, key="cmp.overlay_key", format_func=metric_label)
            log_y = k2.toggle("Log scale", key="cmp.overlay_log")
            smoothing = k3.slider("Smoothing", 0.0, 0.99, 0.0, 0.01, key="cmp.overlay_smoothing",
                                  help="Exponential moving average of each run's curve (0: none).")
            series = overlay_series(store, picked, key)
            st.plotly_chart(charts.overlay_figure(key, {names[rid]: s for rid, s in series.items()},
                                                  smoothing=smoothing, log_y=log_y), key="cmp.overlay_chart")

with tab_eval:
    evs = evaluations(store)
    eval_launcher.render_launcher(store, expanded=not evs)
    eval_launcher.render_jobs(store)
    if not evs:
        st.info("No evaluation results yet. Training runs evaluate themselves at step 0 and at their last step; "
                "queue an evaluation of the base model and of a tuned run's checkpoint above (New evaluation) to "
                "see their before/after here.", icon=":material/info:")
    else:
        eval_view.render_before_after(store, key="eval.pivot")

        st.subheader("Intervals and paired changes")
        st.caption("95% bootstrap intervals over the benchmark's items. A change is after - before on the same "
                   "items: a paired bootstrap interval of the difference, and McNemar's exact test where the metric "
                   "is a share of a yes/no outcome per item. ✱ marks a change whose interval excludes 0.")
        benchmarks = sorted({e.benchmark for e in evs}, key=eval_view.bench_rank)
        bench = st.selectbox("Benchmark", benchmarks, key="eval.bench",
                             format_func=lambda b: eval_view.BENCHMARK_LABELS.get(b, b))
        of_bench = [e for e in evs if e.benchmark == bench]
        ev_by_id = {e.id: e for e in of_bench}
        ev_ids = list(ev_by_id)
        c1, c2, c3 = st.columns(3)
        # Named apart from the comparison tab's by_id: AppTest calls a selectbox's format_func again later, and the
        # lambdas look the module-level name up then. Option labels are plain text, so model names need no escaping.
        before_id = c1.selectbox("Before", ev_ids, index=0, key=f"eval.before.{bench}",
                                 format_func=lambda i: eval_view.label(ev_by_id[i]))
        after_id = c2.selectbox("After", ev_ids, index=len(ev_ids) - 1, key=f"eval.after.{bench}",
                                format_func=lambda i: eval_view.label(ev_by_id[i]))
        before, after = ev_by_id[before_id], ev_by_id[after_id]
        metric_names = eval_view.table_metrics(bench, after.metrics)
        if not metric_names:
            st.caption("This result has no metrics to chart.")
        else:
            metric = c3.selectbox("Metric", metric_names, key=f"eval.metric.{bench}")
            shown = {eval_view.label(before): eval_view.interval_rows(before, metric)}
            if after_id != before_id:
                shown[eval_view.label(after)] = eval_view.interval_rows(after, metric)
            st.plotly_chart(eval_view.interval_figure(metric, shown), key="eval.intervals")
            if after_id == before_id:
                st.caption("Pick two different results to see the paired change.")
            else:
                got, why = eval_view.changes(before, after)
                if got is None:
                    st.info(f"No paired change: {why}", icon=":material/info:")
                else:
                    rows = eval_view.change_rows(bench, got)
                    st.plotly_chart(eval_view.change_figure(metric, rows), key="eval.changes")
                    fmt = f"%.{eval_view.digits(bench)}f"
                    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="eval.change_table",
                                 height=eval_view.table_height(len(rows)),
                                 column_config={c: st.column_config.NumberColumn(format=fmt)
                                                for c in ("before", "after", "change", "low", "high")})
        counterfactual_view.render_swaps(evs)
        st.subheader("All results")
        algorithms, run_names = eval_view.run_maps(store)
        listed = eval_view.result_rows(evs, algorithms, run_names)
        st.dataframe(pd.DataFrame(listed), hide_index=True, width="stretch", key="eval.all",
                     height=eval_view.table_height(len(listed), 20),
                     column_config={"headline": st.column_config.TextColumn(width="large")})
