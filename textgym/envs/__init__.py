"""Token-level text generation: ``TextGenEnv`` and the natively batched ``TextGenVectorEnv``.

The MDP (see ``docs/envs.md``): state = prompt tokens + tokens generated so far, action = the next
token id, deterministic transition s' = s ⊕ a, ``terminated`` at EOS or a task stop sequence,
``truncated`` after ``max_new_tokens`` tokens. Multi-turn (a responder, ``docs/multiturn.md``):
EOS or a stop sequence ends the policy's turn, and the responder appends environment tokens or
ends the episode. The sequence reward r(x, y) is paid on the final
step (0.0 before); a token-level reward (``reward.token_level``) is paid on every step.

Both envs share one batched state (``_Episodes``: numpy arrays (B, L), no per-env Python objects);
the single env is that state with B = 1, so the two cannot drift apart. The env holds the
tokenizer, the task and the reward, never the policy LM.

Modules (every name below is importable from ``textgym.envs``):

- ``config``: :class:`EnvArgs` (the arguments of both envs, written once), :class:`EnvConfig`
  and :func:`build_config` (everything derived from them: tokenizer, V, tokenised prompts, the
  reward scorer);
- ``masks``: :class:`ActionMaskProvider`, :class:`VocabularyMask`, :class:`TopPMask`;
- ``layout``: the observation space and :func:`to_left_padded`;
- ``episodes``: the kernel ``_Episodes``, B episodes as numpy arrays;
- ``turns``: multi-turn state (environment tokens, turn starts, transcripts; only with a
  responder, ``docs/multiturn.md``) and :class:`ChatFormat` (chat-template formatting);
- ``single``: :class:`TextGenEnv`; ``vector``: :class:`TextGenVectorEnv`.

``textgym/registration.py`` registers them by string entry points (``"textgym.envs:TextGenEnv"``).
"""

from textgym.envs.config import EnvArgs, EnvConfig, LanguageModelLike, build_config
from textgym.envs.episodes import _Episodes as _Episodes
from textgym.envs.layout import to_left_padded
from textgym.envs.masks import ActionMaskProvider, TopPMask, VocabularyMask
from textgym.envs.single import TextGenEnv
from textgym.envs.turns import ChatFormat
from textgym.envs.vector import TextGenVectorEnv

__all__ = [
    "ActionMaskProvider",
    "ChatFormat",
    "EnvArgs",
    "EnvConfig",
    "LanguageModelLike",
    "TextGenEnv",
    "TextGenVectorEnv",
    "TopPMask",
    "VocabularyMask",
    "build_config",
    "to_left_padded",
]
