"""Wiring shared by the on-policy agents (REINFORCE, PPO): no algorithm lives here.

``OnPolicyAgent`` owns what every on-policy agent does the same way: the RNGs (a torch generator for
sampling, a numpy generator, the env's ``np_random``), the frozen reference, the optimizer over the
policy and its value head, one :func:`textgym.rollout.collect` per update, the ``learn`` loop with
progress bar and CSV/TensorBoard logging, and ``save``/``load``. A subclass implements
``_update(rollout) -> stats`` (its loss lives in its own file) and may add state via
``_extra_state``/``_load_extra_state``.

Data parallelism (``accelerator=``, from ``accelerate``): each process runs its own env shard; the
policy and value head are wrapped by ``accelerator.prepare`` (DDP, gradients averaged over W
processes). Token means are taken over the *global* batch (``self.reduce`` sums over processes and
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
from torch import Tensor, nn

from textgym.checkpoint import load_state, require_part, restoring, save_state
from textgym.lm import LanguageModel
from textgym.rollout import Rollout, Sampling, collect, evaluate
from textgym.training import (
    CSVLogger,
    ValueHead,
    check_policy_env,
    frozen_copy,
    hidden_size,
    is_peft,
    peft_language_model,
    progress,
    rng_state,
    set_rng_state,
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

    def __init__(self, policy: LanguageModel, value_head: ValueHead | None, sampling: Sampling):
        super().__init__()
        self.model = policy.model
        self.value_head = value_head
        object.__setattr__(self, "lm", policy)  # not a submodule: its model is registered above
        self.sampling = sampling

    def forward(self, rollout: Rollout) -> tuple[Tensor, Tensor, Tensor | None]:
        return evaluate(self.lm, rollout, self.sampling.temperature, self.value_head)  # type: ignore[arg-type]


def check_finite(update: int, terms: dict[str, Tensor]) -> None:
    """Raise with the update index and every loss term when any term is NaN or infinite."""
    if not all(torch.isfinite(v).all() for v in terms.values()):
        shown = ", ".join(f"{k}={v.item():.6g}" for k, v in terms.items())
        raise FloatingPointError(f"non-finite loss at update {update}: {shown}")


def global_sums(accelerator: Any, values: dict[str, Tensor], weight: float) -> dict[str, Tensor]:
    """Σ over data-parallel processes of ``weight`` x each value, in one all-reduce.

    With ``weight`` = this process's share of the global batch (or 1/W for values already
    scaled by W), per-process means become global means. Without an accelerator the values are
    returned as they are.
    """
    if accelerator is None:
        return values
    stacked = torch.stack([v.detach().double() * weight for v in values.values()])  # (K,)
    return dict(zip(values, accelerator.reduce(stacked, reduction="sum").unbind(), strict=True))


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


class OnPolicyAgent:
    """Base of the on-policy agents; subclasses implement ``_update`` and ``_needs_value_head``."""

    config_class: type
    """The agent's config dataclass (a checkpoint's config.json is rebuilt into it)."""
    agent_name: str = ""
    """The name a checkpoint records (``load`` refuses another agent's); default: the class name."""

    def __init__(
        self,
        policy: LanguageModel,
        env: Any,
        *,
        config: Any,
        ref: LanguageModel | None = None,
        accelerator: Any = None,
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
    ) -> None:
        check_policy_env(type(self).__name__, policy, env)
        self.policy, self.env, self.config = policy, env, config
        check_reward(env)
        self.device = policy.device
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.np_rng = np.random.default_rng(config.seed)
        self.ref = self._reference(policy, ref)
        policy.model.eval()  # no dropout: recomputed log-probs must equal the behaviour log-probs
        head = ValueHead(hidden_size(policy)).to(self.device) if self._needs_value_head() else None
        self.value_head = head
        self.trainable: nn.Module = Trainable(policy, head, config.sampling)
        params = [p for p in self.trainable.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        self.accelerator = accelerator
        self.world = 1 if accelerator is None else int(accelerator.num_processes)
        if accelerator is not None:
            self.trainable, self.optimizer = accelerator.prepare(self.trainable, self.optimizer)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.logger = CSVLogger(log_dir, tensorboard) if log_dir is not None else None
        self.progress_bar = progress_bar

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

    # ------------------------------------------------------------------ data parallel helpers

    def reduce(self, x: Tensor) -> Tensor:
        """Sum over data-parallel processes (identity in one process)."""
        return x if self.accelerator is None else self.accelerator.reduce(x, reduction="sum")

    def global_terms(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """Loss terms as global values, the same on every process (the same dict in one process).

        Each process's terms are its shard's share of the global token or episode mean scaled by
        W (see :meth:`token_mean`), so the mean over processes is the global value; logging and
        the finiteness check then agree on every process.
        """
        return global_sums(self.accelerator, terms, 1.0 / self.world)

    def token_mean(self, x: Tensor, mask: Tensor, count: Tensor) -> Tensor:
        """Σ x·mask / count with ``count`` the global token count, scaled so that DDP's averaging
        of W processes' gradients gives the gradient of the global mean."""
        return (x * mask).sum() * self.world / count.clamp(min=1)

    # ------------------------------------------------------------------ the loop

    def _value_fn(self) -> Callable[[Tensor], Tensor] | None:
        return self.value_head  # V(s_t) from the policy's own hidden state at each step

    def _options(self) -> dict[str, Any] | None:
        """Reset options for the next round (e.g. pinned prompts); None lets the env choose."""
        return None

    def collect(self) -> Rollout:
        """One round of episodes from the current policy (the env is seeded on the first one)."""
        return collect(
            self.policy,
            self.env,
            sampling=self.config.sampling,
            generator=self.generator,
            ref=self.ref,
            value_fn=self._value_fn(),
            seed=self.config.seed if self.step == 0 else None,
            options=self._options(),
        )

    def _update(self, rollout: Rollout) -> dict[str, float]:
        raise NotImplementedError

    def learn(self, n_updates: int) -> list[dict[str, float]]:
        """Run ``n_updates`` rounds of collect -> update; return their history rows.

        Each row holds the round's mean env reward, the KL that entered the reward, the losses of
        the subclass, and timings in seconds (``time_rollout`` includes the env's reward calls).
        """
        rows: list[dict[str, float]] = []
        for _ in progress(range(n_updates), type(self).__name__, disable=not self.progress_bar):
            start = time.perf_counter()
            try:
                rollout = self.collect()
            except FloatingPointError as err:  # NaN logits: say which update diverged
                raise FloatingPointError(f"update {self.step}: {err}") from err
            collected = time.perf_counter()
            stats = self._update(rollout)
            row = {
                "update": float(self.step),
                "reward": float(
                    self.reduce(rollout.rewards.sum())
                    / self.reduce(torch.tensor(float(len(rollout)), device=self.device))
                ),
                "length": float(rollout.completion_mask.sum(-1).mean()),
                **stats,
                "time_rollout": collected - start,
                "time_update": time.perf_counter() - collected,
            }
            self.step += 1
            rows.append(row)
            self.history.append(row)
            if self.logger is not None:
                self.logger.log(row)
        return rows

    # ------------------------------------------------------------------ checkpoints

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    @classmethod
    def _name(cls) -> str:
        return cls.agent_name or cls.__name__

    def save(self, directory: str | Path) -> None:
        """Write policy (plain HF dir), reference, value head, optimizer, RNG states, step count.

        Under ``accelerate`` only the main process writes (its env shard's RNG states): a resumed
        data-parallel run continues correctly but is not bit-exact.
        """
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
            if not self.accelerator.is_main_process:
                return
        path = Path(directory)
        parts = ["policy"]
        if is_peft(self.policy):
            self.policy.model.save_pretrained(path / "adapter")
            merged = copy.deepcopy(self.policy.model).merge_and_unload()
            LanguageModel(merged, self.policy.tokenizer).save_pretrained(path / "policy")
            base = copy.deepcopy(self.policy.model).unload()
            LanguageModel(base, self.policy.tokenizer).save_pretrained(path / "reference")
            parts += ["reference", "adapter"]
        else:
            self.policy.save_pretrained(path / "policy")
            if isinstance(self.ref, LanguageModel):
                self.ref.save_pretrained(path / "reference")
                parts.append("reference")
        save_state(
            path,
            agent=self._name(),
            config=self.config,
            parts=parts,
            state={
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "value_head": None if self.value_head is None else self.value_head.state_dict(),
                "rng": rng_state(self.generator, self.np_rng, self.env),
                "history": self.history,
                "extra": self._extra_state(),
            },
        )

    @classmethod
    def load(cls, directory: str | Path, env: Any, *, device: str = "auto", **kwargs: Any) -> Any:
        """Rebuild an agent saved by :meth:`save` around ``env`` and resume where it stopped.

        Every part the checkpoint lists must be there: a missing ``reference/`` is an error, never
        a frozen copy of the trained policy.
        """
        path = Path(directory)
        config: Any
        config, state = load_state(path, agent=cls._name(), config_class=cls.config_class)
        ref = None
        with restoring(path):
            if (path / "adapter").exists():
                try:
                    from peft import PeftModel
                except ImportError as err:
                    raise ImportError(
                        "this checkpoint holds a LoRA adapter: pip install peft"
                    ) from err
                base = LanguageModel.from_pretrained(require_part(path, "reference"), device=device)
                peft_model = PeftModel.from_pretrained(
                    base.model, path / "adapter", is_trainable=True
                )
                policy = peft_language_model(base, peft_model)
            else:
                policy = LanguageModel.from_pretrained(require_part(path, "policy"), device=device)
                if (path / "reference").exists():
                    ref = LanguageModel.from_pretrained(path / "reference", device=device)
        agent = cls(policy, env, config=config, ref=ref, **kwargs)
        with restoring(path):
            if agent.value_head is not None:
                agent.value_head.load_state_dict(state["value_head"])
            agent.optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"], agent.generator, agent.np_rng, env)
            agent.step, agent.history = state["step"], state["history"]
            agent._load_extra_state(state["extra"])
        return agent
