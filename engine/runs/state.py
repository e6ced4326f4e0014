"""A training run's policy from its config, and its full state in a checkpoint: weights or LoRA adapter,
optimiser, scheduler, RNG, data position and group weights, in safetensors + JSON (never pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.models.loading import LoadedPolicy
    from engine.runs.context import RunContext


def lora_settings(cfg: Any) -> Any | None:
    if not cfg.use_lora:
        return None
    from engine.models.lora import LoraSettings

    return LoraSettings(r=cfg.lora_r, alpha=float(cfg.lora_alpha), dropout=cfg.lora_dropout,
                        target_modules=list(cfg.lora_target_modules))


def load_training_policy(cfg: Any) -> LoadedPolicy:
    """The policy and its frozen reference (a copy, or the LoRA base) as the run config asks."""
    from engine.models.loading import load_policy

    return load_policy(cfg.model, lora=lora_settings(cfg), gradient_checkpointing=cfg.gradient_checkpointing,
                       trust_remote_code=cfg.trust_remote_code, device=cfg.device, dtype="auto", need_reference=True)


def save_train_state(ctx: RunContext, step: int, policy: LoadedPolicy, optimizer: Any, scheduler: Any, *,
                     extra: dict[str, Any] | None = None) -> Path:
    """Write the full training state for ``step`` and record it in the store (after the files are in place,
    so a recorded checkpoint is always complete)."""
    from engine.models.checkpoint import save_checkpoint

    folder = ctx.checkpoint_dir(step)
    data = {"data_position": step, **(extra or {})}
    save_checkpoint(folder, policy, step=step, optimizer=optimizer, scheduler=scheduler,
                    lora_settings=lora_settings(ctx.config), extra=data)
    ctx.record_checkpoint(step, folder, {"step": step})
    return folder


def restore_train_state(ctx: RunContext, start: int, policy: LoadedPolicy, optimizer: Any,
                        scheduler: Any) -> dict[str, Any]:
    """Load the checkpoint a resumed run starts from (weights, optimizer, scheduler, RNG); returns its extra
    dict (group weights, data position). A fresh run gets {}."""
    from engine.models.checkpoint import load_checkpoint

    if start == 0 or ctx.resume_checkpoint_path is None:
        return {}
    meta = load_checkpoint(ctx.resume_checkpoint_path, policy, optimizer=optimizer, scheduler=scheduler)
    extra = dict(meta.get("extra") or {})
    if extra.get("data_position", start) != start:
        raise RuntimeError(f"checkpoint {ctx.resume_checkpoint_path} is for step {extra['data_position']} but the "
                           f"store says {start}: resume from a consistent checkpoint")
    return extra
