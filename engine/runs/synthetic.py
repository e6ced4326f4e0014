"""The group-robust paper's synthetic experiment as a studio run: every step's group weights and per-group
validation loss go to the store, so the dashboard's headline chart moves while it trains (seconds on a CPU)."""

from __future__ import annotations

import json

from engine.algorithms.synthetic import StepRecord, SyntheticSettings, run_synthetic
from engine.config import SyntheticConfig
from engine.runs.context import RunContext, write_json_atomic


def settings_from_config(cfg: SyntheticConfig) -> SyntheticSettings:
    return SyntheticSettings(setting=cfg.setting, method=cfg.method, beta=cfg.beta, chi=cfg.chi, eta=cfg.eta,
                             lr=cfg.learning_rate, steps=cfg.max_steps, batch_size=cfg.batch_size, n_train=cfg.n_train,
                             n_val=cfg.n_val, n_test_states=cfg.n_test_states, seed=cfg.seed,
                             feature_type=cfg.feature_type, solver=cfg.solver,
                             closed_form_weights=cfg.closed_form_weights)


def execute(ctx: RunContext) -> None:
    cfg: SyntheticConfig = ctx.config
    settings = settings_from_config(cfg)
    start = ctx.start_step()
    state = None
    if start > 0 and ctx.resume_checkpoint_path is not None:
        state = json.loads((ctx.resume_checkpoint_path / "state.json").read_text())
    last: list[StepRecord] = []

    def save(rec: StepRecord) -> None:
        path = ctx.checkpoint_dir(rec.step)
        write_json_atomic(path / "state.json", rec.state)
        ctx.record_checkpoint(rec.step, path, {"alpha": rec.state["alpha"]})

    def on_step(rec: StepRecord) -> None:
        ctx.log_step(rec.step, rec.metrics, rec.groups)
        last[:] = [rec]
        if ctx.checkpoint_due(rec.step):
            save(rec)

    result = run_synthetic(settings, on_step=on_step, should_stop=ctx.should_stop, state=state)
    if result.cancelled and last and not ctx.checkpoint_due(last[0].step):
        save(last[0])  # a stopped run keeps the step it finished, so a resume loses nothing
