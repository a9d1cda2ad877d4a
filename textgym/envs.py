"""Token-level text generation: ``TextGenEnv`` and the natively batched ``TextGenVectorEnv``.

The MDP (see ``docs/envs.md``): state = prompt tokens + tokens generated so far, action = the next
token id, deterministic transition s' = s ⊕ a, ``terminated`` at EOS or a task stop sequence,
``truncated`` after ``max_new_tokens`` tokens. The sequence reward r(x, y) is paid on the final
step (0.0 before); a token-level reward (``reward.token_level``) is paid on every step.

Both envs share one batched state (``_Episodes``: numpy arrays (B, L), no per-env Python objects);
the single env is that state with B = 1, so the two cannot drift apart. The env holds the
tokenizer, the task and the reward, never the policy LM.
"""

from __future__ import annotations

import operator
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import logger, spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textgym.tasks import BoundExpert, RewardSpec, Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "ActionMaskProvider",
    "TextGenEnv",
    "TextGenVectorEnv",
    "TopPMask",
    "VocabularyMask",
    "to_left_padded",
]

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


class ActionMaskProvider(Protocol):
    """Allowed next tokens for a batch of states (``info["action_mask"]``).

    Called by the envs once per step with all B states; must return a fresh (B, V) bool array.
    """

    def __call__(
        self,
        input_ids: np.ndarray,  # (B, L) int64, right-padded prompt + completion so far
        lengths: np.ndarray,  # (B,) int64, valid tokens of each row
    ) -> np.ndarray:  # (B, V) bool, True = allowed
        """Return the mask of allowed next tokens."""
        ...


# --- padding -------------------------------------------------------------------------------------


def to_left_padded(
    input_ids: np.ndarray,  # (B, L) right-padded
    attention_mask: np.ndarray,  # (B, L) 1 on the valid prefix
    pad_token_id: int,
) -> tuple[np.ndarray, np.ndarray]:  # (B, L), (B, L)
    """Move each row's valid prefix to the right end (the layout an LM generates from).

    Observations are right-padded (valid prefix first); ``LanguageModel.step`` takes left-padded
    batches so that every row's last position is its newest token.

    Args:
        input_ids: (B, L) right-padded token ids.
        attention_mask: (B, L) 1 on each row's valid prefix, 0 after it.
        pad_token_id: the id written in the padding.

    Returns:
        (ids, mask), both (B, L), left-padded.
    """
    ids = np.asarray(input_ids)
    mask = np.asarray(attention_mask)
    if ids.shape != mask.shape or ids.ndim != 2:
        raise ValueError(
            f"input_ids {ids.shape} and attention_mask {mask.shape} must be equal (B, L)"
        )
    L = ids.shape[1]
    shift = L - mask.sum(axis=1)  # (B,) pads each row gets on the left
    cols = np.arange(L)[None, :] - shift[:, None]  # (B, L) source column of each target column
    valid = cols >= 0
    out = np.take_along_axis(ids, np.where(valid, cols, 0), axis=1)
    out[~valid] = pad_token_id
    return out, valid.astype(mask.dtype)


# --- action masks --------------------------------------------------------------------------------


