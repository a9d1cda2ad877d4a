"""The arguments of both envs (:class:`EnvArgs`) and what they derive from them, once
(:class:`EnvConfig`, built by :func:`build_config`): the tokenizer and V, the task and its
tokenised prompts, the reward scorer, the stop sequences, the action-mask provider, the expert.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from textgym.envs.masks import ActionMaskProvider, VocabularyMask
from textgym.envs.turns import ChatFormat
from textgym.multiturn import Responder
from textgym.tasks import BoundExpert, RewardSpec, Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["EnvArgs", "EnvConfig", "LanguageModelLike", "build_config"]

Truncation = Literal["error", "left"]


class LanguageModelLike(Protocol):
    """What the env reads from a ``textgym.LanguageModel``: its tokenizer and its head size."""

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The model's tokenizer."""
        ...

    @property
    def vocab_size(self) -> int:
        """V, the LM head's output size (may exceed ``len(tokenizer)``)."""
        ...


@dataclass(frozen=True, eq=False)
class EnvArgs:
    """The arguments of ``TextGenEnv`` and ``TextGenVectorEnv``, written once.

    Both env constructors take these as keyword arguments (``gym.make`` passes them so), the first
    five also by position in this order, and build this dataclass from them: a name that is not a
    field is a ``TypeError`` listing the valid ones. ``render_mode`` (both envs), ``num_envs`` and
    ``autoreset_mode`` (vector env) belong to the env classes themselves.
    """

    model: str | os.PathLike[str] | LanguageModelLike | None = None
    """A path / hub name (loads only the tokenizer and config, never weights) or a
    ``textgym.LanguageModel``; None: ``textgym.DEFAULT_MODEL``."""
    task: Task | str | Sequence[str] = "reviews"
    """A ``Task``, a built-in name (``textgym.tasks.names()``) or a list of prompts."""
    reward: RewardSpec | None = None
    """Any ``textgym.rewards.make`` spec; None: the task's reward."""
    max_new_tokens: int = 32
    """T, the horizon: tokens an episode may generate."""
    max_prompt_tokens: int | None = None
    """P; None: the longest prompt (for a built-in task name, the longest over all its splits, so
    that train and evaluation envs share one observation space)."""
    _: KW_ONLY
    split: str | None = "train"
    """The split of a built-in task (None: all of them)."""
    tokenizer: PreTrainedTokenizerBase | None = None
    """Overrides the model's (e.g. one you gave a pad token)."""
    truncation: Truncation = "error"
    """``"error"`` raises on prompts longer than P, ``"left"`` keeps their last P tokens."""
    action_mask: ActionMaskProvider | Sequence[int] | None = None
    """An ``ActionMaskProvider`` (``VocabularyMask``, ``TopPMask``) or a list of allowed token
    ids; reported in ``info["action_mask"]``, not enforced."""
    fixed_horizon: bool = False
    """Every episode lasts exactly ``max_new_tokens`` steps (see the envs' Episode End)."""
    trust_remote_code: bool = False
    """Let a ``model`` folder or hub repository run its own Python code (its config's
    ``auto_map``) while its config and tokenizer load; False: only architectures built into
    ``transformers`` load, and nothing is ever asked on stdin."""
    responder: Responder | None = None
    """Multi-turn: ``respond(transcript) -> str | Reply | None`` answers each policy turn (see
    ``textgym.multiturn``); None: the task's (a ``MultiTurnTask``'s), else single-turn."""
    max_turns: int | None = None
    """Multi-turn: the most policy turns of an episode; None: the task's (or no limit)."""
    chat_template: bool = False
    """Format the prompt and every environment turn with the tokenizer's chat template
    (``apply_chat_template``) as user messages, the policy's turns as the assistant's."""

    def __post_init__(self) -> None:
        from textgym.hf import check_trust_remote_code

        check_trust_remote_code(self.trust_remote_code)
        T, P = self.max_new_tokens, self.max_prompt_tokens
        if not isinstance(T, int | np.integer) or T < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {T!r}")
        if P is not None and (not isinstance(P, int | np.integer) or P < 1):
            raise ValueError(f"max_prompt_tokens must be None or an int >= 1, got {P!r}")
        if self.truncation not in ("error", "left"):
            raise ValueError(f"truncation must be 'error' or 'left', got {self.truncation!r}")
        if self.responder is not None and not callable(self.responder):
            raise TypeError(
                f"responder must be a callable respond(transcript) -> str | None, got "
                f"{self.responder!r:.80}"
            )
        M = self.max_turns
        if M is not None and (isinstance(M, bool) or not isinstance(M, int | np.integer) or M < 1):
            raise ValueError(f"max_turns must be None or an int >= 1, got {M!r}")
        if not isinstance(self.chat_template, bool):
            raise ValueError(f"chat_template must be True or False, got {self.chat_template!r}")

    @classmethod
    def check_names(
        cls, owner: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], own: Sequence[str]
    ) -> None:
        """Raise what Python would for ``EnvArgs(*args, **kwargs)``, naming the valid arguments.

        Args:
            owner: the env class, for the message.
            args, kwargs: the constructor's arguments that are not its own.
            own: the constructor's own argument names (listed as valid too).

        Raises:
            TypeError: too many positional arguments, one given twice, or an unknown name.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        positional = [f.name for f in dataclasses.fields(cls) if not f.kw_only]
        if len(args) > len(positional):
            raise TypeError(
                f"{owner}() takes at most {len(positional)} positional arguments of the env "
                f"({', '.join(positional)}), got {len(args)}: pass the others by keyword"
            )
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise TypeError(
                f"{owner}() got unknown arguments {unknown}; valid: {sorted([*own, *names])}"
            )
        twice = sorted(set(positional[: len(args)]) & set(kwargs))
        if twice:
            raise TypeError(f"{owner}() got multiple values for {twice}")

    @classmethod
    def signature(
        cls, before: Sequence[inspect.Parameter], after: Sequence[inspect.Parameter]
    ) -> inspect.Signature:
        """An env constructor's signature as ``help()`` and IDEs show it: ``self``, ``before``,
        the fields, ``after`` (keyword-only)."""
        self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        fields = inspect.signature(cls).parameters.values()
        return inspect.Signature([self_, *before, *fields, *after])


@dataclass(frozen=True)
class _ModelInfo:
    tokenizer: PreTrainedTokenizerBase
    vocab_size: int  # V, the LM head's output size
    eos_token_id: int | None
    max_positions: int | None


def _resolve_model(
    model: str | os.PathLike[str] | LanguageModelLike | None,
    tokenizer: PreTrainedTokenizerBase | None,
    trust_remote_code: bool = False,
) -> _ModelInfo:
    """Tokenizer, V, EOS and context size; a path loads the tokenizer and config, never weights."""
    if model is None:
        from textgym.assets import DEFAULT_MODEL

        model = DEFAULT_MODEL
    if isinstance(model, str | os.PathLike):
        from textgym import hf

        path = hf.check_model_dir(model, tokenizer=tokenizer is None)
        config = hf.load_config(path, trust_remote_code=trust_remote_code)
        tok = (
            tokenizer
            if tokenizer is not None
            else hf.load_tokenizer(path, trust_remote_code=trust_remote_code)
        )
        return _ModelInfo(
            tok, hf.head_size(config), hf.eos_token_id(tok, config), hf.context_window(config)
        )
    if not hasattr(model, "tokenizer") or not hasattr(model, "vocab_size"):
        raise TypeError(
            "model must be a path / hub name or a textgym.LanguageModel, "
            f"got {type(model).__name__}"
        )
    tok = tokenizer if tokenizer is not None else model.tokenizer
    eos = getattr(model, "eos_token_id", None) if tok.eos_token_id is None else tok.eos_token_id
    return _ModelInfo(tok, int(model.vocab_size), eos, getattr(model, "max_length", None))


def _check_tokenizer(info: _ModelInfo) -> None:
    tok, vocab_size = info.tokenizer, info.vocab_size
    if len(tok) > vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tok)} tokens but the LM head has {vocab_size} outputs; "
            "token ids must fit the action space Discrete(V)"
        )
    if tok.pad_token_id is None:
        raise ValueError(
            "the tokenizer has no pad token (observations are right-padded with it). Fix: "
            "`tokenizer.pad_token = tokenizer.eos_token`, then pass `tokenizer=tokenizer`"
        )
    if info.eos_token_id is None:
        raise ValueError(
            "neither the tokenizer nor the model config has an EOS id: "
            "episodes could never terminate"
        )


def _resolve_task(task: Task | str | Sequence[str], split: str | None) -> Task:
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        from textgym import multiturn, tasks

        if task in multiturn.names() and task not in tasks.names():
            return multiturn.load(task, split=split)
        if task not in tasks.names():
            raise ValueError(
                f"unknown task {task!r}; built-in tasks: {', '.join(tasks.names())}; "
                f"multi-turn tasks: {', '.join(multiturn.names())}"
            )
        return tasks.load(task, split=split)
    if not isinstance(task, Iterable):
        from textgym import multiturn, tasks

        raise TypeError(
            f"task must be a textgym.tasks.Task, a built-in task name "
            f"({', '.join(tasks.names())}) or a list of prompt strings, got {task!r:.100} "
            f"(multi-turn tasks: {', '.join(multiturn.names())})"
        )
    return Task.from_list(list(task))


@dataclass(frozen=True, eq=False)
class _Scorer:
    """Calls the reward once per batch of finished texts; splits a weighted sum into components."""

    reward: Any
    parts: tuple[tuple[str, float], ...] | None  # (name, weight) of a WeightedSum, else None

    def __call__(
        self, prompts: list[str], completions: list[str], references: list[tuple[str, ...]] | None
    ) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:  # (E,) float32, name -> (E,)
        if self.parts is not None:
            # One call: the total is the weighted sum of the components, so scoring both the
            # total and the components would run every metric twice.
            comps = self.reward.components(prompts, completions, references)
            total = np.zeros(len(completions), dtype=np.float64)
            for name, w in self.parts:
                total += w * comps[name]
            return total.astype(np.float32), comps
        scores = np.asarray(self.reward(prompts, completions, references), dtype=np.float32)
        if scores.shape != (len(completions),):
            raise ValueError(
                f"reward {getattr(self.reward, 'name', self.reward)!r} returned shape "
                f"{scores.shape} for {len(completions)} completions"
            )
        return scores, None


def _make_scorer(spec: RewardSpec | None, task: Task) -> _Scorer:
    # The one allowed back-reference from textgym/ to rewards/, inside the function (STYLE.md §1).
    from textgym.rewards import WeightedSum, make

    if spec is None:
        spec = task.reward
    if spec is None:
        raise ValueError(f"task {task.name!r} has no default reward; pass reward=... to the env")
    reward = make(spec)
    if reward.needs_references and task.references is None:
        raise ValueError(f"reward {reward.name!r} needs references but task {task.name!r} has none")
    if reward.token_level and not callable(getattr(reward, "step", None)):
        raise TypeError(f"reward {reward.name!r} says token_level=True but has no step() method")
    parts = None
    if isinstance(reward, WeightedSum):
        parts = tuple((r.name, float(w)) for r, w in reward.parts)
    return _Scorer(reward, parts)


@dataclass(frozen=True, eq=False)
class EnvConfig:
    """Everything both envs derive from their arguments, built once (see ``TextGenEnv``)."""

    tokenizer: PreTrainedTokenizerBase
    task: Task
    scorer: _Scorer
    vocab_size: int  # V
    max_prompt_tokens: int  # P
    max_new_tokens: int  # T
    eos_token_id: int
    pad_token_id: int
    prompt_ids: np.ndarray  # (N, P) int64, right-padded tokenised prompts
    prompt_mask: np.ndarray  # (N, P) int64
    prompt_lengths: np.ndarray  # (N,) int64
    stop_ids: tuple[np.ndarray, ...]  # token ids of each stop sequence
    fixed_horizon: bool
    action_mask: ActionMaskProvider | None
    expert: BoundExpert | None
    responder: Responder | None = None  # multi-turn: answers each policy turn
    max_turns: int | None = None  # multi-turn: the most policy turns
    chat: ChatFormat | None = None  # the chat-template formatting of prompts and replies

    @property
    def multi_turn(self) -> bool:
        """Whether a responder answers the policy's turns (else: single-turn episodes)."""
        return self.responder is not None

    @property
    def seq_len(self) -> int:
        """L = P + T, the observation length."""
        return self.max_prompt_tokens + self.max_new_tokens

    @property
    def token_level(self) -> bool:
        """Whether the reward is paid per token (``reward.step``) rather than per sequence."""
        return bool(self.scorer.reward.token_level)

    @property
    def reward(self) -> Any:
        """The reward object (``textgym.rewards.make`` of the spec)."""
        return self.scorer.reward


