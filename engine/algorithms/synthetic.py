"""The synthetic experiment of Group Robust Preference Optimization (Ramesh et al., NeurIPS 2024).

A model-free, CPU-only run the studio can queue: a log-linear policy over 8 actions learns from group-labelled
preference pairs with DPO, IPO, their importance-sampling variants (IS-) or their group-robust variants (GR-),
and every step logs the group weights, per-group validation loss/accuracy and per-group reward error.

Followed from the paper's public code, github.com/rsshyam/Group-robust-preference-optimization-bandits at HEAD
f8bdf05fcf1b25c53a6318151d4727a4f2928646 (2024-09-12; hyper-parameters: ``SCRIPT_REVISIONS`` below):
- ``envs/group_linear_bandit.py`` (``ret_feature_func``): states x ~ U[0,1]^2, s = a/8 + 1,
  phi(x,a,0) = [s cos(pi x1), sin(pi x1)/s, s cos(pi x2), sin(pi x2)/s]. Group 1 by ``feature_type``:
  'swapped' (the reproduce scripts) exchanges the positions, phi(x,a,1) = [sin(pi x1)/s, s cos(pi x1), ...];
  'flipped' (the plotting scripts' runs, ``REWARD_FUNC = 'flipped'``) exchanges cos and sin inside the terms,
  phi(x,a,1) = [s sin(pi x1), cos(pi x1)/s, ...].
- ``experiments/run_group_linear_bandit_sep_theta_combined_uneven_grp_vectorised.py`` (``set_reward_params``):
  theta*_0 = (1,3,1,3), theta*_1 = (3,1,3,1); true reward r_g = theta*_g . phi(x,a,g); a uniform reference policy;
  policy pi_theta(a|x,g) ∝ exp(theta . phi(x,a,g)), one theta shared by both groups, theta_0 ~ U[0,5]^4
  (``param_limit 5``); 300 training pairs, 1000 validation pairs (groups 50/50), 1000 test states; the reward of
  a policy is that of its greedy (argmax) action (``eval_metric argmax``); reward error (opt_g - R_g)/opt_g.
- ``utils/collect_data.py``: labels from the true reward with ``deterministic_ratio_list [1,1]``, i.e.
  deterministic (the higher-reward action is preferred; ties go to the second action), not Bradley-Terry sampled.
  ``collect_group_preference_data`` draws two distinct actions uniformly (even groups);
  ``collect_uneven_group_preference_data_partial_deterministic_list`` compares adjacent actions in group 0
  (a +- 1, reflected at the ends) and actions 4 apart in group 1 (uneven groups). Group sizes are
  round(weight * n), shuffled.
- ``algos/linear_bandit/group_robust_dpo_vectorised_gradfix.py``, ``batch_update_once`` (gradient steps; full
  batch, ``rdpo_batch_size 300`` = the data): per-group mean losses, alpha_g <- alpha_g exp(eta chi L_g)
  normalised FIRST, then theta <- theta - lr * sum_g mixed_g * sum_{i in g} grad_i / n_g (GR). IS-DPO/IPO
  (``importance_sampling True``) fix the group weights to w_g = (1/N_g) / sum_k(1/N_k) (0.8/0.2 for 20/80
  data) and take theta <- theta - lr * sum_g w_g * sum_{i in g} grad_i / N: each PAIR weighs w_g, so every
  group has the same total mass w_g N_g / N = 1 / (N sum_k 1/N_k) (0.16 each for 60/240 pairs, 0.25 each for
  150/150). We do exactly that, step size included. Plain DPO (``dpo_type dpo``,
  ``group_dpo_vectorised.py``) is the mean gradient over pairs. DPO loss -log sigmoid(beta h), IPO loss
  (h - 1/(2 beta))^2 (``ipo_grad_type linear``) with h = theta . (phi_w - phi_l).
- The same file, ``batch_update_closed_form`` + ``WeightedRegression`` (``use_closed_form True``; all the
  authors' IPO runs): every step solves theta = (D^T W D)^-1 D^T W 1 / (2 beta), the exact minimiser of the
  pair-weighted IPO loss, with W = diag(per-pair weight): 1/2 for IPO (their IPO is IS with weights '0.5,0.5'),
  w_g for IS-IPO, and for GR-IPO the group's mixed weight (1 - chi)/K + chi alpha_g. Two quirks of their GR-IPO,
  kept under ``closed_form_weights='authors'`` (the default): the alpha step uses L_g / n_g (the mean loss is
  divided by the group count twice), and each PAIR weighs alpha_g, so a group's mass in the regression is
  alpha_g n_g rather than the paper's alpha_g. ``closed_form_weights='paper'`` is the paper's Algorithm 1 with
  the policy step solved exactly instead (alpha step on L_g, pair weight mixed_g / n_g). IPO and IS-IPO are the
  same under both. ``solver='gradient'`` gives any IPO method gradient steps instead (the studio's earlier
  Algorithm 1 implementation).

Deviations (also in REPRODUCTION.md):
- Random streams differ from the paper's numpy ones (torch generators, seeds 0..19 instead of 2021..2040).
- Minibatches (batch_size > 0; the paper is full batch) are drawn uniformly with replacement from a generator
  seeded by (seed, step), so a resumed run draws the same batches without carrying RNG state. IS then weighs
  each drawn pair w_g / B, as the authors' code with a batch smaller than the data.
- Chi (the paper's trade-off): policy weights (1 - chi)/K + chi alpha, alpha step exp(eta chi L_g), as the code.

Pure maths and data only (settings, features, data, losses, one training step, evaluation); the driver that
loops over steps, records the metrics and polls for a stop is engine/runs/synthetic.py.

torch is imported lazily so the app can import ``SyntheticSettings`` cheaply.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, get_args


if TYPE_CHECKING:
    from torch import Tensor

Setting = Literal["even_imbalanced", "uneven_balanced", "uneven_imbalanced"]
Method = Literal["dpo", "ipo", "is_dpo", "is_ipo", "gr_dpo", "gr_ipo"]
FeatureType = Literal["swapped", "flipped"]
Solver = Literal["gradient", "closed_form"]
ClosedFormWeights = Literal["authors", "paper"]
SETTINGS: tuple[str, ...] = get_args(Setting)
METHODS: tuple[str, ...] = get_args(Method)
FEATURE_TYPES: tuple[str, ...] = get_args(FeatureType)
SOLVERS: tuple[str, ...] = get_args(Solver)
CLOSED_FORM_WEIGHTS: tuple[str, ...] = get_args(ClosedFormWeights)

NUM_ACTIONS = 8
NUM_GROUPS = 2
STATE_DIM = 2
FEATURE_DIM = 2 * STATE_DIM
THETA_STAR: tuple[tuple[float, ...], ...] = ((1.0, 3.0, 1.0, 3.0), (3.0, 1.0, 3.0, 1.0))
INIT_LIMIT = 5.0  # theta_0 ~ U[0, INIT_LIMIT]^d, the paper's ``param_limit``
GROUP_NAMES: tuple[str, ...] = tuple(f"group_{g}" for g in range(NUM_GROUPS))

# Share of group 0 in the training data per setting (validation is always 50/50).
TRAIN_GROUP0_SHARE: dict[str, float] = {"even_imbalanced": 0.2, "uneven_balanced": 0.5, "uneven_imbalanced": 0.2}
UNEVEN_PAIRS: dict[str, bool] = {"even_imbalanced": False, "uneven_balanced": True, "uneven_imbalanced": True}


@dataclass(frozen=True)
class SyntheticSettings:
    """One synthetic run. Plain JSON-able values; defaults are the authors' uneven-imbalanced GR-DPO run at HEAD
    (``paper_settings("uneven_imbalanced", "gr_dpo")``)."""

    setting: Setting = "uneven_imbalanced"
    method: Method = "gr_dpo"
    beta: float = 1.0  # DPO/IPO temperature (the paper's ``reg_coef``)
    chi: float = 1.0  # 1 = worst group (pure GR), 0 = group-balanced average; only GR methods use it
    eta: float = 0.5  # group-weight (mirror-descent) step size (``rdpo_exp_step_size``)
    lr: float = 0.9  # policy gradient step size (``dpo_step_size``); unused by the closed-form solver
    steps: int = 20000  # policy updates (``dpo_num_iters``)
    feature_type: FeatureType = "swapped"  # how group 1's features differ from group 0's (``feature_type``)
    solver: Solver = "gradient"  # closed_form (IPO methods only): exact weighted least squares per step
    closed_form_weights: ClosedFormWeights = "authors"  # GR-IPO in closed form: the authors' code or Algorithm 1
    batch_size: int = 0  # 0 = full batch, as in the paper
    n_train: int = 300
    n_val: int = 1000
    n_test_states: int = 1000
    seed: int = 0
    eval_every: int = 1  # evaluate + call on_step every this many steps (and always at the last step)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.setting not in SETTINGS:
            problems.append(f"setting must be one of {SETTINGS}, got {self.setting!r}")
        if self.method not in METHODS:
            problems.append(f"method must be one of {METHODS}, got {self.method!r}")
        if self.feature_type not in FEATURE_TYPES:
            problems.append(f"feature_type must be one of {FEATURE_TYPES}, got {self.feature_type!r}")
        if self.solver not in SOLVERS:
            problems.append(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        elif self.solver == "closed_form" and not str(self.method).endswith("ipo"):
            problems.append(f"solver 'closed_form' solves IPO's least squares and has no DPO counterpart; use "
                            f"solver 'gradient' for {self.method!r}")
        elif self.solver == "closed_form" and self.batch_size != 0:
            problems.append("solver 'closed_form' solves on the whole training set; set batch_size 0")
        if self.closed_form_weights not in CLOSED_FORM_WEIGHTS:
            problems.append(f"closed_form_weights must be one of {CLOSED_FORM_WEIGHTS}, got {self.closed_form_weights!r}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            problems.append(f"beta must be a positive number, got {self.beta}")
        if not 0.0 <= self.chi <= 1.0:
            problems.append(f"chi must lie in [0, 1] (1 = worst group, 0 = balanced), got {self.chi}")
        if not (self.eta >= 0 and math.isfinite(self.eta)):
            problems.append(f"eta must be >= 0, got {self.eta}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number, got {self.lr}")
        if self.steps < 1:
            problems.append(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 0:
            problems.append(f"batch_size must be >= 0 (0 = full batch), got {self.batch_size}")
        # Each group needs at least one pair in every split, or its loss is undefined.
        if self.n_train < 10:
            problems.append(f"n_train must be >= 10 so both groups get pairs, got {self.n_train}")
        if self.n_val < 2:
            problems.append(f"n_val must be >= 2 so both groups get pairs, got {self.n_val}")
        if self.n_test_states < 1:
            problems.append(f"n_test_states must be >= 1, got {self.n_test_states}")
        if self.eval_every < 1:
            problems.append(f"eval_every must be >= 1, got {self.eval_every}")
        if problems:
            raise ValueError("Invalid SyntheticSettings: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SyntheticSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown SyntheticSettings keys {unknown}; valid keys are {sorted(known)}.")
        return cls(**d)


# The authors' hyper-parameters, github.com/rsshyam/Group-robust-preference-optimization-bandits.
# DPO, IS-DPO and GR-DPO: ``scripts/scripts to reproduce/{even_group_imbalanced_data, uneven_group_balanced_data,
# uneven_group_imbalanced_data}.sh`` (--step_size -> lr, --reg_coef -> beta, --exp_step_size -> eta,
# --dpo_num_iters -> steps; all --feature_type 'swapped', --chi 1, full batch). The scripts changed twice, so a
# revision picks the commit: "head" = HEAD f8bdf05fcf1b (2024-09-12; the scripts last changed in efebafd5f16a,
# 2024-09-06), "2024-05" = 62a5aaf1552f (2024-05-22), "2024-04" = 26ac54c7c3e0 (2024-04-05; what this studio used
# before, whose even setting it ran time-rescaled).
SCRIPT_COMMITS: dict[str, str] = {
    "head": "f8bdf05fcf1b25c53a6318151d4727a4f2928646",
    "2024-05": "62a5aaf1552fa7a8809c647371fbf1afc2a463cd",
    "2024-04": "26ac54c7c3e0f66939c48a721e5a8f78a8d416b5",
}
SCRIPT_REVISIONS: dict[str, dict[str, dict[str, Any]]] = {
    "head": {
        "even_imbalanced": dict(lr=0.5, beta=1.0, eta=0.9, steps=10000),
        "uneven_balanced": dict(lr=5.0, beta=2.0, eta=0.01, steps=5000),
        "uneven_imbalanced": dict(lr=0.9, beta=1.0, eta=0.5, steps=20000),
    },
    "2024-05": {st: dict(lr=0.9, beta=1.0, eta=0.5, steps=10000) for st in SETTINGS},
    "2024-04": {
        "even_imbalanced": dict(lr=1.0, beta=0.1, eta=0.001, steps=80000),
        "uneven_balanced": dict(lr=5.0, beta=2.0, eta=0.01, steps=5000),
        "uneven_imbalanced": dict(lr=5.0, beta=2.0, eta=0.01, steps=5000),
    },
}
# IPO, IS-IPO and GR-IPO (the same at every revision): ``scripts/scripts to reproduce/even.sh`` (unchanged since
# 42b7a839, 2024-03-30: --ipo_grad_type 'linear' --reg_coef 0.1 --use_closed_form True --lamba 0
# --exp_step_size 0.01 --step_size 0.1, the step size unused by the closed form) and the runs the plotting
# scripts select for the paper's IPO figures (``plotting/wandb_data_collect_script_final_simplified*.py``,
# ``create_filter_dicts``: reg_coef 0.1, lamba 0; IPO = importance weights '0.5,0.5' and IS-IPO = the 1/N_g ones,
# both dpo_num_iters 10; GR-IPO rdpo_exp_step_size 0.01, dpo_num_iters 100; even.sh itself says 1000).
IPO_SETTINGS: dict[str, dict[str, Any]] = {
    "ipo": dict(beta=0.1, lr=0.1, eta=0.01, steps=10, solver="closed_form"),
    "is_ipo": dict(beta=0.1, lr=0.1, eta=0.01, steps=10, solver="closed_form"),
    "gr_ipo": dict(beta=0.1, lr=0.1, eta=0.01, steps=100, solver="closed_form", closed_form_weights="authors"),
}
# The paper's Algorithm 1 for GR-IPO with gradient steps (the studio's earlier GR-IPO), at the authors' IPO beta
# and eta. IPO's curvature 2 D^T D / N does not shrink with beta, so lr stays at 1 (the DPO step sizes of 5 would
# diverge). It reaches the same point as closed_form_weights='paper' (tests/test_synthetic.py); 2000 steps are
# far past where the 20-seed means stop moving.
ALGORITHM1_GR_IPO: dict[str, Any] = dict(beta=0.1, lr=1.0, eta=0.01, steps=2000, solver="gradient")


def paper_settings(setting: str, method: str, seed: int = 0, revision: str = "head",
                   **overrides: Any) -> SyntheticSettings:
    """The authors' hyper-parameters for (setting, method) at script ``revision`` (``SCRIPT_REVISIONS``; IPO
    methods from ``IPO_SETTINGS`` at every revision). ``overrides`` replace any field."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if revision not in SCRIPT_REVISIONS:
        raise ValueError(f"revision must be one of {tuple(SCRIPT_REVISIONS)}, got {revision!r}.")
    base = dict(IPO_SETTINGS[method] if method.endswith("ipo") else SCRIPT_REVISIONS[revision][setting])
    base["feature_type"] = "swapped"
    base.update(overrides)
    return SyntheticSettings(setting=setting, method=method, seed=seed, **base)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- features


