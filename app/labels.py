"""Friendly names for metric keys, in one place: chart legends, axis titles, the Runs table and the run page read
them from here. The keys themselves come from the metric contract (db/metric_keys.py); a key with no entry
keeps its raw name, so a new metric still shows up."""

from __future__ import annotations

from db import metric_keys as mk

LABELS: dict[str, str] = {
    mk.REWARD_MEAN: "reward (mean, all terms summed)",
    mk.REWARD_STD: "reward (std)",
    mk.REWARD_NAN_COUNT: "unscorable completions",
    mk.REWARD_WORST_GROUP: "reward of the worst group",
    mk.VAL_AVG_REWARD: "held-out reward (average)",
    mk.VAL_WORST_GROUP_REWARD: "held-out reward (worst group)",
    mk.VAL_WORST_GROUP_LOSS: "validation loss (worst group)",
    mk.VAL_AVG_LOSS: "validation loss (average)",
    mk.VAL_WORST_GROUP_ACCURACY: "validation accuracy (worst group)",
    mk.REWARD_ERROR_WORST: "reward error (worst group)",
    mk.REWARD_ERROR_MEAN: "reward error (average)",
    mk.LOSS: "loss",
    mk.LOSS_MEAN: "loss (mean over pairs)",
    mk.LOSS_WORST_GROUP: "loss (worst group)",
    mk.ACCURACY: "preference accuracy",
    mk.ACCURACY_MIN_GROUP: "preference accuracy (worst group)",
    mk.MARGIN_MEAN: "reward margin (mean)",
    mk.TRAIN_LOSS: "training loss",
    mk.TRAIN_WORST_GROUP_LOSS: "training loss (worst group)",
    mk.KL: "KL to reference",
    mk.ENTROPY: "entropy",
    mk.CLIP_LOW: "clipped low",
    mk.CLIP_HIGH: "clipped high",
    mk.CLIP_TOTAL: "clipped (total)",
    mk.ZERO_VAR_FRAC: "prompts with equal rewards",
    mk.COMPLETION_LEN_MEAN: "length (mean)",
    mk.COMPLETION_LEN_MAX: "length (max)",
    mk.COMPLETION_TRUNCATED_FRAC: "truncated completions",
    mk.LR: "learning rate",
    mk.GRAD_NORM: "gradient norm",
    mk.TOKENS_PER_S: "tokens per second",
    mk.MEMORY_PEAK_MB: "peak memory",
    mk.COMPARE_REWARD_A: "model A's reward",
    mk.COMPARE_REWARD_B: "model B's reward",
    mk.COMPARE_DIFF: "B minus A",
}

# Short names for the Runs table's "worst group" column.
SHORT: dict[str, str] = {
    mk.REWARD_WORST_GROUP: "reward", mk.VAL_WORST_GROUP_REWARD: "held-out reward",
    mk.VAL_WORST_GROUP_LOSS: "val. loss", mk.LOSS_WORST_GROUP: "loss", mk.ACCURACY_MIN_GROUP: "accuracy",
    mk.TRAIN_WORST_GROUP_LOSS: "train loss", mk.REWARD_MEAN: "reward", mk.COMPARE_REWARD_B: "B's reward",
    mk.VAL_AVG_REWARD: "held-out reward",
}

GROUP_FIELD_LABELS = {mk.GROUP_WEIGHT: "weight", mk.GROUP_LOSS: "loss", mk.GROUP_REWARD_MEAN: "mean reward",
                      mk.GROUP_REWARD_STD: "reward std", mk.GROUP_ACCURACY: "accuracy", mk.GROUP_COUNT: "count"}


def metric_label(key: str) -> str:
    """The name a user reads for a metric key ("reward/group/age/mean" -> "age: reward")."""
    if key in LABELS:
        return LABELS[key]
    parts = key.split("/")
    if key.startswith("reward/group/") and key.endswith("/mean") and len(parts) >= 4:
        return f"{'/'.join(parts[2:-1])}: reward"
    if key.startswith("reward/") and key.endswith("/mean") and len(parts) == 3:
        return f"reward term {parts[1]}"
    if key.startswith("weight/") and len(parts) >= 2:
        return f"{'/'.join(parts[1:])}: weight"
    if key.startswith("time/") and len(parts) == 2:
        return f"{parts[1]} phase"
    if key.startswith("memory/"):
        return "memory " + "/".join(parts[1:]).replace("_", " ")
    if key.startswith("eval/") and len(parts) >= 3:
        return f"{parts[1]} {'/'.join(parts[2:])}"
    return key


def short_label(key: str | None) -> str:
    if not key:
        return ""
    return SHORT.get(key, metric_label(key))
