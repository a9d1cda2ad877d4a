"""On-policy rollouts through the vector env, and the estimators every RL agent shares.

One place for: batched collection with the policy's KV cache (:func:`collect`), the log-probs of the
distribution really sampled from (:func:`evaluate`), GAE (:func:`gae`), whitening and masked
moments, the k1/k3 KL estimators and KL-shaped rewards. Agents import these; none re-implements
them.

Decisions:
- The behaviour distribution is ``log_softmax(filter_logits(logits, temperature, top_k, top_p,
  mask=action_mask))``: decoding filters and the env's ``info["action_mask"]`` act *inside* the
  policy, so the recorded log-probs, PPO's ratio ρ_t and the KL are those of what was sampled.
- The support each token was sampled from (the env's mask, narrowed by top-k/top-p) is stored in
  ``Rollout.action_masks``; recomputed log-probs (:func:`evaluate`) and π_ref renormalise over that
  same support at the same temperature. So ρ_t = 1 at θ = θ_old, and a token that drops out of
  the *new* top-k never makes log π_θ(a_t) = -inf (the ratio is π_θ(a|S_t) / π_θold(a|S_t), as
  in NLPO's masked policies, Ramamurthy et al. 2023, arXiv:2210.01241); likewise KL = 0 while
  π_θ = π_ref, and never infinite.
- One call of :func:`collect` is one round: reset every sub-env, step until every sub-env's
  episode has ended. Gymnasium's NEXT_STEP autoreset makes the step after a sub-env's end a reset
  that ignores the action; those steps (and all later ones of that sub-env) are masked out.
- Completions are right-padded ``(B, T)``, T = the longest episode of the round; prompts are the
  env's right-padded observations re-packed left-padded ``(B, P)`` for the LM.

Shapes: B batch, P prompt length, T completion length, L = P + T, V vocab, H hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from textgym.config import check_fields, check_range
from textgym.decoding import filter_logits, sample
from textgym.lm import LanguageModel

__all__ = [
    "Rollout",
    "Sampling",
    "collect",
    "evaluate",
    "evaluate_policy",
    "gae",
    "kl_k1",
    "kl_k3",
    "kl_shaped_rewards",
    "masked_mean",
    "masked_var",
    "whiten",
]

Reduce = Callable[[Tensor], Tensor]
"""Sums a tensor over data-parallel processes (identity in one process)."""


class LogitsModel(Protocol):
    """Anything with ``LanguageModel.forward``'s signature: a reference model, or a peft policy
    with its adapters disabled."""

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class Sampling:
    """How the behaviour policy turns logits into a distribution (see ``textgym.decoding``)."""

    temperature: float = 1.0
    """Logits are divided by it before the softmax."""
    top_k: int | None = None
    """Keep the k most likely tokens (None: all)."""
    top_p: float | None = None
    """Keep the smallest nucleus of probability >= top_p (None: all)."""

    def __post_init__(self) -> None:
        check_fields(self)
        check_range(self, "temperature", low=0, low_open=True)
        check_range(self, "top_k", low=1)  # None passes: all tokens
        check_range(self, "top_p", low=0, high=1, low_open=True)

    def logprobs(self, logits: Tensor, mask: Tensor | None = None) -> Tensor:
        """log π(·|s): ``log_softmax(filter_logits(logits))`` over the last dim, float32, -inf off
        the support. ``mask`` (bool, same shape or broadcastable) marks allowed tokens."""
        filtered = filter_logits(
            logits.float(),
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            mask=mask,
        )
        return torch.log_softmax(filtered, dim=-1)

    @property
    def truncates(self) -> bool:
        """Whether top-k / top-p cut the support (then collect() stores it per step)."""
        return self.top_k is not None or (self.top_p is not None and self.top_p < 1)


@dataclass
class Rollout:
    """One round of episodes, one per sub-env. Rows are episodes; columns are steps."""

    prompt_ids: Tensor  # (B, P) int64, left-padded
    prompt_mask: Tensor  # (B, P) int64, 1 = prompt token
    completion_ids: Tensor  # (B, T) int64, right-padded with the pad id
    completion_mask: Tensor  # (B, T) float32, 1 = an action a_t of the episode
    logprobs: Tensor  # (B, T) float32, behaviour log π(a_t|s_t) as sampled; 0 where masked
    rewards: Tensor  # (B,) float32, the episode's return from the env (sum of its step rewards)
    token_rewards: Tensor  # (B, T) float32, the env's reward at each step (0 where masked)
    terminated: Tensor  # (B,) bool, the episode ended at EOS / a stop sequence
    truncated: Tensor  # (B,) bool, the episode hit max_new_tokens
    texts: list[str]  # B decoded completions, from the env's info at episode end
    prompts: list[str]  # B prompt texts
    prompt_indices: np.ndarray  # (B,) int, the task's prompt index of each episode
    ref_logprobs: Tensor | None = None  # (B, T) float32, log π_ref(a_t|s_t); 0 where masked
    values: Tensor | None = None  # (B, T) float32, V(s_t) from value_fn; 0 where masked
    bootstrap_values: Tensor | None = None  # (B,) float32, V(s_T) after the last action
    action_masks: Tensor | None = None  # (B, T, V) bool, the support a_t was sampled from

    @property
    def lengths(self) -> Tensor:  # (B,)
        return self.completion_mask.sum(-1).long()

    @property
    def input_ids(self) -> Tensor:  # (B, L)
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:  # (B, L)
        return torch.cat([self.prompt_mask, self.completion_mask.long()], dim=1)

    def sequence_kl(self) -> Tensor:  # (B,)
        """Σ_t k1 per episode: Σ_t log π_θ(a_t|s_t) - log π_ref(a_t|s_t) over its actions, the
        sequence-level KL estimate every report and study uses (needs ``collect(..., ref=)``)."""
        if self.ref_logprobs is None:
            raise ValueError("this rollout has no reference log-probs: collect it with ref=...")
        return (kl_k1(self.logprobs, self.ref_logprobs) * self.completion_mask).sum(-1)

    def __len__(self) -> int:
        return int(self.prompt_ids.shape[0])

    def __getitem__(self, rows: Tensor | slice | Sequence[int]) -> Rollout:
        """The same rollout restricted to some rows (minibatches, data-parallel shards)."""
        index = rows if isinstance(rows, (Tensor, slice)) else torch.as_tensor(rows)
        picked: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                picked[f.name] = value[index]
            elif isinstance(value, np.ndarray):
                picked[f.name] = value[index.cpu().numpy() if isinstance(index, Tensor) else index]
            elif isinstance(value, list):
                keep = range(len(value))[index] if isinstance(index, slice) else index.tolist()
                picked[f.name] = [value[i] for i in keep]
            else:
                picked[f.name] = value
        return replace(self, **picked)


# ---------------------------------------------------------------------------- collection


def _left_pad(ids: Tensor, mask: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Re-pack right-padded rows (valid prefix first) as left-padded ``(B, P)``, P = longest row."""
    n = mask.long().sum(-1)  # (B,)
    width = int(n.max())
    src = torch.arange(width, device=ids.device)[None, :] - (width - n)[:, None]  # (B, P)
    valid = src >= 0
    out = ids.gather(1, src.clamp(min=0)).masked_fill(~valid, pad_id)  # (B, P)
    return out, valid.long()


