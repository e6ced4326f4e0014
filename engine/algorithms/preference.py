"""Pairwise preference losses (DPO, IPO) from summed sequence log-probs; per-pair and UNREDUCED so the
group-robust weighting (group_robust.py) can average them per group before weighting.

Notation, as in Ramesh et al. (NeurIPS 2024) and its public code (rsshyam/Group-robust-preference-optimization,
``src/loss_utils.py::preference_loss``): the log-ratio margin
    h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)]
DPO: -log sigmoid(beta h) (with cDPO label smoothing eps: -(1-eps) log s(beta h) - eps log s(-beta h));
IPO: (h - 1/(2 beta))^2 (Azar et al. 2023, Eq. 17).

Length normalisation of IPO: TRL's ``loss_type="ipo"`` divides each sequence's summed log-prob by its token count
before forming h; the paper's formula and code use the plain sums. We default to the paper
(``length_normalize=False``) and make TRL's variant an explicit flag, because the two change the target
margin's scale (per-token vs per-sequence) and so the sensible beta.

Gradients flow only through the policy's log-probs: the reference log-probs are detached here so a caller that
forgot ``torch.no_grad`` around the reference forward cannot train the reference.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


def _check_pairs(*xs: "Tensor") -> None:
    shape = xs[0].shape
    if len(shape) != 1 or any(x.shape != shape for x in xs):
        raise ValueError(
            "preference losses expect four (B,) tensors of summed sequence log-probs (policy chosen, policy "
            f"rejected, reference chosen, reference rejected); got shapes {[tuple(x.shape) for x in xs]}."
        )


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (the KL strength of the implicit reward), got {beta}.")


def preference_margin(
    pol_chosen: "Tensor", pol_rejected: "Tensor", ref_chosen: "Tensor", ref_rejected: "Tensor"
) -> "Tensor":
    """h = (pi_c - ref_c) - (pi_r - ref_r): (B,) x4 -> (B,). Differentiable w.r.t. the policy terms only."""
    _check_pairs(pol_chosen, pol_rejected, ref_chosen, ref_rejected)
    return (pol_chosen - ref_chosen.detach()) - (pol_rejected - ref_rejected.detach())


def implicit_rewards(
    pol_chosen: "Tensor", pol_rejected: "Tensor", ref_chosen: "Tensor", ref_rejected: "Tensor", beta: float
) -> tuple["Tensor", "Tensor"]:
    """DPO's implicit rewards beta * (log pi - log pi_ref) for chosen and rejected, (B,) each, detached (for logs)."""
    _check_pairs(pol_chosen, pol_rejected, ref_chosen, ref_rejected)
    chosen = beta * (pol_chosen - ref_chosen).detach()
    rejected = beta * (pol_rejected - ref_rejected).detach()
    return chosen, rejected


def reward_accuracy(
    pol_chosen: "Tensor", pol_rejected: "Tensor", ref_chosen: "Tensor", ref_rejected: "Tensor"
) -> "Tensor":
    """(B,) bool: the chosen answer's implicit reward beats the rejected one's (h > 0; ties count as wrong)."""
    return preference_margin(pol_chosen, pol_rejected, ref_chosen, ref_rejected).detach() > 0


def dpo_loss(
    pol_chosen: "Tensor",
    pol_rejected: "Tensor",
    ref_chosen: "Tensor",
    ref_rejected: "Tensor",
    beta: float,
    label_smoothing: float = 0.0,
) -> "Tensor":
    """Per-pair DPO loss (B,): -(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h), unreduced."""
    import torch.nn.functional as F

    _check_beta(beta)
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(
            f"label_smoothing is the assumed label-flip probability and must lie in [0, 0.5), got {label_smoothing}."
        )
    h = preference_margin(pol_chosen, pol_rejected, ref_chosen, ref_rejected)  # (B,)
    # logsigmoid rather than log(sigmoid()) so a large |beta h| does not underflow to log(0).
    return -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def ipo_loss(
    pol_chosen: "Tensor",
    pol_rejected: "Tensor",
    ref_chosen: "Tensor",
    ref_rejected: "Tensor",
    beta: float,
    chosen_len: "Tensor | None" = None,
    rejected_len: "Tensor | None" = None,
    length_normalize: bool = False,
) -> "Tensor":
    """Per-pair IPO loss (B,): (h - 1/(2 beta))^2, unreduced. Zero when the margin equals 1/(2 beta).

    ``length_normalize=True`` (TRL's IPO) divides every log-prob by its sequence's token count first and then
    needs ``chosen_len`` and ``rejected_len`` (B,); the default False is the paper's formula.
    """
    _check_beta(beta)
    _check_pairs(pol_chosen, pol_rejected, ref_chosen, ref_rejected)
    if length_normalize:
        if chosen_len is None or rejected_len is None:
            raise ValueError("ipo_loss(length_normalize=True) needs chosen_len and rejected_len (token counts, (B,)).")
        if chosen_len.shape != pol_chosen.shape or rejected_len.shape != pol_rejected.shape:
            raise ValueError(
                f"chosen_len {tuple(chosen_len.shape)} and rejected_len {tuple(rejected_len.shape)} must be (B,) "
                f"like the log-probs {tuple(pol_chosen.shape)}."
            )
        if bool((chosen_len <= 0).any()) or bool((rejected_len <= 0).any()):
            raise ValueError("token counts must be positive for length normalisation; an empty completion has none.")
        c_len = chosen_len.to(pol_chosen.dtype)
        r_len = rejected_len.to(pol_rejected.dtype)
        pol_chosen, ref_chosen = pol_chosen / c_len, ref_chosen / c_len
        pol_rejected, ref_rejected = pol_rejected / r_len, ref_rejected / r_len
    h = preference_margin(pol_chosen, pol_rejected, ref_chosen, ref_rejected)  # (B,)
    return (h - 1.0 / (2.0 * beta)) ** 2


def sequence_logprobs(logits: "Tensor", labels: "Tensor", mask: "Tensor") -> "Tensor":
    """Summed log-prob of each sequence's labelled tokens: logits (B, T, V), labels (B, T), mask (B, T) -> (B,).

    ``logits[:, t]`` must predict ``labels[:, t]`` (already shifted). ``mask`` selects the completion tokens
    (prompt and padding are 0); labels under a 0 mask may hold anything, e.g. -100. Uses the chunked
    selective log-softmax (float32, never a (B, T, V) float64 or full log_softmax copy).
    """
    from engine.algorithms.logprobs import token_logprobs

    if mask.shape != labels.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must have the shape of labels {tuple(labels.shape)}.")
    per_token = token_logprobs(logits, labels)  # (B, T)
    m = mask.to(per_token.dtype)
    # where() and not just *m: a masked position may hold a -inf log-prob and -inf * 0 is nan.
    return (per_token.where(m > 0, per_token.new_zeros(())) * m).sum(-1)
