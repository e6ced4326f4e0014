"""GRPO maths as pure tensor functions: group-relative advantages, the clipped surrogate with an optional k3 KL
penalty, token- or sequence-level (GSPO) ratios, and the loss types in use (``LOSS_TYPES``: a surrogate and an
aggregation each).

References (formulas in METHODS.md): GRPO (Shao et al. 2024), Dr. GRPO (Liu et al. 2025), DAPO (Yu et al. 2025),
GSPO (Zheng et al. 2025); the code conventions follow TRL's ``GRPOTrainer._compute_loss`` (checked in TRL's
grpo_trainer.py): k3 KL ``exp(ref - logp) - (ref - logp) - 1``; GSPO's sequence log-ratio is the masked mean of
the token log-ratios; region-aware clip fractions (low: ratio < 1 - eps_low with A < 0, high: ratio > 1 + eps_high
with A > 0); "dr_grpo" divides the token-loss sum by B * max_completion_length, "dapo" by the token count.
"bnpo" and "cispo" follow TRL 1.16.0 (PyPI), trl/trainer/grpo_trainer.py ``GRPOTrainer._compute_loss``: bnpo divides
each micro-batch's token-loss sum by that micro-batch's token count; cispo's per-token term is
``-clamp(coef_1, max=epsilon_high).detach() * A * logp``, aggregated like dapo.

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from engine.algorithms.logprobs import entropy_from_logits, token_logprobs

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "LOSS_TYPES",
    "GroupAdvantages",
    "LossType",
    "entropy_from_logits",
    "group_advantages",
    "grpo_loss",
    "kl_k3",
    "token_logprobs",
]

AdvantageScale = Literal["group", "batch", "none"]
RatioLevel = Literal["token", "sequence"]
Aggregation = str  # a key of LOSS_TYPES

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


# ------------------------------------------------------------------------------------------- loss types
# A loss type is a per-token surrogate (what each completion token contributes) and an aggregation (how a
# sequence's token sum becomes its loss l_i, with loss = mean_i l_i). Adding one is a function and an entry in
# LOSS_TYPES; the config's loss_aggregation choices, and so the New run form, come from LOSS_TYPES.

def clipped_surrogate(logp: "Tensor", log_w: "Tensor", adv: "Tensor", eps_low: float, eps_high: float
                      ) -> tuple["Tensor", "Tensor", "Tensor"]:
    """PPO/GRPO's -min(w A, clip(w, 1 - eps_low, 1 + eps_high) A). logp, log_w (B, T); adv (B, 1). Returns the
    per-token loss (B, T) and where the clip acted (region-aware): low (w < 1 - eps_low, A < 0) and high
    (w > 1 + eps_high, A > 0), both (B, T) bool."""
    import torch

    ratio = log_w.exp()
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    r = ratio.detach()
    return -torch.minimum(ratio * adv, clipped * adv), (r < 1.0 - eps_low) & (adv < 0), (r > 1.0 + eps_high) & (adv > 0)


def cispo_surrogate(logp: "Tensor", log_w: "Tensor", adv: "Tensor", eps_low: float, eps_high: float
                    ) -> tuple["Tensor", "Tensor", "Tensor"]:
    """CISPO (MiniMax-M1, Chen et al. 2025): clip the importance weight, not the update. -sg(min(w, 1 + eps_high))
    * A * log pi per token: every token keeps a gradient (a clipped one at most 1 + eps_high times), where the
    clipped surrogate drops clipped tokens' gradients entirely. No lower clip (eps_low unused), as in the paper's
    runs. TRL writes the cap as epsilon_high itself (ScaleRL's eps_max, recommended 5.0); the studio keeps
    epsilon_high's meaning, the ratio's upper range, so TRL's epsilon_high = 1 + the studio's (4.0 here for 5.0).
    Shapes as clipped_surrogate."""
    w = log_w.detach().exp()
    low = w.new_zeros(w.shape, dtype=bool)
    return -w.clamp(max=1.0 + eps_high) * adv * logp, low, (w > 1.0 + eps_high) & (adv > 0)


def seq_mean(token_sums: "Tensor", m: "Tensor", max_len: int | None, normalizer: "float | Tensor | None") -> "Tensor":
    """Each sequence's token mean (the original GRPO; TRL "grpo"). (B,), (B, T) -> (B,)."""
    return token_sums / m.sum(1).clamp_min(1.0)


def constant(token_sums: "Tensor", m: "Tensor", max_len: int | None, normalizer: "float | Tensor | None") -> "Tensor":
    """Token sum / max_len (Dr. GRPO; TRL "dr_grpo"): no length normalisation. max_len defaults to T."""
    return token_sums / float(max_len if max_len is not None else m.shape[1])


def token_mean(token_sums: "Tensor", m: "Tensor", max_len: int | None, normalizer: "float | Tensor | None"
               ) -> "Tensor":
    """The whole batch's token mean (DAPO; TRL "dapo"): token sum / the batch's tokens per sequence
    (``normalizer``; default this call's), so micro-batches add up to the full batch's token mean."""
    if normalizer is not None:
        return token_sums / normalizer
    return token_sums * (m.shape[0] / m.sum().clamp_min(1.0))


def micro_batch_token_mean(token_sums: "Tensor", m: "Tensor", max_len: int | None,
                           normalizer: "float | Tensor | None") -> "Tensor":
    """BNPO (TRL "bnpo"): the token mean of the rows of this call, i.e. of each micro-batch (``normalizer``
    ignored). Micro-batches of equal size each weigh the same whatever their token counts, as in TRL's gradient
    accumulation; with one micro-batch this is token_mean."""
    return token_sums * (m.shape[0] / m.sum().clamp_min(1.0))


@dataclass(frozen=True)
class LossType:
    """One GRPO loss variant: its per-token surrogate, its aggregation, the TRL loss_type computing the same loss,
    and the help text the config field shows."""

    surrogate: Callable[..., tuple["Tensor", "Tensor", "Tensor"]]
    aggregate: Callable[..., "Tensor"]
    trl: str
    help: str


LOSS_TYPES: dict[str, LossType] = {
    "seq_mean": LossType(clipped_surrogate, seq_mean, "grpo", "original GRPO (each sequence's token mean)"),
    "constant": LossType(clipped_surrogate, constant, "dr_grpo", "Dr. GRPO (token sum / max_new_tokens)"),
    "token_mean": LossType(clipped_surrogate, token_mean, "dapo", "DAPO (the batch's token mean)"),
    "bnpo": LossType(clipped_surrogate, micro_batch_token_mean, "bnpo", "token mean per micro-batch"),
    "cispo": LossType(cispo_surrogate, token_mean, "cispo",
                      "CISPO (the importance weight, capped at 1 + epsilon_high and detached, times the log-prob)"),
}


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
    """The GRPO loss of type ``aggregation`` (a key of LOSS_TYPES) with optional k3 KL: (scalar loss, stats).

    Shapes: logp, old_logp, ref_logp, mask (B, T) (mask 1 on completion tokens); advantages (B,).
    Per token: the type's surrogate + beta * KL_t; for all but cispo the clipped
    -min(w A, clip(w, 1 - eps_low, 1 + eps_high) A), with w the token ratio
    pi/pi_old ("token") or GSPO's sequence ratio s_i = exp(mean_t log(pi/pi_old)) ("sequence"), written as
    GSPO-token: log w_it = sg[log s_i] + log pi_t - sg[log pi_t], whose value is s_i and whose gradient equals
    TRL's sequence-level form for every aggregation below.
    Aggregation: "seq_mean" mean over each sequence's tokens then over sequences (GRPO); "constant" token sum
    / (B * max_len) (Dr. GRPO; max_len defaults to T); "token_mean" and "cispo" token sum / number of tokens
    (DAPO); "bnpo" token sum / this call's number of tokens.
    ``normalizer`` (token_mean and cispo): the completion tokens per sequence of the WHOLE batch the loss is averaged
    over (its token count / its sequence count; default: this call's). A caller that splits a batch into
    micro-batches passes the whole batch's, so each sequence's loss is its token sum over that and the
    micro-batches' sum_i l_i / B adds up to the full batch's token mean (verl's agg_loss(..., batch_num_tokens),
    TRL's num_items_in_batch). seq_mean and constant do not depend on other rows, and bnpo normalises by the rows
    of this call by definition: they ignore it.
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
    if aggregation not in LOSS_TYPES:
        raise ValueError(f"aggregation must be one of {', '.join(LOSS_TYPES)}, got {aggregation!r}.")
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
    kind = LOSS_TYPES[aggregation]
    adv = advantages.detach().to(logp.dtype).unsqueeze(1)  # (B, 1)
    per_token, low, high = kind.surrogate(torch.where(on, logp, zero), log_w, adv, eps_low, eps_high)  # (B, T) x3

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
    per_seq = kind.aggregate(token_sums, m, max_len, normalizer)  # (B,)
    loss = per_seq.mean()

    with torch.no_grad():
        r = log_w.detach().exp()
        low, high = low.to(m.dtype), high.to(m.dtype)
        stats = {
            "kl": kl_mean,
            "clip_low": _masked_mean(low, m),
            "clip_high": _masked_mean(high, m),
            "clip": _masked_mean(low + high, m),
            "ratio_mean": _masked_mean(r, m),
        }
    stats["per_sequence_loss"] = per_seq
    return loss, stats