class VocabularyMask:
    """A fixed vocabulary restriction: only ``allowed_token_ids`` may be chosen.

    Include the EOS id to let episodes terminate. The env reports the mask; it does not enforce
    it (an agent samples under it and records the masked distribution's log-prob).

    Args:
        allowed_token_ids: the permitted token ids.
        vocab_size: V, the action space size.
    """

    def __init__(self, allowed_token_ids: Iterable[int], vocab_size: int) -> None:
        ids = np.asarray(list(allowed_token_ids), dtype=np.int64)
        if ids.size == 0:
            raise ValueError("VocabularyMask needs at least one allowed token id")
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        if bad.size:
            raise ValueError(f"allowed token ids {bad[:8].tolist()} are outside [0, {vocab_size})")
        self.vocab_size = vocab_size
        self.row = np.zeros(vocab_size, dtype=bool)  # (V,)
        self.row[ids] = True

    def __call__(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:  # (B, V)
        """The same row for every state (a fresh array: callers keep what they get)."""
        return np.repeat(self.row[None, :], len(lengths), axis=0)


class TopPMask:
    """NLPO's action mask: the top-k / top-p tokens of a frozen mask model π_ψ.

    Ramamurthy et al. 2022 (arXiv:2210.01241) restrict the policy to the top-p tokens of a masking
    policy π_ψ, a copy of π_θ refreshed every μ updates. Refresh it by loading the policy's weights
    into ``self.model``. Each call runs one full forward of π_ψ over the B prefixes (no KV cache:
    the provider is stateless, so it survives autoresets); an agent that needs it faster computes
    the mask beside its policy, with its own cache.

    Args:
        model: a ``textgym.LanguageModel`` (anything with ``vocab_size``, ``tokenizer`` and
            ``step(ids, mask, cache) -> (logits, cache)``).
        top_p: nucleus mass in (0, 1].
        top_k: keep at most this many tokens (applied before ``top_p``); None for no limit.
    """

    def __init__(self, model: Any, top_p: float | None = 0.9, top_k: int | None = None) -> None:
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_p is None and top_k is None:
            raise ValueError("TopPMask needs top_p or top_k")
        self.model = model
        self.top_p = top_p
        self.top_k = top_k
        self.pad_token_id = int(model.tokenizer.pad_token_id)

    def __call__(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:  # (B, V)
        """Run π_ψ on the B prefixes and keep its top-k / top-p next tokens."""
        import torch

        from textgym.decoding import filter_logits

        L = input_ids.shape[1]
        right_mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.int64)  # (B, L)
        ids, mask = to_left_padded(input_ids, right_mask, self.pad_token_id)
        width = int(lengths.max())  # columns left of every row's prefix are padding only
        ids, mask = ids[:, L - width :], mask[:, L - width :]  # (B, width)
        device = getattr(self.model, "device", "cpu")
        with torch.inference_mode():
            logits, _ = self.model.step(
                torch.as_tensor(ids, device=device), torch.as_tensor(mask, device=device), None
            )  # (B, V)
            # The same filter the policy samples under (textgym.decoding), read as a mask.
            keep = torch.isfinite(filter_logits(logits, top_k=self.top_k, top_p=self.top_p))
        return keep.cpu().numpy()


# --- configuration shared by both envs -----------------------------------------------------------


def _head_size(config: Any) -> int:
    """V from a model config: the LM head's output size (``vocab_size`` of the text model)."""
    v = getattr(config, "vocab_size", None)
    if v is None and hasattr(config, "get_text_config"):
        v = getattr(config.get_text_config(), "vocab_size", None)
    if v is None:
        raise ValueError(f"cannot read the LM head size (vocab_size) from {type(config).__name__}")
    return int(v)


def _max_positions(config: Any) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        v = getattr(text, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _first_id(value: Any) -> int | None:
    """An id from a config field holding an int, a list of ints, or None."""
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple) and value and isinstance(value[0], int):
        return int(value[0])
    return None


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
        import textgym

        model = textgym.DEFAULT_MODEL
    if isinstance(model, str | os.PathLike):
        from transformers import AutoConfig

        from textgym.lm import check_model_dir, load_tokenizer

        path = check_model_dir(model, tokenizer=tokenizer is None)
        # Explicit, never None: with None transformers asks on stdin whether to run the
        # folder's code (DESIGN.md, "Checkpoints and loading").
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        tok = (
            tokenizer
            if tokenizer is not None
            else load_tokenizer(path, trust_remote_code=trust_remote_code)
        )
        eos = tok.eos_token_id
        if eos is None:  # some tokenizers leave EOS to the model config
            eos = _first_id(getattr(config, "eos_token_id", None))
        return _ModelInfo(tok, _head_size(config), eos, _max_positions(config))
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
        from textgym import tasks

        return tasks.load(task, split=split)
    if not isinstance(task, Iterable):
        from textgym import tasks

        raise TypeError(
            f"task must be a textgym.tasks.Task, a built-in task name "
            f"({', '.join(tasks.names())}) or a list of prompt strings, got {task!r:.100}"
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


def build_config(
    model: str | os.PathLike[str] | LanguageModelLike | None = None,
    task: Task | str | Sequence[str] = "reviews",
    reward: RewardSpec | None = None,
    max_new_tokens: int = 32,
    max_prompt_tokens: int | None = None,
    *,
    split: str | None = "train",
    tokenizer: PreTrainedTokenizerBase | None = None,
    truncation: Truncation = "error",
    action_mask: ActionMaskProvider | Sequence[int] | None = None,
    fixed_horizon: bool = False,
    trust_remote_code: bool = False,
) -> EnvConfig:
    """Validate the env arguments and pre-compute everything (see ``TextGenEnv`` for the args)."""
    from textgym.lm import check_trust_remote_code

    check_trust_remote_code(trust_remote_code)
    if not isinstance(max_new_tokens, int | np.integer) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if max_prompt_tokens is not None and (
        not isinstance(max_prompt_tokens, int | np.integer) or max_prompt_tokens < 1
    ):
        raise ValueError(
            f"max_prompt_tokens must be None or an int >= 1, got {max_prompt_tokens!r}"
        )
    if truncation not in ("error", "left"):
        raise ValueError(f"truncation must be 'error' or 'left', got {truncation!r}")
    minfo = _resolve_model(model, tokenizer, trust_remote_code)
    _check_tokenizer(minfo)
    tok, V, max_pos = minfo.tokenizer, minfo.vocab_size, minfo.max_positions
    the_task = _resolve_task(task, split)
    scorer = _make_scorer(reward, the_task)
    known = None
    if max_prompt_tokens is None and isinstance(task, str):
        # A built-in task sizes P over all its splits, so that train and evaluation envs share
        # one observation space whatever the tokenizer.
        everything = the_task.prompts if split is None else _resolve_task(task, None).prompts
        known = dict(zip(everything, tok(list(everything))["input_ids"], strict=True))
        max_prompt_tokens = max(len(e) for e in known.values())
    ids, mask, lengths = _tokenize_prompts(tok, the_task, max_prompt_tokens, truncation, known)
    P, T = ids.shape[1], int(max_new_tokens)
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
        fixed_horizon=bool(fixed_horizon),
        action_mask=provider,
        expert=expert,
    )


def _observation_space(vocab_size: int, seq_len: int) -> spaces.Dict:
    return spaces.Dict(
        {
            "input_ids": spaces.Box(0, vocab_size - 1, (seq_len,), np.int64),
            "attention_mask": spaces.Box(0, 1, (seq_len,), np.int64),
        }
    )


# --- the batched episode state (the hot path) ----------------------------------------------------


@dataclass
class _StepOut:
    rewards: np.ndarray  # (B,) float32
    terminated: np.ndarray  # (B,) bool
    truncated: np.ndarray  # (B,) bool
    paid: np.ndarray  # (E,) rows whose sequence reward was paid this step
    components: dict[str, np.ndarray] | None  # name -> (E,) unweighted component scores
    ended: np.ndarray  # (D,) rows whose episode ended this step


class _Episodes:
    """B episodes as numpy arrays; both envs delegate reset/step here."""

    def __init__(self, cfg: EnvConfig, num_envs: int) -> None:
        B, L = num_envs, cfg.seq_len
        self.cfg = cfg
        self.num_envs = B
        self.rows = np.arange(B)
        self.input_ids = np.full((B, L), cfg.pad_token_id, dtype=np.int64)  # (B, L)
        self.attention_mask = np.zeros((B, L), dtype=np.int64)  # (B, L)
        self.prompt_length = np.zeros(B, dtype=np.int64)  # (B,)
        self.t = np.zeros(B, dtype=np.int64)  # (B,) steps taken (the clock of the horizon)
        # Completion tokens written; equals t except in a fixed-horizon absorbing state, where
        # time goes on and nothing is written.
        self.n = np.zeros(B, dtype=np.int64)  # (B,)
        self.prompt_index = np.zeros(B, dtype=np.int64)  # (B,)
        self.absorbed = np.zeros(B, dtype=bool)  # (B,) fixed horizon: text ended before T
        self.trim = np.zeros(B, dtype=np.int64)  # (B,) EOS / stop tokens to drop from the text
        self.text = np.full(B, None, dtype=object)  # (B,) text decoded when its reward was paid

    def reset(self, rows: np.ndarray, prompt_index: np.ndarray) -> None:
        """Start new episodes in ``rows`` (index array) on prompts ``prompt_index``."""
        cfg, P = self.cfg, self.cfg.max_prompt_tokens
        self.input_ids[rows, :P] = cfg.prompt_ids[prompt_index]
        self.input_ids[rows, P:] = cfg.pad_token_id
        self.attention_mask[rows, :P] = cfg.prompt_mask[prompt_index]
        self.attention_mask[rows, P:] = 0
        self.prompt_length[rows] = cfg.prompt_lengths[prompt_index]
        self.prompt_index[rows] = prompt_index
        self.t[rows] = 0
        self.n[rows] = 0
        self.absorbed[rows] = False
        self.text[rows] = None

    def lengths(self) -> np.ndarray:  # (B,)
        """Valid tokens of each row (prompt + completion)."""
        return self.prompt_length + self.n

    def _stop_hits(self, live: np.ndarray, hit: np.ndarray, trim: np.ndarray) -> None:
        """Mark live rows whose completion now ends with a stop sequence (in place)."""
        pos_end = self.prompt_length[live] + self.n[live]  # (n,) one past the newest token
        for s in self.cfg.stop_ids:
            k = len(s)
            cand = np.flatnonzero(~hit & (self.n[live] >= k))
            if cand.size == 0:
                continue
            cols = pos_end[cand, None] - k + np.arange(k)[None, :]  # (c, k)
            match = (self.input_ids[live[cand][:, None], cols] == s).all(axis=1)  # (c,)
            hit[cand[match]] = True
            trim[cand[match]] = k

    def step(self, actions: np.ndarray, active: np.ndarray | None) -> _StepOut:
        """Append ``actions`` (B,) to the rows in ``active`` (bool (B,), None = all)."""
        cfg = self.cfg
        B = self.num_envs
        act = self.rows if active is None else np.flatnonzero(active)
        # Absorbed rows (fixed horizon, after EOS) ignore their action and only count time.
        live = act[~self.absorbed[act]] if cfg.fixed_horizon else act
        a = actions[live]
        pos = self.prompt_length[live] + self.n[live]  # (n,) where each action is written
        rewards = np.zeros(B, dtype=np.float32)
        if cfg.token_level and live.size:
            # The token reward sees the state before the action (rewards/base.py contract).
            rewards[live] = cfg.reward.step(self.input_ids[live], pos, a)
        # What the step overwrites, put back if scoring raises: a failed step leaves the
        # episodes as they were, so the caller can retry it or reset.
        undo = (self.input_ids[live, pos], self.trim[live], self.absorbed[live])
        self.input_ids[live, pos] = a
        self.attention_mask[live, pos] = 1
        self.n[live] += 1
        self.t[act] += 1
        try:
            return self._finish_step(act, live, a, rewards)
        except BaseException:
            self.input_ids[live, pos], self.trim[live], self.absorbed[live] = undo
            self.attention_mask[live, pos] = 0
            self.n[live] -= 1
            self.t[act] -= 1
            raise

    def _finish_step(
        self, act: np.ndarray, live: np.ndarray, a: np.ndarray, rewards: np.ndarray
    ) -> _StepOut:
        """Termination, truncation and the sequence reward of a step whose tokens are written."""
        cfg = self.cfg
        B = self.num_envs
        hit = a == cfg.eos_token_id  # (n,) the text ended with this action
        trim = hit.astype(np.int64)
        if cfg.stop_ids:
            self._stop_hits(live, hit, trim)
        self.trim[live] = trim
        done_text = live[hit]
        at_horizon = act[self.t[act] >= cfg.max_new_tokens]

        terminated = np.zeros(B, dtype=bool)
        truncated = np.zeros(B, dtype=bool)
        pay = np.zeros(B, dtype=bool)
        pay[done_text] = True
        if cfg.fixed_horizon:
            self.absorbed[done_text] = True
            terminated[at_horizon] = self.absorbed[at_horizon]
            truncated[at_horizon] = ~self.absorbed[at_horizon]
            ended = at_horizon
        else:
            terminated[done_text] = True
            truncated[at_horizon] = True
            truncated &= ~terminated  # EOS on the last allowed step is a termination
            ended = np.flatnonzero(terminated | truncated)
        pay |= truncated
        paid = np.flatnonzero(pay)

        components = None
        if paid.size:
            texts = self.decode(paid)
            if not cfg.token_level:
                prompts = [cfg.task.prompts[i] for i in self.prompt_index[paid]]
                refs = cfg.task.references
                batch_refs = None if refs is None else [refs[i] for i in self.prompt_index[paid]]
                scores, components = cfg.scorer(prompts, texts, batch_refs)
                rewards[paid] += scores
            self.text[paid] = texts  # after the reward: nothing to undo when it raises
        return _StepOut(rewards, terminated, truncated, paid, components, ended)

    def decode(self, rows: np.ndarray, skip_special_tokens: bool = True) -> list[str]:
        """Completions of ``rows`` without their final EOS / stop sequence (one batched decode)."""
        start = self.prompt_length[rows]
        stop = start + self.n[rows] - self.trim[rows]
        seqs = [self.input_ids[r, s:e].tolist() for r, s, e in zip(rows, start, stop, strict=True)]
        return list(self.cfg.tokenizer.batch_decode(seqs, skip_special_tokens=skip_special_tokens))

    def action_mask(self) -> np.ndarray:  # (B, V) bool
        """The provider's mask for the current states, shape-checked."""
        provider = self.cfg.action_mask
        assert provider is not None
        m = np.asarray(provider(self.input_ids, self.lengths()))
        expected = (self.num_envs, self.cfg.vocab_size)
        if m.shape != expected:
            raise ValueError(f"action mask provider returned shape {m.shape}, expected {expected}")
        return m.astype(bool, copy=False)

    def expert_actions(self) -> np.ndarray:  # (B,) int64
        """The task expert's next token for every row (EOS in absorbed rows)."""
        expert = self.cfg.expert
        if expert is None:
            raise RuntimeError(
                f"task {self.cfg.task.name!r} has no expert; give it one, e.g. "
                "dataclasses.replace(task, expert=textgym.tasks.ReferenceExpert())"
            )
        out = np.asarray(
            expert(self.prompt_index, self.input_ids, self.prompt_length, self.n), dtype=np.int64
        )
        out[self.absorbed] = self.cfg.eos_token_id
        return out

    def render(self, row: int) -> str:
        """Prompt and completion so far of ``row``, special tokens shown."""
        tok = self.cfg.tokenizer
        p, t = int(self.prompt_length[row]), int(self.t[row])
        prompt = tok.decode(self.input_ids[row, :p].tolist())
        completion = tok.decode(self.input_ids[row, p : p + self.n[row]].tolist())
        return f"[{t}/{self.cfg.max_new_tokens}] {prompt}|{completion}"


# --- the single env ------------------------------------------------------------------------------


def _check_seed(seed: Any) -> int | None:
    """A reset seed: None or an int >= 0 (numpy ints too); bools, floats and strings raise."""
    if seed is None:
        return None
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, int | np.integer):
        raise TypeError(
            f"seed must be an int >= 0, a list of them (vector env) or None, got {seed!r} "
            f"({type(seed).__name__})"
        )
    if seed < 0:
        raise ValueError(f"seed must be an int >= 0 or None, got {seed!r}")
    return int(seed)


