"""Wiring shared by the on-policy agents (REINFORCE, PPO, and GAIL's generator): no algorithm here.

``OnPolicyAgent`` owns what every on-policy agent does the same way: the RNGs (a torch generator for
sampling, a numpy generator, the env's ``np_random``), the frozen reference, the optimizer over the
policy and its value head, and the ``learn`` loop, which reads collect -> score -> update -> log:

- collect: one :func:`textgym.rollout.collect` round from the current policy (with a
  ``compute_dtype``, sampled by a low-precision copy of it that holds the same weights);
- score: the env's rewards, or those of a ``score`` hook given to the constructor (GAIL's
  discriminator replaces them there);
- update: the subclass's ``_update(rollout) -> stats`` (its loss lives in its own file);
- log: one history row (CSV/TensorBoard with ``log_dir``).

Checkpoints are the :class:`~textgym.agents.base.Agent`'s; a subclass adds state through
``_extra_state``/``_load_extra_state``.

Multi-turn envs (docs/multiturn.md) need nothing more here: a rollout's environment tokens are
attended (``Rollout.attention_mask``) and every loss, KL, entropy, value target and advantage is
taken over ``completion_mask``, the policy's tokens (``gae`` skips the environment's columns).

Data parallelism (``accelerator=``, from ``accelerate``): each process runs its own env shard; the
policy and value head are wrapped by ``accelerator.prepare`` (DDP, gradients averaged over W
processes). Token means are taken over the *global* batch (``self.dp.sum`` sums over processes and
the local sum is scaled by W), so W processes make the same update as one process on the whole
batch.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from textgym.agents.base import Agent
from torch import Tensor, nn

from textgym.checkpoint import require_part
from textgym.hf import compute_dtype_name, hidden_size
from textgym.lm import LanguageModel
from textgym.rollout import Rollout, Sampling, collect, evaluate
from textgym.training import (
    ValueHead,
    adamw,
    check_policy_env,
    frozen_copy,
    is_peft,
    peft_language_model,
    progress,
    rng_state,
    set_rng_state,
    sync_weights,
)


class AdapterOff:
    """π_ref of a LoRA policy: the same model with its adapters disabled (no second copy)."""

    def __init__(self, policy: LanguageModel) -> None:
        self.policy = policy

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:  # (B, L, V)
        with self.policy.model.disable_adapter():
            return self.policy.forward(input_ids, attention_mask)


class Trainable(nn.Module):
    """Policy trunk + value head as one module, so that DDP sees (and averages) every gradient."""

    def __init__(
        self,
        policy: LanguageModel,
        value_head: ValueHead | None,
        sampling: Sampling,
        entropy_grad: bool = True,
    ):
        super().__init__()
        self.model = policy.model
        self.value_head = value_head
        object.__setattr__(self, "lm", policy)  # not a submodule: its model is registered above
        self.sampling = sampling
        self.entropy_grad = entropy_grad  # False: the entropy is only logged

    def forward(self, rollout: Rollout) -> tuple[Tensor, Tensor, Tensor | None]:
        return evaluate(
            self.lm,  # type: ignore[arg-type]  # set with object.__setattr__, not a submodule
            rollout,
            self.sampling.temperature,
            self.value_head,
            entropy_grad=self.entropy_grad,
        )


def check_finite(update: int, terms: dict[str, Tensor]) -> None:
    """Raise with the update index and every loss term when any term is NaN or infinite."""
    if not all(torch.isfinite(v).all() for v in terms.values()):
        shown = ", ".join(f"{k}={v.item():.6g}" for k, v in terms.items())
        raise FloatingPointError(f"non-finite loss at update {update}: {shown}")


def check_reward(env: Any) -> None:
    """Score two completions with the env's reward now: a reward of the wrong shape fails here, at
    construction, not after the first round of generation."""
    reward = getattr(getattr(env, "unwrapped", env), "reward_fn", None)
    if reward is None or getattr(reward, "token_level", False):
        return
    task = env.unwrapped.task
    prompts = [task.prompts[i % len(task)] for i in range(2)]
    refs = None if task.references is None else [task.references[i % len(task)] for i in range(2)]
    out = np.asarray(reward(prompts, [" good", " bad"], refs))
    if out.shape != (2,):
        raise ValueError(
            f"the env's reward {getattr(reward, 'name', reward)!r} returned shape {out.shape} for "
            "2 completions; a sequence reward must return (B,), one score per completion"
        )


def grouped_prompts(rng: np.random.Generator, env: Any, group_size: int) -> dict[str, Any]:
    """Reset options pinning the next round's prompts in groups: ``num_envs / group_size`` prompts
    drawn uniformly (with replacement), each on ``group_size`` consecutive rows."""
    n_prompts = len(env.unwrapped.task)
    groups = rng.integers(n_prompts, size=int(env.num_envs) // group_size)
    return {"prompt_index": np.repeat(groups, group_size)}


Scorer = Callable[[Rollout], tuple[Rollout, dict[str, float]]]
"""The score stage: a rollout with the env's rewards -> the rollout to learn from and statistics."""