def _info_column(info: dict[str, Any], key: str, rows: np.ndarray) -> list[Any]:
    """Values of a vector-env info key at ``rows`` (None where the sub-env did not report it)."""
    if key not in info:
        return [None] * len(rows)
    present = info.get(f"_{key}", np.ones(len(info[key]), dtype=bool))
    return [info[key][i] if present[i] else None for i in rows]


def _action_mask(info: dict[str, Any], device: torch.device) -> Tensor | None:
    mask = info.get("action_mask")
    return None if mask is None else torch.as_tensor(np.asarray(mask), device=device).bool()


def _policy_step(
    policy: LanguageModel, input_ids: Tensor, attention_mask: Tensor, cache: Any, hidden: bool
) -> tuple[Tensor, Tensor | None, Any]:
    """Next-token logits ``(B, V)`` float32, the last hidden state ``(B, H)`` if asked, the cache.

    The ids are the env's and our own samples, so step()'s per-call validation is skipped.
    """
    if not hidden:
        logits, cache = policy.step_unchecked(input_ids, attention_mask, cache)
        return logits, None, cache
    return policy.step_with_hidden(input_ids, attention_mask, cache)


@dataclass
class _Steps:
    """What the collection loop records, one entry per step (stacked into a Rollout at the end)."""

    tokens: list[Tensor] = field(default_factory=list)  # (B,) each
    logps: list[Tensor] = field(default_factory=list)  # (B,)
    alive: list[Tensor] = field(default_factory=list)  # (B,) bool
    rewards: list[Tensor] = field(default_factory=list)  # (B,)
    masks: list[Tensor] = field(default_factory=list)  # (B, V) bool
    values: list[Tensor] = field(default_factory=list)  # (B,), one more than the steps


