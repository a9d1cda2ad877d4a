"""textgym.rewards: batched sequence- and token-level rewards (see rewards/base.py)."""

from textgym.rewards.base import Reward

__all__ = ["Reward"]
