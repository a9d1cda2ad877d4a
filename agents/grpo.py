"""The GRPO family: group-relative policy optimisation and its fixes, one agent, one config.

G completions o_1..o_G are sampled for each prompt q and scored with sequence rewards R_1..R_G;
every token of o_i gets the same advantage Â_i, computed from the group (no value model). Papers:
GRPO, Shao et al. 2024 (arXiv:2402.03300, Eq. 3, §4.1.2); Dr. GRPO, Liu et al. 2025
(arXiv:2503.20783, §3.1, Eq. 4); DAPO, Yu et al. 2025 (arXiv:2503.14476, Eq. 8-11); GSPO, Zheng et
al. 2025 (arXiv:2507.18071, Eq. 5-7).

Advantage (``advantage``), from the group's rewards::

    "grpo"     Â_i = (R_i - mean(R)) / (std(R) + ε_std)   std with Bessel's correction (as TRL)
    "dr_grpo"  Â_i = R_i - mean(R)                        no std, so no per-question weighting

Importance ratio (``importance``), π_old the policy that sampled the round::

    "token"     ρ_i,t = π_θ(o_i,t | q, o_i,<t) / π_old(o_i,t | q, o_i,<t)
    "sequence"  s_i = exp((1/|o_i|)·Σ_t log ρ_i,t)  for every t of o_i                       (GSPO)

Per-token loss, clip-higher when ε_high > ε_low (DAPO)::

    l_i,t = -min(ρ_i,t·Â_i, clip(ρ_i,t, 1 - ε_low, 1 + ε_high)·Â_i) + β·k3_i,t   (kl="k3_loss")
    k3_i,t = π_ref/π_θ - log(π_ref/π_θ) - 1                                    (Schulman 2020)

Aggregation (``loss_aggregation``)::

    "sequence_mean"  L = (1/G)·Σ_i (1/|o_i|)·Σ_t l_i,t   GRPO: a long answer's tokens weigh less
    "token_mean"     L = Σ_i Σ_t l_i,t / Σ_i |o_i|        DAPO: every token weighs the same
    "constant"       L = Σ_i Σ_t l_i,t / (G·L_max)        Dr. GRPO: L_max, the env's max_new_tokens

KL to π_ref (``kl``): ``"k3_loss"`` adds β·k3 to l (GRPO); ``"k1_reward"`` pays it in the reward,
R_i ← R_i - β·Σ_t log(π_old/π_ref) before the advantages (Ziegler et al. 2019). β = 0 drops it
(Dr. GRPO, DAPO). Dynamic sampling (DAPO §3.2): groups whose rewards are all equal carry no
signal (Â = 0); ``dynamic_sampling=True`` drops them from the round (the batch shrinks; DAPO
resamples to refill it) and skips the update when none is left.

``GRPOConfig.preset(name, **changes)`` gives each paper's choices: "grpo", "dr_grpo", "dapo",
"gspo". Symbols -> code: G -> group_size | Â -> advantages | ρ, s -> ratio | ε_low, ε_high ->
clip_eps_low, clip_eps_high | β -> beta | ε_std -> std_eps | μ (inner iterations) -> n_epochs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from textgym.agents._common import OnPolicyAgent, check_finite, grouped_prompts
from torch import Tensor

from textgym.config import check_fields, check_range
from textgym.estimators import kl_k1, kl_k3, masked_mean
from textgym.lm import LanguageModel
from textgym.rollout import Rollout, Sampling

Advantage = Literal["grpo", "dr_grpo"]
Importance = Literal["token", "sequence"]
Aggregation = Literal["sequence_mean", "token_mean", "constant"]
KLPlacement = Literal["k3_loss", "k1_reward"]


@dataclass(frozen=True)
class GRPOConfig:
    """Hyperparameters of :class:`GRPO` (defaults: GRPO as Shao et al., μ = 1 as TRL's default)."""

    group_size: int = 4
    """G: completions per prompt; num_envs must divide by it (Shao et al.: 64; small here)."""
    advantage: Advantage = "grpo"
    """Â: "grpo" (group mean and std) or "dr_grpo" (group mean only)."""
    std_eps: float = 1e-4
    """ε_std added to the group std of "grpo" (TRL's 1e-4)."""
    importance: Importance = "token"
    """ρ: "token" (PPO's per-token ratio) or "sequence" (GSPO's length-normalised ratio)."""
    loss_aggregation: Aggregation = "sequence_mean"
    """How l_i,t become one loss: "sequence_mean" (GRPO), "token_mean" (DAPO), "constant"
    (Dr. GRPO)."""
    clip_eps_low: float = 0.2
    """ε_low: the ratio's lower clip 1 - ε_low (GSPO: 3e-4, its ratios are per sequence)."""
    clip_eps_high: float = 0.2
    """ε_high: the ratio's upper clip 1 + ε_high (DAPO's clip-higher: 0.28)."""
    beta: float = 0.04
    """β: KL coefficient to π_ref (Shao et al.: 0.04; 0: no reference model)."""
    kl: KLPlacement = "k3_loss"
    """Where the KL goes: "k3_loss" (GRPO) or "k1_reward" (the PPO/RLHF way)."""
    dynamic_sampling: bool = False
    """Drop groups with zero reward variance from each round (DAPO)."""
    lr: float = 1e-4
    """Adam step size."""
    n_epochs: int = 1
    """μ: passes over each round (1: on-policy, ρ = 1 at the step; GRPO uses more)."""
    n_minibatches: int = 1
    """Minibatches per pass; each holds whole groups, so num_envs / G must divide by it."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm."""
    sampling: Sampling = field(default_factory=Sampling)
    """Temperature / top-k / top-p of the behaviour policy (inside its distribution)."""
    seed: int = 0
    """Seeds sampling, the prompt groups, minibatch shuffles and the env's first reset."""

    def __post_init__(self) -> None:
        check_fields(self)
        check_range(self, "group_size", low=2)
        for name in ("std_eps", "clip_eps_low", "clip_eps_high", "lr", "max_grad_norm"):
            check_range(self, name, low=0, low_open=True)
        check_range(self, "clip_eps_low", high=1, high_open=True)
        check_range(self, "beta", low=0)
        for name in ("n_epochs", "n_minibatches"):
            check_range(self, name, low=1)
        check_range(self, "seed", low=0, high=2**32 - 1)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> GRPOConfig:
        """A paper's settings, then ``changes``: "grpo", "dr_grpo", "dapo" or "gspo".

        Raises:
            ValueError: an unknown name (the message lists the known ones).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown GRPO preset {name!r}: choose one of {sorted(PRESETS)}")
        return dataclasses.replace(cls(**PRESETS[name]), **changes)


PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {},
    "dr_grpo": {"advantage": "dr_grpo", "loss_aggregation": "constant", "beta": 0.0},
    "dapo": {
        "loss_aggregation": "token_mean",
        "clip_eps_high": 0.28,
        "dynamic_sampling": True,
        "beta": 0.0,
    },
    "gspo": {
        "importance": "sequence",
        "clip_eps_low": 3e-4,
        "clip_eps_high": 4e-4,
        "beta": 0.0,
    },
}


# ---------------------------------------------------------------------------- advantages


def _groups(rewards: Tensor, group_size: int) -> Tensor:  # (B/G, G)
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}"
        )
    return rewards.reshape(-1, group_size)


def advantages_grpo(rewards: Tensor, group_size: int, std_eps: float = 1e-4) -> Tensor:  # (B,)
    """Â_i = (R_i - mean(R)) / (std(R) + ε_std) over each group of G consecutive rows."""
    g = _groups(rewards.float(), group_size)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + std_eps)).reshape(-1)


def advantages_dr_grpo(rewards: Tensor, group_size: int, std_eps: float = 1e-4) -> Tensor:  # (B,)
    """Â_i = R_i - mean(R) over each group of G consecutive rows (``std_eps`` is unused)."""
    g = _groups(rewards.float(), group_size)
    return (g - g.mean(1, keepdim=True)).reshape(-1)


ADVANTAGES: dict[str, Callable[..., Tensor]] = {
    "grpo": advantages_grpo,
    "dr_grpo": advantages_dr_grpo,
}


def informative_groups(rewards: Tensor, group_size: int) -> Tensor:  # (B,) bool
    """Rows whose group's rewards are not all equal (DAPO's dynamic-sampling filter)."""
    g = _groups(rewards, group_size)
    keep = (g != g[:, :1]).any(1)  # (B/G,)
    return keep.repeat_interleave(group_size)


# ---------------------------------------------------------------------------- the loss


def importance_log_ratio(
    logp_theta: Tensor,  # (B, T) with gradients
    logp_old: Tensor,  # (B, T)
    mask: Tensor,  # (B, T)
    level: Importance,
) -> Tensor:  # (B, T)
    """log ρ_i,t ("token"), or GSPO's log s_i = mean_t log ρ_i,t broadcast over the row."""
    log_ratio = (logp_theta - logp_old) * mask
    if level == "token":
        return log_ratio
    if level == "sequence":
        per_row = log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
        return per_row.expand_as(log_ratio)
    raise ValueError(f"unknown importance level {level!r}: 'token' or 'sequence'")