@torch.no_grad()
def collect(
    policy: LanguageModel,
    vec_env: Any,
    *,
    sampling: Sampling = Sampling(),
    generator: torch.Generator,
    ref: LogitsModel | None = None,
    value_fn: Callable[[Tensor], Tensor] | None = None,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> Rollout:
    """Run one episode in every sub-env of a NEXT_STEP-autoreset vector env.

    The policy's KV cache lives beside the env: the prompt is fed once, then only each new token.
    V(s_t) is read off the policy's own hidden state at each step; after the loop one batched
    forward pass over prompt + completion scores the reference.

    Args:
        policy: the behaviour policy π_θ.
        vec_env: a gymnasium ``VectorEnv`` over ``TextGen`` envs (right-padded dict observations).
        sampling: temperature / top-k / top-p applied inside the behaviour distribution.
        generator: the torch generator every sample is drawn with (on the policy's device).
        ref: the reference π_ref; when given, ``ref_logprobs`` is filled.
        value_fn: a value head on the policy trunk, ``hidden (..., H) -> (...)``; when given,
            ``values`` and ``bootstrap_values`` are filled.
        seed, options: passed to ``vec_env.reset`` (``options={"prompt_index": ...}`` pins prompts).

    Returns:
        The :class:`Rollout`, tensors on the policy's device.
    """
    device = policy.device
    obs, info = vec_env.reset(seed=seed, options=options)
    prompt_ids, prompt_mask = _left_pad(
        torch.as_tensor(obs["input_ids"], device=device),
        torch.as_tensor(obs["attention_mask"], device=device),
        policy.pad_token_id,
    )  # (B, P)
    B, every = prompt_ids.shape[0], np.arange(prompt_ids.shape[0])
    prompts = [str(p) for p in _info_column(info, "prompt", every)]
    prompt_indices = np.asarray(_info_column(info, "prompt_index", every))
    texts: list[str | None] = [None] * B
    active = torch.ones(B, dtype=torch.bool, device=device)
    terminated, truncated = torch.zeros_like(active), torch.zeros_like(active)
    steps, attention = _Steps(), prompt_mask
    logits, hidden, cache = _policy_step(
        policy, prompt_ids, prompt_mask, None, value_fn is not None
    )
    while True:
        if value_fn is not None and hidden is not None:
            steps.values.append(value_fn(hidden))  # V(s_t), s_t = prompt + a_<t
        allowed = _action_mask(info, device)  # (B, V) or None
        logp = sampling.logprobs(logits, allowed)  # (B, V)
        action = sample(logp, generator=generator)  # (B,)
        # A finished sub-env's action is ignored by its autoreset: send pad, record nothing.
        action = torch.where(active, action, policy.pad_token_id)
        steps.tokens.append(action)
        steps.logps.append(torch.where(active, logp.gather(1, action[:, None]).squeeze(1), 0.0))
        steps.alive.append(active.clone())
        if sampling.truncates:
            steps.masks.append(torch.isfinite(logp))  # (B, V) the env's mask narrowed by top-k/p
        elif allowed is not None:
            steps.masks.append(allowed)
        obs, reward, term, trunc, info = vec_env.step(action.cpu().numpy())
        steps.rewards.append(torch.as_tensor(reward, dtype=torch.float32, device=device) * active)
        ended = torch.as_tensor(np.logical_or(term, trunc), device=device) & active  # (B,)
        if ended.any():
            rows = ended.nonzero().squeeze(1).cpu().numpy()
            for i, text in zip(rows, _info_column(info, "text", rows), strict=True):
                texts[i] = text
            terminated |= torch.as_tensor(term, device=device) & active
            truncated |= torch.as_tensor(trunc, device=device) & active
            active &= ~ended
        if not active.any() and value_fn is None:
            break
        attention = torch.cat([attention, attention.new_ones(B, 1)], dim=1)  # (B, past + 1)
        logits, hidden, cache = _policy_step(
            policy, action[:, None], attention, cache, value_fn is not None
        )
        if not active.any():  # the extra step above gave V(s_T) of the rows that just ended
            assert value_fn is not None
            assert hidden is not None
            steps.values.append(value_fn(hidden))
            break
    return _finish(
        policy,
        steps,
        texts,
        prompt_ids,
        prompt_mask,
        terminated,
        truncated,
        prompts,
        prompt_indices,
        ref,
        sampling.temperature,
    )


def _finish(
    policy: LanguageModel,
    steps: _Steps,
    texts: list[str | None],
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    prompts: list[str],
    prompt_indices: np.ndarray,
    ref: LogitsModel | None,
    temperature: float,
) -> Rollout:
    """Stack the recorded steps into a Rollout; score π_ref in one batched forward pass."""
    completion_ids = torch.stack(steps.tokens, dim=1)  # (B, T)
    completion_mask = torch.stack(steps.alive, dim=1).float()  # (B, T)
    if any(t is None for t in texts):
        decoded = policy.decode(
            completion_ids.masked_fill(completion_mask == 0, policy.pad_token_id)
        )
        texts = [d if t is None else t for t, d in zip(texts, decoded, strict=True)]
    rewards = torch.stack(steps.rewards, dim=1)  # (B, T)
    out = Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        logprobs=torch.stack(steps.logps, dim=1),  # (B, T)
        rewards=rewards.sum(1),  # (B,)
        token_rewards=rewards,
        terminated=terminated,
        truncated=truncated,
        texts=[str(t) for t in texts],
        prompts=prompts,
        prompt_indices=prompt_indices,
        action_masks=torch.stack(steps.masks, dim=1) if steps.masks else None,  # (B, T, V)
    )
    if ref is not None:
        ref_logits = ref.forward(out.input_ids, out.attention_mask)  # (B, L, V)
        out.ref_logprobs = evaluate_logits(ref_logits, out, temperature, entropy=False)[0]
    if steps.values:
        values = torch.stack(steps.values, dim=1).float()  # (B, T + 1): V(s_0) .. V(s_T)
        out.values = values[:, :-1] * completion_mask  # (B, T)
        out.bootstrap_values = values.gather(1, out.lengths[:, None]).squeeze(1)  # (B,) V(s_T)
    return out


