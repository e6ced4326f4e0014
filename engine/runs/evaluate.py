"""Runner for "eval" jobs: the evaluation harness through the queue.

Results go to the evaluations table under the eval job's own run id (model = the evaluated model string;
evaluated_* = the base model id, the run and checkpoint step evaluated, the folder loaded; source "job"),
each benchmark as soon as it finishes. They carry step 1, the job's only step, so a resumed job's
ctx.start_step() (which drops rows after its checkpoint step, 0 here) clears a half-finished attempt.
The headline numbers also go to the job's metrics (key "eval/<benchmark>/<metric>") and the reward per
group to its group stats, so the run page can chart them like any run.
"""

from __future__ import annotations

import math

from engine.config import EvalConfig
from engine.evaluation.harness import BenchmarkResult, EvalSettings, evaluate_model, headline
from engine.evaluation.models_ref import resolve_model_ref
from engine.runs.context import RunContext


def execute(ctx: RunContext) -> None:
    cfg: EvalConfig = ctx.config
    ctx.start_step()
    model = resolve_model_ref(ctx.store, cfg.model)
    ctx.event(f"evaluating {cfg.model} ({model.path}) on {', '.join(cfg.benchmarks)}; limit {cfg.limit or 'all'}")
    summary: dict[str, float] = {}
    groups: list[dict] = []

    def store(res: BenchmarkResult) -> None:
        ctx.record_evaluation(res.benchmark, res.metrics, model=cfg.model, dataset_version=res.dataset_version,
                              step=1, checkpoint=model.checkpoint, evaluated=model.subject("job"),
                              announce=False)  # announced below, with its time
        summary.update({f"eval/{res.benchmark}/{k}": v for k, v in headline(res).items()})
        if res.benchmark == "reward":
            groups.extend({"group": k[: -len("/mean")], "reward_mean": v} for k, v in res.metrics.items()
                          if k.endswith("/mean") and k != "mean")
        shown = ", ".join(f"{k}={v:.4g}" for k, v in headline(res).items() if math.isfinite(v))
        ctx.event(f"{res.benchmark}: {shown} ({res.seconds:.0f} s)")

    def report(desc: str, done: int, total: int) -> None:
        ctx.event(f"{desc}: {done}/{total} scored")

    settings = EvalSettings(limit=cfg.limit, seed=cfg.seed, progress=False, report=report)
    results = evaluate_model(model.path, list(cfg.benchmarks), settings, on_result=store, should_stop=ctx.should_stop)
    if len(results) < len(cfg.benchmarks):
        return  # stopped between benchmarks: the run process marks it cancelled / handed back
    ctx.log_step(1, summary, groups)
