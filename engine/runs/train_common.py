"""Shared pieces of the LLM training runs (GRPO and the preference family).

- ``BatchSchedule``: which rows a step trains on, as a pure function of (seed, step), so a resumed run draws
  exactly the batches an uninterrupted one would (no sampler state to checkpoint).
- optimizer / LR schedule, policy loading from a run config, autocast on the GPU.
- ``padded_rows`` + ``forward_logprobs``: right-padded (prompt + completion) rows and their per-token log-probs in
  one pass per micro-batch, each shared prompt computed once and the output layer run only on completion tokens.
- ``save_train_state`` / ``restore_train_state``: the full training state (weights or LoRA adapter, optimizer,
  scheduler, RNG, data position, group weights) in safetensors + JSON, never pickle.
- ``heldout_reward_eval``: the evaluation hook (generation on held-out prompts, reward per group, KL to the
  reference) the runs call before training, every ``eval_every`` steps and at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from engine.models.loading import LoadedPolicy
    from engine.runs.context import RunContext

SamplingMode = Literal["balanced", "random"]


# ------------------------------------------------------------------------------------------- data order

def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (run seed, step, purpose): stable across processes and Python versions."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class BatchSchedule:
    """Row indices of each step's batch, a pure function of (seed, step).

    "random": a stream of seeded permutations of all rows (one per epoch), cut into batches.
    "balanced": draws cycle over the groups (sorted names) and each group walks its own seeded permutations,
    so every group is drawn equally often whatever its size.
    """

    groups: Sequence[str]  # group label of every row
    batch_size: int
    seed: int
    mode: SamplingMode = "balanced"
    _members: dict[str, list[int]] = field(init=False, default_factory=dict)
    _perms: dict[tuple[str, int], list[int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("the training set is empty: choose a dataset (or limit) with at least one row")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.mode not in ("balanced", "random"):
            raise ValueError(f"group sampling must be 'balanced' or 'random', got {self.mode!r}")
        for i, g in enumerate(self.groups):
            self._members.setdefault(g, []).append(i)
        self._members = dict(sorted(self._members.items()))

    def _perm(self, key: str, epoch: int, members: list[int]) -> list[int]:
        import numpy as np

        cache_key = (key, epoch)
        if cache_key not in self._perms:
            if len(self._perms) > 256:  # a long run visits many epochs; old ones are never read again
                self._perms.clear()
            rng = np.random.default_rng(derive_seed("batch-order", self.seed, key, epoch))
            self._perms[cache_key] = [members[j] for j in rng.permutation(len(members))]
        return self._perms[cache_key]

    def indices(self, step: int) -> list[int]:
        """Rows of training step ``step`` (1-based)."""
        if step < 1:
            raise ValueError(f"steps are 1-based, got {step}")
        first = (step - 1) * self.batch_size
        out: list[int] = []
        if self.mode == "random":
            everyone = list(range(len(self.groups)))
            n = len(everyone)
            for j in range(first, first + self.batch_size):
                out.append(self._perm("*", j // n, everyone)[j % n])
            return out
        names = list(self._members)
        k = len(names)
        for j in range(first, first + self.batch_size):
            name = names[j % k]
            members = self._members[name]
            draw = j // k  # how many draws this group had before this one
            out.append(self._perm(name, draw // len(members), members)[draw % len(members)])
        return out


def balanced_subset(groups: Sequence[str], limit: int) -> list[int]:
    """Up to ``limit`` row indices spread evenly over the groups (round-robin in row order): a fixed,
    seed-free held-out set so every evaluation of every run scores the same rows."""
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    queues = [by_group[g] for g in sorted(by_group)]
    out: list[int] = []
    depth = 0
    while len(out) < limit and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(out) < limit:
                out.append(q[depth])
        depth += 1
    return sorted(out)


# ------------------------------------------------------------------------------------------- model + optim

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


def autocast(device: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the GPU; nothing on the CPU (bf16 ran ~4x slower than fp32 on these CPUs)."""
    import torch

    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------------------- log-probs

