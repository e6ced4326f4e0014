"""Group-robust weighting (Ramesh et al., "Group Robust Preference Optimization in Reward-free RLHF",
NeurIPS 2024): a mirror-descent (exponentiated-gradient) adversary over group weights alpha in the simplex.

The same maths serves GR-DPO/IPO (per-pair losses) and group-robust GRPO (per-sequence losses): the caller
hands per-example losses and integer group ids, gets per-group mean losses, moves alpha, then reduces with
``robust_loss(group_loss, mixed_weights(new_alpha, chi))``.

One training step, as in the paper's Algorithm 1 and its public code:
    group_loss, counts = group_losses(per_example_loss, group_ids, K)        # (K,), (K,)
    alpha = update_group_weights(alpha, group_loss.detach(), eta, chi=chi,
                                 scale=paper_scale(dataset_counts), present=counts > 0)
    loss = robust_loss(group_loss, mixed_weights(alpha, chi))                # uses the NEW alpha
    loss.backward()

Checked against the paper's public code (github.com/rsshyam/Group-robust-preference-optimization):
- ``src/trainers/grouptrainer.py`` (LLM study, ``GroupTrainer.compute_robust_loss``): ``adv_probs =
  adv_probs * exp(step_size * group_loss.detach())``, then ``adv_probs / adv_probs.sum()``, and the robust
  loss ``group_loss @ adv_probs`` uses the UPDATED weights. Groups absent from the minibatch have group loss 0
  there, so exp(0) = 1 leaves them unmoved before renormalising; ``present`` reproduces that explicitly.
  With ``divide_by_totalcount`` the group loss is ``N * sum_batch_g(loss) / N_g`` (N, N_g: training-set
  counts): the ``scale`` argument carries that factor; ``paper_scale(dataset_counts)`` applied to our per-group
  MEAN differs from it by the batch count n_g, so pass ``paper_scale(dataset_counts) * counts`` to match the
  code to the letter. The importance-sampling baseline fixes the weights to
  ``(1/N_g) / sum(1/N_g)`` (``importance_weights``); the synthetic code applies them to each PAIR (sum_g w_g
  sum_{i in g} loss_i / N: ``importance_group_weights``), which gives every group the same total mass.
- ``algos/linear_bandit/group_robust_dpo_vectorised_gradfix.py`` (synthetic study): ``group_weights *=
  exp(exp_step_size * group_loss)``, normalised, before the weighted policy gradient.
- The trade-off chi is not in the public code we could read; it follows the paper's description (METHODS.md):
  the alpha step uses exp(eta * chi * L_g) and the policy step the mixed weights (1 - chi)/K + chi * alpha.
  With chi = 1 (the default) this is exactly the code above.
See the module-level notes in METHODS.md for the objective min_pi max_alpha sum_g alpha_g L_g.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch stays a lazy import: the app may import the state dataclass without torch.
    from torch import Tensor


def group_losses(per_example_loss: "Tensor", group_ids: "Tensor", num_groups: int) -> tuple["Tensor", "Tensor"]:
    """Mean loss per group (K,) and example count per group (K,).

    Groups with no examples get loss 0 and count 0. Differentiable w.r.t. ``per_example_loss``
    (index_add, no Python loop), so the robust loss back-propagates into every example of a weighted group.
    """
    import torch

    if per_example_loss.dim() != 1 or group_ids.shape != per_example_loss.shape:
        raise ValueError(
            f"group_losses expects per_example_loss (N,) and group_ids (N,) of the same shape; got "
            f"{tuple(per_example_loss.shape)} and {tuple(group_ids.shape)}. Flatten the losses and ids first."
        )
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}.")
    if not per_example_loss.is_floating_point():  # e.g. a bool "correct" vector for a per-group accuracy
        per_example_loss = per_example_loss.float()
    ids = group_ids.to(device=per_example_loss.device, dtype=torch.long)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_groups):
        raise ValueError(
            f"group_ids must lie in [0, {num_groups}); got range [{int(ids.min())}, {int(ids.max())}]. "
            "Map group names to contiguous integer ids, and pass the total number of groups."
        )
    sums = per_example_loss.new_zeros(num_groups).index_add(0, ids, per_example_loss)  # (K,)
    counts = per_example_loss.new_zeros(num_groups).index_add(
        0, ids, torch.ones_like(per_example_loss)
    )  # (K,)
    # clamp only the divisor: empty groups have sum 0, so their mean is exactly 0 and their gradient 0.
    return sums / counts.clamp_min(1.0), counts


def update_group_weights(
    alpha: "Tensor",
    group_loss: "Tensor",
    eta: float,
    *,
    chi: float = 1.0,
    scale: "Tensor | None" = None,
    present: "Tensor | None" = None,
) -> "Tensor":
    """Exponentiated-gradient (mirror-descent) step on the simplex.

    alpha_g <- alpha_g * exp(eta * chi * scale_g * L_g), renormalised. Returns a NEW detached tensor (never
    mutates ``alpha``). Computed in log space (logsumexp) so a large eta*L cannot overflow.
    ``scale``: the paper's N/N_g factor per group (None = 1). ``present``: bool mask of groups seen in this
    batch; absent groups get no exponent (their loss is unknown), as in the paper's code where only sampled
    groups move (they still shrink or grow relatively through the renormalisation).
    """
    import torch

    if alpha.dim() != 1 or group_loss.shape != alpha.shape:
        raise ValueError(
            f"alpha and group_loss must both be (K,); got {tuple(alpha.shape)} and {tuple(group_loss.shape)}."
        )
    if eta < 0:
        raise ValueError(f"eta (the group-weight step size) must be >= 0, got {eta}.")
    if not 0.0 <= chi <= 1.0:
        raise ValueError(f"chi must lie in [0, 1] (1 = worst group, 0 = group-balanced), got {chi}.")
    a = alpha.detach().to(torch.float64)
    if bool((a < 0).any()) or not torch.isfinite(a).all():
        raise ValueError(f"alpha must be finite and non-negative, got {alpha.tolist()}.")
    step = eta * chi * group_loss.detach().to(torch.float64)  # (K,)
    if scale is not None:
        step = step * scale.detach().to(device=step.device, dtype=torch.float64)
    if present is not None:
        step = torch.where(present.to(device=step.device, dtype=torch.bool), step, torch.zeros_like(step))
    if not torch.isfinite(step).all():
        raise ValueError(f"group losses must be finite to update the group weights; got {group_loss.tolist()}.")
    # log(0) = -inf keeps a zero-weight group at exactly zero, as the multiplicative update does.
    logits = torch.log(a) + step
    new = torch.exp(logits - torch.logsumexp(logits, dim=0))
    return new.to(alpha.dtype)


def mixed_weights(alpha: "Tensor", chi: float) -> "Tensor":
    """(1 - chi)/K + chi * alpha: chi=1 worst-group (pure GR), chi=0 group-balanced average."""
    if not 0.0 <= chi <= 1.0:
        raise ValueError(f"chi must lie in [0, 1] (1 = worst group, 0 = group-balanced), got {chi}.")
    k = alpha.shape[0]
    return (1.0 - chi) / k + chi * alpha.detach()


def robust_loss(group_loss: "Tensor", weights: "Tensor") -> "Tensor":
    """sum_g weights_g * L_g, with the weights treated as constants (detached): the adversary is not trained
    by the policy's gradient."""
    if group_loss.shape != weights.shape:
        raise ValueError(f"group_loss {tuple(group_loss.shape)} and weights {tuple(weights.shape)} must match.")
    return (weights.detach().to(group_loss.dtype) * group_loss).sum()