def aggregate(per_token: Tensor, mask: Tensor, how: Aggregation, max_length: int) -> Tensor:  # ()
    """One loss from l_i,t: see the module docstring for the three rules."""
    if how == "sequence_mean":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if how == "token_mean":
        return (per_token * mask).sum() / mask.sum().clamp(min=1)
    if how == "constant":
        return (per_token * mask).sum() / (per_token.shape[0] * max_length)
    raise ValueError(
        f"unknown loss aggregation {how!r}: 'sequence_mean', 'token_mean' or 'constant'"
    )


def grpo_loss(
    logp_theta: Tensor,  # (B, T) log π_θ(o_i,t | ...), with gradients
    logp_old: Tensor,  # (B, T) log π_old, as sampled
    advantages: Tensor,  # (B,) Â_i
    mask: Tensor,  # (B, T) 1 = a token of o_i
    *,
    clip_eps_low: float,
    clip_eps_high: float,
    importance: Importance = "token",
    aggregation: Aggregation = "sequence_mean",
    max_length: int | None = None,
    logp_ref: Tensor | None = None,  # (B, T) log π_ref, for β·k3 in the loss
    beta: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:  # (), terms
    """The clipped group-relative loss of the module docstring; returns it and its terms.

    ``max_length`` (L_max) is needed by the "constant" aggregation only; ``logp_ref`` when β > 0.
    """
    if aggregation == "constant" and max_length is None:
        raise ValueError("loss aggregation 'constant' needs max_length (the env's max_new_tokens)")
    if beta > 0 and logp_ref is None:
        raise ValueError(f"beta={beta} puts a KL term in the loss: pass logp_ref")
    log_ratio = importance_log_ratio(logp_theta, logp_old, mask, importance)
    ratio = torch.exp(log_ratio)  # (B, T)
    adv = advantages.detach()[:, None].to(ratio.dtype)  # (B, 1)
    clipped = ratio.clamp(1 - clip_eps_low, 1 + clip_eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = torch.zeros_like(per_token)
    if logp_ref is not None:
        kl = kl_k3(logp_theta, logp_ref) * mask
        per_token = per_token + beta * kl
    loss = aggregate(per_token, mask, aggregation, max_length or 0)
    with torch.no_grad():
        low = (ratio < 1 - clip_eps_low) & (adv < 0)
        high = (ratio > 1 + clip_eps_high) & (adv > 0)
        terms = {
            "loss": loss.detach(),
            "clip_low_fraction": masked_mean(low.float(), mask),
            "clip_high_fraction": masked_mean(high.float(), mask),
            "kl_k3": masked_mean(kl.detach(), mask),
        }
    return loss, terms


# ---------------------------------------------------------------------------- the agent


class GRPO(OnPolicyAgent):
    """The GRPO family on a policy LM: G completions per prompt, no value head.

    Args:
        policy: π_θ.
        env: a NEXT_STEP-autoreset vector env whose ``num_envs`` divides by G; its prompts are
            pinned in groups of G (``reset(options={"prompt_index": ...})``).
        config: :class:`GRPOConfig` (``GRPOConfig.preset("dapo")`` etc.).
        ref: π_ref for β > 0; None makes a frozen copy of the policy.
        accelerator, log_dir, tensorboard, progress_bar: see ``OnPolicyAgent``.
    """

    config_class = GRPOConfig

    def __init__(
        self,
        policy: LanguageModel,
        env: Any,
        *,
        config: GRPOConfig = GRPOConfig(),
        **kwargs: Any,
    ) -> None:
        n_envs, g = int(env.num_envs), config.group_size
        if n_envs % g or (n_envs // g) % config.n_minibatches:
            raise ValueError(
                f"num_envs={n_envs} must split into groups of group_size={g} and those "
                f"{n_envs // g if n_envs % g == 0 else n_envs / g:g} groups into "
                f"n_minibatches={config.n_minibatches}"
            )
        super().__init__(policy, env, config=config, **kwargs)
        self.max_length = int(env.unwrapped.config.max_new_tokens)  # L_max of "constant"

    def _options(self) -> dict[str, Any] | None:
        return grouped_prompts(self.np_rng, self.env, self.config.group_size)

    def _update(self, rollout: Rollout) -> dict[str, float]:
        cfg, g = self.config, self.config.group_size
        mask = rollout.completion_mask
        rewards = rollout.rewards.float()  # (B,) R_i
        kl_k1_seq = torch.zeros_like(rewards)
        if self.ref is not None:
            assert rollout.ref_logprobs is not None
            kl_k1_seq = (kl_k1(rollout.logprobs, rollout.ref_logprobs) * mask).sum(-1)
            if cfg.kl == "k1_reward":
                rewards = rewards - cfg.beta * kl_k1_seq
        advantages = ADVANTAGES[cfg.advantage](rewards, g, cfg.std_eps)  # (B,)
        stats = {
            "kl": float(kl_k1_seq.mean()),
            "reward_std_in_group": float(_groups(rollout.rewards.float(), g).std(1).mean()),
        }
        keep = torch.ones(len(rollout), dtype=torch.bool, device=rewards.device)
        if cfg.dynamic_sampling:
            keep = informative_groups(rollout.rewards, g)
            stats["groups_kept"] = float(keep.float().mean())
            if not keep.any():
                return {**stats, "skipped": 1.0}
        rows_kept = torch.nonzero(keep).squeeze(1)  # whole groups, in group order
        n_groups = len(rows_kept) // g
        per_mb = max(1, n_groups // cfg.n_minibatches)
        sums: dict[str, float] = {}
        n_steps = 0
        for _ in range(cfg.n_epochs):
            order = torch.randperm(n_groups, generator=self.generator, device=self.device)
            for start in range(0, n_groups, per_mb):
                groups = order[start : start + per_mb]
                rows = rows_kept[
                    (groups[:, None] * g + torch.arange(g, device=self.device)).reshape(-1)
                ]
                sub = rollout[rows]
                logp, _, _ = self.trainable(sub)
                loss, terms = grpo_loss(
                    logp,
                    sub.logprobs,
                    advantages[rows],
                    sub.completion_mask,
                    clip_eps_low=cfg.clip_eps_low,
                    clip_eps_high=cfg.clip_eps_high,
                    importance=cfg.importance,
                    aggregation=cfg.loss_aggregation,
                    max_length=self.max_length,
                    logp_ref=sub.ref_logprobs if cfg.kl == "k3_loss" else None,
                    beta=cfg.beta if cfg.kl == "k3_loss" else 0.0,
                )
                terms = self.dp.global_terms(terms)
                check_finite(self.step, terms)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                n_steps += 1
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
        return {**stats, **{k: v / n_steps for k, v in sums.items()}}
