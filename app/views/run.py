"""One run, live: group weights (the headline), per-group reward, worst group vs average, training health,
samples, events and checkpoints. Charts refresh on a timer only while the run is queued or running."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from app import charts, eval_view
from app.auth import require_access
from app.labels import metric_label, short_label
from app.live import ChartCache, refresh, setup_status
from app.palette import group_colours
from app.state import CLONE_KEY, RUN_KEY, flash, get_store, show_flash
from app.widgets import engine_banner, fmt_duration, fmt_value, plain, status_badge
from db.queue import QueueError, get_run, request_cancel, resume_run, set_run_notes
from db.reads import checkpoints, last_metric_time, run_events, runs_overview, sample_groups, sample_steps, samples
from db.session import studio_home
from engine.config import ALGORITHM_LABELS

# Every page checks access itself, so a page opened by its address never skips the password.
require_access()

REFRESH_S = 2.0
ROOT = Path(__file__).resolve().parent.parent.parent

store = get_store()
ss = st.session_state
st.title("Run")
show_flash()

overview = {r.id: r for r in runs_overview(store)}
if not overview:
    st.info("No runs yet. Queue one on the **New run** page and its charts appear here while it trains.",
            icon=":material/info:")
    st.page_link("views/new_run.py", label="Create a run", icon=":material/add_circle:")
    st.stop()

wanted = st.query_params.get("run") or ss.get(RUN_KEY)
try:
    wanted = int(wanted) if wanted is not None else None
except ValueError:
    wanted = None
ids = list(overview)
if wanted not in overview:
    wanted = ids[0]
if ss.get("run.select") not in overview or ss.get("run.select_for") != wanted:
    ss["run.select"] = wanted
    ss["run.select_for"] = wanted
run_id = st.selectbox("Run", ids, key="run.select", format_func=lambda i: f"#{i} {overview[i].name}")
if run_id != wanted:
    ss[RUN_KEY] = run_id
    ss["run.select_for"] = run_id
    st.query_params["run"] = str(run_id)

row = overview[run_id]
active = row.status in ("queued", "running")
engine_banner(store, needed=active)


def _do(action, message: str) -> None:  # type: ignore[no-untyped-def]
    """Run a queue action and flash ``message``; a "{}" in it is filled with what the action returned."""
    try:
        result = action()
        flash(message.replace("{}", str(result)) if "{}" in message else message)
    except QueueError as e:
        flash(str(e), "error")


# Wide enough for each button's icon and word: at [6, 1, 1, 1] a 1400 px window cut "Resume" to "Resu...".
head = st.columns([5, 1.2, 1.3, 1.2], vertical_alignment="top")
head[0].markdown(f"### #{row.id} {plain(row.name)}\n{status_badge(row.status)} · "
                 f"{ALGORITHM_LABELS.get(row.algorithm, row.algorithm)} · model {plain(row.model)}")
head[1].button("Cancel", key="run.cancel", disabled=not active or row.cancel_requested, icon=":material/stop_circle:",
               on_click=lambda: _do(lambda: request_cancel(store, run_id), f"Run {run_id}: {{}}."))
head[2].button("Resume", key="run.resume", disabled=row.status not in ("failed", "cancelled"),
               icon=":material/play_circle:",
               on_click=lambda: _do(lambda: resume_run(store, run_id), f"Run {run_id}: queued to resume."))
if head[3].button("Clone", key="run.clone", icon=":material/content_copy:"):
    cfg = json.loads(get_run(store, run_id).config_json)
    cfg["name"] = f"{cfg.get('name') or row.name} (clone)"
    ss[CLONE_KEY] = {"config": cfg, "parent_id": run_id}
    st.switch_page("views/new_run.py")
if row.error:
    st.error(f"The run failed: {plain(row.error, multiline=True)}", icon=":material/error:")

with st.expander("Configuration"):
    st.json(json.loads(get_run(store, run_id).config_json))


def _prepare_report() -> None:
    from app.report import build_report

    ss["run.report"] = (run_id, build_report(store, run_id))


rep = st.columns([2, 3])
rep[0].button("Prepare the HTML report", key="run.report_prepare", on_click=_prepare_report,
              icon=":material/description:", help="One self-contained file (opens offline): configuration, data, "
              "reward model, charts, evaluations before/after with intervals, samples. Also `studio report ID`.")
if ss.get("run.report") and ss["run.report"][0] == run_id:
    rep[1].download_button(f"Download run-{run_id}-report.html", ss["run.report"][1],
                           file_name=f"run-{run_id}-report.html", mime="text/html", key="run.report_download",
                           icon=":material/download:")


def _save_notes() -> None:
    tags = [t for t in str(ss.get(f"run.tags.{run_id}", "")).split(",")]
    try:
        set_run_notes(store, run_id, tags=tags, notes=str(ss.get(f"run.notes.{run_id}", "")))
        flash(f"Run {run_id}: tags and notes saved.")
    except QueueError as e:
        flash(str(e), "error")


with st.expander("Tags and notes" + (f": {plain(', '.join(row.tags))}" if row.tags else ""), icon=":material/sell:"):
    if f"run.tags.{run_id}" not in ss:
        ss[f"run.tags.{run_id}"] = ", ".join(row.tags)
        ss[f"run.notes.{run_id}"] = row.notes
    st.text_input("Tags", key=f"run.tags.{run_id}", help="Comma-separated labels (baseline, cpu, ...): the Runs page "
                  "filters and searches by them.")
    st.text_area("Notes", key=f"run.notes.{run_id}", help="What this run is for, what you saw: searched on the Runs "
                 "page.", height=100)
    st.button("Save tags and notes", key="run.save_notes", on_click=_save_notes, icon=":material/save:")

t1, t2, t4, t3 = st.columns([1, 1, 1, 2])
full_res = t1.toggle("Full resolution", key=f"run.full.{run_id}",
                     help="Charts read at most ~2000 points per series (bucket mean with its min-max band). "
                          "Full resolution reads every step: slower on long runs.")
log_y = t2.toggle("Log scale", key="run.log_y", help="Logarithmic y axes (for losses and KL spanning decades).")
linked = t4.toggle("Linked hover", key="run.linked", help="The training metrics stacked in one figure on one step "
                   "axis: hovering a step shows every metric's value there.")
smoothing = t3.slider("Smoothing", 0.0, 0.99, 0.0, 0.01, key="run.smoothing",
                      help="Exponential moving average of each curve (0: none); the raw points stay drawn faintly.")


def _cache() -> ChartCache:
    key = f"run.cache.{run_id}.{full_res}"
    cache = ss.get(key)
    if cache is None:
        cache = ChartCache(run_id, full_res)
    return cache


def _plot(fig, key: str) -> None:  # type: ignore[no-untyped-def]
    st.plotly_chart(fig, key=key, config={"displaylogo": False})


@st.fragment(run_every=REFRESH_S if active else None)
def live_panel() -> None:
    current = get_run(store, run_id)
    cache = refresh(store, _cache(), current.last_step)
    ss[f"run.cache.{run_id}.{full_res}"] = cache
    if current.status.value != row.status or bool(current.cancel_requested) != bool(row.cancel_requested):
        # The run changed state (claimed, stopping, ended): redraw the whole page, so its header, buttons and
        # timers agree with it; once it has ended, without the timer.
        st.rerun()

    prog = (current.last_step / current.total_steps) if current.total_steps else 0.0
    r = runs_overview(store)
    r = next((x for x in r if x.id == run_id), row)
    st.progress(min(1.0, prog), text=f"step {current.last_step} / {current.total_steps} · elapsed "
                                     f"{fmt_duration(r.elapsed_s)} · ETA {fmt_duration(r.eta_s)}")
    m = st.columns(4)
    m[0].metric("Status", current.status.value + (" (stopping)" if current.cancel_requested
                                                   and current.status.value == "running" else ""))
    m[1].metric("Step", f"{current.last_step}")
    # Metric keys come from runners and reward names: labels are markdown too.
    m[2].metric("Reward", fmt_value(r.reward), help=plain(metric_label(r.reward_key)) if r.reward_key else None)
    m[3].metric(f"Worst group ({plain(short_label(r.worst_group_key))})" if r.worst_group_key else "Worst group",
                fmt_value(r.worst_group), help=plain(metric_label(r.worst_group_key)) if r.worst_group_key else None)

    evs = run_events(store, run_id, limit=200)
    setup = setup_status(evs, current, last_step_written=last_metric_time(store, run_id))
    if setup:
        st.info(plain(setup), icon=":material/hourglass_top:")  # it names the model, user text
    if not cache.metrics and not any(cache.groups.values()):
        if not setup:
            st.info("Waiting for the first training step: the engine has not taken the run yet; charts appear as "
                    "soon as it logs one." if current.status.value == "queued" else
                    "Waiting for the first training step: charts appear as soon as the engine logs one."
                    if current.status.value == "running" else "This run logged no metrics.",
                    icon=":material/hourglass_empty:")
        event_log(evs)
        return
    rev = f"run-{run_id}"
    look = {"smoothing": smoothing, "log_y": log_y}
    weights = cache.groups.get("weight", {})
    groups = sorted(set().union(*[set(g) for g in cache.groups.values()])) if cache.groups else []
    colours = group_colours(groups)
    if weights:
        _plot(charts.group_weight_figure(weights, colours, rev, **look), "chart.group_weights")
    left, right = st.columns(2)
    with left:
        if cache.groups.get("reward_mean"):
            if row.algorithm == "compare":  # a comparison job stores each group's B - A difference there
                fig = charts.line_figure("Reward difference per group (B - A)", cache.groups["reward_mean"],
                                         colours, y_title="bias reward, B minus A", revision=rev, **look)
            else:
                fig = charts.group_reward_figure(cache.groups["reward_mean"], cache.groups.get("reward_std", {}),
                                                 colours, rev, **look)
            _plot(fig, "chart.group_reward")
        elif cache.groups.get("accuracy"):
            _plot(charts.line_figure("Accuracy per group", cache.groups["accuracy"], colours, y_title="accuracy",
                                     revision=rev, **look), "chart.group_accuracy")
    with right:
        if cache.groups.get("loss"):
            _plot(charts.line_figure("Loss per group", cache.groups["loss"], colours, y_title="loss",
                                     revision=rev, **look), "chart.group_loss")
    drawn = [f for f in ("weight", "reward_mean") if cache.groups.get(f)]
    placed, other = charts.assign_panels(list(cache.metrics), drawn_groups=drawn)
    if linked and placed:
        _plot(charts.linked_figure([(p, {k: cache.metrics[k] for k in keys}) for p, keys in placed], rev, **look),
              "chart.linked")
        st.caption("Hover a step to read every metric there. " + " ".join(p.note for p, _ in placed if p.note))
    cols = st.columns(2)
    for i, (panel, keys) in enumerate([] if linked else placed):
        with cols[i % 2]:
            _plot(charts.metric_panel_figure(panel, {k: cache.metrics[k] for k in keys}, rev, **look),
                  f"chart.panel.{panel.title}")
            if panel.note:
                st.caption(panel.note)
    if other:
        with st.expander(f"Other metrics ({len(other)})"):
            cols = st.columns(2)
            for i, k in enumerate(other):
                with cols[i % 2]:
                    _plot(charts.line_figure(metric_label(k), {k: cache.metrics[k]}, revision=rev,
                                             names={k: metric_label(k)}, y_title=metric_label(k), **look),
                          f"chart.other.{k}")
    if any(s.downsampled for s in cache.metrics.values()):
        st.caption("Long run: each point is the mean of a bucket of steps, the band its minimum and maximum. "
                   "Switch on full resolution to read every step.")

    event_log(evs)


def event_log(evs) -> None:  # type: ignore[no-untyped-def]
    st.subheader("Event log")
    st.dataframe(pd.DataFrame([{"time": e.time.strftime("%Y-%m-%d %H:%M:%S"), "level": e.level,
                                "message": e.message} for e in evs[:100]]), hide_index=True, width="stretch",
                 key="run.events")


live_panel()


@st.fragment(run_every=2 * REFRESH_S if active else None)
def samples_panel() -> None:
    """The logged completions, refreshed while the run trains (new steps join the range while it is at its end)."""
    st.subheader("Samples")
    groups_with_samples = sample_groups(store, run_id)
    if not groups_with_samples:
        st.caption("No samples logged yet: GRPO runs store a few completions per step (setting samples_logged)."
                   if active else "No samples logged. GRPO runs store a few completions per step "
                                  "(setting samples_logged).")
        return
    steps = sample_steps(store, run_id)
    f1, f2 = st.columns([2, 3])
    chosen_groups = f1.multiselect("Groups", groups_with_samples, key=f"run.sample_groups.{run_id}")
    lo, hi = (steps[0], steps[-1]) if len(steps) > 1 else (steps[0], steps[0] + 1)
    key, end_key = f"run.sample_steps.{run_id}", f"run.sample_steps_end.{run_id}"
    picked = ss.get(key)
    if picked is None:
        ss[key] = (lo, hi)
    elif picked[1] == ss.get(end_key) or picked[1] > hi or picked[0] < lo:
        # the range ended at the newest step: keep it there as steps arrive (and inside the steps that exist)
        ss[key] = (max(lo, min(picked[0], hi)), hi)
    ss[end_key] = hi
    step_range = f2.slider("Steps", lo, hi, key=key)
    rows = samples(store, run_id, groups=chosen_groups or None, step_min=step_range[0], step_max=step_range[1])
    st.dataframe(pd.DataFrame([{"step": x.step, "group": x.group, "prompt": x.prompt, "completion": x.completion,
                                "reward": x.reward, "advantage": x.advantage,
                                **{f"reward/{k}": v for k, v in (x.rewards or {}).items()}} for x in rows]),
                 hide_index=True, width="stretch", key="run.samples",
                 column_config={"completion": st.column_config.TextColumn(width="large")})


samples_panel()

LOG_LEVELS = ("info", "warning", "error")


def log_text(evs, levels=LOG_LEVELS, contains: str = "") -> str:  # type: ignore[no-untyped-def]
    """The run's event log as a terminal would print it, oldest first; tracebacks keep their lines."""
    out = []
    for e in reversed(evs):  # evs are newest first
        if e.level not in levels or contains.lower() not in e.message.lower():
            continue
        head = f"{e.time.strftime('%Y-%m-%d %H:%M:%S')}  {e.level.upper():<7}  "
        lines = e.message.splitlines() or [""]
        out.append(head + lines[0])
        out += [" " * len(head) + line for line in lines[1:]]
    return "\n".join(out)


