"""Memory-aware log-probability and entropy helpers shared by the GRPO and preference losses.

A (B, T, V) full ``log_softmax`` of a 49k-vocabulary model costs as much memory as the logits themselves (and
twice that again for its backward); these helpers only ever materialise a float32 chunk of rows at a time and
gather the one column that is needed, as TRL's ``selective_log_softmax`` does. The result is exact (no
approximation), and differentiable w.r.t. the logits.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

# rows of V logits processed at once: 1024 x 49k float32 is ~200 MB, small next to a model's activations.
DEFAULT_CHUNK_ROWS = 1024


def token_logprobs(logits: "Tensor", tokens: "Tensor", *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> "Tensor":
    """log p(tokens[b, t] | logits[b, t]) for every position: (B, T, V), (B, T) -> (B, T) float32.

    ``logits[:, t]`` must already be the distribution that predicts ``tokens[:, t]`` (shift before calling:
    ``logits[:, :-1]`` with ``input_ids[:, 1:]``). Token ids outside [0, V) (e.g. a -100 label pad) are read as
    id 0; mask them out afterwards. Half-precision logits are upcast per chunk because logsumexp in bf16 loses
    the small differences between log-probs that the ratio pi/pi_old depends on.
    """
    import torch

    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(
            f"token_logprobs expects logits (B, T, V) and tokens (B, T); got {tuple(logits.shape)} and "
            f"{tuple(tokens.shape)}. Shift logits and tokens so that logits[:, t] predicts tokens[:, t]."
        )
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}.")
    b, t, v = logits.shape
    flat_logits = logits.reshape(b * t, v)  # (B*T, V), a view when contiguous
    flat_tokens = tokens.reshape(b * t).long()
    flat_tokens = torch.where((flat_tokens >= 0) & (flat_tokens < v), flat_tokens, torch.zeros_like(flat_tokens))
    out = []
    for start in range(0, b * t, chunk_rows):
        rows = flat_logits[start : start + chunk_rows].float()  # (C, V)
        idx = flat_tokens[start : start + chunk_rows].unsqueeze(-1)  # (C, 1)
        picked = rows.gather(-1, idx).squeeze(-1)  # (C,)
        out.append(picked - torch.logsumexp(rows, dim=-1))
    if not out:
        return logits.new_zeros((b, t), dtype=torch.float32)
    return torch.cat(out).reshape(b, t)


def entropy_from_logits(logits: "Tensor", *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> "Tensor":
    """Entropy of the softmax over the last axis: (B, T, V) -> (B, T) float32, chunked like token_logprobs."""
    import torch

    if logits.dim() != 3:
        raise ValueError(f"entropy_from_logits expects logits (B, T, V); got {tuple(logits.shape)}.")
    b, t, v = logits.shape
    flat = logits.reshape(b * t, v)
    out = []
    for start in range(0, b * t, chunk_rows):
        logp = torch.log_softmax(flat[start : start + chunk_rows].float(), dim=-1)  # (C, V)
        # exp(-inf) * -inf is nan; a -inf logit (masked vocabulary entry) contributes exactly 0 entropy.
        plogp = torch.where(torch.isfinite(logp), logp.exp() * logp, torch.zeros_like(logp))
        out.append(-plogp.sum(-1))
    if not out:
        return logits.new_zeros((b, t), dtype=torch.float32)
    return torch.cat(out).reshape(b, t)