@dataclass
class PaddedRows:
    """Right-padded prompt + completion rows: ``input_ids`` (B, L); ``attention_mask`` (B, L);
    ``target_mask`` (B, L-1): 1 where ``input_ids[:, 1:]`` is a completion token (what the losses score)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def slice(self, start: int, stop: int) -> PaddedRows:
        # trim the shared right padding so a micro-batch of short rows does not pay for the longest row
        width = int(self.attention_mask[start:stop].sum(1).max()) if stop > start else 1
        width = max(width, 2)
        return PaddedRows(self.input_ids[start:stop, :width], self.attention_mask[start:stop, :width],
                          self.target_mask[start:stop, : width - 1])


def padded_rows(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
                device: str = "cpu") -> PaddedRows:
    """One row per (prompt, completion); right padding keeps positions 0..len-1 without position ids."""
    import torch

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    width = max(max(lengths), 2)
    ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)  # (B, L)
    attn = torch.zeros((len(lengths), width), dtype=torch.long)  # (B, L)
    target = torch.zeros((len(lengths), width - 1), dtype=torch.float32)  # (B, L-1)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        row = list(p) + list(c)
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attn[i, : len(row)] = 1
        # target position t scores token t+1, so completion tokens sit at [len(p)-1, len(p)-1+len(c))
        target[i, len(p) - 1: len(p) - 1 + len(c)] = 1.0
    return PaddedRows(ids.to(device), attn.to(device), target.to(device))


# Decoder families whose transformers implementation builds its attention mask with masking_utils, which reads
# restarting position_ids (with no 2D attention mask) as several sequences packed into one row.
PACKABLE_MODEL_TYPES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text", "phi3", "olmo", "olmo2",
    "granite", "smollm3", "cohere", "starcoder2", "glm", "helium",
})


def supports_packing(model: Any) -> bool:
    """True when ``model`` (or the model inside a PEFT wrapper) can take packed rows through position_ids."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    impl = getattr(config, "_attn_implementation", None) or "sdpa"
    return config.model_type in PACKABLE_MODEL_TYPES and impl in ("sdpa", "eager", "flash_attention_2")


