"""REINFORCE with baselines: Williams 1992 (Machine Learning 8:229-256), Eq. 11; the leave-one-out
baseline of Kool et al. 2019 ("Buy 4 REINFORCE samples, get a baseline for free!") and Ahmadian
et al. 2024 (arXiv:2402.14740, Eq. 6).

∇J(θ) = 𝔼[Σ_t ∇_θ log π_θ(a_t|s_t)·(G_t - b_t)],   G_t = Σ_{t' >= t} r_t'
r_t = r(x, y)·1[t = T] - β·(log π_θ(a_t|s_t) - log π_ref(a_t|s_t))       (β = 0: no reference)
loss = -(1/N)·Σ_episodes Σ_t (G_t - b_t)·log π_θ(a_t|s_t) + c_V·½·(1/n)·Σ_t (V_ψ(s_t) - G_t)²

Baselines b_t (``REINFORCEConfig.baseline``), each a function below:
- ``none``: b = 0;
- ``moving_average``: b = bias-corrected exponential average of past rounds' mean G_0 (decay α);
- ``rloo``: K samples per prompt, b_i = 1/(K-1)·Σ_{j≠i} G_0^j (the other samples' returns);
- ``value``: b_t = V_ψ(s_t), a value head on the policy trunk regressed on G_t.
Symbols -> code: G_t -> returns | b_t -> baseline | β -> beta | π_θ, π_ref -> logp_theta, logp_ref |
K -> rloo_k | α -> ma_decay | V_ψ -> values | c_V -> vf_coef | N -> number of episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from textgym.agents._common import OnPolicyAgent, check_finite, grouped_prompts
from torch import Tensor

from textgym.config import check_fields, check_range
from textgym.lm import LanguageModel
from textgym.rollout import Rollout, Sampling, kl_shaped_rewards, masked_mean

Baseline = Literal["none", "moving_average", "rloo", "value"]


@dataclass(frozen=True)
class REINFORCEConfig:
    baseline: Baseline = "rloo"
    """b_t: "none", "moving_average", "rloo" (leave-one-out over K samples) or "value"."""
    rloo_k: int = 4
    """K: samples per prompt for "rloo" (Ahmadian et al.: 2-4); num_envs must divide by it."""
    ma_decay: float = 0.9
    """α: decay of the moving-average baseline."""
    lr: float = 1e-4
    """Adam step size."""
    beta: float = 0.0
    """β: KL penalty to π_ref inside the reward (0: no reference model)."""
    vf_coef: float = 0.5
    """c_V: weight of the value loss (baseline "value" only)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm."""
    sampling: Sampling = field(default_factory=Sampling)
    """Temperature / top-k / top-p of the behaviour policy (inside its distribution)."""
    seed: int = 0
    """Seeds sampling, prompt choice (rloo) and the env's first reset."""

    def __post_init__(self) -> None:
        check_fields(self)  # also: an unknown baseline name is a ValueError
        check_range(self, "rloo_k", low=2)
        check_range(self, "ma_decay", low=0, high=1, high_open=True)
        for name in ("lr", "max_grad_norm"):
            check_range(self, name, low=0, low_open=True)
        for name in ("beta", "vf_coef"):
            check_range(self, name, low=0)
        check_range(self, "seed", low=0, high=2**32 - 1)


# ---------------------------------------------------------------------------- baselines
# Each maps returns G (B, T) to a baseline b (B, T); keyword arguments are what some need.


def baseline_none(returns: Tensor, **_: Any) -> Tensor:  # (B, T)
    return torch.zeros_like(returns)


def baseline_moving_average(returns: Tensor, *, average: float, **_: Any) -> Tensor:  # (B, T)
    return torch.full_like(returns, average)


def baseline_rloo(returns: Tensor, *, k: int, **_: Any) -> Tensor:  # (B, T)
    """Rows [g·K, (g+1)·K) share a prompt; each row's baseline is the mean G_0 of the others."""
    g0 = returns[:, 0].reshape(-1, k)  # (B/K, K)
    others = (g0.sum(1, keepdim=True) - g0) / (k - 1)  # (B/K, K)
    return others.reshape(-1, 1).expand_as(returns)


def baseline_value(returns: Tensor, *, values: Tensor, **_: Any) -> Tensor:  # (B, T)
    return values.detach()


BASELINES: dict[str, Callable[..., Tensor]] = {
    "none": baseline_none,
    "moving_average": baseline_moving_average,
    "rloo": baseline_rloo,
    "value": baseline_value,
}


