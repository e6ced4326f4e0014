"""Helpers for the training-run tests: tiny configs, in-process execution, and store reads."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


# Timings and memory differ between two runs of the same computation; everything else must match on resume.
NONDETERMINISTIC_PREFIXES = ("time/", "memory/", "tokens_per_s", "sample/tokens_per_s")


def grpo_config(model: str, **over: Any) -> dict[str, Any]:
    cfg = {"algorithm": "grpo", "model": model, "sampler": "hf", "max_steps": 2, "prompts_per_step": 2,
           "group_size": 2, "max_new_tokens": 6, "micro_batch_size": 4, "learning_rate": 1e-4,
           "rewards": [{"name": "length", "params": {"min_words": 2, "max_words": 4}}],
           "eval_prompts": 2, "eval_every": 0, "checkpoint_every": 0, "samples_logged": 3, "device": "cpu"}
    cfg.update(over)
    return cfg


def preference_config(model: str, algorithm: str, **over: Any) -> dict[str, Any]:
    cfg = {"algorithm": algorithm, "model": model, "max_steps": 2, "batch_size": 2, "max_length": 64,
           "micro_batch_size": 4, "learning_rate": 1e-4, "eval_prompts": 0, "eval_every": 0,
           "checkpoint_every": 0, "device": "cpu"}
    cfg.update(over)
    return cfg


def run_in_process(store, config: dict[str, Any], *, stop_after: int | None = None, run_id: int | None = None,
                   resume: bool = False) -> int:
    """Submit (or reuse) a run and execute its runner in this process, as the run process would.

    stop_after: request a graceful shutdown once that step is logged (the runner checkpoints and returns)."""
    import importlib

    from engine.config import parse_config
    from engine.runs import RUNNERS
    from engine.runs.context import RunContext
    from engine.submission import submit_run

    cfg = parse_config(config)
    if run_id is None:
        run_id = submit_run(store, cfg)
    ctx = RunContext(store, run_id, cfg, resume=resume, cancel_poll_s=0.0)
    if stop_after is not None:
        log_step = ctx.log_step

        def log_and_maybe_stop(step, *args, **kwargs):
            log_step(step, *args, **kwargs)
            if step == stop_after:
                ctx.request_shutdown()

        ctx.log_step = log_and_maybe_stop  # type: ignore[method-assign]
    importlib.import_module(RUNNERS[cfg.algorithm]).execute(ctx)
    return run_id


def metrics_by_step(store, run_id: int) -> dict[int, dict[str, float | None]]:
    from sqlalchemy import select

    from db.models import MetricPoint

    out: dict[int, dict[str, float | None]] = defaultdict(dict)
    with store.read() as s:
        for m in s.scalars(select(MetricPoint).where(MetricPoint.run_id == run_id)):
            assert m.key not in out[m.step], f"metric {m.key} written twice at step {m.step}"
            out[m.step][m.key] = m.value
    return dict(out)


def group_rows(store, run_id: int) -> dict[int, dict[str, Any]]:
    from sqlalchemy import select

    from db.models import GroupStat

    out: dict[int, dict[str, Any]] = defaultdict(dict)
    with store.read() as s:
        for g in s.scalars(select(GroupStat).where(GroupStat.run_id == run_id)):
            out[g.step][g.group] = {"weight": g.weight, "loss": g.loss, "reward_mean": g.reward_mean,
                                    "accuracy": g.accuracy, "count": g.count, "extra": g.extra}
    return dict(out)


def evaluations(store, run_id: int) -> list[tuple[str, int | None, dict[str, Any]]]:
    from sqlalchemy import select

    from db.models import Evaluation

    with store.read() as s:
        rows = s.scalars(select(Evaluation).where(Evaluation.run_id == run_id).order_by(Evaluation.id))
        return [(e.benchmark, e.step, dict(e.metrics)) for e in rows]


def sample_count(store, run_id: int) -> dict[int, int]:
    from sqlalchemy import select

    from db.models import Sample

    out: dict[int, int] = defaultdict(int)
    with store.read() as s:
        for x in s.scalars(select(Sample).where(Sample.run_id == run_id)):
            out[x.step] += 1
    return dict(out)


def deterministic(metrics: dict[str, float | None]) -> dict[str, float | None]:
    return {k: v for k, v in metrics.items() if not k.startswith(NONDETERMINISTIC_PREFIXES)}
