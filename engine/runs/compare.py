"""Runner for "compare" jobs: two models answer the same held-out prompts; the reward scores every answer.

One model is in memory at a time (load A, generate, free, load B), so comparing two 135M models needs no more
memory than training one. Rows go to the comparison table (one per prompt and side); the step's metrics are
the mean reward of each side and their difference, diff = reward_b - reward_a (model_b is usually the tuned
one, so a positive diff means it is rated less biased), and one group row per demographic group with the same
three numbers (reward_mean holds the group's diff).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from db import metric_keys as mk
from engine.config import CompareConfig
from engine.runs.context import RunContext

NAN = float("nan")


@dataclass(frozen=True)
class CompareRow:
    prompt_index: int
    group: str
    prompt: str
    side: str  # "a" | "b"
    model: str
    completion: str
    reward: float


def _mean(xs: Sequence[float]) -> float:
    vals = [x for x in xs if math.isfinite(x)]
    return sum(vals) / len(vals) if vals else NAN


def summarise(rows: Sequence[CompareRow]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(step metrics, per-group rows) from the scored rows of both sides."""
    def side_mean(items: Sequence[CompareRow], side: str) -> float:
        return _mean([r.reward for r in items if r.side == side])

    a, b = side_mean(rows, "a"), side_mean(rows, "b")
    metrics = {mk.COMPARE_REWARD_A: a, mk.COMPARE_REWARD_B: b, mk.COMPARE_DIFF: b - a}
    groups = []
    for g in sorted({r.group for r in rows}):
        members = [r for r in rows if r.group == g]
        ga, gb = side_mean(members, "a"), side_mean(members, "b")
        groups.append({"group": g, mk.GROUP_REWARD_MEAN: gb - ga, mk.GROUP_COUNT: len(members) // 2, "reward_a": ga,
                       "reward_b": gb})
    return metrics, groups


def generate_answers(model_path: str, prompts: list[str], cfg: CompareConfig) -> list[str]:
    """Answers from one model (greedy or seeded sampling), freeing it before returning."""
    from engine.models.loading import load_policy
    from engine.sampling.base import make_sampler

    policy = load_policy(model_path, need_reference=False)
    policy.model.eval()
    sampler = make_sampler("hf", policy.model_path, policy)
    texts: list[str] = []
    try:
        for start in range(0, len(prompts), 16):
            chunk = prompts[start: start + 16]
            batch = sampler.generate(chunk, n=1, max_new_tokens=cfg.max_new_tokens, greedy=cfg.greedy,
                                     temperature=1.0, seed=cfg.seed + start)
            texts.extend(batch.texts)
    finally:
        sampler.close()
        del sampler, policy
        gc.collect()
    return texts


def run_comparison(cfg: CompareConfig, prompts: Sequence[Any], model_paths: dict[str, str],
                   generate: Callable[[str, list[str], CompareConfig], list[str]],
                   score: Callable[[list[str], list[str]], list[float]],
                   should_stop: Callable[[], bool] = lambda: False,
                   on_phase: Callable[[str], None] = lambda message: None) -> list[CompareRow] | None:
    """Generate with both models and score; None when stopped between the two models. ``on_phase`` hears what
    is being done (the run's event log: generation takes minutes on a CPU)."""
    texts = [p.prompt for p in prompts]
    rows: list[CompareRow] = []
    for side, label in (("a", cfg.model_a), ("b", cfg.model_b)):
        if should_stop():
            return None
        on_phase(f"model {side.upper()} ({label}): answering {len(texts)} prompts")
        answers = generate(model_paths[side], texts, cfg)
        if len(answers) != len(texts):
            raise RuntimeError(f"model {label} returned {len(answers)} answers for {len(texts)} prompts")
        on_phase(f"model {side.upper()} ({label}): scoring its answers with {cfg.reward}")
        rewards = score(texts, answers)
        rows += [CompareRow(i, p.group, p.prompt, side, label, ans, float(r))
                 for i, (p, ans, r) in enumerate(zip(prompts, answers, rewards))]
    return rows


def execute(ctx: RunContext) -> None:
    from engine.evaluation.harness import held_out_prompts
    from engine.evaluation.models_ref import resolve_model_ref
    from engine.rewards.base import build_reward

    cfg: CompareConfig = ctx.config
    ctx.start_step()
    prompts = held_out_prompts(cfg.dataset, cfg.num_prompts, cfg.seed)
    if not prompts:
        raise ValueError(f"dataset {cfg.dataset!r} has no held-out prompts: choose another prompt set")
    refs = {"a": resolve_model_ref(ctx.store, cfg.model_a), "b": resolve_model_ref(ctx.store, cfg.model_b)}
    paths = {side: ref.path for side, ref in refs.items()}
    shown = {side: ref.label + (f" (checkpoint of step {ref.step})" if ref.step is not None else "")
             for side, ref in refs.items()}
    ctx.event(f"comparing A: {shown['a']} and B: {shown['b']} on {len(prompts)} prompts of {cfg.dataset}")
    from engine.models.loading import resolve_device

    reward = build_reward([{"name": cfg.reward}], device=resolve_device("auto"))
    try:
        rows = run_comparison(cfg, prompts, paths, generate_answers, lambda p, c: reward(p, c).total,
                              ctx.should_stop, on_phase=ctx.event)
    finally:
        reward.close()
    if rows is None:
        return
    ctx.write_comparison([r.__dict__ for r in rows])
    metrics, groups = summarise(rows)
    ctx.log_step(1, metrics, groups=groups)
