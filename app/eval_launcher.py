"""Evaluation from the browser: pick a base model or a run's checkpoint (its latest or a given step), benchmarks and
a limit; the evaluation
is queued as an `eval` job through the studio's queue (validated and submitted like the New run form and
`studio submit`: app.forms.submit -> engine.submission.submit_run), and its progress and results are shown while
the engine runs it (engine/runs/evaluate.py stores each benchmark as soon as it finishes)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from app import eval_view, forms
from app.state import flash
from app.widgets import engine_banner, plain, status_badge
from db.queue import get_run, list_runs
from db.reads import checkpoints, evaluations, run_events, runs_by_algorithm, runs_with_checkpoints
from engine.config import CONFIG_CLASSES, DEFAULT_MODEL, EMBEDDED_MODELS

ALG = "eval"
JOB_KEY = "eval.job"
PROBLEMS_KEY = "eval.new.problems"
BASE_KIND, RUN_KIND = "A base model", "A run's checkpoint"
BENCHMARKS = ("reward", "crows_pairs", "stereoset", "bbq", "perplexity", "counterfactual")  # the report's order
DEFAULT_PICKED = BENCHMARKS[:-1]  # as `studio eval`: the descriptor swaps are opt-in (about 3x the reward's time)
REFRESH_S = 2.0


def _field_default(name: str) -> Any:
    return CONFIG_CLASSES[ALG].model_fields[name].default


def model_choices(store: Any) -> list[str]:
    """The embedded models, then every base model a training run used (newest first), without repeats."""
    seen = dict.fromkeys(EMBEDDED_MODELS)
    for r in list_runs(store):
        try:
            model = json.loads(r.config_json).get("model")
        except (TypeError, ValueError):
            continue
        if isinstance(model, str) and r.algorithm not in ("eval", "compare", "synthetic"):
            seen.setdefault(model)
    return list(seen) or [DEFAULT_MODEL]


def _steps(store: Any, run_id: int) -> list[int]:
    """The run's checkpoint steps, the latest first."""
    return sorted((c.step for c in checkpoints(store, run_id)), reverse=True)


def launcher_values(store: Any) -> dict[str, Any]:
    """The eval job's config from the launcher's widgets (what forms.submit validates and queues)."""
    ss = st.session_state
    if ss.get("eval.new.kind") == RUN_KIND and ss.get("eval.new.run") is not None:
        rid = ss["eval.new.run"]
        steps = _steps(store, rid)
        step = ss.get(f"eval.new.step.{rid}")
        # the latest checkpoint is "run:ID" (what the CLI and the compare form write); an earlier one run:ID@STEP
        model = f"run:{rid}" if step is None or not steps or step == steps[0] else f"run:{rid}@{step}"
    else:
        model = (ss.get("eval.new.other") or "").strip() or ss.get("eval.new.model") or DEFAULT_MODEL
    picked = list(ss.get("eval.new.benchmarks") or [])
    limit = int(ss.get("eval.new.limit") or 0)
    return {"algorithm": ALG, "name": f"eval {model}", "model": model,
            "benchmarks": [b for b in BENCHMARKS if b in picked], "limit": limit}


def _queue(store: Any) -> None:
    data = launcher_values(store)
    if not data["benchmarks"]:
        st.session_state[PROBLEMS_KEY] = {"benchmarks": "choose at least one benchmark"}
        return
    job_id, problems = forms.submit(store, data)
    st.session_state[PROBLEMS_KEY] = problems
    if job_id is not None:
        st.session_state[JOB_KEY] = job_id
        flash(f"Evaluation #{job_id} queued: the engine scores {plain(data['model'])} on "
              f"{', '.join(eval_view.BENCHMARK_LABELS.get(b, b) for b in data['benchmarks'])}.")