class OnPolicyAgent(Agent):
    """Base of the on-policy agents; subclasses implement ``_update`` and ``_needs_value_head``.

    Args:
        policy: π_θ, trained in place.
        env: a NEXT_STEP-autoreset vector env (``gym.make_vec("TextGen-v0", num_envs=B, ...)``).
        config: the agent's config.
        ref: π_ref; None makes a frozen copy of the policy (when the config's β > 0).
        score: the score stage (see the module docstring); None learns from the env's rewards.
        accelerator, log_dir, tensorboard, progress_bar: the runtime settings of every agent.
    """

    def __init__(
        self,
        policy: LanguageModel,
        env: Any,
        *,
        config: Any,
        ref: LanguageModel | None = None,
        score: Scorer | None = None,
        accelerator: Any = None,
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
    ) -> None:
        check_policy_env(type(self).__name__, policy, env)
        self.policy, self.env, self.config, self.score = policy, env, config, score
        check_reward(env)
        self.device = policy.device
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.np_rng = np.random.default_rng(config.seed)
        self.ref = self._reference(policy, ref)
        policy.model.eval()  # no dropout: recomputed log-probs must equal the behaviour log-probs
        head: ValueHead | None = None
        if self._needs_value_head():
            head = ValueHead(hidden_size(policy.model.config)).to(self.device)
        self.value_head = head
        # The entropy enters a loss only through PPO's ent_coef; otherwise no gradient through it.
        entropy_grad = getattr(config, "ent_coef", 0.0) != 0
        self.trainable: nn.Module = Trainable(policy, head, config.sampling, entropy_grad)
        params = [p for p in self.trainable.parameters() if p.requires_grad]
        self.optimizer = adamw(params, lr=config.lr)
        # With a compute dtype, rollouts are sampled by a low-precision copy of the policy,
        # refreshed before every round (see _behaviour); LoRA policies sample themselves.
        self.behaviour: LanguageModel | None = None
        if policy.compute_dtype is not None and not is_peft(policy):
            self.behaviour = frozen_copy(policy)
        self._setup_runtime(
            log_dir=log_dir,
            tensorboard=tensorboard,
            progress_bar=progress_bar,
            accelerator=accelerator,
        )
        if accelerator is not None:
            self.trainable, self.optimizer = accelerator.prepare(self.trainable, self.optimizer)

    def _needs_value_head(self) -> bool:
        return False

    def _reference(self, policy: LanguageModel, ref: LanguageModel | None) -> Any:
        if ref is not None:
            if ref.model is policy.model:
                raise ValueError(
                    "ref is the policy itself, which would freeze it: pass ref=None for a "
                    "frozen copy"
                )
            if ref.vocab_size != policy.vocab_size:
                raise ValueError(
                    f"the reference model has {ref.vocab_size} logits but the policy "
                    f"{policy.vocab_size}: π_ref must share the policy's vocabulary"
                )
            ref.model.eval().requires_grad_(False)
            return ref
        if self.config.beta == 0 and getattr(self.config, "kl_target", None) is None:
            return None  # no KL term: no reference to keep
        return AdapterOff(policy) if is_peft(policy) else frozen_copy(policy)

    # ------------------------------------------------------------------ the loop

    def _value_fn(self) -> Callable[[Tensor], Tensor] | None:
        return self.value_head  # V(s_t) from the policy's own hidden state at each step

    def _options(self) -> dict[str, Any] | None:
        """Reset options for the next round (e.g. pinned prompts); None lets the env choose."""
        return None

    def _behaviour(self) -> LanguageModel:
        """The model that samples the next round: the policy, or its low-precision copy with the
        policy's current weights (copied every round: a few percent of a rollout at 92M, and never
        stale, whatever changed the policy since)."""
        if self.behaviour is None:
            return self.policy
        sync_weights(self.behaviour, self.policy)
        return self.behaviour

    def collect(self) -> Rollout:
        """One round of episodes from the current policy (the env is seeded on the first one).

        The rollout's log-probs (and values) are those of the model that sampled it
        (:meth:`_behaviour`), so the importance ratios of the update are exact for what was drawn.
        """
        try:
            return collect(
                self._behaviour(),
                self.env,
                sampling=self.config.sampling,
                generator=self.generator,
                ref=self.ref,
                value_fn=self._value_fn(),
                seed=self.config.seed if self.step == 0 else None,
                options=self._options(),
            )
        except FloatingPointError as err:  # NaN logits: say which update diverged
            raise FloatingPointError(f"update {self.step}: {err}") from err

    def _update(self, rollout: Rollout) -> dict[str, float]:
        raise NotImplementedError

    def learn(self, n_updates: int) -> list[dict[str, float]]:
        """Run ``n_updates`` rounds of collect -> score -> update -> log; return their rows.

        Each row holds the round's mean env reward, the KL that entered the reward, the losses of
        the subclass (and the score stage's statistics), and timings in seconds (``time_rollout``
        includes the env's reward calls and the score stage).
        """
        rows: list[dict[str, float]] = []
        for _ in progress(range(n_updates), type(self).__name__, disable=not self.progress_bar):
            start = time.perf_counter()
            rollout = self.collect()
            episodes = self.dp.sum(torch.tensor(float(len(rollout)), device=self.device))
            env_reward = float(self.dp.sum(rollout.rewards.sum()) / episodes)
            rollout, scored = self.score(rollout) if self.score is not None else (rollout, {})
            collected = time.perf_counter()
            stats = self._update(rollout)
            row = {
                "update": float(self.step),
                "reward": env_reward,
                "length": float(rollout.completion_mask.sum(-1).mean()),
                **stats,
                **scored,
                "time_rollout": collected - start,
                "time_update": time.perf_counter() - collected,
            }
            self.step += 1
            rows.append(row)
            self._record(row)
        return rows

    # ------------------------------------------------------------------ checkpoints

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _write_parts(self, path: Path) -> list[str]:
        """policy/ (plain HF dir), reference/ when the agent holds a copy, adapter/ for LoRA.

        Under ``accelerate`` the main process writes its env shard's RNG states: a resumed
        data-parallel run continues correctly but is not bit-exact.
        """
        if is_peft(self.policy):
            self.policy.model.save_pretrained(path / "adapter")
            merged = copy.deepcopy(self.policy.model).merge_and_unload()
            LanguageModel(merged, self.policy.tokenizer).save_pretrained(path / "policy")
            base = copy.deepcopy(self.policy.model).unload()
            LanguageModel(base, self.policy.tokenizer).save_pretrained(path / "reference")
            return ["policy", "reference", "adapter"]
        self.policy.save_pretrained(path / "policy")
        if isinstance(self.ref, LanguageModel):
            self.ref.save_pretrained(path / "reference")
            return ["policy", "reference"]
        return ["policy"]

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "compute_dtype": compute_dtype_name(self.policy.compute_dtype),
            "optimizer": self.optimizer.state_dict(),
            "value_head": None if self.value_head is None else self.value_head.state_dict(),
            "rng": rng_state(self.generator, self.np_rng, self.env),
            "history": self.history,
            "extra": self._extra_state(),
        }

    @classmethod
    def _restore(
        cls,
        path: Path,
        config: Any,
        state: dict[str, Any],
        env: Any,
        *,
        device: str = "auto",
        **kwargs: Any,
    ) -> Any:
        """``Agent.load(dir, env, device="auto", **kwargs)``: ``env`` is built like the saved one's
        (same class and ``num_envs``); ``kwargs`` are the constructor's (``score``, runtime)."""
        ref = None
        dtype = state.get("compute_dtype")  # absent from checkpoints older than the setting
        if (path / "adapter").exists():
            try:
                from peft import PeftModel
            except ImportError as err:
                raise ImportError("this checkpoint holds a LoRA adapter: pip install peft") from err
            base = LanguageModel.from_pretrained(
                require_part(path, "reference"), device=device, compute_dtype=dtype
            )
            peft_model = PeftModel.from_pretrained(base.model, path / "adapter", is_trainable=True)
            policy = peft_language_model(base, peft_model)
        else:
            policy = LanguageModel.from_pretrained(
                require_part(path, "policy"), device=device, compute_dtype=dtype
            )
            if (path / "reference").exists():
                ref = LanguageModel.from_pretrained(
                    path / "reference", device=device, compute_dtype=dtype
                )
        agent = cls(policy, env, config=config, ref=ref, **kwargs)
        if agent.value_head is not None:
            agent.value_head.load_state_dict(state["value_head"])
        agent.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], agent.generator, agent.np_rng, env)
        agent.step, agent.history = state["step"], state["history"]
        agent._load_extra_state(state["extra"])
        return agent
