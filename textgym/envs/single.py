"""``TextGenEnv``: one token-level text-generation episode (the kernel with B = 1)."""

from __future__ import annotations

import inspect
import operator
import sys
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import logger, spaces

from textgym.envs.config import EnvArgs, _ConfigViews, build_config
from textgym.envs.episodes import _Episodes
from textgym.envs.layout import observation_space

__all__ = ["TextGenEnv"]


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


class TextGenEnv(_ConfigViews, gym.Env[dict[str, Any], int | np.int64]):
    """Text generation by a causal LM as a token-level MDP, single- or multi-turn.

    ## Description
    One episode writes one completion of one prompt, a token per step. The env holds the
    tokenizer, the task (prompts, references, expert) and the reward; the policy LM is the agent.
    Multi-turn (a ``responder``, or a ``textgym.multiturn.MultiTurnTask``; ``docs/multiturn.md``):
    the episode is a conversation. The policy's tokens are still the actions; when the policy ends
    its turn (EOS or a stop sequence of the task), the responder reads the transcript and either
    returns text, which the same step appends as *environment tokens* (never actions), or None,
    which ends the episode. Without a responder nothing of this applies: the first turn end is
    the episode's end, exactly as in a single-turn env.

    ## Spaces
    - Action: ``Discrete(V)``, the next token id; V is the LM head size (from the model config,
      never guessed from the tokenizer).
    - Observation: ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,),
      int64))``, L = ``max_prompt_tokens + max_new_tokens``; the prompt tokens, then the tokens
      written so far (multi-turn: the whole transcript, policy and environment tokens in order),
      then padding (right-padded, ``attention_mask`` 1 on the valid prefix).

    ## Rewards
    Sequence-level (default): r(prompt, completion, references) on the step that ends the text,
    0.0 on every other step; the completion is decoded without its EOS / stop sequence and with
    special tokens skipped (multi-turn: the whole transcript after the prompt, environment turns
    included, without the last turn's end marker). Token-level (``reward.token_level``):
    ``reward.step`` on every step, no end-of-episode reward. A weighted sum also reports each
    component in ``info["reward_components"]``. Multi-turn: a responder that returns
    ``Reply(text, reward)`` pays ``reward`` on the action that ended the turn (per-turn rewards),
    on top of the sequence reward at the episode's end.

    ## Starting State
    A prompt drawn uniformly with ``np_random`` (seed it with ``reset(seed=...)``), or pinned with
    ``reset(options={"prompt_index": i})``; no completion tokens yet.

    ## Episode End
    - ``terminated``: the action is EOS or completes a stop sequence of the task (multi-turn: the
      responder answered the turn it ended with None);
    - ``truncated``: ``max_new_tokens`` tokens without either (never both flags); multi-turn, the
      budget counts every token after the prompt, and also ``truncated``: the ``max_turns``-th
      policy turn ended and the responder still answered, or its answer does not fit the budget
      with room for one more policy token (never cut silently; ``info["truncated_by"]`` says which:
      ``"max_new_tokens"``, ``"max_turns"`` or ``"context"``);
    - ``fixed_horizon=True`` (single-turn only): every episode lasts exactly ``max_new_tokens``
      steps; after EOS the episode sits in an absorbing state (actions ignored, reward 0,
      observation frozen) and reports ``terminated`` at the horizon; the sequence reward is paid
      on the EOS step.
    Stepping a finished episode raises ``RuntimeError``: call ``reset()``.

    ## Info
    ``prompt_index`` every step; ``prompt`` and ``references`` after ``reset`` and at the end;
    ``text`` (the decoded completion) when the text ends and at the episode end;
    ``reward_components`` when the reward is paid (weighted sums); ``action_mask`` (V,) bool of
    the next action when a provider is given. Multi-turn, after ``reset`` and every step:
    ``env_tokens`` (environment tokens this step appended), ``env_token_mask`` (L,) bool (the
    environment tokens of the observation), ``turn_start_mask`` (L,) bool (the first token of
    every turn after the prompt, policy and environment), ``turn`` (policy turns ended so far);
    at the end ``transcript`` (a ``textgym.multiturn.Transcript``) and, when truncated,
    ``truncated_by``.

    ## Arguments
    ``TextGenEnv(model=None, task="reviews", reward=None, max_new_tokens=32,
    max_prompt_tokens=None, *, split="train", tokenizer=None, truncation="error",
    action_mask=None, fixed_horizon=False, trust_remote_code=False, responder=None,
    max_turns=None, chat_template=False, render_mode=None)``: the fields of
    :class:`~textgym.envs.EnvArgs`, each documented there (an unknown name is a ``TypeError``
    that lists the valid ones), plus
    - ``render_mode``: ``"ansi"`` (``render()`` returns the text) or ``"human"`` (prints it).

    ## Version History
    - v0: initial version; multi-turn episodes (responder, max_turns, chat_template) added
      without changing single-turn ones.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(self, *args: Any, render_mode: str | None = None, **kwargs: Any) -> None:
        EnvArgs.check_names(type(self).__name__, args, kwargs, own=("render_mode",))
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
        self.args = EnvArgs(*args, **kwargs)
        self.config = build_config(self.args)
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(self.config.vocab_size)
        self.observation_space = observation_space(self.config.vocab_size, self.config.seq_len)
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
        if self._ep.turns is not None:
            self._turn_info(info, ended=False, truncated=False)
        if self.config.action_mask is not None:
            info["action_mask"] = self._ep.action_mask()[0]
        if self.render_mode == "human":
            self.render()
        return self._obs(), info

    def _turn_info(self, info: dict[str, Any], *, ended: bool, truncated: bool) -> None:
        """The multi-turn keys of ``info`` (see the class docstring)."""
        turns = self._ep.turns
        assert turns is not None
        info["env_tokens"] = int(turns.appended[0])
        info["env_token_mask"] = turns.env_mask[0].copy()
        info["turn_start_mask"] = turns.turn_start[0].copy()
        info["turn"] = int(turns.turn[0])
        if ended:
            info["transcript"] = turns.final[0]
        if truncated:
            info["truncated_by"] = turns.truncated_by[0]

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
        if self._ep.turns is not None:
            self._turn_info(info, ended=terminated or truncated, truncated=truncated)
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


TextGenEnv.__init__.__signature__ = EnvArgs.signature(  # type: ignore[attr-defined]  # help()
    before=(),
    after=(inspect.Parameter("render_mode", inspect.Parameter.KEYWORD_ONLY, default=None),),
)
