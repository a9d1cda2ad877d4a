"""textgym: text generation by a causal language model as a token-level Gymnasium MDP.

The state is the token prefix, the action the next vocabulary token, the episode ends at EOS or
after ``max_new_tokens``. See ``docs/architecture.md`` for the contracts every part keeps.

Public names:
    DEFAULT_MODEL: path of the small causal LM (and tokenizer) shipped inside the package.
    LanguageModel: any Hugging Face causal LM + tokenizer, with KV-cache stepping and log-probs.
    perplexity: perplexity of texts under a model.
    TextGenEnv, TextGenVectorEnv: the single and natively batched environments.
"""

from __future__ import annotations

__version__ = "0.1.0"

from textgym import registration  # noqa: F401  (importing it registers the gym ids)
from textgym.assets import ASSETS_DIR as ASSETS  # noqa: F401  (textgym.ASSETS: experiments)
from textgym.assets import DEFAULT_MODEL
from textgym.envs import TextGenEnv, TextGenVectorEnv
from textgym.lm import LanguageModel
from textgym.perplexity import perplexity

__all__ = [
    "DEFAULT_MODEL",
    "LanguageModel",
    "TextGenEnv",
    "TextGenVectorEnv",
    "__version__",
    "perplexity",
]
