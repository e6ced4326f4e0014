"""The metric contract: every metric key and group-row field that runners write and the app reads, by name.

Runners (engine/runs/*, engine/algorithms/synthetic.py) write these keys; db/reads.py and app/ read them. Both
sides import the names from here, so a renamed key breaks at import (or in tests/test_metric_contract.py, which
runs every algorithm and checks that what the app reads was written), not as an empty column in the Runs table.
Standard library only: the app imports it without torch.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------- rewards (GRPO)
REWARD_MEAN = "reward/mean"
REWARD_STD = "reward/std"
REWARD_NAN_COUNT = "reward/nan_count"
# min over the groups present of the group's mean reward this step (the group furthest from the goal)
REWARD_WORST_GROUP = "reward/worst_group"


def reward_term(name: str) -> str:
    """Mean of one reward term (a registered reward function's name) over this step's completions."""
    return f"reward/{name}/mean"


def group_reward(group: str) -> str:
    """A group's mean reward this step."""
    return f"reward/group/{group}/mean"


def group_weight(group: str) -> str:
    """A group's weight this step (group-robust: the adversary's alpha; IS: the group's share of the objective)."""
    return f"weight/{group}"


# ------------------------------------------------------------------------------------------- held-out (validation)
# Written into the step's metrics at each held-out evaluation (step 0 = before training): greedy completions of
# the fixed held-out prompts scored by the run's reward (GRPO) or the bias reward (preference runs).
VAL_AVG_REWARD = "val/avg_reward"
VAL_WORST_GROUP_REWARD = "val/worst_group_reward"  # min over groups of the group's mean held-out reward
# the synthetic experiment's validation set
VAL_WORST_GROUP_LOSS = "val/worst_group_loss"
VAL_AVG_LOSS = "val/avg_loss"
VAL_WORST_GROUP_ACCURACY = "val/worst_group_accuracy"
REWARD_ERROR_WORST = "reward_error/worst"
REWARD_ERROR_MEAN = "reward_error/mean"

# ------------------------------------------------------------------------------------------- losses, accuracy
LOSS = "loss"
LOSS_MEAN = "loss/mean"
LOSS_WORST_GROUP = "loss/worst_group"  # preference runs: max over groups of the group's mean pair loss
ACCURACY = "accuracy"
ACCURACY_MIN_GROUP = "accuracy/min_group"
MARGIN_MEAN = "margin/mean"
TRAIN_LOSS = "train/loss"
TRAIN_WORST_GROUP_LOSS = "train/worst_group_loss"

# ------------------------------------------------------------------------------------------- training health
KL = "kl"
ENTROPY = "entropy"
CLIP_LOW, CLIP_HIGH, CLIP_TOTAL = "clip/low", "clip/high", "clip/total"
ZERO_VAR_FRAC = "zero_var_frac"
COMPLETION_LEN_MEAN, COMPLETION_LEN_MAX = "completion/len_mean", "completion/len_max"
COMPLETION_TRUNCATED_FRAC = "completion/truncated_frac"
LR = "lr"
GRAD_NORM = "grad_norm"
TOKENS_PER_S = "tokens_per_s"
MEMORY_PEAK_MB = "memory/peak_mb"


def phase_time(phase: str) -> str:
    """Wall time of one phase of a step (engine.runs.timing.PhaseTimer)."""
    return f"time/{phase}"


STEP_TIME = phase_time("step")  # a whole training step (the ETA and the estimate before queueing read it)


# ------------------------------------------------------------------------------------------- comparison jobs
COMPARE_REWARD_A, COMPARE_REWARD_B, COMPARE_DIFF = "compare/reward_a", "compare/reward_b", "compare/diff"

# ------------------------------------------------------------------------------------------- what the app shows
# The Runs table's "Reward" and "Worst group" columns: the first of these keys a run wrote at its last step.
REWARD_KEYS = (REWARD_MEAN, COMPARE_REWARD_B, VAL_AVG_REWARD)
WORST_GROUP_KEYS = (REWARD_WORST_GROUP, VAL_WORST_GROUP_REWARD, VAL_WORST_GROUP_LOSS, LOSS_WORST_GROUP,
                    ACCURACY_MIN_GROUP, TRAIN_WORST_GROUP_LOSS)
# The run page's "Worst group vs average" panel, in legend order; the averages in ALSO belong to the Reward panel
# and are drawn here as well.
WORST_VS_AVERAGE_KEYS = (REWARD_WORST_GROUP, VAL_WORST_GROUP_REWARD, VAL_WORST_GROUP_LOSS, VAL_AVG_LOSS,
                         VAL_WORST_GROUP_ACCURACY, LOSS_WORST_GROUP, ACCURACY_MIN_GROUP, REWARD_ERROR_WORST,
                         REWARD_ERROR_MEAN)
WORST_VS_AVERAGE_ALSO = (REWARD_MEAN, VAL_AVG_REWARD)

# ------------------------------------------------------------------------------------------- group rows
# Columns of group_stats (db.models.GroupStat); any other key of a runner's group row lands in its "extra".
GROUP_WEIGHT = "weight"
GROUP_LOSS = "loss"
GROUP_REWARD_MEAN = "reward_mean"
GROUP_REWARD_STD = "reward_std"
GROUP_ACCURACY = "accuracy"
GROUP_COUNT = "count"
GROUP_FIELDS = (GROUP_WEIGHT, GROUP_LOSS, GROUP_REWARD_MEAN, GROUP_REWARD_STD, GROUP_ACCURACY, GROUP_COUNT)
# the ones the run page charts (count is shown nowhere)
CHART_GROUP_FIELDS = (GROUP_WEIGHT, GROUP_REWARD_MEAN, GROUP_REWARD_STD, GROUP_LOSS, GROUP_ACCURACY)

# ------------------------------------------------------------------------------------------- per algorithm
# What the app reads of each kind of run, so what its runner must write at every step (metrics) and in every
# group row (group fields, non-null for the groups of the batch). Held-out keys are written at evaluations only.
_GRPO_STEP = (REWARD_MEAN, REWARD_STD, REWARD_NAN_COUNT, REWARD_WORST_GROUP, LOSS, KL, ENTROPY, CLIP_LOW, CLIP_HIGH,
              CLIP_TOTAL, ZERO_VAR_FRAC, COMPLETION_LEN_MEAN, COMPLETION_LEN_MAX, COMPLETION_TRUNCATED_FRAC, LR,
              GRAD_NORM, TOKENS_PER_S, MEMORY_PEAK_MB)
_PREFERENCE_STEP = (LOSS, LOSS_MEAN, LOSS_WORST_GROUP, ACCURACY, ACCURACY_MIN_GROUP, MARGIN_MEAN, LR, GRAD_NORM,
                    TOKENS_PER_S, MEMORY_PEAK_MB)
STEP_KEYS: dict[str, tuple[str, ...]] = {
    "grpo": _GRPO_STEP, "gr_grpo": _GRPO_STEP,
    **{a: _PREFERENCE_STEP for a in ("dpo", "ipo", "is_dpo", "is_ipo", "gr_dpo", "gr_ipo")},
    "synthetic": (TRAIN_LOSS, TRAIN_WORST_GROUP_LOSS, VAL_WORST_GROUP_LOSS, VAL_AVG_LOSS, VAL_WORST_GROUP_ACCURACY,
                  REWARD_ERROR_WORST, REWARD_ERROR_MEAN),
    "compare": (COMPARE_REWARD_A, COMPARE_REWARD_B, COMPARE_DIFF),
}
HELDOUT_KEYS: dict[str, tuple[str, ...]] = {
    "grpo": (VAL_AVG_REWARD, VAL_WORST_GROUP_REWARD), "gr_grpo": (VAL_AVG_REWARD, VAL_WORST_GROUP_REWARD),
}
GROUP_FIELDS_WRITTEN: dict[str, tuple[str, ...]] = {
    "grpo": (GROUP_REWARD_MEAN, GROUP_REWARD_STD, GROUP_LOSS, GROUP_COUNT),
    "gr_grpo": (GROUP_REWARD_MEAN, GROUP_REWARD_STD, GROUP_LOSS, GROUP_COUNT, GROUP_WEIGHT),
    **{a: (GROUP_LOSS, GROUP_ACCURACY, GROUP_COUNT) for a in ("dpo", "ipo")},
    **{a: (GROUP_LOSS, GROUP_ACCURACY, GROUP_COUNT, GROUP_WEIGHT) for a in ("is_dpo", "is_ipo", "gr_dpo", "gr_ipo")},
    "synthetic": (GROUP_WEIGHT, GROUP_LOSS, GROUP_ACCURACY),
    "compare": (GROUP_REWARD_MEAN, GROUP_COUNT),
}
