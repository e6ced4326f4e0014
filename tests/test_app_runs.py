"""Runs page: table, empty state, queue order, and the actions' effect on the store."""

from __future__ import annotations

from db.models import RunStatus
from db.queue import get_run, queue_order
from engine.config import parse_config
from tests.app_helpers import open_page, seed_synthetic, texts
from engine.submission import submit_run


def _queue(store, n):
    return [submit_run(store, parse_config({"algorithm": "synthetic", "max_steps": 10, "name": f"r{i}"}))
            for i in range(n)]


def test_empty_state_tells_user_what_to_do(store):
    at = open_page()
    assert not at.exception
    assert "No runs yet" in texts(at)


def test_table_lists_runs_with_progress_and_queue_position(store):
    rid = seed_synthetic(store, steps=20)
    other = _queue(store, 1)[0]
    at = open_page()
    assert not at.exception
    df = at.dataframe[0].value
    row = df[df["ID"] == rid].iloc[0]
    assert row["Step"] == "20/50" and abs(row["Progress"] - 0.4) < 1e-9
    assert row["of"] == "val. loss" and row["Worst group"] == "0.100"
    queued = df[df["ID"] == other].iloc[0]
    assert queued["Status"] == "queued (#2)"
    # Nothing written yet reads as an empty cell, never "None" or NaN.
    assert [queued[c] for c in ("Elapsed", "ETA", "Reward", "Worst group", "of")] == ["", "", "", "", ""]
    assert "None" not in df.astype(str).to_string()
    assert "No engine is running" in texts(at)  # queued runs and no worker: say so


def test_cancel_and_resume_change_the_store(store):
    a, b = _queue(store, 2)
    at = open_page()
    at.selectbox(key="runs_selected").set_value(a).run()
    at.button(key="act_cancel").click().run()
    assert get_run(store, a).status == RunStatus.cancelled
    assert f"Run {a}: cancelled." in texts(at)  # a queued run is cancelled at once, and the message says so
    at.selectbox(key="runs_selected").set_value(a).run()
    assert not at.button(key="act_resume").disabled
    at.button(key="act_resume").click().run()
    assert get_run(store, a).status == RunStatus.queued
    assert [r.id for r in queue_order(store)] == [b, a]


def test_queue_reorder(store):
    a, b, c = _queue(store, 3)
    at = open_page()
    at.button(key=f"up_{c}").click().run()
    assert [r.id for r in queue_order(store)] == [a, c, b]
    assert at.button(key=f"up_{a}").disabled


def test_delete_needs_confirmation_and_is_refused_while_running(store):
    from sqlalchemy import update

    from db.models import Run

    a, b = _queue(store, 2)
    at = open_page()
    at.selectbox(key="runs_selected").set_value(a).run()
    assert at.button(key="act_delete").disabled  # not before confirming
    at.checkbox(key=f"del_confirm_{a}").check().run()
    at.button(key="act_delete").click().run()
    assert all(r.id != a for r in queue_order(store))
    assert f"Run {a} deleted" in texts(at)

    with store.write() as s:
        s.execute(update(Run).where(Run.id == b).values(status=RunStatus.running))
    at = open_page()
    at.selectbox(key="runs_selected").set_value(b).run()
    assert "cannot be deleted" in texts(at)
    assert get_run(store, b).status == RunStatus.running


def test_clone_opens_prefilled_form(store):
    (a,) = _queue(store, 1)
    at = open_page()
    at.selectbox(key="runs_selected").set_value(a).run()
    at.button(key="act_clone").click().run()
    assert not at.exception
    assert at.selectbox(key="new.algorithm").value == "synthetic"
    assert at.text_input(key="cfg.synthetic.name").value == "r0 (clone)"
    assert at.number_input(key="cfg.synthetic.max_steps").value == 10
    at.button(key="new.submit").click().run()
    runs = queue_order(store)
    assert runs[-1].name == "r0 (clone)" and runs[-1].parent_id == a


def test_tags_and_notes_are_saved_on_the_run_page_and_searched_on_the_runs_page(store):
    """Issue 18: run tags and notes, and a search over runs."""
    a, b, c = _queue(store, 3)
    at = open_page("views/run.py")
    at.selectbox(key="run.select").set_value(b).run()
    at.text_input(key=f"run.tags.{b}").set_value("baseline, cpu , Baseline").run()
    at.text_area(key=f"run.notes.{b}").set_value("the one with the lower learning rate").run()
    at.button(key="run.save_notes").click().run()
    assert not at.exception
    assert get_run(store, b).tags == ["baseline", "cpu"] and get_run(store, b).notes.startswith("the one")
    at.text_input(key=f"run.tags.{b}").set_value(", ".join(f"t{i}" for i in range(20))).run()
    at.button(key="run.save_notes").click().run()
    assert "at most 12" in texts(at) and get_run(store, b).tags == ["baseline", "cpu"]  # refused, kept

    at = open_page()
    df = at.dataframe[0].value
    assert len(df) == 3 and df[df["ID"] == b].iloc[0]["Name"] == "r1 · baseline, cpu"
    at.text_input(key="runs.search").set_value("LOWER learning").run()
    assert list(at.dataframe[0].value["ID"]) == [b]  # found by its notes
    at.text_input(key="runs.search").set_value("").run()
    at.multiselect(key="runs.tags").set_value(["cpu"]).run()
    assert list(at.dataframe[0].value["ID"]) == [b]
    at.text_input(key="runs.search").set_value(f"#{a}").run()
    assert "No run matches the search" in texts(at)
    at.multiselect(key="runs.tags").set_value([]).run()
    assert list(at.dataframe[0].value["ID"]) == [a]
