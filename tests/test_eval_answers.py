"""The reward benchmark keeps a fixed sample of its held-out answers (for the Results page's side-by-side view)."""

from __future__ import annotations

from types import SimpleNamespace

from engine.evaluation.harness import answer_sample


def _rows(n: int) -> list:
    return [SimpleNamespace(group=("age", "race", "religion")[i % 3], prompt=f"prompt {i}") for i in range(n)]


def test_the_same_items_keep_the_same_prompts_whatever_the_answers():
    rows = _rows(60)
    base = answer_sample(rows, [f"base {i}" for i in range(60)], [0.5] * 60, n=12)
    tuned = answer_sample(rows, [f"tuned {i}" for i in range(60)], [0.9] * 59 + [float("nan")], n=12)
    assert len(base) == 12 and [a["prompt"] for a in base] == [a["prompt"] for a in tuned]
    assert {a["group"] for a in base} == {"age", "race", "religion"}  # balanced over groups
    assert sum(a["group"] == "age" for a in base) == 4
    by_prompt = {r.prompt: i for i, r in enumerate(rows)}
    assert all(a["answer"] == f"tuned {by_prompt[a['prompt']]}" for a in tuned)
    assert all(a["reward"] is None or 0 <= a["reward"] <= 1 for a in tuned)  # NaN stored as None (valid JSON)


def test_fewer_items_than_the_sample_keeps_them_all():
    rows = _rows(5)
    assert [a["prompt"] for a in answer_sample(rows, ["x"] * 5, [0.1] * 5)] == [r.prompt for r in rows]
