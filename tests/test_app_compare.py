"""Compare page: queue a comparison, see both models' answers side by side per group, overlay, evaluations."""

from __future__ import annotations

import json

from db.queue import list_runs
from db.writes import record_checkpoint, record_evaluation
from tests.app_helpers import chart_specs, open_page, seed_comparison, seed_synthetic, shown_text, texts


def test_empty_state(store):
    at = open_page("views/compare.py")
    assert not at.exception
    assert "No comparisons yet" in texts(at)


def test_side_by_side_columns_and_group_summary(store, tmp_path):
    trained = seed_synthetic(store, steps=5)  # run:1, the comparison's model B, with a checkpoint at step 5
    record_checkpoint(store, trained, 5, str(tmp_path))
    cid = seed_comparison(store)
    at = open_page("views/compare.py")
    assert not at.exception
    assert at.selectbox(key="cmp.job").value == cid
    summary = next(d.value for d in at.dataframe if "B - A" in d.value.columns)
    # per group, then all groups and each model's worst group (issue 18 item 7)
    assert list(summary["group"]) == ["gender", "race", "all groups", "worst group (A: gender, B: gender)"]
    assert list(summary["prompts"]) == ["2", "1", "3", ""]  # no "None" in the worst-group row
    assert all(abs(x - 0.5) < 1e-9 for x in summary["B - A"])
    assert list(summary["B scored higher"]) == ["2 of 2", "1 of 1", "3 of 3", ""]  # counts say of how many
    assert any("Only one prompt in 1 group(s) (race)" in w.value for w in at.warning)
    shown = [t.value for t in at.text]
    assert {"answer-a-0", "answer-b-0", "answer-a-1", "answer-b-1", "answer-a-2", "answer-b-2"} <= set(shown)
    captions = [shown_text(c.value) for c in at.caption]  # model names arrive escaped: compare what is shown
    assert any(c.startswith("A: embedded:smollm2-135m-instruct") and "0.25" in c for c in captions)
    # a run reference reads as the run and its checkpoint step, not "run:1"
    assert any(c.startswith("B: run #1 synth (step 5)") and "+0.500" in c for c in captions)
    bars = chart_specs(at)["Mean bias reward per group (higher = less biased)"]
    assert [t["name"] for t in bars["data"]] == ["A: embedded:smollm2-135m-instruct", "B: run #1 synth (step 5)"]
    at.multiselect(key=f"cmp.groups.{cid}").set_value(["race"]).run()
    assert "answer-a-0" not in [t.value for t in at.text]


def test_queue_a_comparison_against_a_trained_run(store, tmp_path):
    from sqlalchemy import update

    from db.models import Run
    from engine.submission import submit_run
    from engine.config import parse_config

    tuned = submit_run(store, parse_config({"algorithm": "grpo", "name": "tuned"}))
    with store.write() as s:
        s.execute(update(Run).where(Run.id == tuned).values(status="completed"))
    record_checkpoint(store, tuned, 50, str(tmp_path))
    at = open_page("views/compare.py")
    # The default B side is the newest tuned run's checkpoint, A the embedded base model.
    assert at.radio(key="cfg.compare.model_b.kind").value == "A run's checkpoint"
    assert at.selectbox(key="cfg.compare.model_b.text").value == f"run:{tuned}"
    at.number_input(key="cfg.compare.num_prompts").set_value(6).run()
    at.button(key="cmp.submit").click().run()
    assert not at.exception
    job = next(r for r in list_runs(store) if r.algorithm == "compare")
    cfg = json.loads(job.config_json)
    assert (cfg["model_a"], cfg["model_b"], cfg["num_prompts"]) == ("embedded:smollm2-135m-instruct", f"run:{tuned}", 6)
    assert "queued" in texts(at)