OUTPUT_TAIL = 256 * 1024


def process_output(rid: int) -> tuple[str | None, int]:
    """The tail of the run process's output file and the file's size; (None, 0) where it is not on this machine.
    Progress bars redraw with carriage returns: only each line's last state is kept."""
    from db.paths import run_output_log

    path = run_output_log(rid, get_run(store, rid).folder_token)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            f.seek(max(0, size - OUTPUT_TAIL))
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None, 0
    return "\n".join(line.rsplit("\r", 1)[-1] for line in raw.split("\n")).rstrip("\n"), size


@st.fragment(run_every=2 * REFRESH_S if active else None)
def logs_panel() -> None:
    """Everything the engine recorded for this run, filterable, in full, and below it what the run's process
    printed (its output file in the run's folder)."""
    with st.expander("Logs", icon=":material/terminal:"):
        c1, c2 = st.columns([2, 3])
        levels = c1.multiselect("Levels", LOG_LEVELS, default=list(LOG_LEVELS), key=f"run.log_levels.{run_id}")
        contains = c2.text_input("Search the log", key=f"run.log_search.{run_id}")
        evs = run_events(store, run_id, limit=5000)
        text = log_text(evs, tuple(levels), contains)
        st.caption(f"{len(evs)} events: setup phases, evaluations, checkpoints, warnings about the data, the end of "
                   "the run and, for a failed run, its traceback.")
        st.code(text or "(nothing matches)", language=None, height=min(600, 40 + 21 * (text.count("\n") + 1)))
        st.download_button("Download the log", text, file_name=f"run-{run_id}-events.log", mime="text/plain",
                           key="run.log_download")
        output, size = process_output(run_id)
        st.markdown("**Run process output**")
        if output is None:
            st.caption("No output file here: the run has not started on an engine that shares this machine's "
                       "studio folder (the engine writes it to the run's folder).")
        else:
            shown = output if not contains else "\n".join(x for x in output.splitlines()
                                                           if contains.lower() in x.lower())
            st.caption(f"What the run's process printed (progress bars, warnings, tracebacks; every attempt), "
                       f"{size / 1024:.0f} KB" + (f", the last {OUTPUT_TAIL // 1024} KB shown" if size > OUTPUT_TAIL
                                                   else "") + ".")
            st.code(shown or "(nothing matches)", language=None,
                    height=min(600, 40 + 21 * (shown.count("\n") + 1)))


