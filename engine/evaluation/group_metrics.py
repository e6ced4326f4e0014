"""Worst-group figures of held-out preference pairs, with bootstrap intervals: the group-robust paper's real-data
metrics (max over groups of the mean pair loss, min over groups of the reward accuracy).

As in the authors' code (rsshyam/Group-robust-preference-optimization, src/trainers/grouptrainer.py): each
group's held-out pairs are scored on their own, a group's loss is the mean of its pairs' losses and its accuracy
the share of its pairs whose implicit reward of the chosen answer beats the rejected one's (margin > 0); then
``aggregate_worst_case_metrics`` takes the max over groups of losses and the min over groups of the rest.

Intervals: a stratified percentile bootstrap (seeded): each resample redraws every group's pairs with replacement
within the group, so every group keeps its held-out size (scipy.stats.bootstrap's independent samples do the same
but refuse a group of one pair, which a small held-out split can have). The max / min is recomputed on each
resample, so its interval also carries the uncertainty of which group is the worst; being a max of noisy means, the
point value is biased upward (the min downward) on small groups, and the interval says how much. numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.evaluation.uncertainty import DEFAULT_LEVEL, DEFAULT_N_BOOT

MAX_GROUP_LOSS = "loss/max_group"
MIN_GROUP_ACCURACY = "accuracy/min_group"


class GroupMetricError(ValueError):
    """Inputs that cannot give per-group figures (mismatched lengths, no pairs, non-finite losses)."""


def _check(losses: np.ndarray, correct: np.ndarray, groups: Sequence[str]) -> None:
    if not (len(losses) == len(correct) == len(groups)):
        raise GroupMetricError(f"losses, correct and groups differ in length: {len(losses)}, {len(correct)}, "
                               f"{len(groups)}")
    if len(losses) == 0:
        raise GroupMetricError("no held-out pairs to score")
    if not np.isfinite(losses).all():
        raise GroupMetricError(f"{int((~np.isfinite(losses)).sum())} pair loss(es) are not finite")


def group_extremes(losses: Sequence[float], correct: Sequence[float | bool], groups: Sequence[str], *,
                   n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = DEFAULT_LEVEL) -> dict:
    """Per-group mean loss and accuracy, their max / min over groups, and 95% (``level``) intervals.

    Returns {"loss/<g>", "accuracy/<g>", "count/<g>", "loss/max_group", "accuracy/min_group",
    "worst_loss_group", "worst_accuracy_group", "ci": {key: [low, high]}, "bootstrap": {...}}; ``n_boot`` 0 gives
    no intervals. A group with a single pair gets no interval of its own (it still counts in the max / min)."""
    loss = np.asarray(losses, dtype=float)
    acc = np.asarray(correct, dtype=float)
    _check(loss, acc, groups)
    names = sorted(set(groups))
    members = [np.flatnonzero(np.asarray([g == name for g in groups])) for name in names]
    g_loss = np.array([loss[m].mean() for m in members])
    g_acc = np.array([acc[m].mean() for m in members])
    out: dict = {}
    for name, m, gl, ga in zip(names, members, g_loss, g_acc):
        out[f"loss/{name}"] = float(gl)
        out[f"accuracy/{name}"] = float(ga)
        out[f"count/{name}"] = int(len(m))
    out[MAX_GROUP_LOSS] = float(g_loss.max())
    out[MIN_GROUP_ACCURACY] = float(g_acc.min())
    out["worst_loss_group"] = names[int(g_loss.argmax())]
    out["worst_accuracy_group"] = names[int(g_acc.argmin())]
    ci: dict[str, list[float]] = {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        # (n_boot, n_g) positions drawn with replacement within each group -> (K, n_boot) resampled group means
        draws = [m[rng.integers(0, len(m), size=(n_boot, len(m)))] for m in members]
        boot_loss = np.stack([loss[d].mean(axis=1) for d in draws])
        boot_acc = np.stack([acc[d].mean(axis=1) for d in draws])
        q = ((1.0 - level) / 2.0, (1.0 + level) / 2.0)

        def interval(values: np.ndarray) -> list[float]:
            lo, hi = np.quantile(values, q)
            return [float(lo), float(hi)]

        ci[MAX_GROUP_LOSS] = interval(boot_loss.max(axis=0))
        ci[MIN_GROUP_ACCURACY] = interval(boot_acc.min(axis=0))
        for j, (name, m) in enumerate(zip(names, members)):
            if len(m) >= 2:  # one pair resampled is always itself: no interval
                ci[f"loss/{name}"] = interval(boot_loss[j])
                ci[f"accuracy/{name}"] = interval(boot_acc[j])
    out["ci"] = ci
    out["bootstrap"] = {"n_boot": n_boot, "level": level, "seed": seed, "method": "percentile",
                        "unit": "pair, resampled within its group"}
    return out
