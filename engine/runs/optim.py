"""The optimiser (fused AdamW), the learning-rate schedule (warm-up, then constant / linear / cosine) and the
clip-and-step every update ends with."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, kind: str) -> float:
    """Multiplier of the base LR after ``step`` scheduler steps: linear warm-up, then constant / linear / cosine
    decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if kind == "linear":
        return 1.0 - progress
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_scheduler {kind!r}: use constant, linear or cosine")


def make_optimizer(params: list[torch.nn.Parameter], cfg: Any) -> tuple[Any, Any]:
    """AdamW + a LambdaLR stepped once per training step (so warm-up counts training steps)."""
    import torch

    if not params:
        raise ValueError("the policy has no trainable parameters: check use_lora / lora_target_modules")
    try:
        # one fused kernel per step instead of a loop over parameters: 0.12 s instead of 0.56 s for SmolLM2's
        # 135M float32 parameters on the 2-core CPU (transformers' default optimizer is the fused one too)
        opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not cover
        opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warm, total, kind = cfg.warmup_steps, cfg.max_steps, cfg.lr_scheduler
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, warmup_steps=warm, total_steps=total, kind=kind))
    return opt, sched


def clip_and_step(params: list[torch.nn.Parameter], optimizer: Any, max_grad_norm: float) -> float:
    """Clip (when max_grad_norm > 0), step, zero; returns the pre-clip gradient norm."""
    import torch

    if max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        grads = [p.grad.detach().norm() for p in params if p.grad is not None]
        norm = torch.stack(grads).norm() if grads else torch.zeros(())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)