@torch.no_grad()
def evaluate_policy(
    policy: LanguageModel,
    vec_env: Any,
    *,
    ref: LogitsModel | None = None,
    sampling: Sampling = Sampling(),
    seed: int = 0,
    rounds: int = 1,
) -> dict[str, float]:
    """Mean episode reward (and KL to ``ref``) over ``rounds`` fresh rounds with fixed seeds.

    The env is reset with ``seed`` and the sampler seeded with it too, so two policies (before and
    after training) are scored on the same prompts. The KL is Σ_t k1 per episode, averaged.

    Returns:
        ``{"reward": mean, "reward_std": std over episodes, "kl": mean (NaN without ref),
        "length": mean completion tokens}``.
    """
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    rewards, kls, lengths = [], [], []
    for r in range(rounds):
        out = collect(
            policy,
            vec_env,
            sampling=sampling,
            generator=generator,
            ref=ref,
            seed=seed if r == 0 else None,
        )
        rewards.append(out.rewards)
        lengths.append(out.completion_mask.sum(-1))
        if out.ref_logprobs is not None:
            kls.append(out.sequence_kl())
    reward = torch.cat(rewards)
    return {
        "reward": float(reward.mean()),
        "reward_std": float(reward.std()) if len(reward) > 1 else 0.0,
        "kl": float(torch.cat(kls).mean()) if kls else float("nan"),
        "length": float(torch.cat(lengths).mean()),
    }


