"""The reward benchmark keeps a fixed sample of its held-out answers (for the Results page's side-by-side view)."""

from __future__ import annotations

from types import SimpleNamespace

from engine.evaluation.harness import answer_sample


def _rows(n: int) -> list:
    return [SimpleNamespace(group=("age", "race", "religion")[i % 3], prompt=f"prompt {i}") for i in range(n)]


def test_the_same_items_keep_the_same_prompts_whatever_the_answers():
    rows = _rows(60)
    groups, prompts = [r.group for r in rows], [r.prompt for r in rows]
    base = answer_sample(groups, prompts, [f"base {i}" for i in range(60)], [0.5] * 60, n=12)
    tuned = answer_sample(groups, prompts, [f"tuned {i}" for i in range(60)], [0.9] * 59 + [float("nan")], n=12)
    assert len(base) == 12 and [a["prompt"] for a in base] == [a["prompt"] for a in tuned]
    assert {a["group"] for a in base} == {"age", "race", "religion"}  # balanced over groups
    assert sum(a["group"] == "age" for a in base) == 4
    by_prompt = {r.prompt: i for i, r in enumerate(rows)}
    assert all(a["answer"] == f"tuned {by_prompt[a['prompt']]}" for a in tuned)
    assert all(a["reward"] is None or 0 <= a["reward"] <= 1 for a in tuned)  # NaN stored as None (valid JSON)


def test_fewer_items_than_the_sample_keeps_them_all():
    rows = _rows(5)
    got = answer_sample([r.group for r in rows], [r.prompt for r in rows], ["x"] * 5, [0.1] * 5)
    assert [a["prompt"] for a in got] == [r.prompt for r in rows]


def test_a_runs_heldout_block_pairs_step_0_with_the_last_step():
    from app import eval_view
    from engine.evaluation.harness import heldout_result_block

    groups = ["age", "race"] * 20
    prompts = [f"p{i}" for i in range(40)]
    before = {"reward/mean": 0.5, "reward/age": 0.4, "reward/race": 0.6,
              **heldout_result_block([0.4, 0.6] * 20, groups, prompts, ["b"] * 40, n_boot=200)}
    after = {"reward/mean": 0.7, "reward/age": 0.7, "reward/race": 0.7,
             **heldout_result_block([0.7, 0.7] * 20, groups, prompts, ["a"] * 40, n_boot=200)}
    assert set(before["ci"]) == {"reward/mean", "reward/worst_group", "reward/age", "reward/race", "refusal_rate"}
    assert len(before["answers"]) == 24
    ev = lambda m: SimpleNamespace(benchmark="heldout_reward", metrics=m, seed=0)  # noqa: E731
    pair = eval_view.Pair("heldout_reward", ev(before), ev(after), "before", "after")
    rows, note = eval_view.pair_rows(pair)
    by = {(r["group"], r["metric"]): r for r in rows}
    assert by[("all", "reward mean")]["change"].startswith("+0.200 [")
    assert by[("all", "worst group")]["change"].startswith("+0.300 [") and by[("all", "worst group")]["✱"] == "✱"
    assert by[("age", "reward mean")]["change"].startswith("+0.300")
    assert "paired bootstrap" in note
    assert len(eval_view.pair_answers(pair)) == 10


def test_refusal_rate_with_interval_and_mcnemar_from_the_refusal_rule():
    from engine.evaluation import metrics as M
    from engine.evaluation import uncertainty as U
    from engine.evaluation.harness import heldout_result_block, refusals

    assert refusals(["I'm sorry, but I can't help with that.", "Nurses are people of every gender.",
                     "As an AI language model, I cannot answer."]) == [True, False, True]
    groups, keys = ["age", "race"] * 10, [f"p{i}" for i in range(20)]
    before = M.reward_table([0.5] * 20, groups, keys, refused=[i < 8 for i in range(20)])
    after = M.reward_table([0.5] * 20, groups, keys, refused=[False] * 20)
    assert M.compute(before)["refusal_rate"] == 0.4 and M.compute(before)["age/refusal_rate"] == 0.4
    change = U.paired_changes(before, after, n_boot=200)["refusal_rate"]
    assert change.diff == -0.4 and change.significant and change.p_mcnemar == 2 * 0.5 ** 8
    # an older result without refusal flags still pairs on the rest
    old = M.reward_table([0.4] * 20, groups, keys)
    assert "refusal_rate" not in U.paired_changes(old, after, n_boot=200)
    block = heldout_result_block([0.5] * 4, ["a", "b"] * 2, ["p", "q", "r", "s"],
                                 ["I'm sorry, but I can't help with that.", "fine", "fine", "fine"], n_boot=200)
    assert block["refusal_rate"] == 0.25 and "refusal_rate" in block["ci"]
