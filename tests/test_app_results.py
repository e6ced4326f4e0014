"""The Results page renders a report from stored evaluations only: per run and group, before -> after with
intervals and the paired test, a per-group chart with error bars, base and tuned answers side by side."""

from __future__ import annotations

from db.writes import record_checkpoint, record_evaluation
from engine.config import parse_config
from engine.evaluation import metrics as M
from engine.evaluation import uncertainty as U
from engine.runs.context import RunContext
from engine.submission import submit_run
from tests.app_helpers import chart_specs, open_page, texts

BASE = "embedded:smollm2-135m-instruct"


def _crows(prefers: int) -> dict:
    """40 CrowS pairs (age / race alternating), the model preferring sent_more on the first `prefers`."""
    pairs = [M.PairScore("race" if i % 2 else "age", "stereo", -1.0, -2.0 if i < prefers else 0.0) for i in range(40)]
    table = M.crows_pairs_table(pairs, [str(i) for i in range(40)])
    return {**M.compute(table), **U.result_block(table, n_boot=200)}


def _reward(values: list[float], tag: str) -> dict:
    groups = ["age", "race"] * (len(values) // 2)
    prompts = [f"Describe person {i}." for i in range(len(values))]
    table = M.reward_table(values, groups, prompts, refused=[tag == "base" and i < 6 for i in range(len(values))])
    answers = [{"group": g, "prompt": p, "answer": f"{tag} answer {i}", "reward": v}
               for i, (g, p, v) in enumerate(zip(groups, prompts, values))][:12]
    return {**M.compute(table), **U.result_block(table, n_boot=200), "answers": answers}


def _seed(store, tmp_path) -> int:
    cfg = parse_config({"algorithm": "gr_grpo", "name": "robust", "max_steps": 50})
    rid = submit_run(store, cfg)
    ctx = RunContext(store, rid, cfg, resume=False)
    for step, mean, age in ((0, 0.762, 0.70), (50, 0.842, 0.83)):
        ctx.record_evaluation("heldout_reward", {"reward/mean": mean, "reward/age": age, "reward/race": 0.9,
                                                 "reward/refusal/mean": 0.99}, model=cfg.model,
                              dataset_version="v", step=step)
    record_checkpoint(store, rid, 50, str(tmp_path))
    subject_base = {"evaluated_model": BASE, "model_path": "/m", "source": "cli"}
    subject_run = {"evaluated_model": BASE, "evaluated_run_id": rid, "evaluated_step": 50, "model_path": "/e",
                   "source": "cli"}
    record_evaluation(store, run_id=None, model=BASE, benchmark="crows_pairs", dataset_version="v",
                      metrics=_crows(30), **subject_base)
    record_evaluation(store, run_id=rid, model=f"run:{rid}", benchmark="crows_pairs", dataset_version="v",
                      metrics=_crows(10), step=50, **subject_run)
    record_evaluation(store, run_id=None, model=BASE, benchmark="reward", dataset_version="v",
                      metrics=_reward([0.5, 0.6] * 10, "base"), **subject_base)
    record_evaluation(store, run_id=rid, model=f"run:{rid}", benchmark="reward", dataset_version="v",
                      metrics=_reward([0.7, 0.8] * 10, "tuned"), step=50, **subject_run)
    return rid


def _table(at, first_metric: str):
    return next(d.value for d in at.dataframe if "change" in d.value.columns
                and d.value.iloc[0]["metric"] == first_metric)


def test_results_page_renders_before_after_per_group_from_stored_evaluations(store, tmp_path):
    rid = _seed(store, tmp_path)
    at = open_page("views/results.py")
    assert not at.exception, at.exception
    assert at.multiselect(key="results.runs").value == [rid]
    # the run's own held-out reward: step 0 -> step 50, worst group derived, the refusal term shown
    held = _table(at, "reward mean")
    top = held.iloc[0]
    assert (top["group"], top["before"], top["after"], top["change"]) == ("all", "0.762", "0.842", "+0.080")
    assert "refusal term" in list(held["metric"])
    worst = held[held["metric"] == "worst group"].iloc[0]
    assert (worst["before"], worst["after"]) == ("0.700", "0.830")
    # CrowS-Pairs: base 75 -> tuned 25 on the same 40 pairs, a paired interval and McNemar's test, per group too
    crows = _table(at, "stereotype_score")
    top = crows.iloc[0]
    assert top["before"].startswith("75.0 [") and top["after"].startswith("25.0 [")
    assert top["change"].startswith("-50.0 [") and top["✱"] == "✱"
    assert top["McNemar p"] == f"{2 * 0.5 ** 20:.3g}"  # 20 discordant pairs, all one way
    assert top["unbiased / better"] == "50 = unbiased"
    assert {"age", "race"} <= set(crows["group"])
    # the per-group chart: before and after bars with error bars
    spec = chart_specs(at)["CrowS-Pairs: stereotype_score per group, before and after, 95% intervals"]
    assert [len(t["x"]) for t in spec["data"]] == [3, 3]
    assert spec["data"][0]["name"].startswith("before") and spec["data"][1]["name"].startswith("after")
    assert all(e > 0 for e in spec["data"][0]["error_y"]["array"])
    # the held-out bias reward benchmark: mean, worst group, refusal rate (6 of 20 refusals -> none, McNemar)
    reward = _table(at, "mean")
    assert list(reward["metric"])[:3] == ["mean", "worst_group", "refusal_rate"]
    refusal = reward[(reward["group"] == "all") & (reward["metric"] == "refusal_rate")].iloc[0]
    assert refusal["before"].startswith("0.300 [") and refusal["after"] == "0.000 [0.000, 0.000]"
    assert refusal["McNemar p"] == f"{2 * 0.5 ** 6:.3g}" and refusal["unbiased / better"].startswith("lower")
    # up to 10 held-out prompts, base and tuned answers side by side
    shown = [t.value for t in at.text]
    assert "base answer 0" in shown and "tuned answer 0" in shown
    assert sum(1 for t in shown if t.startswith("tuned answer")) == 10
    assert "Describe person 0." in shown


def test_results_page_without_evaluations_says_what_to_do(store):
    submit_run(store, parse_config({"algorithm": "grpo", "name": "fresh"}))
    at = open_page("views/results.py")
    assert not at.exception
    assert "No run has stored evaluations yet" in texts(at)
