"""The evaluation launcher (Compare > Evaluations > New evaluation): it queues an `eval` job through the queue,
shows its progress while the engine works and its results when they are stored."""

from __future__ import annotations

import json

from sqlalchemy import update

from db.models import Run, RunStatus
from db.queue import add_event, list_runs
from db.writes import record_checkpoint, record_evaluation
from engine.config import parse_config
from engine.submission import submit_run
from tests.app_helpers import open_page, shown_text, texts


def _tuned(store, tmp_path) -> int:
    rid = submit_run(store, parse_config({"algorithm": "grpo", "name": "tuned"}))
    with store.write() as s:
        s.execute(update(Run).where(Run.id == rid).values(status="completed"))
    record_checkpoint(store, rid, 3, str(tmp_path))
    record_checkpoint(store, rid, 7, str(tmp_path))
    return rid


def test_launcher_queues_an_eval_job_of_a_run_checkpoint(store, tmp_path):
    rid = _tuned(store, tmp_path)
    at = open_page("views/compare.py")
    assert not at.exception, at.exception
    at.radio(key="eval.new.kind").set_value("A run's checkpoint").run()
    assert at.selectbox(key="eval.new.run").value == rid
    at.multiselect(key="eval.new.benchmarks").set_value(["crows_pairs", "reward"]).run()
    at.number_input(key="eval.new.limit").set_value(40).run()
    at.button(key="eval.new.submit").click().run()
    assert not at.exception, at.exception
    (job,) = [r for r in list_runs(store) if r.algorithm == "eval"]
    cfg = json.loads(job.config_json)
    assert (cfg["model"], cfg["benchmarks"], cfg["limit"]) == (f"run:{rid}", ["reward", "crows_pairs"], 40)
    assert job.status == RunStatus.queued
    assert "0 of 2 benchmark(s) done · waiting for the engine" in [p.proto.text for p in at.get("progress")]

    # The engine takes it and stores the first benchmark: the page shows the progress and that result.
    with store.write() as s:
        s.execute(update(Run).where(Run.id == job.id).values(status="running"))
    record_evaluation(store, run_id=job.id, model=f"run:{rid}", benchmark="reward", dataset_version="v",
                      metrics={"mean": 0.81, "worst_group": 0.7, "age/mean": 0.7, "race/mean": 0.9,
                               "ci": {"mean": [0.78, 0.84]}}, step=1, evaluated_model="embedded:smollm2-135m-instruct",
                      evaluated_run_id=rid, evaluated_step=7, model_path="/x", source="job")
    with store.write() as s:
        add_event(s, job.id, "crows_pairs: 16/80 scored")
    at = open_page("views/compare.py")
    assert "1 of 2 benchmark(s) done · running · crows_pairs: 16/80 scored" in [
        shown_text(p.proto.text) for p in at.get("progress")]  # the event as plain text (markdown escaped)
    results = next(d.value for d in at.dataframe if f"eval job #{job.id}: run #{rid} tuned step 7" in d.value.columns)
    row = results[(results["group"] == "all") & (results["metric"] == "mean")].iloc[0]
    assert row[f"eval job #{job.id}: run #{rid} tuned step 7"] == "0.810 [0.780, 0.840]"


def test_launcher_queues_a_base_model_and_refuses_no_benchmark(store):
    at = open_page("views/compare.py")
    assert at.radio(key="eval.new.kind").value == "A base model"  # no run has a checkpoint
    at.multiselect(key="eval.new.benchmarks").set_value([]).run()
    at.button(key="eval.new.submit").click().run()
    assert not [r for r in list_runs(store) if r.algorithm == "eval"]
    assert "choose at least one benchmark" in texts(at)
    at.multiselect(key="eval.new.benchmarks").set_value(["perplexity"]).run()
    at.button(key="eval.new.submit").click().run()
    (job,) = [r for r in list_runs(store) if r.algorithm == "eval"]
    cfg = json.loads(job.config_json)
    assert (cfg["model"], cfg["benchmarks"]) == ("embedded:smollm2-135m-instruct", ["perplexity"])


def test_a_typed_model_name_is_shown_as_typed(store):
    """A hub id may hold markdown-significant characters: the queued message shows them, not their markup."""
    at = open_page("views/compare.py")
    at.text_input(key="eval.new.other").set_value("org/__bold__").run()
    at.button(key="eval.new.submit").click().run()
    assert not at.exception, at.exception
    (job,) = [r for r in list_runs(store) if r.algorithm == "eval"]
    assert json.loads(job.config_json)["model"] == "org/__bold__"
    assert any("the engine scores org/__bold__ on" in shown_text(m.value) for m in at.success)


def test_launcher_queues_an_earlier_checkpoint_as_run_id_at_step(store, tmp_path):
    rid = _tuned(store, tmp_path)
    at = open_page("views/compare.py")
    at.radio(key="eval.new.kind").set_value("A run's checkpoint").run()
    assert at.selectbox(key=f"eval.new.step.{rid}").value == 7  # the latest by default
    at.selectbox(key=f"eval.new.step.{rid}").set_value(3).run()
    at.multiselect(key="eval.new.benchmarks").set_value(["perplexity"]).run()
    at.button(key="eval.new.submit").click().run()
    assert not at.exception, at.exception
    (job,) = [r for r in list_runs(store) if r.algorithm == "eval"]
    assert json.loads(job.config_json)["model"] == f"run:{rid}@3"


def test_the_counterfactual_swaps_are_offered_but_not_picked_by_default(store):
    """As `studio eval`: the descriptor-swap benchmark is opt-in (it generates about 3x the reward benchmark's
    answers), and once picked the eval job is queued with it."""
    at = open_page("views/compare.py")
    box = at.multiselect(key="eval.new.benchmarks")
    assert box.options[-1] == "Counterfactual descriptor swaps"  # (AppTest lists the shown labels)
    assert "counterfactual" not in box.value and set(box.value) == {"reward", "crows_pairs", "stereoset", "bbq",
                                                                    "perplexity"}
    box.set_value(["counterfactual"]).run()
    at.button(key="eval.new.submit").click().run()
    assert not at.exception, at.exception
    (job,) = [r for r in list_runs(store) if r.algorithm == "eval"]
    assert json.loads(job.config_json)["benchmarks"] == ["counterfactual"]
