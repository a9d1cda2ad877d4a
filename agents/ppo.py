"""PPO for language models: Schulman et al. 2017 (arXiv:1707.06347) with the KL-shaped reward of
Ziegler et al. 2019 (arXiv:1909.08593, Eq. 2) and Ouyang et al. 2022 (arXiv:2203.02155, Eq. 2).

r_t = r_φ(x, y)·1[t = T] - β·(log π_θ(a_t|s_t) - log π_ref(a_t|s_t))        (textgym.rollout)
Â_t = GAE(γ, λ) of r_t with V_ψ(s_t)                                           (textgym.rollout)
ρ_t = π_θ(a_t|s_t) / π_θold(a_t|s_t)
L^CLIP = 𝔼_t[min(ρ_t·Â_t, clip(ρ_t, 1 - ε, 1 + ε)·Â_t)]
L^VF   = ½·𝔼_t[max((V_ψ(s_t) - R_t)², (V_old + clip(V_ψ - V_old, -ε_V, ε_V) - R_t)²)]
loss   = -L^CLIP + c_1·L^VF - c_2·𝔼_t[H(π_θ(·|s_t))]
Adaptive β (Ziegler §2.2): e = clip(KL/KL_target - 1, ±0.2), β ← β·(1 + e·n/horizon), n = episodes.

Symbols -> code: r_φ -> rollout.token_rewards | β -> beta | π_θ, π_θold, π_ref -> logp_theta,
logp_old, logp_ref | ρ_t -> ratio | ε -> clip_eps | ε_V -> clip_value | γ, λ -> gamma, lam |
V_ψ -> values (a ValueHead on the policy's trunk) | R_t -> returns | c_1 -> vf_coef |
c_2 -> ent_coef.
The KL is estimated per token with k1 on the sampled tokens; the logged "kl" is Σ_t k1 per episode,
the very tensor that entered the reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from textgym.agents._common import OnPolicyAgent, check_finite
from torch import Tensor

from textgym.config import check_fields, check_range
from textgym.lm import LanguageModel
from textgym.rollout import Rollout, Sampling, gae, kl_shaped_rewards, masked_mean, whiten


@dataclass(frozen=True)
class PPOConfig:
    lr: float = 3e-5
    """Adam step size (Ziegler: 1.41e-5 for GPT-2 774M; tiny models take more)."""
    n_epochs: int = 4
    """K: passes over each batch of episodes (Ziegler: 4)."""
    n_minibatches: int = 4
    """Minibatches per pass; the number of episodes per round must divide by it."""
    clip_eps: float = 0.2
    """ε: ratio clip of L^CLIP (Schulman: 0.2)."""
    clip_value: float = 0.2
    """ε_V: clip of the value update around V_old."""
    vf_coef: float = 0.1
    """c_1: weight of the value loss (TRL: 0.1)."""
    ent_coef: float = 0.0
    """c_2: entropy bonus (0 in Ziegler / Ouyang; the KL to π_ref already keeps entropy up)."""
    gamma: float = 1.0
    """γ: discount (1 for the episodic text MDP)."""
    lam: float = 0.95
    """λ: GAE parameter (Ziegler: 0.95)."""
    beta: float = 0.05
    """β: KL coefficient (the initial one when adaptive); 0 with kl_target None: no reference."""
    kl_target: float | None = None
    """KL_target (nats per episode) of the adaptive controller; None keeps β fixed (Ziegler: 6)."""
    kl_horizon: int = 10_000
    """Horizon of the adaptive controller, in episodes (Ziegler: 10 000)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm."""
    sampling: Sampling = field(default_factory=Sampling)
    """Temperature / top-k / top-p of the behaviour policy (inside its distribution)."""
    bootstrap_truncated: bool = False
    """Bootstrap V(s_T) at max_new_tokens. Off: the prefix length is part of the state, so the
    horizon is a true terminal of this MDP (turn on for tasks cut short by something else)."""
    seed: int = 0
    """Seeds the sampling generator, the minibatch shuffles and the env's first reset."""

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("lr", "clip_eps", "clip_value", "max_grad_norm"):
            check_range(self, name, low=0, low_open=True)
        for name in ("n_epochs", "n_minibatches", "kl_horizon"):
            check_range(self, name, low=1)
        for name in ("vf_coef", "ent_coef", "beta"):
            check_range(self, name, low=0)
        for name in ("gamma", "lam"):
            check_range(self, name, low=0, high=1)
        check_range(self, "kl_target", low=0, low_open=True)  # None passes: β stays fixed
        if self.kl_target is not None and self.beta == 0:
            raise ValueError(
                "PPOConfig.kl_target needs an initial beta > 0 (the controller scales beta), got "
                f"kl_target={self.kl_target}, beta={self.beta}"
            )
        check_range(self, "seed", low=0, high=2**32 - 1)