def _check_options(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict or None, got {options!r:.100}")
    return dict(options)


def _pinned_prompt(options: Mapping[str, Any] | None, allowed: tuple[str, ...]) -> Any:
    options = _check_options(options)
    if not options:
        return None
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(f"unknown reset options {sorted(unknown)}; valid: {list(allowed)}")
    return options.get("prompt_index")


def _check_index(i: Any, n: int) -> int:
    try:
        if isinstance(i, bool | np.bool_):
            raise TypeError
        idx = int(i)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"options['prompt_index'] must be an int, got {i!r:.100}") from None
    if not 0 <= idx < n or idx != i:
        raise ValueError(f"options['prompt_index'] must be an int in [0, {n}), got {i!r}")
    return idx


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


class TextGenEnv(_ConfigViews, gym.Env[dict[str, Any], int | np.int64]):
    """Text generation by a causal LM as a token-level MDP.

    ## Description
    One episode writes one completion of one prompt, a token per step. The env holds the
    tokenizer, the task (prompts, references, expert) and the reward; the policy LM is the agent.

    ## Spaces
    - Action: ``Discrete(V)``, the next token id; V is the LM head size (from the model config,
      never guessed from the tokenizer).
    - Observation: ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,),
      int64))``, L = ``max_prompt_tokens + max_new_tokens``; the prompt tokens, then the tokens
      generated so far, then padding (right-padded, ``attention_mask`` 1 on the valid prefix).

    ## Rewards
    Sequence-level (default): r(prompt, completion, references) on the step that ends the text,
    0.0 on every other step; the completion is decoded without its EOS / stop sequence and with
    special tokens skipped. Token-level (``reward.token_level``): ``reward.step`` on every step,
    no end-of-episode reward. A weighted sum also reports each component in
    ``info["reward_components"]``.

    ## Starting State
    A prompt drawn uniformly with ``np_random`` (seed it with ``reset(seed=...)``), or pinned with
    ``reset(options={"prompt_index": i})``; no completion tokens yet.

    ## Episode End
    - ``terminated``: the action is EOS or completes a stop sequence of the task;
    - ``truncated``: ``max_new_tokens`` tokens without either (never both flags);
    - ``fixed_horizon=True``: every episode lasts exactly ``max_new_tokens`` steps; after EOS the
      episode sits in an absorbing state (actions ignored, reward 0, observation frozen) and
      reports ``terminated`` at the horizon; the sequence reward is paid on the EOS step.
    Stepping a finished episode raises ``RuntimeError``: call ``reset()``.

    ## Info
    ``prompt_index`` every step; ``prompt`` and ``references`` after ``reset`` and at the end;
    ``text`` (the decoded completion) when the text ends and at the episode end;
    ``reward_components`` when the reward is paid (weighted sums); ``action_mask`` (V,) bool of
    the next action when a provider is given.

    ## Arguments
    - ``model``: a path / hub name (loads only the tokenizer and config) or a
      ``textgym.LanguageModel``; default ``textgym.DEFAULT_MODEL``.
    - ``task``: a ``Task``, a built-in name (``textgym.tasks.names()``) or a list of prompts;
      default ``"reviews"``. ``split`` picks a built-in task's split (default ``"train"``).
    - ``reward``: any ``textgym.rewards.make`` spec; default the task's reward.
    - ``max_new_tokens`` (T, default 32), ``max_prompt_tokens`` (P, default the longest prompt;
      for a built-in task name, the longest over all its splits).
    - ``truncation``: ``"error"`` (default) raises on prompts longer than P, ``"left"`` keeps
      their last P tokens.
    - ``tokenizer``: overrides the model's (e.g. one you gave a pad token).
    - ``action_mask``: an ``ActionMaskProvider`` (``VocabularyMask``, ``TopPMask``) or a list of
      allowed token ids.
    - ``fixed_horizon``: see Episode End.
    - ``render_mode``: ``"ansi"`` (``render()`` returns the text) or ``"human"`` (prints it).
    - ``trust_remote_code``: let a ``model`` folder or hub repository run its own Python code
      (its config's ``auto_map``) while its config and tokenizer load; default False, so only
      architectures built into ``transformers`` load and nothing is ever asked on stdin.

    ## Version History
    - v0: initial version.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        model: str | os.PathLike[str] | LanguageModelLike | None = None,
        task: Task | str | Sequence[str] = "reviews",
        reward: RewardSpec | None = None,
        max_new_tokens: int = 32,
        max_prompt_tokens: int | None = None,
        *,
        split: str | None = "train",
        tokenizer: PreTrainedTokenizerBase | None = None,
        truncation: Truncation = "error",
        action_mask: ActionMaskProvider | Sequence[int] | None = None,
        fixed_horizon: bool = False,
        render_mode: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            hint = (
                " (stable-baselines3's make_vec_env asks for 'rgb_array' unless told otherwise: "
                "pass env_kwargs={'render_mode': None})"
                if render_mode == "rgb_array"
                else ""
            )
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, "
                f"got {render_mode!r}{hint}"
            )
        self.config = build_config(
            model,
            task,
            reward,
            max_new_tokens,
            max_prompt_tokens,
            split=split,
            tokenizer=tokenizer,
            truncation=truncation,
            action_mask=action_mask,
            fixed_horizon=fixed_horizon,
            trust_remote_code=trust_remote_code,
        )
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(self.config.vocab_size)
        self.observation_space = _observation_space(self.config.vocab_size, self.config.seq_len)
        self._ep = _Episodes(self.config, 1)
        self._row = np.zeros(1, dtype=np.int64)
        self._action = np.zeros(1, dtype=np.int64)
        self._needs_reset = True

    def _obs(self) -> dict[str, Any]:
        return {
            "input_ids": self._ep.input_ids[0].copy(),
            "attention_mask": self._ep.attention_mask[0].copy(),
        }

    def _episode_info(self, i: int) -> dict[str, Any]:
        refs = self.config.task.references
        return {
            "prompt_index": i,
            "prompt": self.config.task.prompts[i],
            "references": None if refs is None else refs[i],
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode on a random prompt (or ``options={"prompt_index": i}``).

        Args:
            seed: seeds ``np_random``, which alone picks prompts.
            options: ``{"prompt_index": i}`` pins the prompt.

        Returns:
            (observation, info) with ``prompt_index``, ``prompt``, ``references``.
        """
        super().reset(seed=_check_seed(seed))
        n = len(self.config.task)
        pinned = _pinned_prompt(options, ("prompt_index",))
        i = int(self.np_random.integers(n)) if pinned is None else _check_index(pinned, n)
        self._ep.reset(self._row, np.array([i]))
        self._needs_reset = False
        info = self._episode_info(i)
        if self.config.action_mask is not None:
            info["action_mask"] = self._ep.action_mask()[0]
        if self.render_mode == "human":
            self.render()
        return self._obs(), info

    def _check_action(self, action: Any) -> int:
        try:
            if isinstance(action, bool | np.bool_):
                raise TypeError
            a = operator.index(action)  # ints, numpy integers, 0-d integer arrays; no floats
        except TypeError:
            raise ValueError(
                "action must be an integer token id in "
                f"[0, {self.config.vocab_size}), got {action!r}"
            ) from None
        if not 0 <= a < self.config.vocab_size:
            raise ValueError(
                f"action {a} is outside the action space Discrete({self.config.vocab_size}): "
                f"token ids are 0..{self.config.vocab_size - 1}"
            )
        return a

    def step(
        self, action: int | np.int64
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Append one token.

        Args:
            action: the next token id.

        Returns:
            (observation, reward, terminated, truncated, info).
        """
        if self._needs_reset:
            raise RuntimeError(
                "the episode has ended (or never started): call env.reset() before env.step()"
            )
        self._action[0] = self._check_action(action)
        out = self._ep.step(self._action, None)
        terminated, truncated = bool(out.terminated[0]), bool(out.truncated[0])
        i = int(self._ep.prompt_index[0])
        info: dict[str, Any] = {"prompt_index": i}
        if out.paid.size:
            info["text"] = self._ep.text[0]
            if out.components is not None:
                info["reward_components"] = {k: float(v[0]) for k, v in out.components.items()}
        if terminated or truncated:
            self._needs_reset = True
            info.update(self._episode_info(i))
            info["text"] = self._ep.text[0]
        if self.config.action_mask is not None:
            info["action_mask"] = self._ep.action_mask()[0]
        if self.render_mode == "human":
            self.render()
        return self._obs(), float(out.rewards[0]), terminated, truncated, info

    def expert_action(self) -> int:
        """The task expert's next token for the current state (see ``textgym.tasks``)."""
        return int(self._ep.expert_actions()[0])

    def action_masks(self) -> np.ndarray:  # (V,) bool
        """The current action mask (the ``sb3-contrib`` MaskablePPO hook); all True without one."""
        if self.config.action_mask is None:
            return np.ones(self.config.vocab_size, dtype=bool)
        return self._ep.action_mask()[0]

    def render(self) -> str | None:
        """``"ansi"``: return ``[t/T] prompt|completion``; ``"human"``: print it."""
        if self.render_mode is None:
            logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'human'")
            return None
        text = self._ep.render(0)
        if self.render_mode == "ansi":
            return text
        sys.stdout.write(text + "\n")
        return None


# --- the vector env ------------------------------------------------------------------------------


def _put(
    info: dict[str, Any], key: str, rows: np.ndarray, values: Any, num_envs: int, dtype: Any
) -> None:
    """Gymnasium's vector-info layout: ``info[key]`` (B, ...) and its bool mask ``info["_key"]``."""
    arr = np.full(num_envs, None, dtype=object) if dtype is object else np.zeros(num_envs, dtype)
    if dtype is object:
        for r, v in zip(rows, values, strict=True):  # object arrays: no broadcasting of tuples
            arr[r] = v
    else:
        arr[rows] = values
    present = np.zeros(num_envs, dtype=bool)
    present[rows] = True
    info[key] = arr
    info["_" + key] = present


class TextGenVectorEnv(_ConfigViews, VectorEnv[dict[str, Any], np.ndarray, np.ndarray]):
    """B token-level text-generation episodes in numpy arrays (a ``gymnasium.vector.VectorEnv``).

    Same MDP, spaces and arguments as :class:`TextGenEnv` (see it), plus ``num_envs`` and
    ``autoreset_mode``; sub-env i equals a ``TextGenEnv`` reset with ``seed + i`` and stepped with
    the same actions. The hot path is a few numpy operations on (B, L) arrays: prompts are
    tokenised once at construction (reset is an index), text is decoded only when episodes end,
    and the reward is called once per step for all episodes that end in it.

    Autoreset (``metadata["autoreset_mode"]``):
    - ``NEXT_STEP`` (default, Gymnasium's): the step after an episode ends resets that sub-env,
      ignores its action and returns reward 0, ``terminated = truncated = False``, with the new
      episode's ``prompt`` / ``references`` in ``info``;
    - ``SAME_STEP`` (SB3's VecEnv convention): the ending step returns the new episode's first
      observation, the last one in ``info["final_obs"]`` and its info in ``info["final_info"]``;
    - ``DISABLED``: stepping a finished sub-env raises; reset with
      ``reset(options={"reset_mask": mask})``.

    Infos follow Gymnasium's vector layout: ``info[key]`` has one entry per sub-env and the bool
    array ``info["_" + key]`` says which entries are set. ``reset`` options: ``prompt_index`` (an
    int for all, or (B,)), ``reset_mask`` (bool (B,)). Seeds: an int seeds sub-env i with
    ``seed + i``; a list gives one seed per sub-env.
    """

    metadata = {
        "render_modes": ["ansi"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        model: str | os.PathLike[str] | LanguageModelLike | None = None,
        task: Task | str | Sequence[str] = "reviews",
        reward: RewardSpec | None = None,
        max_new_tokens: int = 32,
        max_prompt_tokens: int | None = None,
        *,
        split: str | None = "train",
        tokenizer: PreTrainedTokenizerBase | None = None,
        truncation: Truncation = "error",
        action_mask: ActionMaskProvider | Sequence[int] | None = None,
        fixed_horizon: bool = False,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be 'ansi' or None for the vector env, got {render_mode!r}"
            )
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(
                f"autoreset_mode must be one of {[m.value for m in AutoresetMode]}, "
                f"got {autoreset_mode!r}"
            ) from None
        self.config = build_config(
            model,
            task,
            reward,
            max_new_tokens,
            max_prompt_tokens,
            split=split,
            tokenizer=tokenizer,
            truncation=truncation,
            action_mask=action_mask,
            fixed_horizon=fixed_horizon,
            trust_remote_code=trust_remote_code,
        )
        cfg = self.config
        self.num_envs = int(num_envs)
        self.autoreset_mode = mode
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.render_mode = render_mode
        self.single_action_space = spaces.Discrete(cfg.vocab_size)
        self.action_space = spaces.MultiDiscrete(np.full(self.num_envs, cfg.vocab_size))
        self.single_observation_space = _observation_space(cfg.vocab_size, cfg.seq_len)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._ep = _Episodes(cfg, self.num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        # Sub-envs whose episode ended on the last step: pending autoreset (NEXT_STEP) or
        # waiting for reset(options={"reset_mask": ...}) (DISABLED).
        self._ended = np.zeros(self.num_envs, dtype=bool)
        self._started = False

    # -- helpers --

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self._ep.input_ids.copy(),
            "attention_mask": self._ep.attention_mask.copy(),
        }

    def _row_mask(self, rows: np.ndarray) -> np.ndarray:  # (B,) bool
        m = np.zeros(self.num_envs, dtype=bool)
        m[rows] = True
        return m

    def _draw_prompts(self, rows: np.ndarray) -> np.ndarray:  # (len(rows),) int64
        n = len(self.config.task)
        out = np.empty(len(rows), dtype=np.int64)
        for j, r in enumerate(rows):  # one RNG stream per sub-env, drawn only at episode starts
            rng = self._rngs[r]
            if rng is None:
                rng, _ = seeding.np_random()
                self._rngs[r] = rng
            out[j] = rng.integers(n)
        return out

    def _episode_info(self, info: dict[str, Any], rows: np.ndarray) -> None:
        """``prompt`` and ``references`` of ``rows``, merged into keys other rows may have set."""
        pidx = self._ep.prompt_index[rows]
        task = self.config.task
        refs = task.references
        values = {
            "prompt": [task.prompts[i] for i in pidx],
            "references": [None if refs is None else refs[i] for i in pidx],
        }
        for key, vals in values.items():
            if key not in info:
                _put(info, key, rows, vals, self.num_envs, object)
            else:
                for r, v in zip(rows, vals, strict=True):
                    info[key][r] = v
                info["_" + key][rows] = True

    def _step_info(
        self,
        info: dict[str, Any],
        paid: np.ndarray,
        components: dict[str, np.ndarray] | None,
        ended: np.ndarray,
    ) -> None:
        """Infos of the episodes that were paid (``components`` aligned with ``paid``) or ended."""
        if not paid.size and not ended.size:
            return  # most steps: nobody finished
        B = self.num_envs
        if paid.size and components is not None:
            comps: dict[str, Any] = {}
            for name, values in components.items():
                _put(comps, name, paid, values, B, np.float32)
            info["reward_components"] = comps
            info["_reward_components"] = self._row_mask(paid)
        # Texts are set where the reward was paid and where the episode ended: the same rows
        # unless fixed_horizon keeps an episode going after its EOS.
        text_rows = np.union1d(paid, ended)
        if text_rows.size:
            _put(info, "text", text_rows, self._ep.text[text_rows].tolist(), B, object)
        if ended.size:
            self._episode_info(info, ended)

    def _add_mask_info(self, info: dict[str, Any]) -> None:
        if self.config.action_mask is not None:
            info["action_mask"] = self._ep.action_mask()
            info["_action_mask"] = np.ones(self.num_envs, dtype=bool)

    def _check_actions(self, actions: Any, used: np.ndarray | None) -> np.ndarray:  # (B,) int64
        try:
            a = np.asarray(actions)
        except (TypeError, ValueError):  # ragged nesting
            a = np.asarray(None)
        if a.shape != (self.num_envs,):
            raise ValueError(
                f"actions must have shape ({self.num_envs},), got shape {a.shape}: {actions!r:.100}"
            )
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"actions must be integer token ids, got dtype {a.dtype}: {actions!r:.100}"
            )
        bad = (a < 0) | (a >= self.config.vocab_size)
        if used is not None:
            bad &= used  # ignored actions (autoreset rows) may hold anything
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"action {a[i]} of sub-env {i} is outside Discrete({self.config.vocab_size}): "
                f"token ids are 0..{self.config.vocab_size - 1}"
            )
        return a.astype(np.int64, copy=False)

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        B = self.num_envs
        if seed is None:
            return [None] * B
        if not isinstance(seed, Sequence | np.ndarray) or isinstance(seed, str | bytes):
            first = _check_seed(seed)  # raises unless an int
            assert first is not None
            return [first + i for i in range(B)]  # SyncVectorEnv's rule
        seeds = [_check_seed(s) for s in seed]
        if len(seeds) != B:
            raise ValueError(f"got {len(seeds)} seeds for {B} sub-envs: {seed!r:.100}")
        return seeds

    def _reset_rows(self, options: dict[str, Any] | None) -> tuple[np.ndarray, Any]:
        opts = _check_options(options)
        unknown = set(opts) - {"prompt_index", "reset_mask"}
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; valid: ['prompt_index', 'reset_mask']"
            )
        mask = opts.get("reset_mask")
        if mask is None:
            return np.arange(self.num_envs), opts.get("prompt_index")
        mask = np.asarray(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
            raise ValueError(
                f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with at "
                f"least one True, got {mask!r}"
            )
        return np.flatnonzero(mask), opts.get("prompt_index")

    def _pinned_prompts(self, pinned: Any, rows: np.ndarray) -> np.ndarray:
        n = len(self.config.task)
        if np.ndim(pinned) == 0:
            return np.full(len(rows), _check_index(pinned, n), dtype=np.int64)
        arr = np.asarray(pinned, dtype=object)  # the caller's values, for the error messages
        if arr.shape != (self.num_envs,):
            raise ValueError(
                f"options['prompt_index'] must be an int or shape ({self.num_envs},), "
                f"got {arr.shape}"
            )
        return np.array([_check_index(x, n) for x in arr[rows]], dtype=np.int64)

    # -- API --

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset all sub-envs (or those in ``options["reset_mask"]``).

        Args:
            seed: an int (sub-env i gets ``seed + i``), one seed per sub-env, or None.
            options: ``prompt_index`` (int or (B,) ints), ``reset_mask`` (bool (B,)).

        Returns:
            (observations {key: (B, L)}, info with ``prompt_index``, ``prompt``, ``references``).
        """
        # Every argument is checked before anything (RNGs included) changes.
        seeds = self._seeds(seed)
        rows, pinned = self._reset_rows(options)
        pinned_idx = None if pinned is None else self._pinned_prompts(pinned, rows)
        super().reset(seed=seeds[0] if isinstance(seed, int | np.integer) else None)
        for r in rows:
            if seeds[r] is not None or self._rngs[r] is None:
                self._rngs[r], _ = seeding.np_random(seeds[r])
        pidx = self._draw_prompts(rows) if pinned_idx is None else pinned_idx
        self._ep.reset(rows, pidx)
        self._ended[rows] = False
        self._started = True
        info: dict[str, Any] = {}
        _put(info, "prompt_index", rows, pidx, self.num_envs, np.int64)
        self._episode_info(info, rows)
        self._add_mask_info(info)
        return self._obs(), info

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Append one token to every sub-env (autoresetting as ``autoreset_mode`` says).

        Args:
            actions: (B,) token ids.

        Returns:
            (observations {key: (B, L)}, rewards (B,) float32, terminated (B,) bool,
            truncated (B,) bool, info).
        """
        if not self._started:
            raise RuntimeError("call reset() before step()")
        mode = self.autoreset_mode
        pending = self._ended.any()
        if mode is AutoresetMode.DISABLED and pending:
            raise RuntimeError(
                f"sub-envs {np.flatnonzero(self._ended).tolist()} have ended: call "
                "reset(options={'reset_mask': mask}) for them before step()"
            )
        # NEXT_STEP: the sub-envs that ended last step reset now and ignore their action.
        resetting = np.flatnonzero(self._ended) if pending else None
        active = ~self._ended if pending else None
        a = self._check_actions(actions, active)
        out = self._ep.step(a, active)
        info: dict[str, Any] = {}
        if mode is AutoresetMode.SAME_STEP and out.ended.size:
            info.update(self._final_info(out, info))
            resetting = out.ended
        else:
            self._step_info(info, out.paid, out.components, out.ended)
            if mode is not AutoresetMode.SAME_STEP:
                self._ended = out.terminated | out.truncated
        if resetting is not None and resetting.size:
            self._ep.reset(resetting, self._draw_prompts(resetting))
            self._episode_info(info, resetting)
        _put(
            info,
            "prompt_index",
            np.arange(self.num_envs),
            self._ep.prompt_index.copy(),
            self.num_envs,
            np.int64,
        )
        self._add_mask_info(info)
        return self._obs(), out.rewards, out.terminated, out.truncated, info

    def _final_info(self, out: _StepOut, info: dict[str, Any]) -> dict[str, Any]:
        """SAME_STEP: the ended episodes' last observations and infos, before they reset.

        Episodes paid but still running (fixed horizon, after EOS) report in ``info`` itself.
        """
        final_obs = np.full(self.num_envs, None, dtype=object)
        for r in out.ended:
            final_obs[r] = {
                "input_ids": self._ep.input_ids[r].copy(),
                "attention_mask": self._ep.attention_mask[r].copy(),
            }
        in_final = np.isin(out.paid, out.ended)
        comps = out.components
        final_info: dict[str, Any] = {}
        self._step_info(
            final_info,
            out.paid[in_final],
            None if comps is None else {k: v[in_final] for k, v in comps.items()},
            out.ended,
        )
        if not in_final.all():
            self._step_info(
                info,
                out.paid[~in_final],
                None if comps is None else {k: v[~in_final] for k, v in comps.items()},
                out.ended[:0],
            )
        _put(
            final_info,
            "prompt_index",
            out.ended,
            self._ep.prompt_index[out.ended],
            self.num_envs,
            np.int64,
        )
        ended = self._row_mask(out.ended)
        return {
            "final_obs": final_obs,
            "_final_obs": ended,
            "final_info": final_info,
            "_final_info": ended.copy(),
        }

    def expert_actions(self) -> np.ndarray:  # (B,) int64
        """The task expert's next token for every sub-env (see ``textgym.tasks``).

        Sub-envs waiting for a NEXT_STEP autoreset get a label too; their action is ignored.
        """
        return self._ep.expert_actions()

    def action_masks(self) -> np.ndarray:  # (B, V) bool
        """The current action masks; all True without a provider."""
        if self.config.action_mask is None:
            return np.ones((self.num_envs, self.config.vocab_size), dtype=bool)
        return self._ep.action_mask()

    def render(self) -> tuple[str, ...] | None:
        """``"ansi"``: one ``[t/T] prompt|completion`` string per sub-env."""
        if self.render_mode is None:
            logger.warn("render() called without a render_mode; pass render_mode='ansi'")
            return None
        return tuple(self._ep.render(r) for r in range(self.num_envs))