def test_overlay_and_evaluations(store):
    a = seed_synthetic(store, steps=5)
    b = seed_synthetic(store, steps=8)
    record_evaluation(store, run_id=None, model="embedded:smollm2-135m-instruct", benchmark="bbq",
                      dataset_version="v1", metrics={"accuracy": 0.5, "bias_score": 0.2})
    record_evaluation(store, run_id=a, model="embedded:smollm2-135m-instruct", checkpoint="run:1", benchmark="bbq",
                      dataset_version="v1", metrics={"accuracy": 0.6, "bias_score": 0.1})
    at = open_page("views/compare.py")
    assert set(at.multiselect(key="cmp.overlay_runs").value) == {a, b}
    at.selectbox(key="cmp.overlay_key").set_value("train/loss").run()
    spec = chart_specs(at)["training loss across runs"]  # the friendly name of train/loss
    assert sorted(len(t["x"]) for t in spec["data"]) == [5, 8]
    at.toggle(key="cmp.overlay_log").set_value(True).run()
    at.slider(key="cmp.overlay_smoothing").set_value(0.5).run()
    spec = chart_specs(at)["training loss across runs"]
    assert spec["layout"]["yaxis"]["type"] == "log" and any(t["name"].endswith("(raw)") for t in spec["data"])
    pivot = next(d.value for d in at.dataframe if "unbiased / better" in d.value.columns)
    row = pivot[pivot["metric"] == "bias_score"].iloc[0]
    # an old row of a run's checkpoint and one of the base model: a column each, labelled by what they evaluated
    assert row[f"studio eval: run #{a} synth (latest checkpoint)"] == "0.100"
    assert row["studio eval: embedded:smollm2-135m-instruct"] == "0.200"


def test_evaluation_intervals_and_marked_paired_changes(store):
    from engine.evaluation import metrics as M
    from engine.evaluation import uncertainty as U

    keys = [str(i) for i in range(40)]
    # Same 40 pairs: the base model prefers sent_more on 30 of them, the tuned one on 10 (all 20 losses paired).
    base = [M.PairScore("race" if i % 2 else "gender", "stereo", -1.0, -2.0 if i < 30 else 0.0) for i in range(40)]
    tuned = [M.PairScore(p.bias_type, p.direction, -1.0, -2.0 if i < 10 else 0.0) for i, p in enumerate(base)]
    for model, pairs in (("base", base), ("tuned", tuned)):
        table = M.crows_pairs_table(pairs, keys)
        record_evaluation(store, run_id=None, model=model, benchmark="crows_pairs", dataset_version="v1",
                          metrics={**M.compute(table), **U.result_block(table, n_boot=200)})
    at = open_page("views/compare.py")
    assert not at.exception
    specs = chart_specs(at)
    bars = specs["stereotype_score with 95% intervals"]["data"]
    assert [len(t["x"]) for t in bars] == [3, 3]  # all, gender, race for both results
    assert bars[0]["y"][0] == 75.0 and bars[1]["y"][0] == 25.0
    assert all(e > 0 for e in bars[0]["error_y"]["array"])  # the intervals are drawn
    change = next(v for k, v in specs.items() if k.startswith("Change in stereotype_score"))["data"][0]
    assert change["y"][0] == -50.0 and change["text"][0] == "✱"
    rows = next(d.value for d in at.dataframe if "McNemar p" in d.value.columns)
    top = rows.iloc[0]
    assert top["metric"] == "stereotype_score" and top["marked"] == "✱" and top["high"] < 0
    assert abs(top["McNemar p"] - 2 * 0.5 ** 20) < 1e-9  # 20 discordant pairs, all one way
    assert "items" not in next(d.value for d in at.dataframe if "dataset" in d.value.columns).columns


def test_comparison_form_puts_model_a_left_of_model_b(store):
    at = open_page("views/compare.py")
    radios = [r.label for r in at.radio]
    assert radios.index("Model A") < radios.index("Model B")
    from app.forms import _fields, _rows

    rows = [[f["name"] for f in r] for r in _rows([f for f in _fields("compare") if not f["advanced"]])]
    assert ["model_a", "model_b"] in rows  # one row: A on the left, B on the right


def test_a_running_comparison_says_what_the_engine_is_doing(store):
    from db.queue import add_event, claim_next_run
    from engine.config import parse_config
    from engine.submission import submit_run

    cid = submit_run(store, parse_config({"algorithm": "compare", "name": "slow"}))
    claim_next_run(store, "w")
    with store.write() as s:
        add_event(s, cid, "model A (embedded:smollm2-135m-instruct): answering 24 prompts")
    at = open_page("views/compare.py")
    assert not at.exception
    info = " ".join(i.value for i in at.info)
    assert "Generating and scoring answers" in info and "answering 24 prompts" in info.replace("\\", "")


def test_a_comparison_jobs_run_page_calls_its_group_rows_differences(store):
    from tests.app_helpers import seed_comparison as seed
    from db.writes import write_step

    cid = seed(store)
    write_step(store, cid, 1, {"compare/reward_a": 0.25, "compare/reward_b": 0.75, "compare/diff": 0.5},
               [{"group": "gender", "reward_mean": 0.5, "count": 2}])
    at = open_page("views/run.py")
    at.selectbox(key="run.select").set_value(cid).run()
    specs = chart_specs(at)
    assert "Reward difference per group (B - A)" in specs and "Reward per group (mean ± std)" not in specs