def ppo_loss(
    logp_theta: Tensor,  # (B, T) log π_θ(a_t|s_t), with gradients
    logp_old: Tensor,  # (B, T) log π_θold(a_t|s_t), as sampled
    advantages: Tensor,  # (B, T) Â_t
    values: Tensor,  # (B, T) V_ψ(s_t), with gradients
    values_old: Tensor,  # (B, T) V_old(s_t), at collection
    returns: Tensor,  # (B, T) R_t
    entropy: Tensor,  # (B, T) H(π_θ(·|s_t))
    mask: Tensor,  # (B, T) 1 = a step of an episode
    clip_eps: float,
    clip_value: float,
    vf_coef: float,
    ent_coef: float,
    n_tokens: Tensor | float,  # the token count to average over (global under data parallelism)
) -> tuple[Tensor, dict[str, Tensor]]:  # (), terms
    """-L^CLIP + c_1·L^VF - c_2·H, token means; returns the loss and its terms (detached)."""

    def mean(x: Tensor) -> Tensor:
        return (x * mask).sum() / n_tokens

    ratio = torch.exp(logp_theta - logp_old)  # (B, T) ρ_t
    surrogate = torch.min(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    v_clipped = values_old + (values - values_old).clamp(-clip_value, clip_value)  # (B, T)
    value_loss = 0.5 * mean(torch.max((values - returns) ** 2, (v_clipped - returns) ** 2))
    policy_loss, ent = -mean(surrogate), mean(entropy)
    loss = policy_loss + vf_coef * value_loss - ent_coef * ent
    with torch.no_grad():
        log_ratio = logp_theta - logp_old
        terms = {
            "loss": loss.detach(),
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": ent.detach(),
            "clip_fraction": mean(((ratio - 1).abs() > clip_eps).float()),
            "approx_kl": mean(torch.expm1(log_ratio) - log_ratio),  # k3 of π_θold vs π_θ
        }
    return loss, terms


class KLController:
    """β, fixed (``target=None``) or adaptive (Ziegler et al. 2019, §2.2)."""

    def __init__(self, beta: float, target: float | None, horizon: int) -> None:
        self.value, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_episodes: int) -> None:
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_episodes / self.horizon


class PPO(OnPolicyAgent):
    """KL-regularised PPO on a policy LM, with a value head on its trunk.

    Args:
        policy: π_θ (wrap it with ``textgym.training.with_lora`` for LoRA; π_ref is then the
            base model with adapters disabled).
        env: a NEXT_STEP-autoreset vector env (``gym.make_vec("TextGen-v0", num_envs=B, ...)``).
        config: :class:`PPOConfig`.
        ref: π_ref; None makes a frozen copy of the policy (when β > 0).
        accelerator, log_dir, tensorboard, progress_bar: see ``OnPolicyAgent``.
    """

    config_class = PPOConfig

    def __init__(
        self, policy: LanguageModel, env: Any, *, config: PPOConfig = PPOConfig(), **kwargs: Any
    ) -> None:
        super().__init__(policy, env, config=config, **kwargs)  # checks the env first
        n_envs = int(env.num_envs)
        if n_envs % config.n_minibatches:
            raise ValueError(
                f"{n_envs} episodes per round do not split into n_minibatches="
                f"{config.n_minibatches}: use a num_envs divisible by it"
            )
        self.kl_ctl = KLController(config.beta, config.kl_target, config.kl_horizon)

    def _needs_value_head(self) -> bool:
        return True

    def _update(self, rollout: Rollout) -> dict[str, float]:
        cfg, mask = self.config, rollout.completion_mask
        if self.ref is not None:
            assert rollout.ref_logprobs is not None
            rewards, kl = kl_shaped_rewards(
                rollout.token_rewards,
                rollout.logprobs,
                rollout.ref_logprobs,
                mask,
                self.kl_ctl.value,
            )
        else:
            rewards, kl = rollout.token_rewards, torch.zeros_like(mask)
        assert rollout.values is not None
        advantages, returns = gae(
            rewards,
            rollout.values,
            mask,
            cfg.gamma,
            cfg.lam,
            rollout.bootstrap_values if cfg.bootstrap_truncated else None,
            rollout.terminated,
        )
        advantages = whiten(advantages, mask, reduce=self.dp.sum)
        size = len(rollout) // cfg.n_minibatches
        sums: dict[str, float] = {}
        for _ in range(cfg.n_epochs):
            order = torch.randperm(len(rollout), generator=self.generator, device=self.device)
            for start in range(0, len(rollout), size):
                rows = order[start : start + size]
                sub = rollout[rows]
                assert sub.values is not None  # collect() filled them: PPO has a value head
                logp, entropy, values = self.trainable(sub)
                loss, terms = ppo_loss(
                    logp,
                    sub.logprobs,
                    advantages[rows],
                    values,
                    sub.values,
                    returns[rows],
                    entropy,
                    sub.completion_mask,
                    cfg.clip_eps,
                    cfg.clip_value,
                    cfg.vf_coef,
                    cfg.ent_coef,
                    self.dp.sum(sub.completion_mask.sum()).clamp(min=1) / self.world,
                )
                terms = self.dp.global_terms(terms)
                check_finite(self.step, terms)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + float(value) / (
                        cfg.n_epochs * cfg.n_minibatches
                    )
        episode_kl = float(self.dp.sum(kl.sum()) / self.dp.sum(torch.tensor(float(len(rollout)))))
        beta = self.kl_ctl.value
        self.kl_ctl.update(episode_kl, len(rollout) * self.world)
        return {
            "kl": episode_kl,
            "beta": beta,
            "entropy_rollout": float(masked_mean(-rollout.logprobs, mask, reduce=self.dp.sum)),
            **sums,
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"beta": self.kl_ctl.value}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.kl_ctl.value = state["beta"]
