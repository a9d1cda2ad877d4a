"""``TextGenVectorEnv``: B episodes in one kernel, a native ``gymnasium.vector.VectorEnv``."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import logger, spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textgym.envs.config import EnvArgs, _ConfigViews, build_config
from textgym.envs.episodes import _Episodes, _StepOut
from textgym.envs.layout import observation_space
from textgym.envs.single import _check_index, _check_options, _check_seed

__all__ = ["TextGenVectorEnv"]


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

    ## Description
    The MDP of :class:`TextGenEnv` (see it; single- or multi-turn), B episodes at once: sub-env
    i equals a ``TextGenEnv`` reset with ``seed + i`` and stepped with the same actions. The hot
    path is a few numpy operations on (B, L) arrays: prompts are tokenised once at construction
    (reset is an index), text is decoded only when episodes end, and the reward is called once
    per step for all episodes that end in it.

    ## Spaces
    ``single_action_space = Discrete(V)``, ``action_space = MultiDiscrete([V] * B)``; the
    observation space is :class:`TextGenEnv`'s, batched: ``{key: (B, L)}``.

    ## Rewards
    As :class:`TextGenEnv`, (B,) float32 per step.

    ## Starting State
    As :class:`TextGenEnv`, per sub-env. ``reset`` options: ``prompt_index`` (an int for all, or
    (B,)), ``reset_mask`` (bool (B,)). Seeds: an int seeds sub-env i with ``seed + i``; a list
    gives one seed per sub-env.

    ## Episode End
    As :class:`TextGenEnv`, per sub-env; then autoreset (``metadata["autoreset_mode"]``):
    - ``NEXT_STEP`` (default, Gymnasium's): the step after an episode ends resets that sub-env,
      ignores its action and returns reward 0, ``terminated = truncated = False``, with the new
      episode's ``prompt`` / ``references`` in ``info``;
    - ``SAME_STEP`` (SB3's VecEnv convention): the ending step returns the new episode's first
      observation, the last one in ``info["final_obs"]`` and its info in ``info["final_info"]``;
    - ``DISABLED``: stepping a finished sub-env raises; reset with
      ``reset(options={"reset_mask": mask})``.

    ## Info
    Gymnasium's vector layout: ``info[key]`` has one entry per sub-env and the bool array
    ``info["_" + key]`` says which entries are set. Multi-turn: ``env_tokens`` (B,),
    ``env_token_mask`` and ``turn_start_mask`` (B, L), ``turn`` (B,) every step (after the
    step's autoresets, like the observation); ``transcript`` and ``truncated_by`` where episodes
    ended (SAME_STEP: in ``final_info``).

    ## Arguments
    ``num_envs`` (B, first, by position or keyword), the fields of
    :class:`~textgym.envs.EnvArgs` as for :class:`TextGenEnv`, ``autoreset_mode`` (above) and
    ``render_mode`` (``"ansi"``: ``render()`` returns one string per sub-env).

    ## Version History
    - v0: initial version.
    """

    metadata = {
        "render_modes": ["ansi"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        *args: Any,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        own = ("num_envs", "autoreset_mode", "render_mode")
        EnvArgs.check_names(type(self).__name__, args, kwargs, own=own)
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
        self.args = EnvArgs(*args, **kwargs)
        self.config = build_config(self.args)
        cfg = self.config
        self.num_envs = int(num_envs)
        self.autoreset_mode = mode
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.render_mode = render_mode
        self.single_action_space = spaces.Discrete(cfg.vocab_size)
        self.action_space = spaces.MultiDiscrete(np.full(self.num_envs, cfg.vocab_size))
        self.single_observation_space = observation_space(cfg.vocab_size, cfg.seq_len)
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
            turns = self._ep.turns
            if turns is not None:
                _put(info, "transcript", ended, turns.final[ended].tolist(), B, object)
                cut = ended[turns.truncated_by[ended] != None]  # noqa: E711  # elementwise
                if cut.size:
                    _put(info, "truncated_by", cut, turns.truncated_by[cut].tolist(), B, object)

    def _add_turn_info(self, info: dict[str, Any]) -> None:
        """Multi-turn: every sub-env's ``env_tokens``, ``env_token_mask``, ``turn_start_mask``
        and ``turn`` (see :class:`TextGenEnv`), after this step's autoresets."""
        turns = self._ep.turns
        if turns is None:
            return
        every = np.ones(self.num_envs, dtype=bool)
        info["env_tokens"], info["_env_tokens"] = turns.appended.copy(), every
        info["env_token_mask"], info["_env_token_mask"] = turns.env_mask.copy(), every.copy()
        info["turn_start_mask"], info["_turn_start_mask"] = turns.turn_start.copy(), every.copy()
        info["turn"], info["_turn"] = turns.turn.copy(), every.copy()

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
        self._add_turn_info(info)
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
        self._add_turn_info(info)
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


TextGenVectorEnv.__init__.__signature__ = EnvArgs.signature(  # type: ignore[attr-defined]  # help()
    before=(inspect.Parameter("num_envs", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=1),),
    after=(
        inspect.Parameter(
            "autoreset_mode", inspect.Parameter.KEYWORD_ONLY, default=AutoresetMode.NEXT_STEP
        ),
        inspect.Parameter("render_mode", inspect.Parameter.KEYWORD_ONLY, default=None),
    ),
)