def importance_weights(group_counts: "Tensor") -> "Tensor":
    """Fixed importance-sampling baseline weights proportional to 1/N_g over groups with N_g > 0,
    normalised to sum 1 (groups with N_g = 0 get 0)."""
    import torch

    counts = group_counts.to(torch.float64)
    if bool((counts < 0).any()):
        raise ValueError(f"group counts must be non-negative, got {group_counts.tolist()}.")
    if not bool((counts > 0).any()):
        raise ValueError("importance_weights needs at least one group with a positive count.")
    inv = torch.where(counts > 0, 1.0 / counts.clamp_min(1e-300), torch.zeros_like(counts))
    return (inv / inv.sum()).to(torch.float32 if not group_counts.is_floating_point() else group_counts.dtype)


def importance_group_weights(group_counts: "Tensor", batch_counts: "Tensor") -> "Tensor":
    """The importance-sampling objective of the authors' synthetic code, sum_g w_g * sum_{i in g} loss_i / B
    (``group_robust_dpo_vectorised_gradfix.py``, ``importance_sampling True``), as weights on the batch's group
    MEAN losses: w_g * n_g / B, with w = importance_weights(group_counts) (training-set counts N_g) and n_g the
    batch's counts (B = sum n_g). Each PAIR weighs w_g, so on the whole training set every group has the same
    total mass 1 / (N sum_k 1/N_k): a group-balanced objective, at the authors' step size (the masses sum to
    K / (N sum_k 1/N_k) <= 1, e.g. 0.32 for 60/240 pairs). Putting w_g on the group means instead would weigh a
    minority pair (N_maj / N_min)^2 times a majority pair. batch_counts (..., K) -> (..., K)."""
    w = importance_weights(group_counts).to(batch_counts.dtype)  # (K,)
    n = batch_counts.sum(-1, keepdim=True).clamp_min(1.0)  # (..., 1)
    return w * batch_counts / n


def paper_scale(group_counts: "Tensor") -> "Tensor":
    """N / N_g per group (0 where N_g = 0): the paper's factor that makes a minibatch's group loss an unbiased
    estimate of the full-data alpha gradient when groups are sampled in proportion to their size."""
    import torch

    counts = group_counts.to(torch.float64)
    total = counts.sum()
    out = torch.where(counts > 0, total / counts.clamp_min(1e-300), torch.zeros_like(counts))
    return out.to(torch.float32 if not group_counts.is_floating_point() else group_counts.dtype)


@dataclass(frozen=True)
class GroupWeightState:
    """The adversary's state: checkpointed with the model and logged every step."""

    alpha: tuple[float, ...]

    @classmethod
    def uniform(cls, num_groups: int) -> "GroupWeightState":
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}.")
        return cls(alpha=tuple([1.0 / num_groups] * num_groups))

    @classmethod
    def from_tensor(cls, alpha: "Tensor") -> "GroupWeightState":
        return cls(alpha=tuple(float(x) for x in alpha.detach().cpu().tolist()))

    def to_tensor(self, device: Any = None) -> "Tensor":
        import torch

        return torch.tensor(self.alpha, dtype=torch.float32, device=device)

    def to_dict(self) -> dict:
        return {"alpha": list(self.alpha)}

    @classmethod
    def from_dict(cls, d: dict) -> "GroupWeightState":
        if "alpha" not in d:
            raise ValueError(f"GroupWeightState.from_dict needs an 'alpha' key; got keys {sorted(d)}.")
        alpha = tuple(float(x) for x in d["alpha"])
        if not alpha or any(x < 0 for x in alpha) or abs(sum(alpha) - 1.0) > 1e-4:
            raise ValueError(f"alpha must be a non-empty list of non-negative weights summing to 1, got {alpha}.")
        return cls(alpha=alpha)
