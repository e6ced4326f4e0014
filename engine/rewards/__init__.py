"""Reward functions: a registry (base.REWARDS), rule rewards (rules) and the bias reward model (bias_model).

Importing this package is cheap (no torch): the model-based reward loads only when built.
"""

from engine.rewards.base import CombinedReward, RewardOutput, build_reward, reward_names

__all__ = ["CombinedReward", "RewardOutput", "build_reward", "reward_names"]
