"""Load a policy (and its reference) for training.

- float32 on CPU (bfloat16 ran ~4x slower on these CPUs), bfloat16 on GPU.
- LoRA: the frozen base, reached with the adapter disabled, is the reference model, so no second copy of
  the weights is held. Full fine-tuning: a frozen deep copy is the reference.
- trust_remote_code is off unless the caller's config turns it on: remote code runs arbitrary Python.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from engine.models.default_model import resolve_model_path
from engine.models.lora import LoraSettingsLike, is_peft_model, to_peft_config

if TYPE_CHECKING:
    import torch

DeviceArg = Literal["auto", "cpu", "cuda"] | str
DtypeArg = Literal["auto", "float32", "bfloat16", "float16"] | str


def resolve_device(device: DeviceArg = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but no CUDA GPU is visible: use device='cpu' or 'auto'")
    return device


def resolve_dtype(dtype: DtypeArg, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype={dtype!r} is not supported: use one of 'auto', {', '.join(map(repr, table))}")
    return table[dtype]


@dataclass
class LoadedPolicy:
    model: Any  # transformers PreTrainedModel, or peft PeftModel wrapping one when uses_lora
    tokenizer: Any
    ref_model: Any | None  # None with LoRA (use ref_logits_context) or when no reference was asked for
    uses_lora: bool
    device: str
    dtype: torch.dtype
    model_path: str = ""  # resolved path/hub id the weights came from (samplers and checkpoints need it)
    has_reference: bool = True

    @contextlib.contextmanager
    def ref_logits_context(self) -> Iterator[Any]:
        """Yield the module whose forward pass gives reference logits, under no_grad.

        with policy.ref_logits_context() as ref:
            ref_logits = ref(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        """
        import torch

        if not self.has_reference:
            raise RuntimeError("this policy was loaded with need_reference=False: reload it with need_reference=True")
        with torch.no_grad():
            if self.uses_lora:
                # The adapter's base is the reference: same weights, adapter switched off for this block.
                with self.model.disable_adapter():
                    yield self.model
            else:
                yield self.ref_model

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def load_tokenizer(path: str, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        # Batched generation and loss masking need a pad id; EOS is the usual stand-in and is masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(
    model: str,
    *,
    lora: LoraSettingsLike | None = None,
    gradient_checkpointing: bool = False,
    trust_remote_code: bool = False,
    device: DeviceArg = "auto",
    dtype: DtypeArg = "auto",
    need_reference: bool = True,
) -> LoadedPolicy:
    """Load a trainable policy from a local HF folder, a hub id or "embedded:smollm2-135m-instruct"."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(model)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    base.to(dev)
    if base.generation_config.pad_token_id is None:
        base.generation_config.pad_token_id = tokenizer.pad_token_id

    ref_model = None
    if need_reference and lora is None:
        # Copy before any wrapping so the reference is the untouched base, frozen and in eval mode.
        ref_model = copy.deepcopy(base)
        ref_model.eval()
        ref_model.requires_grad_(False)

    if gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen embeddings (LoRA) without enable_input_require_grads.
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.config.use_cache = False

    policy_model: Any = base
    if lora is not None:
        from peft import get_peft_model

        policy_model = get_peft_model(base, to_peft_config(lora))
    policy_model.train()
    return LoadedPolicy(
        model=policy_model,
        tokenizer=tokenizer,
        ref_model=ref_model,
        uses_lora=lora is not None,
        device=dev,
        dtype=torch_dtype,
        model_path=path,
        has_reference=need_reference,
    )


def unwrap_base_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if is_peft_model(model) else model
