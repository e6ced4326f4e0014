"""GRPO maths as pure tensor functions: group-relative advantages, the clipped surrogate with an optional k3 KL
penalty, token- or sequence-level (GSPO) ratios, and the three loss aggregations in use.

References (formulas in METHODS.md): GRPO (Shao et al. 2024), Dr. GRPO (Liu et al. 2025), DAPO (Yu et al. 2025),
GSPO (Zheng et al. 2025); the code conventions follow TRL's ``GRPOTrainer._compute_loss`` (checked in TRL's
grpo_trainer.py): k3 KL ``exp(ref - logp) - (ref - logp) - 1``; GSPO's sequence log-ratio is the masked mean of
the token log-ratios; region-aware clip fractions (low: ratio < 1 - eps_low with A < 0, high: ratio > 1 + eps_high
with A > 0); "dr_grpo" divides the token-loss sum by B * max_completion_length, "dapo" by the token count.

Inner updates (mu > 1), the caller's recipe: sample a batch, compute the completions' log-probs under the
sampling policy ONCE with ``torch.no_grad()`` and store them as ``old_logp`` (and ``ref_logp`` once, if beta > 0);
compute advantages once; then run mu optimiser steps, each recomputing ``logp`` with gradients and calling
``grpo_loss(logp, old_logp, advantages, mask, ...)``. On the first of those steps logp == old_logp, so every ratio
is 1 and the logged loss is ~ -mean(A) (about 0, since advantages are centred) while the gradient is not zero;
clipping only acts from the second step on. With mu = 1 a caller may pass ``old_logp = logp.detach()``.

Every ``per_sequence_loss`` returned is scaled so that ``loss == per_sequence_loss.mean()`` for each
aggregation; group-robust GRPO can therefore replace that plain mean by weighted group means
(group_robust.group_losses + robust_loss) without changing the token weighting inside a sequence.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from engine.algorithms.logprobs import entropy_from_logits, token_logprobs

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "GroupAdvantages",
    "entropy_from_logits",
    "group_advantages",
    "grpo_loss",
    "kl_k3",
    "token_logprobs",
]

AdvantageScale = Literal["group", "batch", "none"]
RatioLevel = Literal["token", "sequence"]
Aggregation = Literal["seq_mean", "constant", "token_mean"]

# A group whose rewards span less than this (relative to the reward magnitude, floor 1) is zero-variance:
# float noise of a continuous reward model must not become a full-size advantage after dividing by std.
ZERO_VARIANCE_RTOL = 1e-6


class GroupAdvantages(tuple):
    """``(advantages (N,), zero_variance (N//G,) bool)``, unpackable as a pair, plus ``num_missing``: how many
    rewards were NaN (treated as missing: advantage 0, left out of their group's statistics)."""

    num_missing: int

    def __new__(cls, advantages: "Tensor", zero_variance: "Tensor", num_missing: int) -> "GroupAdvantages":
        obj = super().__new__(cls, (advantages, zero_variance))
        obj.num_missing = num_missing
        return obj

    @property
    def advantages(self) -> "Tensor":
        return self[0]

    @property
    def zero_variance(self) -> "Tensor":
        return self[1]


def group_advantages(
    rewards: "Tensor", group_size: int, scale: AdvantageScale = "group", eps: float = 1e-4
) -> GroupAdvantages:
    """Group-relative advantages for rewards laid out as consecutive groups of ``group_size`` completions of one
    prompt: (N,) -> GroupAdvantages(advantages (N,), zero_variance (N // G,), num_missing).

    scale "group": (r - mean_g) / (std_g + eps) (GRPO); "batch": (r - mean_g) / (std of the whole batch + eps);
    "none": r - mean_g (Dr. GRPO). Std convention: UNBIASED (Bessel, n - 1), like ``torch.std``'s default that
    TRL uses; a group with fewer than 2 valid rewards therefore has no std and is treated as zero-variance.
    Zero-variance groups (all valid rewards equal within a tolerance) get exactly 0 advantage. NaN rewards are
    missing: advantage 0, and the group's mean/std use the remaining ones. +-inf rewards are an error.
    """
    import torch

    if rewards.dim() != 1:
        raise ValueError(f"rewards must be (N,), got {tuple(rewards.shape)}.")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(
            f"{rewards.numel()} rewards cannot be split into groups of {group_size}: lay out the rewards as "
            "consecutive groups of group_size completions per prompt."
        )
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}.")
    if bool(torch.isinf(rewards).any()):
        raise ValueError("rewards contain +-inf; clip the reward function's output or mark failures as NaN.")
    r = rewards.detach().to(torch.float64).reshape(-1, group_size)  # (M, G)
    valid = ~torch.isnan(r)  # (M, G)
    num_missing = int((~valid).sum())
    r0 = torch.where(valid, r, torch.zeros_like(r))
    n = valid.sum(1, keepdim=True).to(r.dtype)  # (M, 1)
    mean = r0.sum(1, keepdim=True) / n.clamp_min(1.0)  # (M, 1)
    centred = torch.where(valid, r - mean, torch.zeros_like(r))  # (M, G)
    std = (centred.pow(2).sum(1, keepdim=True) / (n - 1.0).clamp_min(1.0)).sqrt()  # (M, 1)

    hi = torch.where(valid, r, torch.full_like(r, -torch.inf)).amax(1, keepdim=True)
    lo = torch.where(valid, r, torch.full_like(r, torch.inf)).amin(1, keepdim=True)
    magnitude = torch.where(valid, r.abs(), torch.zeros_like(r)).amax(1, keepdim=True).clamp_min(1.0)
    # an empty group gives hi - lo = -inf, so it lands here too.
    zero_var = (n < 2) | ((hi - lo) <= ZERO_VARIANCE_RTOL * magnitude)  # (M, 1)

    if scale == "group":
        adv = centred / (std + eps)
    elif scale == "batch":
        flat = r[valid]
        batch_std = flat.std() if flat.numel() >= 2 else flat.new_zeros(())
        adv = centred / (batch_std + eps)
    else:
        adv = centred
    adv = torch.where(zero_var | ~valid, torch.zeros_like(adv), adv)
    return GroupAdvantages(adv.reshape(-1).to(_float_dtype(rewards)), zero_var.squeeze(1), num_missing)


def _float_dtype(x: "Tensor"):
    import torch

    return x.dtype if x.is_floating_point() else torch.float32


def kl_k3(logp: "Tensor", ref_logp: "Tensor") -> "Tensor":
    """Per-token k3 estimate of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1, (B, T) -> (B, T), >= 0.

    Unbiased for the KL under samples from pi and never negative (x - 1 - log x >= 0), unlike the plain
    log-ratio. The reference is detached: it is a frozen model, never trained through this term.
    """
    d = ref_logp.detach() - logp  # (B, T)
    # clamp: the identity exp(d) - d - 1 >= 0 holds exactly, but float rounding near d = 0 can give -1e-8.
    return (d.exp() - d - 1.0).clamp_min(0.0)


def _masked_mean(x: "Tensor", m: "Tensor") -> "Tensor":
    return (x * m).sum() / m.sum().clamp_min(1.0)


def grpo_loss(
    logp: "Tensor",
    old_logp: "Tensor",
    advantages: "Tensor",
    mask: "Tensor",
    *,
    ref_logp: "Tensor | None",
    beta: float,
    eps_low: float,
    eps_high: float,
    ratio_level: RatioLevel,
    aggregation: Aggregation,
    max_len: int | None = None,
    normalizer: "float | Tensor | None" = None,
) -> tuple["Tensor", dict[str, "Tensor"]]:
    """Clipped GRPO surrogate with optional k3 KL: returns (scalar loss, stats).

    Shapes: logp, old_logp, ref_logp, mask (B, T) (mask 1 on completion tokens); advantages (B,).
    Per token: -min(w A, clip(w, 1 - eps_low, 1 + eps_high) A) + beta * KL_t, with w the token ratio
    pi/pi_old ("token") or GSPO's sequence ratio s_i = exp(mean_t log(pi/pi_old)) ("sequence"), written as
    GSPO-token: log w_it = sg[log s_i] + log pi_t - sg[log pi_t], whose value is s_i and whose gradient equals
    TRL's sequence-level form for every aggregation below.
    Aggregation: "seq_mean" mean over each sequence's tokens then over sequences (GRPO); "constant" token sum
    / (B * max_len) (Dr. GRPO; max_len defaults to T); "token_mean" token sum / number of tokens (DAPO).
    ``normalizer`` (token_mean only): the completion tokens per sequence of the WHOLE batch the loss is averaged
    over (its token count / its sequence count; default: this call's). A caller that splits a batch into
    micro-batches passes the whole batch's, so each sequence's loss is its token sum over that and the
    micro-batches' sum_i l_i / B adds up to the full batch's token mean (verl's agg_loss(..., batch_num_tokens),
    TRL's num_items_in_batch). seq_mean and constant do not depend on other rows and ignore it.
    ``beta == 0`` never reads ``ref_logp`` (None allowed).

    stats (all detached, except "per_sequence_loss" which keeps its graph so that group-robust GRPO can weight
    it; ``loss == per_sequence_loss.mean()``): "kl" (masked token mean, 0 when beta == 0), "clip_low",
    "clip_high", "clip" (fractions of completion tokens clipped, region-aware), "ratio_mean", "per_sequence_loss" (B,).
    """
    import torch

    if logp.dim() != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            f"logp, old_logp and mask must all be (B, T); got {tuple(logp.shape)}, {tuple(old_logp.shape)}, "
            f"{tuple(mask.shape)}."
        )
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be (B,) = ({logp.shape[0]},), got {tuple(advantages.shape)}.")
    if eps_low < 0 or eps_high < 0 or eps_low >= 1:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0; got eps_low={eps_low}, eps_high={eps_high}.")
    if beta < 0:
        raise ValueError(f"beta (KL coefficient) must be >= 0, got {beta}.")
    if ratio_level not in ("token", "sequence"):
        raise ValueError(f"ratio_level must be 'token' or 'sequence' (GSPO), got {ratio_level!r}.")
    if aggregation not in ("seq_mean", "constant", "token_mean"):
        raise ValueError(f"aggregation must be 'seq_mean', 'constant' or 'token_mean', got {aggregation!r}.")
    if beta != 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the reference model's token log-probs); pass it or set beta=0.")
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be a positive token count, got {max_len}.")
    if normalizer is not None and not float(normalizer) > 0:
        raise ValueError(f"normalizer must be a positive tokens-per-sequence count, got {float(normalizer)}.")

    m = mask.to(logp.dtype)  # (B, T)
    on = m > 0
    zero = logp.new_zeros(())
    # padding may hold arbitrary (even -inf) log-probs; zero the log-ratio there so exp() cannot make inf * 0 = nan.
    log_ratio = torch.where(on, logp - old_logp.detach(), zero)  # (B, T)
    if ratio_level == "token":
        log_w = log_ratio
    else:
        lengths = m.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1)
        log_s = (log_ratio * m).sum(1, keepdim=True) / lengths  # (B, 1)
        logp_on = torch.where(on, logp, zero)
        log_w = log_s.detach() + logp_on - logp_on.detach()  # (B, T): value log s_i, grad d log pi_t
    ratio = log_w.exp()  # (B, T)
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    adv = advantages.detach().to(logp.dtype).unsqueeze(1)  # (B, 1)
    per_token = -torch.minimum(ratio * adv, clipped * adv)  # (B, T)

    if beta != 0:
        if ref_logp.shape != logp.shape:
            raise ValueError(f"ref_logp must be (B, T) like logp; got {tuple(ref_logp.shape)}.")
        # where() BEFORE kl_k3: selecting after would still back-propagate exp(inf) * 0 = nan from the padding.
        kl = kl_k3(torch.where(on, logp, zero), torch.where(on, ref_logp.detach(), zero))  # (B, T), 0 on padding
        per_token = per_token + beta * kl
        kl_mean = _masked_mean(kl.detach(), m)
    else:
        kl_mean = logp.new_zeros(())

    token_sums = (per_token * m).sum(1)  # (B,)
    b, t = logp.shape
    if aggregation == "seq_mean":
        per_seq = token_sums / m.sum(1).clamp_min(1.0)
        loss = per_seq.mean()
    elif aggregation == "constant":
        per_seq = token_sums / float(max_len if max_len is not None else t)
        loss = per_seq.mean()
    elif normalizer is not None:
        per_seq = token_sums / normalizer
        loss = per_seq.mean()
    else:
        total = m.sum().clamp_min(1.0)
        per_seq = token_sums * (b / total)
        loss = token_sums.sum() / total

    with torch.no_grad():
        r = ratio.detach()
        low = ((r < 1.0 - eps_low) & (adv < 0)).to(m.dtype)
        high = ((r > 1.0 + eps_high) & (adv > 0)).to(m.dtype)
        stats = {
            "kl": kl_mean,
            "clip_low": _masked_mean(low, m),
            "clip_high": _masked_mean(high, m),
            "clip": _masked_mean(low + high, m),
            "ratio_mean": _masked_mean(r, m),
        }
    stats["per_sequence_loss"] = per_seq
    return loss, stats
