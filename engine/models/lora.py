"""LoRA settings and adapter helpers (peft).

`merged_state_dict` gives the weights a sampler needs (base names, adapter folded in) without touching the
training model: peft's `merge_and_unload` mutates the model in place, which would break the optimizer's
references to the LoRA parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


class LoraSettingsLike(Protocol):
    """What `load_policy` reads from a LoRA config (engine.config's settings class fits this shape)."""

    r: int
    alpha: float
    dropout: float
    target_modules: list[str] | str | None


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    # "all-linear" adapts every linear layer except the output head (peft's shorthand).
    target_modules: list[str] | str | None = field(default="all-linear")


def to_peft_config(settings: LoraSettingsLike) -> Any:
    from peft import LoraConfig, TaskType

    if settings.r <= 0:
        raise ValueError(f"LoRA rank r={settings.r} must be a positive integer (typical: 8-64)")
    target = settings.target_modules if settings.target_modules else "all-linear"
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target if isinstance(target, str) else list(target),
        task_type=TaskType.CAUSAL_LM,
        bias="none",
    )


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """State dict of `model` under the base model's parameter names, with active LoRA deltas folded in.

    For a plain transformers model this is just its state dict. The training model is not modified; merged
    tensors are new tensors (W + delta), so the result is safe to hand to another engine.
    """
    import torch

    if not is_peft_model(model):
        return dict(model.state_dict())
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapters = model.active_adapters if hasattr(model, "active_adapters") else [model.active_adapter]
    deltas: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and not getattr(module, "merged", False):
                delta = None
                for adapter in adapters:
                    if adapter in module.lora_A:
                        d = module.get_delta_weight(adapter)
                        delta = d if delta is None else delta + d
                if delta is not None:
                    deltas[name + ".weight"] = delta

    out: dict[str, torch.Tensor] = {}
    for key, tensor in base.state_dict().items():
        if ".lora_" in key or ".original_module." in key:
            continue  # adapter factors are folded in below; original_module is shadowed by modules_to_save
        clean = key.replace(".base_layer.", ".")
        clean = clean.replace(".modules_to_save." + adapters[0] + ".", ".")
        if clean in deltas:
            tensor = tensor + deltas[clean].to(tensor.dtype)
        out[clean] = tensor
    return out