def chunked_head_of(model: Any) -> tuple[Any, Any] | None:
    """(decoder, output weight) when the model's logits are exactly ``decoder(...) @ weight.T``: a plain bias-free
    linear head with no logit scaling or soft-capping. Else None (the model's own forward is used)."""
    import torch

    from engine.models.loading import unwrap_base_model

    base = unwrap_base_model(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = getattr(base, "model", None)
    config = getattr(base, "config", None)
    if type(head) is not torch.nn.Linear or head.bias is not None or decoder is None or config is None:
        return None
    if any(getattr(config, k, None) not in (None, 1, 1.0) for k in ("final_logit_softcapping", "logit_scale",
                                                                    "logits_scaling")):
        return None
    return decoder, head.weight


def forward_logprobs(model: Any, rows: PaddedRows, *, temperature: float = 1.0, with_entropy: bool = False,
                     device: str = "cpu", layout: str | None = None,
                     chunked_head: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log p(token | prefix) under softmax(logits / T) in one forward pass: (B, L-1) float32, plus the
    per-token entropy (detached) when asked. Positions outside ``target_mask`` hold 0.

    The output layer, log-softmax and entropy run only where completions are scored; how the rows go through:
    - "shared" (default when rows repeat a prompt, as GRPO's G completions and a pair's two answers do): each
      distinct prompt runs once and its KV cache, still in the autograd graph, serves every row that shares it.
    - "aligned" (default otherwise): prompts left-padded and completions right-padded, so every row's completion starts in
      the same column and ``logits_to_keep`` keeps exactly the completion columns (position ids restart per row).
    - "packed" (default where attention runs flash_attention_2): all rows end to end in one row with restarting
      position ids, no padding at all, and ``logits_to_keep`` as an index tensor. With SDPA or eager attention the
      mask of one long row is dense, and attention over it cost more than the padding it saves
      (bench/RESULTS.md), so packing is only the default where the kernel skips across sequences.
    - "right": the rows as given, logits from the first scored column (models without ``position_ids``).
    All give the same log-probs and gradients (tests/test_packing.py).

    chunked_head (default: on the GPU): the output layer runs inside ``head_logprobs``, which never holds the
    (S, V) logits (engine/algorithms/lm_head.py), trading one extra output-layer matmul in the backward for the
    memory a 152k-token vocabulary's logits would take."""
    groups = None
    if layout is None:
        layout = default_layout(model)
        if layout == "aligned" and supports_shared_prefix(model):
            groups = _prompt_groups(rows)
            if len(groups[0]) < len(rows):  # some rows repeat a prompt
                layout = "shared"
    if layout not in ("shared", "aligned", "packed", "right"):
        raise ValueError(f"layout must be 'shared', 'aligned', 'packed' or 'right', got {layout!r}")
    if layout == "right":
        return _forward_logprobs_padded(model, rows, temperature=temperature, with_entropy=with_entropy,
                                        device=device)
    head = None
    if chunked_head or (chunked_head is None and str(device).startswith("cuda")):
        head = chunked_head_of(model)
    if layout == "shared":
        return _forward_logprobs_shared(model, rows, temperature=temperature, with_entropy=with_entropy,
                                        device=device, head=head, groups=groups)
    run = _forward_logprobs_packed if layout == "packed" else _forward_logprobs_aligned
    return run(model, rows, temperature=temperature, with_entropy=with_entropy, device=device, head=head)


def supports_shared_prefix(model: Any) -> bool:
    """True when the model can run a prompt once and its completions from the prompt's (differentiable) KV cache:
    a family with standard masks and caches, and no gradient checkpointing (which turns the cache off)."""
    from engine.models.loading import unwrap_base_model

    base = unwrap_base_model(model)
    return supports_packing(model) and not getattr(base, "is_gradient_checkpointing", False)


def _prompt_lengths(rows: PaddedRows) -> torch.Tensor:
    return rows.target_mask.bool().long().argmax(1) + 1  # (B,): a completion's first token follows its prompt


def _prompt_groups(rows: PaddedRows) -> tuple[list[int], list[int]]:
    """(first row of each distinct prompt, index of each row's prompt in that list)."""
    p_len = _prompt_lengths(rows).tolist()
    ids = rows.input_ids.tolist()
    seen: dict[tuple[int, ...], int] = {}
    firsts: list[int] = []
    row_to_prompt: list[int] = []
    for i, n in enumerate(p_len):
        key = tuple(ids[i][:n])
        if key not in seen:
            seen[key] = len(firsts)
            firsts.append(i)
        row_to_prompt.append(seen[key])
    return firsts, row_to_prompt


def default_layout(model: Any) -> str:
    import inspect

    from engine.models.loading import unwrap_base_model

    config = getattr(model, "config", None)
    if supports_packing(model) and getattr(config, "_attn_implementation", None) == "flash_attention_2":
        return "packed"
    base = unwrap_base_model(model)
    return "aligned" if "position_ids" in inspect.signature(base.forward).parameters else "right"


def _scored_logprobs(model: Any, head: tuple[Any, Any] | None, ids: torch.Tensor, positions: torch.Tensor,
                     attention_mask: torch.Tensor | None, keep: Any, select: Any, targets: torch.Tensor, *,
                     temperature: float, with_entropy: bool, device: str
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(S,) log-probs (and entropy) of ``targets`` at the scored positions: ``keep`` (an int or index tensor) picks
    the positions the output layer sees, ``select`` (a callable on a (B, K, ...) tensor) flattens those to (S, ...)."""
    with autocast(device):
        if head is not None:
            from engine.algorithms.lm_head import head_logprobs

            decoder, weight = head
            hidden = decoder(input_ids=ids, position_ids=positions, attention_mask=attention_mask,
                             use_cache=False).last_hidden_state  # (B, W, H)
            hidden = hidden[:, -keep:] if isinstance(keep, int) else hidden[:, keep]
            return head_logprobs(select(hidden), weight, targets, temperature=temperature, with_entropy=with_entropy)
        logits = model(input_ids=ids, position_ids=positions, attention_mask=attention_mask, use_cache=False,
                       logits_to_keep=keep).logits  # (B, K, V)
    return _flat_logprobs(select(logits), targets, temperature=temperature, with_entropy=with_entropy)


def _flat_logprobs(flat: torch.Tensor, targets: torch.Tensor, *, temperature: float, with_entropy: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(S, V) logits of the scored positions -> (S,) log-probs of ``targets`` and, when asked, the entropy."""
    import torch

    from engine.algorithms.logprobs import entropy_from_logits, token_logprobs

    if temperature != 1.0:
        flat = flat / temperature
    logp = token_logprobs(flat.unsqueeze(0), targets.unsqueeze(0))[0]  # (S,)
    ent = None
    if with_entropy:
        with torch.no_grad():
            ent = entropy_from_logits(flat.detach().unsqueeze(0))[0]
    return logp, ent


def _to_rows(rows: PaddedRows, logp: torch.Tensor, ent: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(S,) values in row-major order of the scored positions -> (B, L-1) with 0 elsewhere (differentiable)."""
    scored = rows.target_mask.bool()
    out = logp.new_zeros(scored.shape).masked_scatter(scored, logp)
    return out, (ent.new_zeros(scored.shape).masked_scatter(scored, ent) if ent is not None else None)


def _forward_logprobs_shared(model: Any, rows: PaddedRows, *, temperature: float, with_entropy: bool,
                             device: str, head: tuple[Any, Any] | None,
                             groups: tuple[list[int], list[int]] | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each distinct prompt goes through the model once; its KV cache (still in the autograd graph) is indexed out
    to the rows that share it, and only the completions run per row. GRPO's G completions per prompt and a pair's
    chosen and rejected answers share their prompt, so this removes (G-1)/G of the prompt tokens' work."""
    import torch
    from transformers import DynamicCache

    from engine.models.loading import unwrap_base_model

    dev = rows.input_ids.device
    firsts, row_to_prompt = groups if groups is not None else _prompt_groups(rows)
    r2p = torch.tensor(row_to_prompt, dtype=torch.long, device=dev)  # (B,)
    p_len_all = _prompt_lengths(rows)  # (B,)
    c_len = rows.target_mask.bool().sum(1)  # (B,)
    p_len = p_len_all[firsts]  # (U,)
    width_p, width_c = int(p_len.max()), max(int(c_len.max()), 1)

    # prompts, left-padded so that all end in column width_p - 1
    src = torch.arange(width_p, device=dev)[None, :] - (width_p - p_len)[:, None]  # (U, P)
    p_valid = src >= 0
    p_ids = torch.where(p_valid, rows.input_ids[firsts].gather(1, src.clamp_min(0)), torch.zeros_like(src))
    # completions, right-padded; the last token is only a target, never an input
    col = torch.arange(width_c, device=dev)[None, :]  # (1, C)
    completion = col < c_len[:, None]  # (B, C)
    c_src = (p_len_all[:, None] + col).clamp_max(rows.input_ids.shape[1] - 1)  # (B, C)
    c_ids = torch.where(completion, rows.input_ids.gather(1, c_src), torch.zeros_like(c_src))  # (B, C)
    targets = c_ids[completion]  # (S,)

    base = unwrap_base_model(model)
    cache = DynamicCache(config=base.config)
    with autocast(device):
        if head is not None:
            decoder, weight = head
            out_p = decoder(input_ids=p_ids, attention_mask=p_valid.long(), position_ids=src.clamp_min(0),
                            past_key_values=cache, use_cache=True).last_hidden_state[:, -1:]  # (U, 1, H)
        else:
            out_p = model(input_ids=p_ids, attention_mask=p_valid.long(), position_ids=src.clamp_min(0),
                          past_key_values=cache, use_cache=True, logits_to_keep=1).logits  # (U, 1, V)
        parts = [out_p[r2p]]  # (B, 1, .): predicts each row's first completion token
        if width_c > 1:
            cache.reorder_cache(r2p)  # (U, ...) -> (B, ...), differentiable
            mask = torch.cat([p_valid.long()[r2p], completion[:, :-1].long()], dim=1)  # (B, P + C - 1)
            positions = p_len_all[:, None] + col[:, :-1]  # (B, C - 1)
            if head is not None:
                out_c = decoder(input_ids=c_ids[:, :-1], attention_mask=mask, position_ids=positions,
                                past_key_values=cache, use_cache=True).last_hidden_state  # (B, C-1, H)
            else:
                out_c = model(input_ids=c_ids[:, :-1], attention_mask=mask, position_ids=positions,
                              past_key_values=cache, use_cache=True).logits  # (B, C-1, V)
            parts.append(out_c)
        flat = torch.cat(parts, dim=1)[completion]  # (S, V) logits or (S, H) hidden states
        if head is not None:
            from engine.algorithms.lm_head import head_logprobs

            logp, ent = head_logprobs(flat, weight, targets, temperature=temperature, with_entropy=with_entropy)
            return _to_rows(rows, logp, ent)
    return _to_rows(rows, *_flat_logprobs(flat, targets, temperature=temperature, with_entropy=with_entropy))


def _forward_logprobs_aligned(model: Any, rows: PaddedRows, *, temperature: float, with_entropy: bool,
                              device: str, head: tuple[Any, Any] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    import torch

    mask = rows.target_mask.bool()  # (B, L-1)
    p_len = _prompt_lengths(rows)  # (B,)
    c_len = mask.sum(1)  # (B,)
    width_p, width_c = int(p_len.max()), max(int(c_len.max()), 1)
    shift = width_p - p_len  # (B,): each row moves right so that every prompt ends in column width_p - 1
    src = torch.arange(width_p + width_c, device=mask.device)[None, :] - shift[:, None]  # (B, W) source column
    valid = (src >= 0) & (src < (p_len + c_len)[:, None])  # (B, W)
    src_c = src.clamp(0, rows.input_ids.shape[1] - 1)
    ids = torch.where(valid, rows.input_ids.gather(1, src_c), torch.zeros_like(src_c))  # (B, W)
    positions = src.clamp_min(0)  # (B, W): 0.. per row; pad columns are masked out
    completion = torch.arange(width_c, device=mask.device)[None, :] < c_len[:, None]  # (B, C)
    targets = ids[:, width_p:][completion]  # (S,)
    # logits at columns width_p-1 .. W-1 (C + 1 of them); the last predicts nothing and is dropped
    logp, ent = _scored_logprobs(model, head, ids, positions, valid.long(), width_c + 1,
                                 lambda t: t[:, :-1][completion], targets, temperature=temperature,
                                 with_entropy=with_entropy, device=device)
    return _to_rows(rows, logp, ent)


def _forward_logprobs_packed(model: Any, rows: PaddedRows, *, temperature: float, with_entropy: bool,
                             device: str, head: tuple[Any, Any] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    import torch

    valid = rows.attention_mask.bool()  # (B, L)
    ids = rows.input_ids[valid].unsqueeze(0)  # (1, N): every real token of every row, row after row
    positions = (rows.attention_mask.cumsum(1) - 1)[valid].unsqueeze(0)  # (1, N), restarting at 0 per row
    scored = rows.target_mask.bool()  # (B, L-1)
    # flat index, in the packed row, of each scored position (b, t); the logits there predict token (b, t+1)
    packed_index = valid.flatten().long().cumsum(0) - 1  # (B*L,)
    at = torch.zeros_like(valid)
    at[:, :-1] = scored
    keep = packed_index[at.flatten()]  # (S,), increasing
    targets = rows.input_ids[:, 1:][scored]  # (S,)
    logp, ent = _scored_logprobs(model, head, ids, positions, None, keep, lambda t: t[0], targets,
                                 temperature=temperature, with_entropy=with_entropy, device=device)
    return _to_rows(rows, logp, ent)


def _forward_logprobs_padded(model: Any, rows: PaddedRows, *, temperature: float, with_entropy: bool,
                             device: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    import torch

    from engine.algorithms.logprobs import entropy_from_logits, token_logprobs

    first = int(rows.target_mask.float().argmax(1).min())  # earliest scored position over the rows
    keep = rows.input_ids.shape[1] - first  # logits for positions first .. L-1
    with autocast(device):
        logits = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask, use_cache=False,
                       logits_to_keep=keep).logits  # (B, keep, V)
    logits = logits[:, :-1]  # (B, keep-1, V): position t predicts token t+1
    if temperature != 1.0:
        logits = logits / temperature
    mask = rows.target_mask[:, first:]
    logp = token_logprobs(logits, rows.input_ids[:, first + 1:]) * mask  # (B, L-1-first)
    pad = logp.new_zeros((logp.shape[0], first))  # prompt positions: never scored
    ent = None
    if with_entropy:
        with torch.no_grad():
            ent = torch.cat([pad, entropy_from_logits(logits.detach()) * mask], dim=1)
    return torch.cat([pad, logp], dim=1), ent


def micro_batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, max(1, size)):
        yield start, min(n, start + max(1, size))


def batched_logprobs_no_grad(model: Any, rows: PaddedRows, micro_batch_size: int, *, temperature: float = 1.0,
                             device: str = "cpu") -> torch.Tensor:
    """(B, L-1) log-probs of every row, micro-batch by micro-batch, without a graph (old / reference passes)."""
    import torch

    out = torch.zeros(rows.target_mask.shape, dtype=torch.float32, device=rows.input_ids.device)
    with torch.no_grad():
        for a, b in micro_batches(len(rows), micro_batch_size):
            mb = rows.slice(a, b)
            logp, _ = forward_logprobs(model, mb, temperature=temperature, device=device)
            out[a:b, : logp.shape[1]] = logp
    return out


def full_kl_per_token(policy_logits: torch.Tensor, ref_logits: torch.Tensor, chunk_rows: int = 512) -> torch.Tensor:
    """Exact KL(pi(.|prefix) || ref(.|prefix)) over the vocabulary at every position: (B, T, V) x2 -> (B, T).
    Deterministic (no sampling noise), which is what a progress chart of held-out KL needs."""
    import torch

    b, t, v = policy_logits.shape
    p = policy_logits.reshape(b * t, v)
    r = ref_logits.reshape(b * t, v)
    out = []
    for s in range(0, b * t, chunk_rows):
        lp = torch.log_softmax(p[s: s + chunk_rows].float(), -1)
        lr = torch.log_softmax(r[s: s + chunk_rows].float(), -1)
        out.append((lp.exp() * (lp - lr)).sum(-1).clamp_min(0.0))
    if not out:
        return policy_logits.new_zeros((b, t), dtype=torch.float32)
    return torch.cat(out).reshape(b, t)


# ------------------------------------------------------------------------------------------- timing, memory

class PhaseTimer:
    """Wall time per named phase of a step; on the GPU each phase ends with a synchronize so the time is
    the phase's own and not that of kernels queued before it."""

    def __init__(self, device: str):
        self.device = str(device)
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        return {f"time/{k}": v for k, v in self.times.items()}


def reset_peak_memory(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device: str) -> float:
    """Peak accelerator memory on the GPU; peak resident memory of this process on the CPU (never resets)."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


# ------------------------------------------------------------------------------------------- checkpoints

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


# ------------------------------------------------------------------------------------------- evaluation hook

@dataclass
class HeldoutSet:
    prompts: list[str]
    groups: list[str]
    dataset_version: str


def eval_due(step: int, cfg: Any) -> bool:
    """Before training (step 0), every eval_every steps, and at the last step."""
    if cfg.eval_prompts <= 0:
        return False
    return step == 0 or step == cfg.max_steps or (cfg.eval_every > 0 and step % cfg.eval_every == 0)


def heldout_reward_eval(policy: LoadedPolicy, sampler: Any, reward: Any, heldout: HeldoutSet, *,
                        max_new_tokens: int, micro_batch_size: int) -> dict[str, Any]:
    """Greedy completions of the held-out prompts scored by ``reward``: mean reward overall and per group, and
    the exact per-token KL(policy || reference) along those completions. Greedy decoding keeps successive
    evaluations comparable: the numbers move only when the model does."""
    import torch

    from engine.sampling.base import encode_prompts

    if not heldout.prompts:
        return {}
    batch = sampler.generate(heldout.prompts, n=1, max_new_tokens=max_new_tokens, greedy=True)
    scored = reward(heldout.prompts, batch.texts)
    values = torch.tensor(scored.total, dtype=torch.float64)  # (N,)
    out: dict[str, float] = {}
    finite = ~torch.isnan(values)
    out["reward/mean"] = float(values[finite].mean()) if bool(finite.any()) else float("nan")
    out["reward/nan_count"] = float((~finite).sum())
    for g in sorted(set(heldout.groups)):
        sel = torch.tensor([x == g for x in heldout.groups]) & finite
        out[f"reward/{g}"] = float(values[sel].mean()) if bool(sel.any()) else float("nan")
    for name, vals in scored.per_function.items():
        v = torch.tensor(vals, dtype=torch.float64)
        ok = ~torch.isnan(v)
        out[f"reward/{name}/mean"] = float(v[ok].mean()) if bool(ok.any()) else float("nan")

    prompt_ids = encode_prompts(policy.tokenizer, heldout.prompts)
    rows = padded_rows(prompt_ids, batch.completion_ids, policy.tokenizer.pad_token_id, device=policy.device)
    kl_sum, tokens = 0.0, 0.0
    with torch.no_grad():
        was_training = policy.model.training
        policy.model.eval()
        try:
            for a, b in micro_batches(len(rows), micro_batch_size):
                mb = rows.slice(a, b)
                with autocast(policy.device):
                    pl = policy.model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits[:, :-1]
                    with policy.ref_logits_context() as ref:
                        rl = ref(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits[:, :-1]
                kl = full_kl_per_token(pl, rl)  # (b, L-1)
                kl_sum += float((kl * mb.target_mask).sum())
                tokens += float(mb.target_mask.sum())
        finally:
            policy.model.train(was_training)
    out["kl"] = kl_sum / max(tokens, 1.0)
    out["completion/len_mean"] = sum(len(c) for c in batch.completion_ids) / len(batch.completion_ids)
    # per-prompt outcomes, 95% intervals and a sample of the answers, stored with the evaluation (not logged as
    # step metrics): the Results page pairs step 0 with the last step item by item and shows answers side by side
    from engine.evaluation.harness import heldout_result_block

    out.update(heldout_result_block(values.tolist(), heldout.groups, heldout.prompts, batch.texts))
    return out


def record_heldout(ctx: RunContext, step: int, metrics: dict[str, float], heldout: HeldoutSet,
                   benchmark: str = "heldout_reward") -> None:
    if metrics:
        ctx.record_evaluation(benchmark, metrics, model=ctx.config.model, dataset_version=heldout.dataset_version,
                              step=step)


def heldout_val_metrics(metrics: dict[str, float], heldout: HeldoutSet) -> dict[str, float]:
    """The step metrics of one held-out evaluation (``heldout_reward_eval``'s result): the average reward and the
    worst group's mean reward (groups with no scorable completion left out), under the metric contract's keys."""
    from db import metric_keys as mk

    if not metrics:
        return {}
    per_group = [metrics.get(f"reward/{g}", float("nan")) for g in sorted(set(heldout.groups))]
    finite = [v for v in per_group if not math.isnan(v)]
    return {mk.VAL_AVG_REWARD: metrics.get("reward/mean", float("nan")),
            mk.VAL_WORST_GROUP_REWARD: min(finite) if finite else float("nan")}
