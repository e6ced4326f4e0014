"""Running the model on training rows: ``padded_rows`` (right-padded prompt + completion rows) and
``forward_logprobs`` (their per-token log-probs in one pass per micro-batch, in one of four layouts: each shared
prompt computed once ("shared"), completions aligned so the output layer runs on completion tokens only
("aligned"), packed into one row ("packed", flash attention) or plain padding), the no-grad batched pass, the
exact per-token KL between two models' logits, and autocast on the GPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def autocast(device: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the GPU; nothing on the CPU (bf16 ran ~4x slower than fp32 on these CPUs)."""
    import torch

    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
