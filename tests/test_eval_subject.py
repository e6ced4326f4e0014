"""Every evaluation path records what it evaluated (migration 0004): `studio eval` of a base model and of a run's
checkpoint, and a queued eval job."""

from __future__ import annotations

import torch
from sqlalchemy import select

from db.models import Evaluation
from db.writes import record_checkpoint
from engine.config import EvalConfig, GRPOConfig
from engine.evaluation.harness import evaluate_cli
from engine.runs.context import RunContext
from engine.submission import submit_run


def _rows(store):
    with store.read() as s:
        return list(s.scalars(select(Evaluation).order_by(Evaluation.id)))


def test_cli_and_job_evaluations_record_model_run_step_and_path(store, tmp_path, tiny_model_dir):
    from engine.models.checkpoint import save_checkpoint
    from engine.models.loading import load_policy
    from engine.runs.evaluate import execute

    base = str(tiny_model_dir)
    evaluate_cli(store, base, ["perplexity"], limit=2, progress=False, n_boot=0)
    run_id = submit_run(store, GRPOConfig(model=base, name="tuned"))
    policy = load_policy(base, need_reference=False, device="cpu")
    with torch.no_grad():
        policy.model.model.embed_tokens.weight.mul_(0.5)
    record_checkpoint(store, run_id, 7, str(save_checkpoint(tmp_path / "ckpt", policy, step=7, save_rng=False)))
    evaluate_cli(store, f"run:{run_id}", ["perplexity"], limit=2, progress=False, n_boot=0)
    cfg = EvalConfig(model=f"run:{run_id}", benchmarks=["perplexity"], limit=2)
    job = submit_run(store, cfg)
    execute(RunContext(store, job, cfg, resume=False))
    cli_base, cli_run, by_job = _rows(store)
    assert (cli_base.source, cli_base.evaluated_model, cli_base.evaluated_run_id, cli_base.evaluated_step,
            cli_base.model_path, cli_base.run_id) == ("cli", base, None, None, base, None)
    # a run's checkpoint: the run's base model id, the run, the step, and the merged export that was loaded
    assert (cli_run.source, cli_run.evaluated_model, cli_run.evaluated_run_id, cli_run.evaluated_step) == (
        "cli", base, run_id, 7)
    assert cli_run.model_path and cli_run.model_path != base and f"run-{run_id}" in cli_run.model_path
    # the job reports its progress within a benchmark on its event log (what the launcher shows)
    from db.reads import run_events

    assert "perplexity: 2/2 scored" in [e.message for e in run_events(store, job)]
    # the queued job owns its row (run_id = the job) and says what it evaluated
    assert (by_job.run_id, by_job.source, by_job.evaluated_model, by_job.evaluated_run_id, by_job.evaluated_step,
            by_job.model_path) == (job, "job", base, run_id, 7, cli_run.model_path)


def test_a_given_checkpoint_step_is_evaluated_and_refused_when_absent(store, tmp_path, tiny_model_dir):
    import pytest

    from engine.config import ConfigError, parse_config
    from engine.evaluation.models_ref import ModelRefError, parse_run_step
    from engine.models.checkpoint import save_checkpoint
    from engine.models.loading import load_policy

    assert parse_run_step("run:3@40") == (3, 40) and parse_run_step("run:3") == (3, None)
    assert parse_run_step("org/model") is None
    with pytest.raises(ModelRefError, match="run:ID@STEP"):
        parse_run_step("run:3@x")
    with pytest.raises(ConfigError, match="run:ID@STEP"):
        parse_config({"algorithm": "eval", "model": "run:3@x"})
    base = str(tiny_model_dir)
    run_id = submit_run(store, GRPOConfig(model=base, name="tuned"))
    policy = load_policy(base, need_reference=False, device="cpu")
    record_checkpoint(store, run_id, 3, str(save_checkpoint(tmp_path / "c3", policy, step=3, save_rng=False)))
    with torch.no_grad():
        policy.model.model.embed_tokens.weight.mul_(0.0)
    record_checkpoint(store, run_id, 7, str(save_checkpoint(tmp_path / "c7", policy, step=7, save_rng=False)))
    with pytest.raises(ConfigError, match="no checkpoint at step 5: it has steps 3, 7"):
        submit_run(store, parse_config({"algorithm": "eval", "model": f"run:{run_id}@5"}))
    assert submit_run(store, parse_config({"algorithm": "eval", "model": f"run:{run_id}@3"}))
    evaluate_cli(store, f"run:{run_id}@3", ["perplexity"], limit=2, progress=False, n_boot=0)
    evaluate_cli(store, f"run:{run_id}", ["perplexity"], limit=2, progress=False, n_boot=0)
    early, latest = _rows(store)
    assert (early.model, early.evaluated_step, early.step) == (f"run:{run_id}@3", 3, 3)
    assert (latest.model, latest.evaluated_step) == (f"run:{run_id}", 7)
    # the step-3 weights (the base's) were evaluated, not the zeroed step-7 ones (uniform predictions)
    assert early.model_path.endswith("step-0000003") and latest.model_path.endswith("step-0000007")
    assert early.metrics["perplexity"] != pytest.approx(latest.metrics["perplexity"], rel=1e-3)
