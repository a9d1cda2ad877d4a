"""textgym.rewards: batched sequence- and token-level rewards (see rewards/base.py).

``make(spec)`` builds a reward from a name (``names()`` lists them), a dict of weights, a reward
object or a plain callable; see ``textgym.rewards.registry`` and ``docs/rewards.md``.

The reward classes and corpus-level metrics are importable from here too (``from
textgym.rewards import BLEU, corpus_bleu``); they load on first use, so that importing the
package does not import torch, sacrebleu or nltk.
"""

from __future__ import annotations

import importlib
from typing import Any

from textgym.rewards.base import BaseReward, References, Reward, TokenReward
from textgym.rewards.registry import (
    REWARDS,
    CheckedReward,
    FunctionReward,
    WeightedSum,
    batched,
    make,
    names,
)

_LAZY: dict[str, str] = {
    "BLEU": "metric",
    "ChrF": "metric",
    "TER": "metric",
    "ROUGE": "metric",
    "METEOR": "metric",
    "corpus_bleu": "metric",
    "corpus_chrf": "metric",
    "corpus_ter": "metric",
    "corpus_rouge": "metric",
    "corpus_meteor": "metric",
    "CIDErD": "cider",
    "corpus_cider_d": "cider",
    "VaderSentiment": "model",
    "HFClassifier": "model",
    "ProfanityToxicity": "model",
    "SemanticSimilarity": "similarity",
    "RewardModel": "reward_model",
    "RewardModelReward": "reward_model",
    "LinearReward": "linear",
    "Length": "simple",
    "Repetition": "simple",
    "KeywordInclusion": "simple",
    "ExactMatch": "simple",
    "TokenLevelReward": "token",
    "BannedTokens": "token",
    "TokenRepetition": "token",
    "MathReward": "verifiable",
    "FormatReward": "verifiable",
    "RegexReward": "verifiable",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'textgym.rewards' has no attribute {name!r}")
    return getattr(importlib.import_module(f"textgym.rewards.{module}"), name)


__all__ = [
    "REWARDS",
    "BaseReward",
    "CheckedReward",
    "FunctionReward",
    "References",
    "Reward",
    "TokenReward",
    "WeightedSum",
    "batched",
    "make",
    "names",
    *_LAZY,
]
