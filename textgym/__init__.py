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

from pathlib import Path

__version__ = "0.1.0"

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL: str = str(ASSETS / "model")
"""Path of the embedded model: a Hugging Face directory, so ``from_pretrained(DEFAULT_MODEL)``
works with ``textgym.LanguageModel`` and with ``transformers`` alike."""

from textgym import registration  # noqa: E402, F401  (importing it registers the gym ids)
from textgym.envs import TextGenEnv, TextGenVectorEnv  # noqa: E402
from textgym.lm import LanguageModel  # noqa: E402
from textgym.perplexity import perplexity  # noqa: E402

__all__ = [
    "DEFAULT_MODEL",
    "LanguageModel",
    "TextGenEnv",
    "TextGenVectorEnv",
    "__version__",
    "perplexity",
]
