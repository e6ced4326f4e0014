"""Compare jobs: both models answer the same held-out prompts, every answer is scored, rows and summary stored."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select

from db.models import ComparisonOutput, GroupStat, MetricPoint
from engine.config import CompareConfig
from engine.runs.compare import CompareRow, run_comparison, summarise
from engine.runs.context import RunContext
from engine.submission import submit_run


class _P:
    def __init__(self, prompt: str, group: str):
        self.prompt, self.group = prompt, group


def test_summary_diffs_by_hand():
    rows = [CompareRow(0, "g1", "p0", "a", "A", "x", 0.2), CompareRow(0, "g1", "p0", "b", "B", "y", 0.6),
            CompareRow(1, "g2", "p1", "a", "A", "x", 0.5), CompareRow(1, "g2", "p1", "b", "B", "y", float("nan")),
            CompareRow(2, "g2", "p2", "a", "A", "x", 0.3), CompareRow(2, "g2", "p2", "b", "B", "y", 0.1)]
    metrics, groups = summarise(rows)
    assert metrics["compare/reward_a"] == pytest.approx(1.0 / 3)
    assert metrics["compare/reward_b"] == pytest.approx(0.35)  # the NaN answer is left out
    assert metrics["compare/diff"] == pytest.approx(0.35 - 1.0 / 3)
    g1, g2 = groups
    assert g1["group"] == "g1" and g1["reward_mean"] == pytest.approx(0.4) and g1["count"] == 1
    assert g2["reward_a"] == pytest.approx(0.4) and g2["reward_b"] == pytest.approx(0.1) and g2["count"] == 2


def test_run_comparison_pairs_each_side_with_its_model():
    cfg = CompareConfig(model_a="embedded:smollm2-135m-instruct", model_b="run:4")
    prompts = [_P("hello", "g1"), _P("world!", "g2")]
    rows = run_comparison(cfg, prompts, {"a": "/path/a", "b": "/path/b"},
                          generate=lambda path, ps, c: [f"{path}:{p}" for p in ps],
                          score=lambda ps, cs: [float(len(c)) for c in cs])
    assert [(r.side, r.model, r.completion, r.reward) for r in rows] == [
        ("a", cfg.model_a, "/path/a:hello", 13.0), ("a", cfg.model_a, "/path/a:world!", 14.0),
        ("b", "run:4", "/path/b:hello", 13.0), ("b", "run:4", "/path/b:world!", 14.0)]
    assert run_comparison(cfg, prompts, {}, generate=None, score=None, should_stop=lambda: True) is None
    said: list[str] = []  # the run's event log hears each phase: minutes of generation are not silent
    run_comparison(cfg, prompts, {"a": "/path/a", "b": "/path/b"}, generate=lambda path, ps, c: list(ps),
                   score=lambda ps, cs: [0.0] * len(cs), on_phase=said.append)
    assert said == ["model A (embedded:smollm2-135m-instruct): answering 2 prompts",
                    f"model A (embedded:smollm2-135m-instruct): scoring its answers with {cfg.reward}",
                    "model B (run:4): answering 2 prompts", f"model B (run:4): scoring its answers with {cfg.reward}"]


def test_compare_job_end_to_end_with_tiny_models(store, tiny_model_dir):
    cfg = CompareConfig(model_a=str(tiny_model_dir), model_b=str(tiny_model_dir), num_prompts=4, max_new_tokens=6,
                        reward="length")
    run_id = submit_run(store, cfg)
    from engine.runs.compare import execute

    execute(RunContext(store, run_id, cfg, resume=False))
    with store.read() as s:
        rows = list(s.scalars(select(ComparisonOutput).where(ComparisonOutput.run_id == run_id)))
        metrics = {m.key: m.value for m in s.scalars(select(MetricPoint).where(MetricPoint.run_id == run_id))}
        groups = list(s.scalars(select(GroupStat).where(GroupStat.run_id == run_id)))
    assert len(rows) == 8 and {r.side for r in rows} == {"a", "b"}
    assert len({r.group for r in rows}) >= 2  # held-out prompts are spread over groups
    by_key = {(r.prompt_index, r.side): r for r in rows}
    for i in range(4):
        # Same model, greedy decoding: identical answers and rewards on both sides.
        assert by_key[(i, "a")].completion == by_key[(i, "b")].completion
        assert by_key[(i, "a")].reward == by_key[(i, "b")].reward
    assert metrics["compare/diff"] == pytest.approx(0.0)
    assert math.isfinite(metrics["compare/reward_a"])
    assert groups and all(g.reward_mean == pytest.approx(0.0) for g in groups)
