"""GAIL: Ho & Ermon 2016, arXiv:1606.03476, Eq. 17 and Algorithm 1; the native PPO as generator.

min_π max_w  𝔼_{π_E}[log D_w(s, a)] + 𝔼_π[log(1 - D_w(s, a))] - λ·H(π)
(here D_w is the probability that (s, a) is the expert's; the paper's D is the policy's, 1 - ours)

Per iteration i (Algorithm 1): sample trajectories τ_i ~ π_θi; take discriminator steps on
L_D(w) = -𝔼_{τ_E}[log D_w(s, a)] - 𝔼_{τ_i}[log(1 - D_w(s, a))]        (:func:`discriminator_loss`)
then a policy step (PPO instead of TRPO) on the reward of the updated D_{w_i+1}:
    "gail": r(s, a) = -log(1 - D_w(s, a))                                   (:func:`reward_gail`)
    "airl": r(s, a) = log D_w(s, a) - log(1 - D_w(s, a))                    (:func:`reward_airl`)
D_w has AIRL's form (Fu et al. 2018, arXiv:1710.11248, §4): D_w = exp f_w / (exp f_w + π_θ), i.e.
logit = f_w(s, a) - log π_θ(a|s), with f_w(s, a) = log π_w(a|s) from a trainable copy π_w of the
LM: its trunk encodes the prefix and its output embedding the action. D starts at 1/2 (π_w = π_θ);
at its optimum f_w = log π_E, and "airl" = log π_w - log π_θ makes the policy step entropy-
regularised RL towards π_E. (An MLP on frozen trunk features and action embeddings stayed near
chance on the reverse task, and a frozen π_ref in place of π_θ rewards tokens π_ref finds
unlikely; in our runs the policy collapsed to an early EOS. See docs/imitation.md.)
Absorbing states (Kostrikov et al. 2019, arXiv:1809.02925): the env's fixed-horizon mode pads every
episode to T steps; after EOS the state is absorbing (its observation: the finished text) and
D_w(s_a, ·) = σ(b_w[n]), one learned number per text length n, so a text's length is judged like
its words. Their rewards are paid on the EOS step that led there (r_e + Σ_k r_{e+k}): PPO acts only
on the tokens the env took.

Symbols -> code: w -> ``Discriminator`` (π_w = its LM, b_w = ``absorbing_logit``) | D_w ->
sigmoid of its logits | τ_E -> ``self.expert`` (demonstrations padded to T) | τ_i -> the PPO
rollout | π_θ -> ``self.policy`` | λ -> ppo.ent_coef | r -> ``rollout.token_rewards``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from textgym.agents.base import Agent
from textgym.agents.bc import Demonstrations, as_demonstrations
from textgym.agents.ppo import PPO, PPOConfig
from textgym.rewards.base import BaseReward
from torch import Tensor, nn

from textgym.config import check_fields, check_range
from textgym.lm import LanguageModel
from textgym.rollout import Rollout, completion_logprobs
from textgym.tasks import Task
from textgym.training import check_policy_env, frozen_copy

RewardType = Literal["gail", "airl"]
ABSORBING_LR = 0.05
"""Adam step size of the absorbing logits b_w[n]."""


@dataclass(frozen=True)
class GAILConfig:
    """Hyperparameters of GAIL (defaults work on ``textgym.DEFAULT_MODEL``)."""

    ppo: PPOConfig = field(
        default_factory=lambda: PPOConfig(
            lr=3e-4, n_epochs=2, n_minibatches=2, beta=0.02, gamma=0.0, lam=0.0
        )
    )
    """The generator's PPO; its seed seeds everything. γ = λ = 0: each token is credited with its
    own discriminator reward only (measured on the reverse task: with γ = 1, λ = 0.95 the
    advantages were dominated by the later tokens' rewards and the policy did not improve)."""
    reward: RewardType = "airl"
    """r(s, a): "gail" = -log(1 - D), "airl" = log D - log(1 - D)."""
    disc_lr: float = 1e-3
    """Adam step size of π_w."""
    disc_epochs: int = 4
    """Passes of discriminator steps over each rollout's episodes (and as many expert ones)."""
    disc_batch_size: int = 16
    """Episodes of each side per discriminator step (T transitions each)."""

    def __post_init__(self) -> None:
        check_fields(self)  # also: an unknown reward name is a ValueError
        check_range(self, "disc_lr", low=0, low_open=True)
        for name in ("disc_epochs", "disc_batch_size"):
            check_range(self, name, low=1)


def discriminator_loss(logits_expert: Tensor, logits_policy: Tensor) -> Tensor:  # ()
    """L_D = -𝔼_{τ_E} log D_w - 𝔼_{τ_i} log(1 - D_w), from logits (N_E,), (N_π,) of D_w."""
    # BCE with logits: log σ(x) and log(1 - σ(x)) = log σ(-x) without overflow at large |x|.
    expert = F.binary_cross_entropy_with_logits(logits_expert, torch.ones_like(logits_expert))
    policy = F.binary_cross_entropy_with_logits(logits_policy, torch.zeros_like(logits_policy))
    return expert + policy


def reward_gail(logits: Tensor) -> Tensor:
    """r = -log(1 - D_w) = softplus(logit), elementwise; > 0 (Ho & Ermon 2016)."""
    return F.softplus(logits)


def reward_airl(logits: Tensor) -> Tensor:
    """r = log D_w - log(1 - D_w) = logit, elementwise; either sign (Fu et al. 2018)."""
    return logits


REWARDS = {"gail": reward_gail, "airl": reward_airl}


@dataclass
class Transitions:
    """(s_t, a_t) of B fixed-horizon episodes, T steps each: the discriminator's input."""

    prompt_ids: Tensor  # (B, P) int64, left-padded
    prompt_mask: Tensor  # (B, P) int64
    completion_ids: Tensor  # (B, T) int64, a_t (ignored at absorbing steps)
    absorbing: Tensor  # (B, T) bool, s_t is the absorbing state (after EOS)

    def __len__(self) -> int:
        return int(self.prompt_ids.shape[0])

    def __getitem__(self, rows: Tensor) -> Transitions:
        return Transitions(*(getattr(self, f.name)[rows] for f in fields(self)))


def token_logprobs(lm: LanguageModel, x: Transitions) -> Tensor:  # (B, T)
    """log π(a_t|s_t) at every step of fixed-horizon episodes; 0 at absorbing steps."""
    ids = torch.cat([x.prompt_ids, x.completion_ids], 1)  # (B, L)
    attention = torch.cat([x.prompt_mask, (~x.absorbing).long()], 1)  # (B, L); absorbing: a suffix
    return completion_logprobs(lm.forward(ids, attention), x.completion_ids, ~x.absorbing)[0]


class Discriminator(nn.Module):
    """D_w(s, a) as a logit: log π_w(a|s) - log π_θ(a|s); b_w[n] in the absorbing state.

    The absorbing state's observation is the finished text, so its logit may depend on it: one
    number per text length n tells a text that stopped too early or too late from the expert's.
    """

    def __init__(self, lm: LanguageModel, horizon: int) -> None:
        super().__init__()
        self.model = copy.deepcopy(lm.model).eval().requires_grad_(True)  # π_w, no dropout
        self.absorbing_logit = nn.Parameter(torch.zeros(horizon + 1, device=lm.device))  # b_w[n]
        self.lm = lm.wrap(self.model)

    def forward(self, x: Transitions, logp_theta: Tensor) -> Tensor:  # (B, T)
        logp_w = token_logprobs(self.lm, x)  # (B, T) f_w
        b = self.absorbing_logit[(~x.absorbing).sum(1)]  # (B,) by the text's length n (with EOS)
        return torch.where(x.absorbing, b[:, None], logp_w - logp_theta)


def absorbing_after_eos(completion_ids: Tensor, eos: int) -> Tensor:  # (B, T) bool
    """Steps after each row's first EOS: the env's fixed-horizon absorbing state."""
    is_eos = (completion_ids == eos).long()  # (B, T)
    return (is_eos.cumsum(1) - is_eos) > 0


def fold_absorbing(rewards: Tensor, absorbing: Tensor) -> Tensor:  # (B, T)
    """Pay the absorbing steps' rewards on the step that entered them: r_e += Σ_{k≥1} r_{e+k}.

    Undiscounted: the whole absorbing run follows from the EOS action alone (no later decision),
    so its reward is part of that action's outcome, whatever γ the policy step uses.
    """
    # The absorbing steps are each row's suffix: reverse cumulative sums give the run's total.
    tail = (rewards * absorbing).flip(1).cumsum(1).flip(1)  # (B, T) Σ_{k≥0} absorbing r_{t+k}
    after = torch.cat([tail[:, 1:], tail.new_zeros(tail.shape[0], 1)], 1)  # (B, T) from t + 1
    nxt = torch.cat([absorbing[:, 1:], absorbing.new_zeros(absorbing.shape[0], 1)], 1)
    entering = ~absorbing & nxt  # (B, T) the EOS step of rows that end before T
    return torch.where(absorbing, 0.0, rewards + entering * after)


def fixed_horizon(demos: Demonstrations, T: int, pad: int) -> Transitions:
    """Demonstrations as T-step episodes: each (cut at T, like the env), then absorbing steps."""
    ids = F.pad(demos.completion_ids, (0, max(0, T - demos.completion_ids.shape[1])), value=pad)
    length = demos.mask.sum(-1).long().clamp(max=T)  # (N,)
    absorbing = torch.arange(T, device=ids.device)[None, :] >= length[:, None]  # (N, T)
    return Transitions(demos.prompt_ids, demos.prompt_mask, ids[:, :T], absorbing)


class DiscriminatorReward(BaseReward):
    """GAIL's learned reward as a textgym reward: R(x, y) = Σ_t r(D_w(s_t, a_t)) over the T steps
    of the completion as a fixed-horizon episode (absorbing steps included), i.e. the return
    :meth:`GAIL.relabel` pays on that episode. D_w's logit is log π_w - log π_θ: both are frozen
    copies taken at export, so the reward stays fixed while another policy trains on it.

    Args:
        discriminator: D_w (copied).
        policy: π_θ of D_w's logit (copied).
        reward: "gail" (-log(1 - D)) or "airl" (log D - log(1 - D)).
        horizon: T, the env's ``max_new_tokens``.
    """

    def __init__(
        self, discriminator: Discriminator, policy: LanguageModel, reward: RewardType, horizon: int
    ) -> None:
        self.discriminator = copy.deepcopy(discriminator).eval().requires_grad_(False)
        self.policy, self.reward, self.horizon = frozen_copy(policy), reward, horizon
        self.name = f"gail_{reward}"

    @torch.no_grad()
    def _score(
        self, prompts: list[str], completions: list[str], references: list[tuple[str, ...]] | None
    ) -> np.ndarray:  # (B,)
        demos = Demonstrations.from_pairs(self.policy, list(zip(prompts, completions, strict=True)))
        x = fixed_horizon(demos.to(self.policy.device), self.horizon, self.policy.pad_token_id)
        logits = self.discriminator(x, token_logprobs(self.policy, x))  # (B, T)
        return REWARDS[self.reward](logits).sum(1).double().cpu().numpy()


class GAIL(Agent):
    """Generative adversarial imitation learning for a policy LM (the native PPO as generator).

    The generator is a plain :class:`PPO` whose score stage is :meth:`relabel`: each round of
    episodes trains D_w, then learns from r(D_w) instead of the env's reward.
    ``GAIL.load(dir, env, device="auto", discriminator_lm=None, **kwargs)`` resumes a saved run.

    Args:
        policy: π_θ, trained in place.
        env: a NEXT_STEP-autoreset vector env in fixed-horizon mode, e.g.
            ``gym.make_vec("textgym/Reverse-v0", num_envs=16, fixed_horizon=True, model=policy)``.
        demonstrations: τ_E: a ``Task`` (its expert's demonstrations), (prompt, completion)
            texts, or :class:`~textgym.agents.bc.Demonstrations`; cut to the env's horizon.
        config: :class:`GAILConfig`.
        discriminator_lm: the LM π_w starts from (a trained copy; None: the policy). A smaller LM
            with the same tokenizer keeps D_w cheap beside a large policy.
        **kwargs: ``ref``, ``log_dir``, ``tensorboard``, ``progress_bar``, ``accelerator`` (PPO's).
    """

    config_class = GAILConfig

    def __init__(
        self,
        policy: LanguageModel,
        env: Any,
        demonstrations: Task | Sequence[tuple[str, str]] | Demonstrations,
        *,
        config: GAILConfig = GAILConfig(),
        discriminator_lm: LanguageModel | None = None,
        **kwargs: Any,
    ) -> None:
        check_policy_env("GAIL", policy, env)
        if not getattr(getattr(getattr(env, "unwrapped", env), "config", None), "fixed_horizon", 0):
            raise ValueError(
                "GAIL needs equal-length episodes: build the env with fixed_horizon=True, e.g. "
                "gym.make_vec('textgym/Reverse-v0', num_envs=16, fixed_horizon=True)"
            )
        ppo = PPO(policy, env, config=config.ppo, score=self.relabel, **kwargs)
        demos = as_demonstrations(policy, demonstrations)
        self._wire(ppo, demos, config, discriminator_lm or policy)

    def _wire(
        self, ppo: PPO, demos: Demonstrations, config: GAILConfig, disc_lm: LanguageModel
    ) -> None:
        """Attach the discriminator side to the generator (shared by ``__init__`` and ``load``)."""
        self.ppo, self.config, self.demonstrations = ppo, config, demos
        self.dp = ppo.dp
        self.policy, self.env, self.device = ppo.policy, ppo.env, ppo.device
        holder: Any = getattr(self.env, "unwrapped", self.env)
        env_config = holder.config
        self.horizon, self.eos = int(env_config.max_new_tokens), int(env_config.eos_token_id)
        self.discriminator = Discriminator(disc_lm, self.horizon)
        disc = self.discriminator
        self.disc_optimizer = torch.optim.Adam(
            [
                {"params": list(disc.model.parameters()), "lr": config.disc_lr},
                # b_w is a table, one entry per length, with no statistical strength shared between
                # entries: at π_w's step size it would take thousands of steps to leave 0.
                {"params": [disc.absorbing_logit], "lr": ABSORBING_LR},
            ]
        )
        self.expert = self._expert_transitions(demos.to(self.device))

    def _expert_transitions(self, demos: Demonstrations) -> Transitions:
        """τ_E at the env's horizon: each demonstration, then absorbing steps up to T."""
        return fixed_horizon(demos, self.horizon, self.policy.pad_token_id)

    def _logits(self, x: Transitions) -> Tensor:  # (B, T)
        """D_w's logits under the current π_θ (a constant for the discriminator's gradient)."""
        with torch.no_grad():
            logp_theta = token_logprobs(self.policy, x)  # (B, T)
        return self.discriminator(x, logp_theta)

    def _train_discriminator(self, policy: Transitions) -> dict[str, float]:
        """``disc_epochs`` passes over the rollout's episodes, each batch against as many of τ_E."""
        cfg, rng, n = self.config, self.ppo.np_rng, len(policy)
        losses, d_expert, d_policy = [], 0.0, 0.0
        for _ in range(cfg.disc_epochs):
            order = torch.as_tensor(rng.permutation(n), device=self.device)
            for start in range(0, n, cfg.disc_batch_size):
                rows = order[start : start + cfg.disc_batch_size]
                picks = torch.as_tensor(rng.integers(len(self.expert), size=len(rows)))
                logits_e = self._logits(self.expert[picks.to(self.device)])  # (b, T)
                logits_p = self._logits(policy[rows])  # (b, T)
                loss = discriminator_loss(logits_e.flatten(), logits_p.flatten())
                self.disc_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.disc_optimizer.step()
                losses.append(float(loss.detach()))
                d_expert = float(torch.sigmoid(logits_e.detach()).mean())
                d_policy = float(torch.sigmoid(logits_p.detach()).mean())
        return {"disc_loss": sum(losses) / len(losses), "d_expert": d_expert, "d_policy": d_policy}

    def relabel(self, rollout: Rollout) -> tuple[Rollout, dict[str, float]]:
        """Algorithm 1 on one rollout: update D_w, then replace the env's rewards by r(D_w).

        The rollout comes back cut after each EOS (absorbing rewards folded into the EOS step),
        so PPO's loss covers only the tokens the env really took.
        """
        absorbing = absorbing_after_eos(rollout.completion_ids, self.eos)  # (B, T)
        episodes = Transitions(
            rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, absorbing
        )
        stats = self._train_discriminator(episodes)
        with torch.no_grad():
            reward = REWARDS[self.config.reward](self._logits(episodes))  # (B, T)
        keep = (~absorbing).float() * rollout.completion_mask  # (B, T)
        token_rewards = fold_absorbing(reward, absorbing) * keep
        cut: dict[str, Any] = {
            "completion_mask": keep,
            "token_rewards": token_rewards,
            "completion_ids": rollout.completion_ids.masked_fill(
                keep == 0, self.policy.pad_token_id
            ),
            "terminated": rollout.terminated | absorbing.any(1),
        }
        for name in ("logprobs", "ref_logprobs", "values"):
            value = getattr(rollout, name)
            cut[name] = None if value is None else value * keep
        stats["gail_return"] = float(token_rewards.sum(1).mean())
        return replace(rollout, **cut), stats

    @property
    def step(self) -> int:  # type: ignore[override]  # the generator's counter, not a copy
        """Policy updates done."""
        return self.ppo.step

    @property
    def history(self) -> list[dict[str, float]]:  # type: ignore[override]  # the generator's rows
        """One row per update: PPO's terms, the env's reward ("reward") and D_w's statistics."""
        return self.ppo.history

    def learn(self, n_updates: int) -> list[dict[str, float]]:
        """Run ``n_updates`` iterations of Algorithm 1: rollout, D_w steps, PPO update."""
        return self.ppo.learn(n_updates)

    def reward(self) -> DiscriminatorReward:
        """The current D_w's reward (``config.reward``) as a textgym reward, e.g. to train a fresh
        policy on: ``gym.make_vec("TextGen-v0", ..., reward=agent.reward())``."""
        return DiscriminatorReward(
            self.discriminator, self.policy, self.config.reward, self.horizon
        )

    def _write_parts(self, path: Path) -> list[str]:
        self.ppo.save(path / "ppo")  # the generator: policy, reference, value head, RNGs
        return ["ppo"]

    def _state(self) -> dict[str, Any]:
        return {
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.disc_optimizer.state_dict(),
            "demonstrations": self.demonstrations.state_dict(),
        }

    @classmethod
    def _restore(
        cls,
        path: Path,
        config: GAILConfig,
        state: dict[str, Any],
        env: Any,
        *,
        device: str = "auto",
        discriminator_lm: LanguageModel | None = None,
        **kwargs: Any,
    ) -> GAIL:
        """``discriminator_lm``: an LM of π_w's architecture when it is not the policy's (its
        weights are replaced by the saved ones)."""
        agent = cls.__new__(cls)
        ppo = PPO.load(path / "ppo", env, device=device, score=agent.relabel, **kwargs)
        demos = Demonstrations(**state["demonstrations"])
        agent._wire(ppo, demos, config, discriminator_lm or ppo.policy)
        agent.discriminator.load_state_dict(state["discriminator"])
        agent.disc_optimizer.load_state_dict(state["optimizer"])
        return agent
