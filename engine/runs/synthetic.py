"""The group-robust paper's synthetic experiment as a studio run: every step's group weights and per-group
validation loss go to the store, so the dashboard's headline chart moves while it trains (seconds on a CPU).

The driver lives here, not in engine/algorithms/synthetic.py (which keeps the maths): ``run_synthetic`` loops
over engine.algorithms.synthetic.train_step, records every ``eval_every`` steps under the metric contract's keys,
polls for a stop between steps and runs on one thread; ``run_synthetic_seeds`` trains several seeds side by side
(bench/reproduce_synthetic.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from db import metric_keys as mk
from engine.algorithms.synthetic import (
    GROUP_NAMES,
    NUM_GROUPS,
    SyntheticSettings,
    check_state,
    evaluate_batch,
    initial_state,
    stack_data,
    train_step,
)
from engine.config import SyntheticConfig
from engine.runs.context import RunContext, write_json_atomic

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class StepRecord:
    step: int  # policy updates done so far (1-based after the first update)
    metrics: dict[str, float]
    groups: list[dict]  # per group: group, weight, alpha, loss (val), train_loss, reward_error, accuracy (val)
    state: dict  # resume point: run_synthetic(settings, state=record.state) continues after this step


@dataclass
class SyntheticResult:
    settings: SyntheticSettings
    steps_done: int
    cancelled: bool
    final: StepRecord | None  # the last evaluated record (None only if cancelled before any step)
    history: list[StepRecord] = field(default_factory=list)  # every evaluated record of this call
    seconds: float = 0.0


def _record(r: int, step: int, ev: dict[str, "Tensor"], weights: "Tensor", alpha: "Tensor", train_loss: "Tensor",
            objective: "Tensor", state: dict) -> StepRecord:
    vl, acc, err = ev["val_loss"][r].tolist(), ev["val_acc"][r].tolist(), ev["reward_error"][r].tolist()
    tl, w, a = train_loss[r].tolist(), weights[r].tolist(), alpha[r].tolist()
    groups = [
        {"group": GROUP_NAMES[g], mk.GROUP_WEIGHT: w[g], "alpha": a[g], mk.GROUP_LOSS: vl[g], "train_loss": tl[g],
         "reward_error": err[g], mk.GROUP_ACCURACY: acc[g]}
        for g in range(NUM_GROUPS)
    ]
    metrics = {
        mk.TRAIN_LOSS: float(objective[r]),
        mk.TRAIN_WORST_GROUP_LOSS: max(tl),
        mk.VAL_WORST_GROUP_LOSS: max(vl),
        mk.VAL_AVG_LOSS: sum(vl) / len(vl),  # group-balanced mean
        mk.VAL_WORST_GROUP_ACCURACY: min(acc),
        mk.REWARD_ERROR_WORST: max(err),
        mk.REWARD_ERROR_MEAN: sum(err) / len(err),
    }
    return StepRecord(step=step, metrics=metrics, groups=groups, state=state)


def _run(
    s: SyntheticSettings,
    seeds: list[int],
    states: list[dict],
    on_step: Callable[[int, StepRecord], None] | None,
    should_stop: Callable[[], bool],
) -> list[SyntheticResult]:
    import torch

    from engine.algorithms.group_robust import importance_weights

    t0 = time.perf_counter()
    if len({int(st["step"]) for st in states}) != 1:
        raise ValueError("All runs trained together must resume from the same step.")
    b = stack_data(s, seeds)
    theta = torch.tensor([st["theta"] for st in states], dtype=torch.float64)  # (S, d)
    alpha = torch.tensor([st["alpha"] for st in states], dtype=torch.float64)  # (S, K)
    # group sizes are round(share * n) for every seed, so one (K,) set of importance weights serves all runs
    fixed_w = importance_weights(b.train_counts[0]) if s.method.startswith("is_") else None
    per_run = [replace(s, seed=seed) for seed in seeds]
    run_dicts = [sr.to_dict() for sr in per_run]  # asdict deep-copies: do it once, not per record
    history: list[list[StepRecord]] = [[] for _ in seeds]
    cancelled = False
    step = int(states[0]["step"])
    while step < s.steps:
        if should_stop():
            cancelled = True
            break
        theta, alpha, weights, train_loss, objective = train_step(s, b, theta, alpha, fixed_w, step)
        step += 1
        if step % s.eval_every == 0 or step == s.steps:
            ev = evaluate_batch(s, b, theta)
            for r in range(len(per_run)):
                st = {"step": step, "theta": theta[r].tolist(), "alpha": alpha[r].tolist(), "settings": dict(run_dicts[r])}
                rec = _record(r, step, ev, weights, alpha, train_loss, objective, st)
                history[r].append(rec)
                if on_step is not None:
                    on_step(r, rec)
    seconds = time.perf_counter() - t0
    return [
        SyntheticResult(settings=sr, steps_done=step, cancelled=cancelled, final=h[-1] if h else None, history=h,
                        seconds=seconds)
        for sr, h in zip(per_run, history)
    ]


class _OneThread:
    """Tiny tensors run fastest on one thread; more only fight the other workers for the cores."""

    def __enter__(self) -> None:
        import torch

        self._n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self._n)


def run_synthetic(
    s: SyntheticSettings,
    on_step: Callable[[StepRecord], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    state: dict | None = None,
) -> SyntheticResult:
    """Train one method on one setting. ``on_step`` gets a StepRecord every ``eval_every`` steps and at the last
    step; ``should_stop`` is polled between steps (cancel); ``state`` (a StepRecord.state) resumes exactly."""
    if state is None:
        state = initial_state(s)
    else:
        check_state(s, state)
    callback = None if on_step is None else (lambda _r, rec: on_step(rec))
    with _OneThread():
        return _run(s, [s.seed], [state], callback, should_stop)[0]


def run_synthetic_seeds(s: SyntheticSettings, seeds: list[int]) -> list[SyntheticResult]:
    """The same run for several seeds, trained side by side (same maths as run_synthetic per seed, far faster
    than one by one). ``s.seed`` is ignored; records are kept every ``s.eval_every`` steps."""
    if not seeds:
        raise ValueError("run_synthetic_seeds needs at least one seed.")
    states = [initial_state(replace(s, seed=seed)) for seed in seeds]
    with _OneThread():
        return _run(s, list(seeds), states, None, lambda: False)


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
