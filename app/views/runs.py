"""Runs: every run with its progress and latest numbers, the queue's order, and the actions on one run."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app.auth import require_access
from app.state import CLONE_KEY, flash, get_store, open_run, show_flash
from app.labels import short_label
from app.widgets import engine_banner, fmt_duration, plain, status_badge
from db.queue import QueueError, delete_run, get_run, move_in_queue, request_cancel, resume_run
from db.reads import runs_overview, search_runs
from engine.config import ALGORITHM_LABELS

# Every page checks access itself, so a page opened by its address never skips the password.
require_access()

REFRESH_S = 3.0
store = get_store()
ss = st.session_state
st.title("Runs")
show_flash()
rows = runs_overview(store)

if not rows:
    st.info("No runs yet. Create one on the **New run** page: the synthetic experiment trains in seconds and needs "
            "no model, BiasGRPO fine-tunes the embedded SmolLM2 against the bias reward.", icon=":material/info:")
    st.page_link("views/new_run.py", label="Create a run", icon=":material/add_circle:")
    st.stop()

active = any(r.status in ("queued", "running") for r in rows)
engine_banner(store, needed=active)


def _num(v: float | None) -> str:
    """A table number, or an empty cell (never "None") when the run has not written it."""
    return "" if v is None else f"{v:.3f}"


def _status(r) -> str:  # type: ignore[no-untyped-def]
    if r.status == "running" and r.cancel_requested:
        return "running (stopping)"
    if r.status == "queued" and r.queue_position:
        return f"queued (#{r.queue_position})"
    return r.status


def _short_model(model: str) -> str:
    """The model as the table shows it: the embedded default by its name, paths and hub ids by their last part."""
    m = model.removeprefix("embedded:")
    return " vs ".join(part.rstrip("/").rsplit("/", 1)[-1] for part in m.split(" vs "))


def runs_table(rows) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """The Runs table as the page shows it: one row per run, text cells empty where nothing is known."""
    return pd.DataFrame([{
        "ID": r.id, "Name": r.name + (f" · {', '.join(r.tags)}" if r.tags else ""), "Status": _status(r),
        "Run of": f"{ALGORITHM_LABELS.get(r.algorithm, r.algorithm)} · {_short_model(r.model)}"
                  if r.model not in ("-", "") else ALGORITHM_LABELS.get(r.algorithm, r.algorithm),
        "Progress": (r.last_step / r.total_steps) if r.total_steps else 0.0, "Step": f"{r.last_step}/{r.total_steps}",
        "Elapsed": fmt_duration(r.elapsed_s) if r.elapsed_s is not None else "",
        "ETA": fmt_duration(r.eta_s) if r.eta_s is not None else "",
        "Reward": _num(r.reward), "Worst group": _num(r.worst_group), "of": short_label(r.worst_group_key)}
        for r in rows])


@st.fragment(run_every=REFRESH_S if active else None)
def table_panel() -> None:
    """The table, re-read every few seconds while a run is queued or running; clicking a row opens the run."""
    fresh = runs_overview(store)
    if [(r.id, r.status, r.cancel_requested) for r in fresh] != [(r.id, r.status, r.cancel_requested) for r in rows]:
        st.rerun()  # a run was added, claimed, stopped or ended: redraw the page (queue, actions) with it
    fresh = search_runs(fresh, ss.get("runs.search", ""), ss.get("runs.tags", []))
    if not fresh:
        st.info("No run matches the search.", icon=":material/search_off:")
        return
    event = st.dataframe(runs_table(fresh), hide_index=True, width="stretch", key="runs_table",
                         on_select="rerun", selection_mode="single-row", column_config={
        # Widths that fit a 1400-pixel window beside the sidebar; longer cells show in full on hover.
        "ID": st.column_config.NumberColumn("ID", width=36),
        "Name": st.column_config.TextColumn("Name", width=150),
        "Status": st.column_config.TextColumn("Status", width=105),
        "Run of": st.column_config.TextColumn("Run of", width=160, help="Algorithm and model."),
        "Progress": st.column_config.ProgressColumn("Progress", min_value=0.0, max_value=1.0, format="percent",
                                                    width=70),
        "Step": st.column_config.TextColumn("Step", width=60),
        "Elapsed": st.column_config.TextColumn("Elapsed", width=60, help="Time the run was active, over all its "
                                               "attempts (a resumed run keeps its earlier time)."),
        "ETA": st.column_config.TextColumn("ETA", width=55, help="Training steps left times the measured step "
                                           "time (setup excluded); shown after the first step."),
        "Reward": st.column_config.TextColumn("Reward", width=55, help="Latest mean reward (higher = less "
                                              "biased); GRPO's sums its weighted terms, so it can exceed 1."),
        "Worst group": st.column_config.TextColumn("Worst", width=55, help="Latest worst-group figure; what it "
                                                   "measures is in the next column."),
        "of": st.column_config.TextColumn("of", width=90),
    })
    st.caption("Tick the box at a row's left to open its run page." + (" The table refreshes by itself while runs are queued or "
                                                       "running." if active else ""))
    picked = event.selection.rows if event is not None else []
    if picked:
        open_run(int(fresh[picked[0]].id))


s1, s2 = st.columns([3, 2])
s1.text_input("Search runs", key="runs.search", placeholder="name, notes, tag, algorithm, model, status or #id",
              help="Every word must appear in the run's name, tags, notes, algorithm, model, status or #id.")
all_tags = sorted({t for r in rows for t in r.tags}, key=str.lower)
s2.multiselect("Tags", all_tags, key="runs.tags", help="Runs with all of these tags. Tag a run on its page.",
               placeholder="any tag" if all_tags else "no run has tags yet")
table_panel()

queued = sorted((r for r in rows if r.status == "queued"), key=lambda r: r.queue_position or 0)
if queued:
    st.subheader("Queue")
    st.caption("The engine takes queued runs from the top. Move a run to change the order.")
    for i, r in enumerate(queued):
        c1, c2, c3 = st.columns([8, 1, 1])
        c1.write(f"**{r.queue_position}.** #{r.id} {plain(r.name)} "
                 f"({ALGORITHM_LABELS.get(r.algorithm, r.algorithm)})")
        c2.button("↑", key=f"up_{r.id}", disabled=i == 0, help="Earlier in the queue",
                  on_click=move_in_queue, args=(store, r.id, -1))
        c3.button("↓", key=f"down_{r.id}", disabled=i == len(queued) - 1, help="Later in the queue",
                  on_click=move_in_queue, args=(store, r.id, 1))

st.subheader("Actions")
by_id = {r.id: r for r in rows}
run_id = st.selectbox("Run", list(by_id), key="runs_selected",
                      # no status in the option: a browser keeps the chosen option's old text when it changes
                      format_func=lambda i: f"#{i} {by_id[i].name}")
sel = by_id[run_id]
st.markdown(f"Status: {status_badge(sel.status)}"
            + (f" · error: {plain(sel.error.splitlines()[0])}" if sel.error else ""))


def _do(action, message: str) -> None:  # type: ignore[no-untyped-def]
    """Run a queue action and flash ``message``; a "{}" in it is filled with what the action returned."""
    try:
        result = action()
        flash(message.replace("{}", str(result)) if "{}" in message else message)
    except QueueError as e:
        flash(str(e), "error")


cols = st.columns(5)
if cols[0].button("Open", key="act_open", icon=":material/monitoring:", width="stretch"):
    open_run(run_id)
cols[1].button("Cancel", key="act_cancel", icon=":material/stop_circle:", width="stretch",
               disabled=sel.status not in ("queued", "running") or sel.cancel_requested,
               on_click=lambda: _do(lambda: request_cancel(store, run_id), f"Run {run_id}: {{}}."))
cols[2].button("Resume", key="act_resume", icon=":material/play_circle:", width="stretch",
               disabled=sel.status not in ("failed", "cancelled"),
               on_click=lambda: _do(lambda: resume_run(store, run_id), f"Run {run_id}: queued to resume from its "
                                                                       "last checkpoint."))
if cols[3].button("Clone into form", key="act_clone", icon=":material/content_copy:", width="stretch"):
    cfg = json.loads(get_run(store, run_id).config_json)
    cfg["name"] = f"{cfg.get('name') or sel.name} (clone)"
    st.session_state[CLONE_KEY] = {"config": cfg, "parent_id": run_id}
    st.switch_page("views/new_run.py")
with cols[4].popover("Delete", icon=":material/delete:", width="stretch", disabled=sel.status == "running"):
    st.write(f"Delete run #{run_id} **{plain(sel.name)}** with all its metrics, samples, checkpoints and events? "
             "This cannot be undone.")
    confirm = st.checkbox("Yes, delete it", key=f"del_confirm_{run_id}")
    st.button("Delete permanently", key="act_delete", type="primary", disabled=not confirm,
              on_click=lambda: _do(lambda: delete_run(store, run_id), f"Run {run_id} deleted."))
if sel.status == "running":
    st.caption("A running run cannot be deleted: cancel it first, then delete it once it has stopped.")
