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
    assert set(before["ci"]) == {"reward/mean", "reward/worst_group", "reward/age", "reward/race"}
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