logs_panel()


@st.fragment(run_every=2 * REFRESH_S if active else None)
def checkpoints_panel() -> None:
    st.subheader("Checkpoints")
    ckpts = checkpoints(store, run_id)
    if not ckpts:
        st.caption("No checkpoints yet: a run saves one every `checkpoint_every` steps and at its end.")
        return
    checkpoint_actions(ckpts)


def checkpoint_actions(ckpts) -> None:  # type: ignore[no-untyped-def]
    st.dataframe(pd.DataFrame([{"step": c.step, "saved": c.created_at.strftime("%Y-%m-%d %H:%M:%S"), "path": c.path}
                               for c in ckpts]), hide_index=True, width="stretch", key="run.ckpts")
    by_step = {c.step: c for c in ckpts}
    step = st.selectbox("Checkpoint", list(by_step), key=f"run.ckpt.{run_id}", format_func=lambda s: f"step {s}")
    c1, c2 = st.columns(2)
    if c1.button("Prepare a zip of the checkpoint files", key="run.zip"):
        folder = Path(by_step[step].path)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(folder.parent))
        ss["run.zip_data"] = (run_id, step, buf.getvalue())
    z = ss.get("run.zip_data")
    if z and z[0] == run_id and z[1] == step:
        c1.download_button(f"Download run-{run_id}-step-{step}.zip", z[2], file_name=f"run-{run_id}-step-{step}.zip",
                           mime="application/zip", key="run.zip_download")
    if row.algorithm != "synthetic":
        out = studio_home() / "exports" / f"run-{run_id}-step-{step}"
        if c2.button("Export as a Hugging Face model folder", key="run.export",
                     help=f"Writes a standard model folder to {out}"):
            # An argument list without a shell: nothing typed in the page reaches a command line.
            env = {**os.environ, "STUDIO_DB_URL": store.url}
            with st.spinner("Exporting..."):
                done = subprocess.run([sys.executable, "-m", "engine.cli", "export", str(run_id), "--step", str(step),
                                       "--out", str(out)], capture_output=True, text=True, cwd=ROOT, env=env,
                                      timeout=900)
            if done.returncode == 0:
                st.success(f"Exported to {out}. Load it with `AutoModelForCausalLM.from_pretrained('{out}')` or "
                           "pick it as a local folder in a comparison.")
            else:
                st.error(f"Export failed: {plain(' '.join((done.stderr or done.stdout).strip().splitlines()[-1:]))}")


checkpoints_panel()

eval_view.render_run_evaluations(store, run_id)