def evaluate_logits(
    logits: Tensor, rollout: Rollout, temperature: float = 1.0, entropy: bool = True
) -> tuple[Tensor, Tensor | None]:
    """log π(a_t|s_t) and the entropy of π(·|s_t) from full-sequence logits ``(B, L, V)``.

    π is ``softmax(logits / temperature)`` renormalised over ``rollout.action_masks`` (the support
    each token was sampled from), i.e. the behaviour distribution when the logits are θ_old's.

    Returns:
        ``(logprobs, entropy)``, both ``(B, T)`` float32, 0 where ``completion_mask`` is 0;
        entropy is None when not asked for (it costs a pass over ``(B, T, V)``).
    """
    P, T = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    logp_all = Sampling(temperature).logprobs(logits[:, P - 1 : P - 1 + T], rollout.action_masks)
    mask = rollout.completion_mask
    logp = logp_all.gather(-1, rollout.completion_ids[..., None]).squeeze(-1)  # (B, T)
    # where, not *: a masked step may hold a token outside the support (logp = -inf): 0 * inf = nan
    logp = torch.where(mask > 0, logp, 0.0)
    if not entropy:
        return logp, None
    probs = logp_all.exp()  # (B, T, V)
    ent = -(probs * logp_all.masked_fill(probs == 0, 0.0)).sum(-1) * mask  # (B, T)
    return logp, ent