def feature_map(x: "Tensor", action: "Tensor", group: "Tensor", feature_type: str = "swapped") -> "Tensor":
    """phi(x, a, g) for broadcastable x (..., 2), action (...) and group (...) -> (..., 4).

    Group 0: [s cos(pi x1), sin(pi x1)/s, s cos(pi x2), sin(pi x2)/s], s = a/8 + 1. Group 1, as the authors'
    ``ret_feature_func``: 'swapped' exchanges each (cos, sin) pair's positions, [sin(pi x1)/s, s cos(pi x1), ...];
    'flipped' exchanges cos and sin inside the terms, [s sin(pi x1), cos(pi x1)/s, ...]."""
    import torch

    if feature_type not in FEATURE_TYPES:
        raise ValueError(f"feature_type must be one of {FEATURE_TYPES}, got {feature_type!r}.")
    s = action.to(x.dtype) / NUM_ACTIONS + 1.0  # (...)
    s = s.unsqueeze(-1)  # (..., 1)
    cos, sin = torch.cos(math.pi * x), torch.sin(math.pi * x)  # (..., 2)
    g1 = (group != 0).unsqueeze(-1)  # (..., 1)
    if feature_type == "swapped":
        big, small = s * cos, sin / s  # (..., 2) the terms that grow / shrink with the action
        first, second = torch.where(g1, small, big), torch.where(g1, big, small)  # (..., 2)
    else:
        first = s * torch.where(g1, sin, cos)  # (..., 2)
        second = torch.where(g1, cos, sin) / s  # (..., 2)
    return torch.stack((first, second), dim=-1).flatten(-2)  # (..., 4): [f1, s1, f2, s2]


def true_reward(x: "Tensor", action: "Tensor", group: "Tensor", feature_type: str = "swapped") -> "Tensor":
    """r*_g(x, a) = theta*_g . phi(x, a, g) -> (...)."""
    import torch

    theta_star = torch.tensor(THETA_STAR, dtype=x.dtype)  # (K, d)
    phi = feature_map(x, action, group, feature_type)  # (..., d)
    return (phi * theta_star[group.long()]).sum(-1)


# ----------------------------------------------------------------------------------------------- data


@dataclass
class PreferenceSplit:
    states: "Tensor"  # (N, 2)
    chosen: "Tensor"  # (N,) long, preferred action
    rejected: "Tensor"  # (N,) long
    group: "Tensor"  # (N,) long
    diff: "Tensor"  # (N, d) phi(x, chosen, g) - phi(x, rejected, g)


@dataclass
class SyntheticData:
    train: PreferenceSplit
    val: PreferenceSplit
    test_states: "Tensor"  # (T, 2)
    test_features: "Tensor"  # (K, T, A, d)
    test_rewards: "Tensor"  # (K, T, A) true rewards
    opt_reward: "Tensor"  # (K,) mean over test states of max_a r*_g


def _group_ids(n: int, share0: float, gen: Any) -> "Tensor":
    """round(share * n) pairs per group, shuffled (as the paper's code; the last group takes the rest so the
    total is always n)."""
    import torch

    n0 = int(round(share0 * n))
    ids = torch.cat((torch.zeros(n0, dtype=torch.long), torch.ones(n - n0, dtype=torch.long)))
    return ids[torch.randperm(n, generator=gen)]


def _action_pairs(group: "Tensor", uneven: bool, gen: Any) -> tuple["Tensor", "Tensor"]:
    import torch

    n = group.shape[0]
    a1 = torch.randint(NUM_ACTIONS, (n,), generator=gen)
    if not uneven:
        # uniform over ordered pairs of distinct actions
        a2 = (a1 + torch.randint(1, NUM_ACTIONS, (n,), generator=gen)) % NUM_ACTIONS
        return a1, a2
    sign = torch.randint(2, (n,), generator=gen) * 2 - 1  # (N,) +-1
    adj = a1 + sign
    adj = torch.where(adj >= NUM_ACTIONS, a1 - 1, adj)  # reflect at the ends, as the paper's code
    adj = torch.where(adj < 0, a1 + 1, adj)
    far = (a1 + NUM_ACTIONS // 2) % NUM_ACTIONS
    return a1, torch.where(group == 0, adj, far)


def _preference_split(n: int, share0: float, uneven: bool, gen: Any, feature_type: str) -> PreferenceSplit:
    import torch

    group = _group_ids(n, share0, gen)
    states = torch.rand((n, STATE_DIM), generator=gen, dtype=torch.float64)
    a1, a2 = _action_pairs(group, uneven, gen)
    r1, r2 = true_reward(states, a1, group, feature_type), true_reward(states, a2, group, feature_type)
    # deterministic labels from the true reward; ties prefer the second action (the paper's code)
    second_wins = r2 >= r1
    chosen = torch.where(second_wins, a2, a1)
    rejected = torch.where(second_wins, a1, a2)
    diff = feature_map(states, chosen, group, feature_type) - feature_map(states, rejected, group, feature_type)
    return PreferenceSplit(states=states, chosen=chosen, rejected=rejected, group=group, diff=diff)


def make_data(s: SyntheticSettings) -> SyntheticData:
    """All data of a run, a pure function of (setting, sizes, seed)."""
    import torch

    gen = torch.Generator().manual_seed(int(s.seed))
    uneven = UNEVEN_PAIRS[s.setting]
    train = _preference_split(s.n_train, TRAIN_GROUP0_SHARE[s.setting], uneven, gen, s.feature_type)
    val = _preference_split(s.n_val, 0.5, uneven, gen, s.feature_type)
    test_states = torch.rand((s.n_test_states, STATE_DIM), generator=gen, dtype=torch.float64)
    actions = torch.arange(NUM_ACTIONS).view(1, 1, NUM_ACTIONS)  # (1, 1, A)
    groups = torch.arange(NUM_GROUPS).view(NUM_GROUPS, 1, 1)  # (K, 1, 1)
    x = test_states.view(1, -1, 1, STATE_DIM)  # (1, T, 1, 2)
    shape = (NUM_GROUPS, s.n_test_states, NUM_ACTIONS)
    a_full, g_full = actions.expand(shape), groups.expand(shape)
    test_features = feature_map(x.expand(*shape, STATE_DIM), a_full, g_full, s.feature_type)  # (K, T, A, d)
    theta_star = torch.tensor(THETA_STAR, dtype=torch.float64).view(NUM_GROUPS, 1, 1, FEATURE_DIM)
    test_rewards = (test_features * theta_star).sum(-1)  # (K, T, A)
    opt_reward = test_rewards.max(-1).values.mean(-1)  # (K,)
    return SyntheticData(train, val, test_states, test_features, test_rewards, opt_reward)


# ----------------------------------------------------------------------------------------------- losses


def pair_losses(method: str, theta: "Tensor", diff: "Tensor", beta: float) -> "Tensor":
    """Per-pair DPO or IPO loss, unreduced: theta (S, d), diff (S, N, d) -> (S, N) (or (d,), (N, d) -> (N,)).

    For pi_theta(a|x,g) ∝ exp(theta . phi) the log-partition cancels in log pi(y_w) - log pi(y_l), and the
    uniform reference cancels too, so the chosen/rejected "log-probs" can be theta.phi_w and theta.phi_l against
    zero references: the margin is h = theta . (phi_w - phi_l)."""
    import torch

    from engine.algorithms.preference import dpo_loss, ipo_loss

    h = (diff @ theta.unsqueeze(-1)).squeeze(-1)  # (S, N)
    zero = torch.zeros_like(h)
    fn = ipo_loss if method.endswith("ipo") else dpo_loss
    return fn(h.flatten(), zero.flatten(), zero.flatten(), zero.flatten(), beta).view(h.shape)


def greedy_reward(theta: "Tensor", test_features: "Tensor", test_rewards: "Tensor") -> "Tensor":
    """Mean true reward per group of the greedy action argmax_a theta . phi(x, a, g) over the test states.
    theta (S, d), test_features (S, K, T, A, d), test_rewards (S, K, T, A) -> (S, K)."""
    logits = (test_features @ theta.view(-1, 1, 1, FEATURE_DIM, 1)).squeeze(-1)  # (S, K, T, A)
    best = logits.argmax(-1, keepdim=True)  # (S, K, T, 1)
    return test_rewards.gather(-1, best).squeeze(-1).mean(-1)  # (S, K)


# ------------------------------------------------------------------------------- group maths over a seed axis
# The bench trains 20 seeds at once (the per-op overhead, not arithmetic, dominates these tiny tensors). The
# shared group_robust functions take one run's (K,) vectors, so several runs are laid side by side as one run
# with S*K groups; these three helpers do that bookkeeping and nothing else.


def _group_means(per_pair: "Tensor", group: "Tensor") -> tuple["Tensor", "Tensor"]:
    """Per-run, per-group mean of per_pair (S, N) with group ids (S, N) -> (S, K) means, (S, K) counts."""
    import torch

    from engine.algorithms.group_robust import group_losses

    n_runs = per_pair.shape[0]
    offset = torch.arange(n_runs).unsqueeze(-1) * NUM_GROUPS  # (S, 1): run r owns groups r*K .. r*K+K-1
    means, counts = group_losses(per_pair.flatten(), (group + offset).flatten(), n_runs * NUM_GROUPS)
    return means.view(n_runs, NUM_GROUPS), counts.view(n_runs, NUM_GROUPS)


def _alpha_step(alpha: "Tensor", group_loss: "Tensor", eta: float, chi: float, present: "Tensor") -> "Tensor":
    """Mirror-descent step per run: alpha (S, K) -> (S, K), each row on the simplex.

    update_group_weights normalises over all S*K entries at once; a per-row renormalisation then gives each
    run exactly alpha_g exp(eta chi L_g) / sum_k(...), because the shared normaliser cancels within a row."""
    from engine.algorithms.group_robust import update_group_weights

    flat = update_group_weights(alpha.flatten(), group_loss.flatten(), eta, chi=chi, present=present.flatten())
    rows = flat.view(alpha.shape)
    return rows / rows.sum(-1, keepdim=True)


def _mixed(alpha: "Tensor", chi: float) -> "Tensor":
    """(1 - chi)/K + chi alpha per run: alpha (S, K) -> (S, K). mixed_weights reads K from dim 0, hence .T."""
    from engine.algorithms.group_robust import mixed_weights

    return mixed_weights(alpha.T, chi).T


# ----------------------------------------------------------------------------------------------- the run


@dataclass
class _Batch:
    """The data of S runs that differ only in their seed, stacked on a leading run axis."""

    seeds: list[int]
    train_diff: "Tensor"  # (S, N, d)
    train_group: "Tensor"  # (S, N)
    val_diff: "Tensor"  # (S, M, d)
    val_group: "Tensor"  # (S, M)
    test_features: "Tensor"  # (S, K, T, A, d)
    test_rewards: "Tensor"  # (S, K, T, A)
    opt_reward: "Tensor"  # (S, K)
    train_counts: "Tensor"  # (S, K)


def stack_data(s: SyntheticSettings, seeds: list[int]) -> _Batch:
    import torch

    runs = [make_data(replace(s, seed=seed)) for seed in seeds]
    return _Batch(
        seeds=list(seeds),
        train_diff=torch.stack([d.train.diff for d in runs]),
        train_group=torch.stack([d.train.group for d in runs]),
        val_diff=torch.stack([d.val.diff for d in runs]),
        val_group=torch.stack([d.val.group for d in runs]),
        test_features=torch.stack([d.test_features for d in runs]),
        test_rewards=torch.stack([d.test_rewards for d in runs]),
        opt_reward=torch.stack([d.opt_reward for d in runs]),
        train_counts=torch.stack([torch.bincount(d.train.group, minlength=NUM_GROUPS) for d in runs]).double(),
    )


def initial_state(s: SyntheticSettings) -> dict:
    import torch

    # its own stream, so that changing the data sizes does not change the initial policy
    gen = torch.Generator().manual_seed(int(s.seed) * 7919 + 17)
    theta = torch.rand(FEATURE_DIM, generator=gen, dtype=torch.float64) * INIT_LIMIT
    return {"step": 0, "theta": theta.tolist(), "alpha": [1.0 / NUM_GROUPS] * NUM_GROUPS, "settings": s.to_dict()}


def check_state(s: SyntheticSettings, state: dict) -> None:
    missing = {"step", "theta", "alpha", "settings"} - set(state)
    if missing:
        raise ValueError(f"Resume state lacks keys {sorted(missing)}; pass a StepRecord.state from run_synthetic.")
    saved, now = dict(state["settings"]), s.to_dict()
    if "solver" not in saved:
        # a state from before these fields existed: its maths were the defaults', except IS, whose weighting changed
        if str(saved.get("method", "")).startswith("is_"):
            raise ValueError("Resume state predates the authors' IS weighting (equal mass per group); start the run "
                             "again instead of resuming it.")
        saved = {"feature_type": "swapped", "solver": "gradient", "closed_form_weights": "authors", **saved}
    # steps and eval_every may change on resume (run longer, log less often); every other field fixes the maths.
    for key in ("steps", "eval_every"):
        saved.pop(key, None)
        now.pop(key, None)
    if saved != now:
        diffs = sorted(k for k in now if saved.get(k) != now[k])
        raise ValueError(f"Resume state was made with other settings (differs in {diffs}); resume with the same ones.")
    if len(state["theta"]) != FEATURE_DIM or len(state["alpha"]) != NUM_GROUPS:
        raise ValueError(f"Resume state has theta of length {len(state['theta'])} (need {FEATURE_DIM}) and alpha of "
                         f"length {len(state['alpha'])} (need {NUM_GROUPS}).")
    if int(state["step"]) > s.steps:
        raise ValueError(f"Resume state is at step {state['step']}, past steps={s.steps}; raise steps to go on.")


def _batch_indices(s: SyntheticSettings, seeds: list[int], step: int, n: int) -> "Tensor | None":
    """Minibatch indices (S, B) for ``step`` (None = full batch), from generators seeded by (seed, step) so that
    a resumed run draws exactly the batches an uninterrupted one would."""
    import torch

    if s.batch_size == 0 or s.batch_size >= n:
        return None
    rows = []
    for seed in seeds:
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + step) % (2**63))
        rows.append(torch.randint(n, (s.batch_size,), generator=gen))
    return torch.stack(rows)


def train_step(s: SyntheticSettings, b: _Batch, theta: "Tensor", alpha: "Tensor", fixed_w: "Tensor | None",
                step: int) -> tuple["Tensor", "Tensor", "Tensor", "Tensor", "Tensor"]:
    """One policy update of S runs: theta (S, d), alpha (S, K) -> (new theta (S, d), new alpha (S, K), each
    group's share of the objective (S, K), train group losses (S, K), objective per unit mass (S,))."""
    import torch

    from engine.algorithms.group_robust import importance_group_weights, robust_loss

    if s.solver == "closed_form":
        return _closed_form_step(s, b, theta, alpha, fixed_w)
    idx = _batch_indices(s, b.seeds, step, b.train_diff.shape[1])
    if idx is None:
        diff, group = b.train_diff, b.train_group  # (S, N, d), (S, N)
    else:
        diff = torch.gather(b.train_diff, 1, idx.unsqueeze(-1).expand(-1, -1, FEATURE_DIM))  # (S, B, d)
        group = torch.gather(b.train_group, 1, idx)  # (S, B)
    th = theta.detach().clone().requires_grad_(True)
    per_pair = pair_losses(s.method, th, diff, s.beta)  # (S, B)
    g_loss, counts = _group_means(per_pair, group)  # (S, K), (S, K)
    if s.method.startswith("gr_"):
        # the paper's Algorithm 1: move the adversary first, then step the policy against the NEW weights
        alpha = _alpha_step(alpha, g_loss.detach(), s.eta, s.chi, counts > 0)
        weights = _mixed(alpha, s.chi)
    elif s.method.startswith("is_"):
        # the authors' sum_g w_g sum_{i in g} loss_i / B: equal mass per group, and their step size with it
        weights = importance_group_weights(b.train_counts[0], counts)  # (S, K)
    else:
        # plain DPO/IPO: the mean over pairs, i.e. groups weighted by their share of the batch
        weights = counts / counts.sum(-1, keepdim=True)
    shares = weights / weights.sum(-1, keepdim=True)
    objectives = (shares * g_loss.detach()).sum(-1)  # (S,) for logging, on the scale of a mean loss
    # robust_loss over all runs is the sum of the per-run objectives; run r's theta only sees its own term
    (grad,) = torch.autograd.grad(robust_loss(g_loss, weights), th)
    new_theta = theta - s.lr * grad  # (S, d)
    if not torch.isfinite(new_theta).all():
        raise FloatingPointError(
            f"theta became non-finite at step {step} ({s.method}, lr={s.lr}); lower lr (IPO needs lr <~ 2)."
        )
    return new_theta, alpha, shares.detach(), g_loss.detach(), objectives


def _closed_form_step(s: SyntheticSettings, b: _Batch, theta: "Tensor", alpha: "Tensor", fixed_w: "Tensor | None",
                      ) -> tuple["Tensor", "Tensor", "Tensor", "Tensor", "Tensor"]:
    """The authors' ``batch_update_closed_form`` for IPO methods, S runs at once (same returns as train_step):
    theta = (D^T W D)^-1 D^T W 1 / (2 beta), the exact minimiser of sum_i W_i (theta . D_i - 1/(2 beta))^2."""
    import torch

    diff, group = b.train_diff, b.train_group  # (S, N, d), (S, N)
    g_loss, counts = _group_means(pair_losses(s.method, theta, diff, s.beta), group)  # (S, K) at the old theta
    if s.method.startswith("gr_"):
        authors = s.closed_form_weights == "authors"
        # the authors' code divides the group-mean loss by the group count a second time before the alpha step
        signal = g_loss / counts.clamp_min(1.0) if authors else g_loss
        alpha = _alpha_step(alpha, signal, s.eta, s.chi, counts > 0)
        mixed = _mixed(alpha, s.chi)  # (S, K)
        # authors: each pair weighs its group's weight (group mass mixed_g n_g); Algorithm 1: mixed_g / n_g
        per_pair = mixed if authors else mixed / counts.clamp_min(1.0)  # (S, K)
    elif s.method.startswith("is_"):
        per_pair = fixed_w.expand_as(g_loss)  # type: ignore[union-attr]  # w_g per pair: equal mass per group
    else:
        per_pair = torch.ones_like(g_loss)  # their IPO: importance weights '0.5,0.5', i.e. the plain mean
    w = per_pair.gather(1, group)  # (S, N)
    lhs = diff.transpose(1, 2) @ (w.unsqueeze(-1) * diff)  # (S, d, d)
    rhs = (diff * w.unsqueeze(-1)).sum(1) / (2.0 * s.beta)  # (S, d)
    new_theta = torch.linalg.solve(lhs, rhs)  # (S, d)
    mass = per_pair * counts
    shares = mass / mass.sum(-1, keepdim=True)
    return new_theta, alpha, shares, g_loss, (shares * g_loss).sum(-1)


def evaluate_batch(s: SyntheticSettings, b: _Batch, theta: "Tensor") -> dict[str, "Tensor"]:
    """Per-run, per-group (S, K) validation loss and accuracy, greedy reward and reward error."""
    import torch

    with torch.no_grad():
        val_loss, _ = _group_means(pair_losses(s.method, theta, b.val_diff, s.beta), b.val_group)  # (S, K)
        margin = (b.val_diff @ theta.unsqueeze(-1)).squeeze(-1)  # (S, M)
        val_acc, _ = _group_means((margin > 0).to(theta.dtype), b.val_group)  # (S, K) share ranked right
        reward = greedy_reward(theta, b.test_features, b.test_rewards)  # (S, K)
        reward_error = (b.opt_reward - reward) / b.opt_reward  # (S, K)
    return {"val_loss": val_loss, "val_acc": val_acc, "reward": reward, "reward_error": reward_error}


def evaluate(s: SyntheticSettings, theta: list[float] | "Tensor") -> dict[str, list[float]]:
    """Per-group validation loss/accuracy, greedy reward and reward error of a policy theta on run ``s``'s data."""
    import torch

    th = torch.as_tensor(theta, dtype=torch.float64).view(1, FEATURE_DIM)
    return {k: v[0].tolist() for k, v in evaluate_batch(s, stack_data(s, [s.seed]), th).items()}


__all__ = [
    "METHODS", "SETTINGS", "SyntheticSettings", "SyntheticData", "feature_map", "true_reward", "make_data",
    "pair_losses", "greedy_reward", "evaluate", "paper_settings", "FEATURE_TYPES", "SOLVERS", "CLOSED_FORM_WEIGHTS",
    "SCRIPT_REVISIONS", "SCRIPT_COMMITS", "IPO_SETTINGS", "ALGORITHM1_GR_IPO",
]
