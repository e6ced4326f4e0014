"""What every training runner (GRPO, preference) does the same way, written once: the setup (seed, training rows
and their groups, policy, optimiser and schedule, the resumed step and group weights) and the step loop's frame
(the held-out point before training, then per step: the runner's own step, its held-out metrics, one write, the
checkpoint when due, and the checkpoint-and-return on a stop request; RunContext's contract).

A runner supplies ``step(step) -> StepLog`` (its named, timed phases) plus ``evaluate(step)`` and ``save(step)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.runs.context import RunContext

if TYPE_CHECKING:
    import torch

    from engine.models.loading import LoadedPolicy


@dataclass
class StepLog:
    """One step's writes: the metrics, the group rows and the stored samples, in one transaction."""

    metrics: dict[str, float]
    groups: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Training:
    """A training run's state after setup. ``train`` rows (prompts or pairs) each carry a ``group``."""

    ctx: RunContext
    train: list[Any]
    group_names: list[str]  # (K,) sorted; a group's index is its position
    policy: LoadedPolicy
    params: list[Any]
    optimizer: Any
    scheduler: Any
    start: int  # the last step already done (0: a fresh run)
    alpha: torch.Tensor  # (K,) group weights: the checkpoint's, else uniform (written by every checkpoint)

    @property
    def gid(self) -> dict[str, int]:
        return {g: i for i, g in enumerate(self.group_names)}

    @property
    def k(self) -> int:
        return len(self.group_names)

    @property
    def device(self) -> str:
        return self.policy.device

    def group_ids(self, rows: list[Any]) -> torch.Tensor:
        """(B,) long: each row's group index."""
        import torch

        gid = self.gid
        return torch.tensor([gid[r.group] for r in rows], dtype=torch.long)

    def save(self, step: int) -> None:
        """The full training state of ``step`` (weights, optimiser, schedule, RNG, group weights)."""
        from engine.algorithms.group_robust import GroupWeightState
        from engine.runs.state import save_train_state

        save_train_state(self.ctx, step, self.policy, self.optimizer, self.scheduler,
                         extra={"group_weights": GroupWeightState.from_tensor(self.alpha).to_dict()})

    def lr_step(self) -> float:
        """Advance the schedule after an optimiser step; returns the learning rate that step used."""
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        return lr


def start_training(ctx: RunContext) -> Training:
    """Seed, load the training rows (reporting skipped ones as events), load the policy, build the optimiser and
    schedule, and restore a resumed run's checkpoint."""
    import torch

    from engine.algorithms.group_robust import GroupWeightState
    from engine.data.quality import load_training_rows
    from engine.runs.optim import make_optimizer
    from engine.runs.state import load_training_policy, restore_train_state

    cfg = ctx.config
    torch.manual_seed(cfg.seed)
    ctx.setup(f"loading the training data ({cfg.dataset})")
    train = load_training_rows(cfg, ctx.event)
    group_names = sorted({r.group for r in train})
    ctx.setup(f"loading the policy {cfg.model} and its reference (the embedded default is converted once, on "
              "first use)")
    policy = load_training_policy(cfg)
    params = policy.trainable_parameters()
    optimizer, scheduler = make_optimizer(params, cfg)
    start = ctx.start_step()
    extra = restore_train_state(ctx, start, policy, optimizer, scheduler)
    k = len(group_names)
    alpha = (GroupWeightState.from_dict(extra["group_weights"]) if "group_weights" in extra
             else GroupWeightState.uniform(k)).to_tensor()
    if alpha.shape[0] != k:
        raise RuntimeError(f"the checkpoint has {alpha.shape[0]} group weights but the dataset has {k} groups: "
                           "resume with the same dataset")
    return Training(ctx, train, group_names, policy, params, optimizer, scheduler, start, alpha)


def run_steps(ctx: RunContext, start: int, step: Callable[[int], StepLog], *,
              evaluate: Callable[[int], dict[str, float]], save: Callable[[int], None]) -> None:
    """The step loop: step 0's held-out point (a fresh run), then steps start + 1 .. max_steps, each logged with
    its held-out metrics in one transaction, checkpointed when due; a stop request ends the loop after the step,
    with a checkpoint of it."""
    if start == 0:
        if getattr(ctx.config, "eval_prompts", 0) > 0:
            ctx.setup("the held-out evaluation before training")
        val = evaluate(0)
        if val:
            ctx.log_step(0, val)  # the before-training point of the held-out curves
    ctx.setup_done(start)
    for n in range(start + 1, ctx.config.max_steps + 1):
        out = step(n)
        out.metrics.update(evaluate(n))  # evaluated before the step is logged: one transaction
        ctx.log_step(n, out.metrics, out.groups, out.samples)
        saved = ctx.checkpoint_due(n)
        if saved:
            save(n)
        if ctx.should_stop():
            if not saved:
                save(n)
            return