def evaluate(
    policy: LanguageModel,
    rollout: Rollout,
    temperature: float = 1.0,
    value_head: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Recompute log π_θ(a_t|s_t) (with gradients), the entropy, and V(s_t) in one forward pass.

    Args:
        policy: π_θ.
        rollout: the episodes to score (its ``action_masks`` give each step's support).
        temperature: the temperature the rollout was sampled at.
        value_head: ``hidden (B, L, H) -> (B, L)``; None skips values.

    Returns:
        ``(logprobs (B, T), entropy (B, T), values (B, T) or None)``, 0 where masked.
    """
    ids, mask = rollout.input_ids, rollout.attention_mask
    values = None
    if value_head is None:
        logits = policy.forward(ids, mask)  # (B, L, V)
    else:
        logits, hidden = policy.forward(
            ids, mask, output_hidden_states=True
        )  # (B, L, V), (B, L, H)
        P, T = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
        # s_t is the prefix ending at position P - 1 + t (the token before a_t).
        values = value_head(hidden[:, P - 1 : P - 1 + T]).float() * rollout.completion_mask
    logp, entropy = evaluate_logits(logits, rollout, temperature)
    assert entropy is not None
    return logp, entropy, values


# ---------------------------------------------------------------------------- estimators


def masked_mean(
    x: Tensor, mask: Tensor, dim: int | None = None, reduce: Reduce | None = None
) -> Tensor:
    """Mean of ``x`` where ``mask`` is 1 (over ``dim``, or all); ``reduce`` sums over processes."""
    total = (x * mask).sum() if dim is None else (x * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    if reduce is not None:
        total, count = reduce(total), reduce(count)
    return total / count.clamp(min=1)


def masked_var(
    x: Tensor, mask: Tensor, unbiased: bool = True, reduce: Reduce | None = None
) -> Tensor:
    """Variance of ``x`` over the positions where ``mask`` is 1 (Bessel-corrected by default)."""
    mean = masked_mean(x, mask, reduce=reduce)
    var = masked_mean((x - mean) ** 2, mask, reduce=reduce)
    if unbiased:
        count = mask.sum() if reduce is None else reduce(mask.sum())
        var = var * count / (count - 1).clamp(min=1)
    return var


def whiten(
    x: Tensor,
    mask: Tensor | None = None,
    shift_mean: bool = True,
    reduce: Reduce | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """(x - mean) / std over the masked entries; masked-out entries come back as 0.

    ``shift_mean=False`` only rescales (keeps the sign of rewards). ``reduce`` makes the moments
    global across data-parallel processes, so a sharded batch whitens like the whole batch.
    """
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    mean = masked_mean(x, m, reduce=reduce)
    var = masked_var(x, m, reduce=reduce)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def kl_k1(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k1 = log π_θ(a|s) - log π_ref(a|s): unbiased for KL(π_θ‖π_ref) under a ~ π_θ, can be < 0.

    Schulman, "Approximating KL divergence" (2020). Elementwise, any shape.
    """
    return logp - logp_ref


def kl_k3(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k3 = (r - 1) - log r with r = π_ref/π_θ: unbiased under a ~ π_θ, always >= 0, lower variance.

    Schulman (2020). Elementwise, any shape.
    """
    log_ratio = logp_ref - logp
    return torch.expm1(log_ratio) - log_ratio  # expm1: exact near r = 1, where k3 ~ (log r)^2 / 2


def kl_shaped_rewards(
    score: Tensor, logp: Tensor, logp_ref: Tensor, mask: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """r_t = r(x, y)·1[t = T] - β·(log π_θ(a_t|s_t) - log π_ref(a_t|s_t)) (Ziegler 2019, Eq. 2).

    Args:
        score: ``(B,)`` sequence rewards, paid at each row's last valid step; or ``(B, T)`` dense
            rewards, added per step.
        logp: ``(B, T)`` behaviour log-probs log π_θ(a_t|s_t).
        logp_ref: ``(B, T)`` reference log-probs.
        mask: ``(B, T)`` 1 = a step of the episode.
        beta: β >= 0.

    Returns:
        ``(rewards, kl)``, both ``(B, T)``: the shaped rewards, and the per-token k1 KL that entered
        them (log this one, so that the logged KL is the penalised one).
    """
    kl = kl_k1(logp, logp_ref) * mask  # (B, T)
    if score.ndim == 1:
        last = (mask.sum(-1).long() - 1).clamp(min=0)  # (B,)
        paid = torch.zeros_like(kl).scatter(1, last[:, None], score[:, None].to(kl.dtype))
    else:
        paid = score.to(kl.dtype) * mask
    return paid - beta * kl, kl


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float,
    lam: float,
    bootstrap_value: Tensor | None = None,
    terminated: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438, Eq. 16).

    δ_t = r_t + γ·V(s_{t+1}) - V(s_t),  A_t = Σ_l (γλ)^l δ_{t+l}. After a row's last step
    V(s_{t+1}) is ``bootstrap_value`` when the episode was truncated and 0 when it terminated
    (or when no bootstrap value is given).

    Args:
        rewards: ``(B, T)`` r_t.
        values: ``(B, T)`` V(s_t).
        mask: ``(B, T)`` 1 = a step of the episode; each row's steps are a prefix.
        gamma, lam: γ and λ.
        bootstrap_value: ``(B,)`` V(s_T) after each row's last action.
        terminated: ``(B,)`` bool; rows that ended at EOS get no bootstrap. None = all truncated.

    Returns:
        ``(advantages, returns)``, both ``(B, T)``, returns = A + V, 0 where masked.
    """
    B, T = rewards.shape
    end = torch.zeros(B, dtype=values.dtype, device=values.device)
    if bootstrap_value is not None:
        end = bootstrap_value.to(values.dtype)
        if terminated is not None:
            end = torch.where(terminated.bool(), 0.0, end)
    last = mask.sum(-1).long() - 1  # (B,)
    is_last = torch.arange(T, device=values.device)[None, :] == last[:, None]  # (B, T)
    next_values = torch.cat([values[:, 1:], values.new_zeros(B, 1)], dim=1)  # (B, T)
    next_values = torch.where(is_last, end[:, None], next_values * mask)
    deltas = (rewards + gamma * next_values - values) * mask  # (B, T)
    advantages = torch.zeros_like(deltas)
    running = deltas.new_zeros(B)
    for t in reversed(range(T)):
        running = (deltas[:, t] + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask
