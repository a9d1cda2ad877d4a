"""Apprenticeship learning via IRL: Abbeel & Ng, ICML 2004, §3 (max-margin, Eq. 10-12, and the
projection method, §3.1); the LP of Ng & Russell, ICML 2000, §5, as a third weight step.

Rewards linear in features, R(s, a) = wᵀφ(s, a). A policy's feature expectations
    μ(π) = 𝔼[Σ_t γ^t φ(s_t, a_t) | π],   μ̂_E = (1/m)·Σ_i Σ_t γ^t φ(s_t^(i), a_t^(i))   (m demos)
give 𝔼[Σ_t γ^t R] = wᵀμ(π). Start from π^(0) (the given policy), μ^(0) = μ(π^(0)); for i = 1, 2, ...
  weight step: w^(i), t^(i) from μ̂_E and μ^(0..i-1), one of (``IRLConfig.weight_step``)
    "projection" (:func:`projection_step`): μ̄^(0) = μ^(0),
        μ̄^(j) = μ̄^(j-1) + [Δ_jᵀ(μ̂_E - μ̄^(j-1)) / Δ_jᵀΔ_j]·Δ_j,   Δ_j = μ^(j) - μ̄^(j-1),
        w^(i) = μ̂_E - μ̄^(i-1),   t^(i) = ‖μ̂_E - μ̄^(i-1)‖₂
    "max_margin" (:func:`max_margin_step`): max_{t, ‖w‖₂ ≤ 1} t  s.t.  wᵀμ̂_E ≥ wᵀμ^(j) + t, j < i
    "ng_russell" (:func:`ng_russell_step`): max_{|w_k| ≤ 1} Σ_j p(wᵀ(μ̂_E - μ^(j))),
        p(x) = x if x ≥ 0 else 2x
  stop when t^(i) ≤ ε;
  RL step: ``n_rl_updates`` of REINFORCE or PPO on R = c·ŵᵀφ, ŵ = w^(i)/‖w^(i)‖₂: a Scorer replaces
    the env's rewards by r_t = c·γ^t·ŵᵀφ(s_t, a_t) (token-level φ) or c·ŵᵀΦ(x, y) on the last step;
  μ^(i) = μ(π^(i)), estimated on ``n_eval_rounds`` rounds of the env.
Deviations: π^(i) continues from π^(i-1) (one policy trained on, not a fresh one per iteration),
the last policy is kept (the paper mixes the π^(j)), ŵ is a unit vector for every weight step. The
exported reward (:meth:`IRL.reward`) is the mean of the ŵ^(i) the RL steps used: a late ŵ^(i)
alone is the correction from the policies found so far towards μ̂_E, not the expert's reward.

Symbols -> code: φ, Φ -> ``features`` (:mod:`textgym.features`) | μ̂_E -> ``mu_expert`` | μ^(j) ->
``mus[j]`` | μ̄ -> ``mu_bar`` | w^(i) -> ``w`` (unit) | t^(i) -> ``margin`` | ε -> cfg.epsilon |
c -> cfg.reward_scale | γ -> ``features.gamma`` (1 for sequence-level maps).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from textgym.agents._common import OnPolicyAgent
from textgym.agents.base import Agent
from textgym.agents.bc import Demonstrations
from textgym.agents.ppo import PPO, PPOConfig
from textgym.agents.reinforce import REINFORCE, REINFORCEConfig
from textgym.rewards import Reward, batched, make
from textgym.rewards.linear import LinearReward

from textgym.config import check_fields, check_range
from textgym.features import FeatureMap, check_features
from textgym.lm import LanguageModel
from textgym.rollout import Rollout, collect, evaluate_policy
from textgym.tasks import Task
from textgym.training import progress

WeightStep = Literal["projection", "max_margin", "ng_russell"]
InnerAgent = Literal["reinforce", "ppo"]
SHOWN_WEIGHTS = 32
"""History rows carry w's components ("w/<name>") when K is at most this (all of w: ``weights``)."""


@dataclass(frozen=True)
class IRLConfig:
    """Hyperparameters of apprenticeship learning (defaults work on ``textgym.DEFAULT_MODEL``)."""

    weight_step: WeightStep = "projection"
    """How w^(i) is found: "projection", "max_margin" (Abbeel & Ng 2004) or "ng_russell" (2000)."""
    n_rl_updates: int = 5
    """Updates of the inner RL agent per outer iteration (the RL step)."""
    n_eval_rounds: int = 2
    """Rounds of ``num_envs`` episodes that estimate μ(π^(i))."""
    reward_scale: float = 1.0
    """c: the RL step's reward is c·ŵᵀΦ, ŵ a unit vector."""
    epsilon: float = 0.0
    """ε: stop once t^(i) ≤ ε (Abbeel & Ng's termination)."""
    agent: InnerAgent = "reinforce"
    """The RL step's agent; its config is the field of that name (the other one is unused)."""
    reinforce: REINFORCEConfig = field(default_factory=lambda: REINFORCEConfig(lr=3e-4, beta=0.02))
    """The inner REINFORCE (its seed seeds sampling and the env)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """The inner PPO (its seed seeds sampling and the env)."""

    def __post_init__(self) -> None:
        check_fields(self)  # also: an unknown weight step or agent name is a ValueError
        for name in ("n_rl_updates", "n_eval_rounds"):
            check_range(self, name, low=1)
        check_range(self, "reward_scale", low=0, low_open=True)
        check_range(self, "epsilon", low=0)


# ---------------------------------------------------------------------------- feature expectations


def feature_expectations(
    features: FeatureMap, prompts: Sequence[str], completions: Sequence[str]
) -> np.ndarray:  # (K,)
    """μ̂ = (1/m)·Σ_i Φ(x_i, y_i), Φ = Σ_t γ^t φ(s_t, a_t): the mean discounted feature counts."""
    if not completions:
        raise ValueError("feature expectations need at least one completion")
    phi = check_features(features(prompts, completions), features.names, len(completions), "Φ")
    return phi.mean(0)


# ---------------------------------------------------------------------------- weight steps
# Each maps μ̂_E (K,) and μ^(0..n-1) (n, K) to (ŵ (K,) unit or 0, t): one picked by cfg.weight_step.


def project(mu_bar: np.ndarray, mu: np.ndarray, mu_expert: np.ndarray) -> np.ndarray:  # (K,)
    """Abbeel & Ng §3.1: μ̄ ← the orthogonal projection of μ̂_E onto the line through μ̄ and μ."""
    step = mu - mu_bar  # (K,)
    denom = float(step @ step)
    if denom == 0.0:  # μ = μ̄: the line is a point
        return mu_bar
    return mu_bar + float(step @ (mu_expert - mu_bar)) / denom * step


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else np.zeros_like(v)


def projection_step(mu_expert: np.ndarray, mus: np.ndarray) -> tuple[np.ndarray, float]:
    """w = μ̂_E - μ̄^(n-1), t = ‖w‖₂, μ̄ folded over the history by :func:`project`."""
    mu_bar = mus[0]
    for mu in mus[1:]:
        mu_bar = project(mu_bar, mu, mu_expert)
    w = mu_expert - mu_bar
    return _unit(w), float(np.linalg.norm(w))


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin_{x ≥ 0} ‖Ax - b‖₂, Lawson & Hanson's active-set algorithm (1974, ch. 23)."""
    m, n = a.shape
    tol = 10 * np.finfo(float).eps * max(m, n) * max(1.0, float(np.abs(a).sum(0).max()))
    x, free = np.zeros(n), np.zeros(n, dtype=bool)
    for _ in range(3 * n + 10):
        grad = a.T @ (b - a @ x)  # (n,) the dual vector
        if free.all() or grad[~free].max() <= tol:
            break
        free[int(np.argmax(np.where(free, -np.inf, grad)))] = True
        while True:
            z = np.zeros(n)
            z[free] = np.linalg.lstsq(a[:, free], b, rcond=None)[0]
            if (z[free] > tol).all():
                x = z
                break
            blocked = free & (z <= tol)
            alpha = float(np.min(x[blocked] / (x[blocked] - z[blocked])))
            x = x + alpha * (z - x)
            free &= x > tol
            x[~free] = 0.0
    return x


def max_margin_step(mu_expert: np.ndarray, mus: np.ndarray) -> tuple[np.ndarray, float]:
    """Abbeel & Ng Eq. 10-12 as least-distance programming: min ½‖v‖² s.t. vᵀ(μ̂_E - μ^(j)) ≥ 1,
    then ŵ = v/‖v‖, t = 1/‖v‖ (the distance from μ̂_E to the convex hull of the μ^(j)). Solved
    exactly through NNLS (Lawson & Hanson, ch. 23); μ̂_E inside the hull gives ŵ = 0, t = 0."""
    d = mu_expert[None, :] - mus  # (n, K) rows d_j, constraints vᵀd_j ≥ 1
    e = np.concatenate([d.T, np.ones((1, len(d)))])  # (K + 1, n)
    f = np.eye(e.shape[0])[-1]  # (K + 1,) = (0, ..., 0, 1)
    r = e @ nnls(e, f) - f  # (K + 1,)
    if abs(r[-1]) < 1e-12:  # infeasible: no v separates μ̂_E from the hull
        return np.zeros_like(mu_expert), 0.0
    v = -r[:-1] / r[-1]  # (K,)
    return _unit(v), 1.0 / float(np.linalg.norm(v))


def ng_russell_step(mu_expert: np.ndarray, mus: np.ndarray) -> tuple[np.ndarray, float]:
    """Ng & Russell §5's LP over variables (w, z): max Σ_j z_j s.t. z_j ≤ wᵀd_j, z_j ≤ 2wᵀd_j,
    -1 ≤ w_k ≤ 1 (d_j = μ̂_E - μ^(j)); t = min_j ŵᵀd_j. Needs scipy (its HiGHS LP solver)."""
    try:
        from scipy.optimize import linprog  # type: ignore[import-untyped,import-not-found,unused-ignore]  # optional, no stubs
    except ImportError as err:
        raise ImportError("weight_step='ng_russell' needs scipy: pip install scipy") from err
    d = mu_expert[None, :] - mus  # (n, K)
    n, k = d.shape
    a_ub = np.block([[-d, np.eye(n)], [-2 * d, np.eye(n)]])  # (2n, K + n)
    cost = np.concatenate([np.zeros(k), -np.ones(n)])
    bounds = [(-1.0, 1.0)] * k + [(None, None)] * n
    out = linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * n), bounds=bounds, method="highs")
    if out.status != 0:
        raise RuntimeError(f"the Ng & Russell LP failed: {out.message}")
    w = _unit(out.x[:k])
    return w, float(np.min(d @ w))


WEIGHT_STEPS = {
    "projection": projection_step,
    "max_margin": max_margin_step,
    "ng_russell": ng_russell_step,
}
INNER: dict[str, type[OnPolicyAgent]] = {"reinforce": REINFORCE, "ppo": PPO}


def demonstration_texts(
    lm: LanguageModel, data: Task | Sequence[tuple[str, str]] | Demonstrations
) -> tuple[list[str], list[str]]:
    """(prompts, completions) of a task's demonstrations, of texts, or of tokenised D (decoded)."""
    if isinstance(data, Demonstrations):
        prompts = lm.decode(data.prompt_ids.masked_fill(data.prompt_mask == 0, lm.pad_token_id))
        completions = lm.decode(data.labels.masked_fill(data.mask == 0, lm.pad_token_id))
        return prompts, completions
    pairs = data.demonstrations() if isinstance(data, Task) else list(data)
    if not pairs:
        raise ValueError("no demonstrations: pass at least one (prompt, completion) pair")
    return [p for p, _ in pairs], [c for _, c in pairs]


# ---------------------------------------------------------------------------- the agent