def render_launcher(store: Any, expanded: bool) -> None:
    """The "New evaluation" form."""
    ss = st.session_state
    # Keyed and tracked: `expanded` is only the first state, so the form stays open while the user queues a second
    # evaluation, though the first one's results turn `expanded` off.
    with st.expander("New evaluation", expanded=expanded, icon=":material/playlist_add:", key="eval.new.open",
                     on_change="rerun"):
        st.caption("Scores a model on the bias benchmarks through the engine's queue, as `studio eval` does. "
                   "Evaluate the base model and a tuned run's checkpoint on the same limit to get their before/after "
                   "with paired tests (here and on the Results page).")
        trained = runs_with_checkpoints(store)
        kinds = [BASE_KIND] + ([RUN_KIND] if trained else [])
        if ss.get("eval.new.kind") not in kinds:
            ss["eval.new.kind"] = kinds[0]
        kind = st.radio("Evaluate", kinds, key="eval.new.kind", horizontal=True,
                        help="A run's checkpoint: its latest or an earlier one (exported once, merged).")
        if kind == RUN_KIND:
            by_id = {rid: (name, step) for rid, name, step in trained}
            if ss.get("eval.new.run") not in by_id:
                ss["eval.new.run"] = trained[0][0]
            c1, c2 = st.columns(2)
            rid = c1.selectbox("Run", list(by_id), key="eval.new.run",
                               format_func=lambda i: f"#{i} {by_id[i][0]} (latest checkpoint: step {by_id[i][1]})")
            steps = _steps(store, rid)
            if steps and ss.get(f"eval.new.step.{rid}") not in steps:
                ss[f"eval.new.step.{rid}"] = steps[0]
            c2.selectbox("Checkpoint", steps, key=f"eval.new.step.{rid}",
                         format_func=lambda s: f"step {s}" + (" (latest)" if s == max(steps) else ""))
        else:
            c1, c2 = st.columns(2)
            c1.selectbox("Model", model_choices(store), key="eval.new.model")
            c2.text_input("Or another model", key="eval.new.other", placeholder="HuggingFaceTB/SmolLM2-135M-Instruct",
                          help="A hub id or a model folder on the server (inside STUDIO_DATA_DIRS when a password "
                               "is set).")
        if "eval.new.benchmarks" not in ss:
            ss["eval.new.benchmarks"] = list(DEFAULT_PICKED)
        st.multiselect("Benchmarks", list(BENCHMARKS), key="eval.new.benchmarks",
                       format_func=lambda b: eval_view.BENCHMARK_LABELS.get(b, b))
        if "eval.new.limit" not in ss:
            ss["eval.new.limit"] = int(_field_default("limit"))
        st.number_input("Limit (items per benchmark, 0 = all)", min_value=0, step=50, key="eval.new.limit",
                        help="Items per benchmark, balanced over its groups (0: the full bundled sets). Use the same "
                             "limit for the models you want to compare: only results on the same items pair.")
        problems = ss.get(PROBLEMS_KEY) or {}
        for field_name, message in problems.items():
            st.error(f"{plain(field_name)}: {plain(message)}", icon=":material/error:")
        st.button("Queue evaluation", type="primary", key="eval.new.submit", icon=":material/play_arrow:",
                  on_click=_queue, args=(store,))


def job_progress(store: Any, job_id: int) -> tuple[int, int]:
    """(benchmarks stored so far, benchmarks asked for) of an eval job."""
    job = get_run(store, job_id)
    try:
        wanted = len(json.loads(job.config_json).get("benchmarks") or [])
    except (TypeError, ValueError):
        wanted = 0
    done = len(evaluations(store, job_id))
    return done, max(wanted, done)


def render_jobs(store: Any) -> None:
    """The chosen eval job: status and progress while it runs (refreshing), its results when they arrive."""
    jobs = runs_by_algorithm(store, [ALG])
    if not jobs:
        return
    ss = st.session_state
    by_id = {j.id: j for j in jobs}
    if ss.get(JOB_KEY) not in by_id:
        ss[JOB_KEY] = jobs[0].id
    st.subheader("Evaluation jobs")
    job_id = st.selectbox("Evaluation job", list(by_id), key=JOB_KEY,
                          format_func=lambda i: f"#{i} {by_id[i].name} ({by_id[i].status.value})")
    active = by_id[job_id].status.value in ("queued", "running")
    engine_banner(store, needed=active)

    @st.fragment(run_every=REFRESH_S if active else None)
    def panel() -> None:
        job = get_run(store, job_id)
        if active and job.status.finished:
            st.rerun()  # ended: redraw once, without the timer
        done, wanted = job_progress(store, job_id)
        st.markdown(f"Status: {status_badge(job.status.value)}"
                    + (f" · {plain(job.error, multiline=True)}" if job.error else ""))
        evs = run_events(store, job_id, limit=8)
        text = f"{done} of {wanted} benchmark(s) done"
        if job.status.value == "queued":
            text += " · waiting for the engine"
        elif job.status.value == "running":
            text += " · running"
            latest = next((e.message for e in evs if e.message.endswith(" scored")), None)  # newest first
            if latest:
                text += f" · {plain(latest)}"
        st.progress(done / wanted if wanted else 0.0, text=text)
        if evs:
            st.dataframe(pd.DataFrame([{"time": e.time.strftime("%H:%M:%S"), "message": e.message} for e in evs]),
                         hide_index=True, width="stretch", key=f"eval.job_events.{job_id}")
        got = evaluations(store, job_id)
        if got:
            algorithms, names = eval_view.run_maps(store)
            sub = eval_view.subject(got[0], algorithms)
            col = eval_view.Column(eval_view.column_label(sub, names), sub, {e.benchmark: e for e in got})
            rows = eval_view.before_after_rows([col])
            st.caption("Results so far: value [95% bootstrap interval]." if active else "Results: value [95% "
                       "bootstrap interval]. They also appear in the before/after table below and on the Results "
                       "page.")
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key=f"eval.job_results.{job_id}",
                         height=eval_view.table_height(len(rows)))
        elif not active:
            st.info("This evaluation stored no results.", icon=":material/info:")

    panel()