def reward_to_go(rewards: Tensor) -> Tensor:
    """G_t = Σ_{t' >= t} r_t' for (B, T) rewards (γ = 1; masked steps hold 0)."""
    return rewards.flip(1).cumsum(1).flip(1)


def reinforce_loss(
    logp_theta: Tensor,  # (B, T) log π_θ(a_t|s_t), with gradients
    advantages: Tensor,  # (B, T) G_t - b_t, no gradients
    mask: Tensor,  # (B, T)
    n_episodes: Tensor | float,  # N (global under data parallelism)
) -> Tensor:  # ()
    """-(1/N)·Σ_episodes Σ_t (G_t - b_t)·log π_θ(a_t|s_t): the score-function estimator's loss."""
    return -(advantages.detach() * logp_theta * mask).sum() / n_episodes


class REINFORCE(OnPolicyAgent):
    """REINFORCE on a policy LM, one gradient step per round of episodes.

    Args:
        policy: π_θ.
        env: a NEXT_STEP-autoreset vector env; for "rloo" its ``num_envs`` divides by K and its
            prompts are pinned in groups of K (``reset(options={"prompt_index": ...})``).
        config: :class:`REINFORCEConfig`.
        ref: π_ref for β > 0; None makes a frozen copy of the policy.
        accelerator, log_dir, tensorboard, progress_bar: see ``OnPolicyAgent``.
    """

    config_class = REINFORCEConfig

    def __init__(
        self,
        policy: LanguageModel,
        env: Any,
        *,
        config: REINFORCEConfig = REINFORCEConfig(),
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, env, config=config, **kwargs)  # checks the env first
        if config.baseline == "rloo" and int(env.num_envs) % config.rloo_k:
            raise ValueError(
                f"baseline 'rloo' needs num_envs divisible by rloo_k={config.rloo_k}, "
                f"got num_envs={env.num_envs}"
            )
        self.average, self.n_averaged = 0.0, 0

    def _needs_value_head(self) -> bool:
        return bool(self.config.baseline == "value")

    def _options(self) -> dict[str, Any] | None:
        if self.config.baseline != "rloo":
            return None
        return grouped_prompts(self.np_rng, self.env, self.config.rloo_k)

    def _update(self, rollout: Rollout) -> dict[str, float]:
        cfg, mask = self.config, rollout.completion_mask
        if self.ref is not None:
            assert rollout.ref_logprobs is not None
            rewards, kl = kl_shaped_rewards(
                rollout.token_rewards, rollout.logprobs, rollout.ref_logprobs, mask, cfg.beta
            )
        else:
            rewards, kl = rollout.token_rewards, torch.zeros_like(mask)
        returns = reward_to_go(rewards) * mask  # (B, T)
        corrected = self.average / (1 - cfg.ma_decay**self.n_averaged) if self.n_averaged else 0.0
        baseline = (
            BASELINES[cfg.baseline](
                returns,
                average=corrected,
                k=cfg.rloo_k,
                values=rollout.values if rollout.values is not None else torch.zeros_like(returns),
            )
            * mask
        )
        advantages = returns - baseline  # (B, T)
        n_episodes = self.dp.sum(torch.tensor(float(len(rollout)), device=self.device))
        logp, entropy, values = self.trainable(rollout)
        policy_loss = reinforce_loss(logp, advantages, mask, n_episodes / self.world)
        count = self.dp.sum(mask.sum()).clamp(min=1) / self.world
        value_loss = (
            0.5 * ((values - returns) ** 2 * mask).sum() / count
            if values is not None
            else torch.zeros((), device=self.device)
        )
        loss = policy_loss + cfg.vf_coef * value_loss
        terms = self.dp.global_terms(
            {"loss": loss.detach(), "policy_loss": policy_loss.detach(), "value_loss": value_loss}
        )
        check_finite(self.step, terms)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        g0 = float(self.dp.sum(returns[:, 0].sum()) / n_episodes)
        self.average = cfg.ma_decay * self.average + (1 - cfg.ma_decay) * g0
        self.n_averaged += 1
        return {
            "kl": float(self.dp.sum(kl.sum()) / n_episodes),
            "return": g0,
            "baseline": float(self.dp.sum(baseline[:, 0].sum()) / n_episodes),
            "entropy": float(masked_mean(entropy.detach(), mask, reduce=self.dp.sum)),
            "grad_norm": float(grad_norm),
            **{k: float(v.detach()) for k, v in terms.items()},
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"average": self.average, "n_averaged": self.n_averaged}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.average, self.n_averaged = state["average"], state["n_averaged"]