class IRL(Agent):
    """Apprenticeship learning: feature matching by an outer loop of weight steps around an inner
    RL agent (REINFORCE or PPO) whose score stage is :meth:`relabel`.

    ``IRL.load(dir, env, features, device="auto", **kwargs)`` resumes a saved run; the features
    are given again (not saved) and must give the saved μ̂_E.

    Args:
        policy: π^(0), trained in place.
        env: a NEXT_STEP-autoreset vector env (``gym.make_vec("TextGen-v0", num_envs=B, ...)``);
            its own reward is only logged ("reward").
        demonstrations: a ``Task`` (its expert's demonstrations), (prompt, completion) texts, or
            :class:`~textgym.agents.bc.Demonstrations`.
        features: the feature map φ (:mod:`textgym.features`).
        config: :class:`IRLConfig`.
        log_dir: one CSV row per outer iteration here, the inner agent's rows in ``log_dir/inner``.
        tensorboard, progress_bar: runtime settings (the inner agent shows no bar).
        **kwargs: ``ref`` of the inner agent.
    """

    config_class = IRLConfig

    def __init__(
        self,
        policy: LanguageModel,
        env: Any,
        demonstrations: Task | Sequence[tuple[str, str]] | Demonstrations,
        features: FeatureMap,
        *,
        config: IRLConfig = IRLConfig(),
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
        **kwargs: Any,
    ) -> None:
        agent_cls, cfg = INNER[config.agent], getattr(config, config.agent)
        runtime = self._inner_runtime(log_dir, tensorboard)
        inner = agent_cls(policy, env, config=cfg, score=self.relabel, **runtime, **kwargs)
        self._wire(inner, features, config, demonstration_texts(policy, demonstrations))
        self._setup_runtime(log_dir=log_dir, tensorboard=tensorboard, progress_bar=progress_bar)

    @staticmethod
    def _inner_runtime(log_dir: str | Path | None, tensorboard: bool) -> dict[str, Any]:
        inner_dir = None if log_dir is None else Path(log_dir) / "inner"
        return {"log_dir": inner_dir, "tensorboard": tensorboard, "progress_bar": False}

    def _wire(
        self, inner: OnPolicyAgent, features: FeatureMap, config: IRLConfig, demos: Any
    ) -> None:
        """Attach the IRL side to the inner agent (shared by ``__init__`` and ``load``)."""
        self.inner, self.features, self.config = inner, features, config
        self.policy, self.env, self.device = inner.policy, inner.env, inner.device
        self.prompts, self.completions = list(demos[0]), list(demos[1])
        self.mu_expert = feature_expectations(features, *demos)  # (K,) μ̂_E
        self.mus: list[np.ndarray] = []  # μ^(0), μ^(1), ...
        self.weights: list[np.ndarray] = []  # ŵ^(1), ŵ^(2), ...: ŵ^(i) from μ^(0..i-1)
        self.margins: list[float] = []  # t^(1), t^(2), ...

    @property
    def w(self) -> np.ndarray:  # (K,)
        """The current ŵ (the next RL step's; zeros before the first ``learn``)."""
        return self.weights[-1] if self.weights else np.zeros_like(self.mu_expert)

    # ------------------------------------------------------------------ the loop

    def relabel(self, rollout: Rollout) -> tuple[Rollout, dict[str, float]]:
        """The score stage: the env's rewards -> R = c·ŵᵀφ (dense for token-level features)."""
        w = torch.as_tensor(self.config.reward_scale * self.w, device=self.device)  # (K,) float64
        mask = rollout.completion_mask
        if getattr(self.features, "token_level", False):
            steps = self.features.steps(rollout.completion_ids, mask).double()  # type: ignore[attr-defined]  # token_level promises steps()
            t = torch.arange(mask.shape[1], device=self.device)
            gamma = float(self.features.gamma)  # type: ignore[attr-defined]  # as above
            rewards = (steps @ w) * gamma**t * mask  # (B, T) r_t = c·γ^t·ŵᵀφ_t
        else:
            phi = self.features(rollout.prompts, rollout.texts)
            phi = check_features(phi, self.features.names, len(rollout), "Φ")  # (B, K)
            ret = torch.as_tensor(phi, device=self.device) @ w  # (B,)
            last = (rollout.lengths - 1).clamp(min=0)  # (B,)
            rewards = torch.zeros_like(mask, dtype=torch.float64)  # (B, T)
            rewards[torch.arange(len(rollout), device=self.device), last] = ret
        rewards = rewards.float()
        return replace(rollout, token_rewards=rewards), {"irl_return": float(rewards.sum(1).mean())}

    def policy_expectations(self) -> np.ndarray:  # (K,)
        """μ(π) of the current policy: ``n_eval_rounds`` rounds sampled with the inner agent's
        generator and env (the env is seeded on the very first round)."""
        cfg, gen, pairs = self.inner.config, self.inner.generator, []
        for r in range(self.config.n_eval_rounds):
            seed = cfg.seed if r == 0 and not self.mus else None
            out = collect(self.policy, self.env, sampling=cfg.sampling, generator=gen, seed=seed)
            pairs += list(zip(out.prompts, out.texts, strict=True))
        return feature_expectations(self.features, *demonstration_texts(self.policy, pairs))

    def _add_policy(self) -> np.ndarray:
        """Estimate μ of the current policy, append it, and take the weight step."""
        mu = self.policy_expectations()
        self.mus.append(mu)
        w, t = WEIGHT_STEPS[self.config.weight_step](self.mu_expert, np.stack(self.mus))
        self.weights.append(w)
        self.margins.append(t)
        return mu

    def learn(self, n_outer: int) -> list[dict[str, float]]:
        """Run up to ``n_outer`` outer iterations (fewer once t ≤ ε); one row each.

        Row: ``margin`` t^(i+1) (after adding π^(i)), ``distance`` ‖μ̂_E - μ^(i)‖₂, the env's
        mean ``reward`` and the mean ``irl_return`` over the RL step's rounds, ŵ^(i) as
        ``w/<feature>`` (K ≤ 32), ``time`` in seconds.
        """
        rows: list[dict[str, float]] = []
        if not self.mus:
            self._add_policy()  # μ^(0), w^(1)
        for _ in progress(range(n_outer), "IRL", disable=not self.progress_bar):
            if self.margins[-1] <= self.config.epsilon:
                break
            start, w = time.perf_counter(), self.w
            inner_rows = self.inner.learn(self.config.n_rl_updates)
            mu = self._add_policy()
            self.step += 1
            row = {
                "iteration": float(self.step),
                "margin": self.margins[-1],
                "distance": float(np.linalg.norm(self.mu_expert - mu)),
                "reward": float(np.mean([r["reward"] for r in inner_rows])),
                "irl_return": float(np.mean([r["irl_return"] for r in inner_rows])),
                "time": time.perf_counter() - start,
            }
            if len(w) <= SHOWN_WEIGHTS:
                row |= {f"w/{n}": float(v) for n, v in zip(self.features.names, w, strict=True)}
            rows.append(row)
            self._record(row)
        return rows

    def reward(self, iteration: int | None = None, name: str = "irl") -> LinearReward:
        """The recovered reward c·wᵀΦ as a textgym reward: ``gym.make(..., reward=agent.reward())``.

        Args:
            iteration: k uses ŵ^(k), the weights of the k-th RL step (1-based). None (default)
                uses their mean over the RL steps taken (ŵ^(1) before any): the policy is trained
                on warm, and a policy gradient is linear in R, so that is the reward the current
                policy has been trained on in all. (A single late ŵ^(k) points from the policies
                found so far to μ̂_E, a correction rather than the expert's reward.)
            name: the reward's name.
        """
        if not self.weights:
            raise ValueError("no reward recovered yet: call learn() first")
        if iteration is None:
            w = np.mean(self.weights[: max(1, self.step)], axis=0)  # (K,)
        elif 1 <= iteration <= len(self.weights):
            w = self.weights[iteration - 1].copy()
        else:
            raise ValueError(f"iteration must be in [1, {len(self.weights)}], got {iteration}")
        return LinearReward(self.features, w, scale=self.config.reward_scale, name=name)

    # ------------------------------------------------------------------ checkpoints

    def _write_parts(self, path: Path) -> list[str]:
        self.inner.save(path / "inner")  # policy, reference, optimizer, RNGs of sampler and env
        return ["inner"]

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "history": self.history,
            "mu_expert": self.mu_expert,
            "mus": list(self.mus),
            "weights": list(self.weights),
            "margins": list(self.margins),
            "demonstrations": {"prompts": self.prompts, "completions": self.completions},
        }

    @classmethod
    def _restore(
        cls,
        path: Path,
        config: IRLConfig,
        state: dict[str, Any],
        env: Any,
        features: FeatureMap,
        *,
        device: str = "auto",
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
        **kwargs: Any,
    ) -> IRL:
        agent, runtime = cls.__new__(cls), cls._inner_runtime(log_dir, tensorboard)
        inner = INNER[config.agent].load(
            path / "inner", env, device=device, score=agent.relabel, **runtime, **kwargs
        )
        demos = state["demonstrations"]
        agent._wire(inner, features, config, (demos["prompts"], demos["completions"]))
        if not np.allclose(agent.mu_expert, state["mu_expert"], rtol=1e-6, atol=1e-9):
            raise ValueError(
                f"these features give μ̂_E = {agent.mu_expert[:6]}... on the saved demonstrations, "
                f"the checkpoint {state['mu_expert'][:6]}...: pass the run's feature map"
            )
        agent._setup_runtime(log_dir=log_dir, tensorboard=tensorboard, progress_bar=progress_bar)
        agent.mu_expert = state["mu_expert"]
        agent.mus, agent.weights = list(state["mus"]), list(state["weights"])
        agent.margins, agent.step, agent.history = state["margins"], state["step"], state["history"]
        return agent


