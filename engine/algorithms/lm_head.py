"""Log-probs (and entropy) of chosen tokens straight from the last hidden states, without keeping the logits.

A policy's output layer turns S scored positions into (S, V) logits: with Qwen2.5's 152k-token vocabulary,
16 completions x 256 tokens is 1.2 GB of bf16 logits, plus the float32 chunks the log-softmax saves for its
backward, more than the whole rest of a 0.5B model's activations. ``head_logprobs`` computes the same numbers
chunk by chunk and keeps only one float per row (the log-sum-exp); the backward recomputes each chunk's logits
(one extra output-layer matmul) to form its gradient. Exact, not an approximation (tests/test_lm_head.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

DEFAULT_CHUNK_ROWS = 1024


def _compute_dtype(t: Tensor):
    import torch

    device_type = t.device.type
    if device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)  # what nn.Linear would have used for the head
    return t.dtype


def _make_function():
    import torch

    class HeadLogprobs(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets, inv_temp, chunk_rows, with_entropy):  # type: ignore[override]
            dtype = _compute_dtype(hidden)
            h, w = hidden.to(dtype), weight.to(dtype)
            n = h.shape[0]
            logp = torch.empty(n, dtype=torch.float32, device=h.device)
            lse_all = torch.empty(n, dtype=torch.float32, device=h.device)
            ent = torch.zeros(n if with_entropy else 0, dtype=torch.float32, device=h.device)
            for s in range(0, n, chunk_rows):
                logits = (h[s: s + chunk_rows] @ w.T).float() * inv_temp  # (C, V)
                lse = torch.logsumexp(logits, dim=-1)  # (C,)
                logp[s: s + chunk_rows] = logits.gather(-1, targets[s: s + chunk_rows, None]).squeeze(-1) - lse
                lse_all[s: s + chunk_rows] = lse
                if with_entropy:
                    lp = logits - lse[:, None]  # (C, V); lse - sum(p * logits) would cancel badly
                    ent[s: s + chunk_rows] = -(lp.exp() * lp).sum(-1)
            ctx.save_for_backward(h, w, targets, lse_all)
            ctx.inv_temp, ctx.chunk_rows = inv_temp, chunk_rows
            ctx.dtypes = (hidden.dtype, weight.dtype)
            ctx.mark_non_differentiable(ent)
            return logp, ent

        @staticmethod
        def backward(ctx, grad_logp, _grad_ent):  # type: ignore[override]
            h, w, targets, lse_all = ctx.saved_tensors
            need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_h = torch.empty_like(h) if need_h else None
            grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
            for s in range(0, h.shape[0], ctx.chunk_rows):
                hc = h[s: s + ctx.chunk_rows]
                logits = (hc @ w.T).float() * ctx.inv_temp  # (C, V), recomputed
                g = grad_logp[s: s + ctx.chunk_rows].float()  # (C,)
                # d logp / d logits = onehot(target) - softmax, times 1/T for the temperature
                d = torch.exp(logits - lse_all[s: s + ctx.chunk_rows, None]).mul_(-g[:, None])
                d.scatter_add_(-1, targets[s: s + ctx.chunk_rows, None], g[:, None])
                d = (d * ctx.inv_temp).to(h.dtype)
                if need_h:
                    grad_h[s: s + ctx.chunk_rows] = d @ w
                if need_w:
                    grad_w += (d.T @ hc).float()
            return (grad_h.to(ctx.dtypes[0]) if need_h else None,
                    grad_w.to(ctx.dtypes[1]) if need_w else None, None, None, None, None)

    return HeadLogprobs


_FUNCTION = None


def head_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, *, temperature: float = 1.0,
                  with_entropy: bool = False, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[Tensor, Tensor | None]:
    """log softmax(hidden @ weight.T / T)[target] per row: hidden (S, H), weight (V, H), targets (S,) ->
    (S,) float32, differentiable w.r.t. hidden and weight; plus the (S,) entropy (no gradient) when asked."""
    global _FUNCTION
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"head_logprobs expects hidden (S, H) and weight (V, H); got {tuple(hidden.shape)} and "
                         f"{tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be (S,) = {tuple(hidden.shape[:1])}, got {tuple(targets.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if _FUNCTION is None:
        _FUNCTION = _make_function()
    logp, ent = _FUNCTION.apply(hidden, weight, targets.long(), 1.0 / temperature, chunk_rows, with_entropy)
    return logp, (ent if with_entropy else None)