def _tokenize_prompts(
    tok: PreTrainedTokenizerBase,
    task: Task,
    max_prompt_tokens: int | None,
    truncation: Truncation,
    known: Mapping[str, list[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # (N, P), (N, P), (N,)
    if known is not None:
        encoded = [known[p] for p in task.prompts]
    else:
        # The tokenizer's own special tokens (a BOS for Llama-style models) are what the LM expects.
        encoded = tok(list(task.prompts))["input_ids"]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    if (lengths == 0).any():
        i = int(np.argmin(lengths))
        raise ValueError(
            f"prompt {i} of task {task.name!r} ({task.prompts[i]!r}) is 0 tokens long; an LM "
            "needs at least one token to condition on (start it with the bos token)"
        )
    longest = int(lengths.max())
    P = longest if max_prompt_tokens is None else max_prompt_tokens
    if longest > P:
        if truncation == "error":
            i = int(np.argmax(lengths))
            raise ValueError(
                f"prompt {i} of task {task.name!r} is {longest} tokens, more than "
                f"max_prompt_tokens={P} ({int((lengths > P).sum())} prompts are): "
                f"{task.prompts[i]!r:.120}. Raise max_prompt_tokens, or pass "
                "truncation='left' to keep each prompt's last max_prompt_tokens tokens"
            )
        encoded = [e[-P:] for e in encoded]
        lengths = np.minimum(lengths, P)
    ids = np.full((len(encoded), P), tok.pad_token_id, dtype=np.int64)  # (N, P)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = e
    mask = (np.arange(P)[None, :] < lengths[:, None]).astype(np.int64)  # (N, P)
    return ids, mask, lengths


def build_config(args: EnvArgs) -> EnvConfig:
    """Pre-compute everything both envs derive from their (validated) arguments."""
    minfo = _resolve_model(args.model, args.tokenizer, args.trust_remote_code)
    _check_tokenizer(minfo)
    tok, V, max_pos = minfo.tokenizer, minfo.vocab_size, minfo.max_positions
    task, split, max_prompt_tokens = args.task, args.split, args.max_prompt_tokens
    the_task = _resolve_task(task, split)
    scorer = _make_scorer(args.reward, the_task)
    responder, max_turns = _resolve_turns(args, the_task)
    chat = ChatFormat(tok) if args.chat_template else None
    known = None
    if max_prompt_tokens is None and isinstance(task, str):
        # A built-in task sizes P over all its splits, so that train and evaluation envs share
        # one observation space whatever the tokenizer.
        everything = the_task.prompts if split is None else _resolve_task(task, None).prompts
        known = dict(zip(everything, _encode_prompts(tok, everything, chat), strict=True))
        max_prompt_tokens = max(len(e) for e in known.values())
    elif chat is not None:
        known = dict(
            zip(the_task.prompts, _encode_prompts(tok, the_task.prompts, chat), strict=True)
        )
    ids, mask, lengths = _tokenize_prompts(tok, the_task, max_prompt_tokens, args.truncation, known)
    P, T = ids.shape[1], int(args.max_new_tokens)
    if max_pos is not None and max_pos < P + T:
        raise ValueError(
            f"max_prompt_tokens + max_new_tokens = {P} + {T} = {P + T} exceeds the model's "
            f"{max_pos} positions; lower max_new_tokens, or max_prompt_tokens "
            "(with truncation='left')"
        )
    stop_ids = []
    for s in the_task.stop_sequences:
        s_ids = tok(s, add_special_tokens=False)["input_ids"]
        if not s_ids:
            raise ValueError(f"stop sequence {s!r} tokenises to no tokens")
        stop_ids.append(np.asarray(s_ids, dtype=np.int64))
    provider: ActionMaskProvider | None
    action_mask = args.action_mask
    if action_mask is None or callable(action_mask):
        provider = action_mask  # a callable is taken as a provider
    else:
        provider = VocabularyMask(action_mask, V)
    expert = the_task.expert.bind(the_task, tok, T) if the_task.expert is not None else None
    return EnvConfig(
        tokenizer=tok,
        task=the_task,
        scorer=scorer,
        vocab_size=V,
        max_prompt_tokens=P,
        max_new_tokens=T,
        eos_token_id=int(minfo.eos_token_id),  # type: ignore[arg-type]  # checked not None
        pad_token_id=int(tok.pad_token_id),
        prompt_ids=ids,
        prompt_mask=mask,
        prompt_lengths=lengths,
        stop_ids=tuple(stop_ids),
        fixed_horizon=bool(args.fixed_horizon),
        action_mask=provider,
        expert=expert,
        responder=responder,
        max_turns=max_turns,
        chat=chat,
    )


def _encode_prompts(
    tok: PreTrainedTokenizerBase, prompts: Sequence[str], chat: ChatFormat | None
) -> list[list[int]]:
    """Token ids of prompts: with the tokenizer's special tokens, or rendered by the chat
    template (which writes any special tokens itself)."""
    if chat is None:
        return list(tok(list(prompts))["input_ids"])
    return list(tok([chat.prompt(p) for p in prompts], add_special_tokens=False)["input_ids"])


def _resolve_turns(args: EnvArgs, task: Task) -> tuple[Responder | None, int | None]:
    """The responder and turn limit: the arguments', else the task's (a ``MultiTurnTask``)."""
    responder = args.responder if args.responder is not None else getattr(task, "responder", None)
    max_turns = args.max_turns if args.max_turns is not None else getattr(task, "max_turns", None)
    if responder is None and args.max_turns is not None:
        raise ValueError(
            f"max_turns={args.max_turns} needs a responder (multi-turn episodes): pass "
            "responder=... or a textgym.multiturn.MultiTurnTask"
        )
    if responder is not None and args.fixed_horizon:
        raise ValueError(
            "fixed_horizon=True is for single-turn episodes; a multi-turn episode ends when its "
            "responder ends it (pass fixed_horizon=False, or no responder)"
        )
    return responder, None if responder is None else max_turns


class _ConfigViews:
    """Read-only views of an env's :class:`EnvConfig`, shared by the single and the vector env."""

    config: EnvConfig

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The env's tokenizer (never modified by the env)."""
        return self.config.tokenizer

    @property
    def task(self) -> Task:
        """The task episodes are drawn from."""
        return self.config.task

    @property
    def reward_fn(self) -> Any:
        """The reward object."""
        return self.config.reward