# ---------------------------------------------------------------------------- recovery check


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ: Pearson's r of the ranks, ties share their mean rank (NaN: a constant side)."""

    def ranks(v: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        first = np.cumsum(counts) - counts  # rank of each distinct value's first copy
        return (first + (counts - 1) / 2.0)[inverse]

    rx, ry = ranks(np.asarray(x, dtype=float)), ranks(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def rescaled(reward: Reward, k: float) -> Reward:
    """k·r as a reward of the same name."""

    @batched
    def scaled(prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return k * reward(prompts, completions)

    return make(scaled, name=reward.name)


def recovery_check(
    recovered: Reward,
    true_reward: Reward,
    policy: LanguageModel,
    held_out: Sequence[tuple[str, str]],
    *,
    env_kwargs: dict[str, Any],
    n_updates: int = 20,
    num_envs: int = 32,
    rl_config: REINFORCEConfig | None = None,
    eval_episodes: int = 64,
    eval_split: str = "validation",
    match_scale: bool = True,
) -> dict[str, float]:
    """How well a recovered reward stands in for the true one: ``spearman`` (ρ of the two on the
    ``held_out`` (prompt, completion) texts), ``return_ratio`` (true return of a copy of ``policy``
    trained by REINFORCE (``rl_config``; default lr 3e-4, β 0.02) for ``n_updates`` on
    ``recovered`` over that of a copy trained on ``true_reward``, same budget and seed),
    ``gain_ratio`` (the same for the gains over the start) and the three true returns
    (``return_start``, ``return_recovered``, ``return_true``: :func:`evaluate_policy` on
    ``eval_episodes`` episodes of ``eval_split``, seeded with ``rl_config.seed + 1``).

    Args:
        match_scale: train on the recovered reward rescaled to the true one's standard deviation
            on ``held_out`` (a recovered reward is only known up to scale; with REINFORCE the
            scale is the step size).
        env_kwargs: ``TextGen-v0`` arguments besides ``model``, ``reward``, ``num_envs`` (task,
            max_new_tokens, ...); ``split`` is replaced by ``eval_split`` for evaluation.
    """
    rl_config = rl_config or REINFORCEConfig(lr=3e-4, beta=0.02)
    prompts, completions = [p for p, _ in held_out], [c for _, c in held_out]
    r_hat, r_true = recovered(prompts, completions), true_reward(prompts, completions)
    rho = spearman(r_hat, r_true)
    if match_scale and r_hat.std() > 0:  # IRL recovers R up to scale: train at the true one's
        recovered = rescaled(recovered, float(r_true.std() / r_hat.std()))
    held = {**env_kwargs, "split": eval_split}
    judge = gym.make_vec(
        "TextGen-v0", num_envs=eval_episodes, model=policy, reward=true_reward, **held
    )
    seed = rl_config.seed + 1
    returns = {"start": evaluate_policy(policy, judge, seed=seed)["reward"]}
    for key, reward in (("recovered", recovered), ("true", true_reward)):
        student = policy.wrap(copy.deepcopy(policy.model))
        env = gym.make_vec(
            "TextGen-v0", num_envs=num_envs, model=student, reward=reward, **env_kwargs
        )
        REINFORCE(student, env, config=rl_config, progress_bar=False).learn(n_updates)
        returns[key] = evaluate_policy(student, judge, seed=seed)["reward"]
    gain = returns["true"] - returns["start"]
    return {
        "spearman": rho,
        "return_ratio": returns["recovered"] / returns["true"] if returns["true"] else float("nan"),
        "gain_ratio": (returns["recovered"] - returns["start"]) / gain if gain else float("nan"),
        **{f"return_{k}": v for k, v in returns.items()},
    }
