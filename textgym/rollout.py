"""On-policy rollouts through the vector env: collection and the log-probs of what was sampled.

One place for: batched collection with the policy's KV cache (:func:`collect`) and the log-probs of
the distribution really sampled from (:func:`evaluate`). The estimators on rollouts (GAE,
whitening and masked moments, the k1/k3 KL estimators, KL-shaped rewards) live in
:mod:`textgym.estimators` and are re-exported here; agents import these, none re-implements them.

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
  that ignores the action; those steps (and all later ones of that sub-env) are masked out. The
  loop itself is :mod:`textgym.collection`; rows whose episode ended leave the policy's forward
  passes (compaction, ``compact=True``) without changing a bit of the rollout (fp32 on CPU).
- Completions are right-padded ``(B, T)``, T = the longest episode of the round; prompts are the
  env's right-padded observations re-packed left-padded ``(B, P)`` for the LM.
- Multi-turn episodes (``docs/multiturn.md``): a completion is the whole transcript after the
  prompt, the policy's tokens and the environment's in order. ``completion_mask`` marks the
  policy's tokens (the actions: every loss, KL, entropy, value target and advantage is taken over
  them), ``env_mask`` the environment's (attended in every forward pass, fed to the KV cache
  during collection without being sampled, never an action). ``attention_mask`` is the union.
  Single-turn rollouts have ``env_mask=None`` and are what they were, bit for bit.

Shapes: B batch, P prompt length, T completion length, L = P + T, V vocab, H hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from textgym.collection import Episodes, interleave, run_episodes
from textgym.config import check_fields, check_range
from textgym.decoding import filter_logits
from textgym.estimators import (
    gae,
    kl_k1,
    kl_k3,
    kl_shaped_rewards,
    masked_mean,
    masked_var,
    whiten,
)
from textgym.lm import LanguageModel
from textgym.token_logprobs import checked_head

__all__ = [
    "Rollout",
    "Sampling",
    "collect",
    "completion_logprobs",
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
    env_mask: Tensor | None = None  # (B, T) float32, 1 = an environment token (multi-turn)

    @property
    def lengths(self) -> Tensor:  # (B,)
        """The actions of each episode (multi-turn: its policy tokens)."""
        return self.completion_mask.sum(-1).long()

    @property
    def input_ids(self) -> Tensor:  # (B, L)
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:  # (B, L)
        """1 on the prompt and the transcript (the policy's and the environment's tokens)."""
        completion = (
            self.completion_mask if self.env_mask is None else self.completion_mask + self.env_mask
        )
        return torch.cat([self.prompt_mask, completion.long()], dim=1)

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
    compact: bool = True,
) -> Rollout:
    """Run one episode in every sub-env of a NEXT_STEP-autoreset vector env.

    The policy's KV cache lives beside the env: the prompt is fed once, then only each new token
    (the loop: :func:`textgym.collection.run_episodes`). V(s_t) is read off the policy's own
    hidden state at each step; after the loop one batched forward pass over prompt + completion
    scores the reference.

    Args:
        policy: the behaviour policy π_θ.
        vec_env: a gymnasium ``VectorEnv`` over ``TextGen`` envs (right-padded dict observations).
        sampling: temperature / top-k / top-p applied inside the behaviour distribution.
        generator: the torch generator every sample is drawn with (on the policy's device).
        ref: the reference π_ref; when given, ``ref_logprobs`` is filled.
        value_fn: a value head on the policy trunk, ``hidden (..., H) -> (...)``; when given,
            ``values`` and ``bootstrap_values`` are filled.
        seed, options: passed to ``vec_env.reset`` (``options={"prompt_index": ...}`` pins prompts).
        compact: drop rows whose episode ended from the policy's forward passes (and its KV
            cache) once few enough remain (:mod:`textgym.kv_cache`); the env still steps every
            sub-env. False feeds every row until the last episode ends. The rollout is the same
            either way, bit for bit in fp32 on CPU (:mod:`textgym.kv_cache` says where else).

    Returns:
        The :class:`Rollout`, tensors on the policy's device.
    """
    if not isinstance(compact, bool):
        raise ValueError(f"compact must be True or False, got {compact!r}")
    episodes = run_episodes(
        policy,
        vec_env,
        sampling=sampling,
        generator=generator,
        value_fn=value_fn,
        seed=seed,
        options=options,
        compact=compact,
    )
    return _finish(policy, episodes, ref, sampling.temperature)


def _finish(
    policy: LanguageModel, episodes: Episodes, ref: LogitsModel | None, temperature: float
) -> Rollout:
    """Stack the recorded steps into a Rollout; score π_ref in one batched forward pass."""
    steps, texts = episodes.steps, episodes.texts
    completion_ids = torch.stack(steps.tokens, dim=1)  # (B, T)
    completion_mask = torch.stack(steps.alive, dim=1).float()  # (B, T)
    rewards = torch.stack(steps.rewards, dim=1)  # (B, T)
    logprobs = torch.stack(steps.logps, dim=1)  # (B, T)
    action_masks = torch.stack(steps.masks, dim=1) if steps.masks else None  # (B, T, V)
    values = torch.stack(steps.values, dim=1).float() if steps.values else None  # (B, T + 1)
    bootstrap = None
    if values is not None:
        n_actions = completion_mask.sum(-1).long()  # (B,)
        bootstrap = values.gather(1, n_actions[:, None]).squeeze(1)  # (B,) V(s_T)
        values = values[:, :-1] * completion_mask  # (B, T): V(s_0) .. V(s_{T-1})
    env_mask = None
    if steps.env:  # multi-turn: the environment tokens go between the actions
        columns = {"tokens": completion_ids, "alive": completion_mask, "logps": logprobs}
        columns["rewards"] = rewards
        fills: dict[str, float | bool] = {"alive": 0.0, "logps": 0.0, "rewards": 0.0}
        if action_masks is not None:
            columns["masks"], fills["masks"] = action_masks, True
        if values is not None:
            columns["values"], fills["values"] = values, 0.0
        placed, env_mask, _ = interleave(
            columns, fills, steps.env, completion_mask > 0, policy.pad_token_id
        )
        completion_ids, completion_mask = placed["tokens"], placed["alive"]
        logprobs, rewards = placed["logps"], placed["rewards"]
        action_masks = placed.get("masks")
        values = placed.get("values")
    if any(t is None for t in texts):
        keep = completion_mask if env_mask is None else completion_mask + env_mask
        decoded = policy.decode(completion_ids.masked_fill(keep == 0, policy.pad_token_id))
        texts = [d if t is None else t for t, d in zip(texts, decoded, strict=True)]
    out = Rollout(
        prompt_ids=episodes.prompt_ids,
        prompt_mask=episodes.prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        logprobs=logprobs,
        rewards=rewards.sum(1),  # (B,)
        token_rewards=rewards,
        terminated=episodes.terminated,
        truncated=episodes.truncated,
        texts=[str(t) for t in texts],
        prompts=episodes.prompts,
        prompt_indices=episodes.prompt_indices,
        action_masks=action_masks,
        values=values,
        bootstrap_values=bootstrap,
        env_mask=env_mask,
    )
    if ref is not None:
        ref_logits = ref.forward(out.input_ids, out.attention_mask)  # (B, L, V)
        out.ref_logprobs = evaluate_logits(ref_logits, out, temperature, entropy=False)[0]
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


def completion_logprobs(
    logits: Tensor,
    completion_ids: Tensor,
    keep: Tensor,
    temperature: float = 1.0,
    action_masks: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """log π(a_t|s_t) of the T completion tokens from full-sequence logits ``(B, P + T, V)``.

    The one recipe every agent uses (log-softmax in float32 of the distribution sampled from, then
    gather), so log-probs agree bit for bit wherever they are recomputed.

    Args:
        logits: ``(B, P + T, V)``; position P - 1 + t predicts a_t.
        completion_ids: ``(B, T)`` a_t.
        keep: ``(B, T)`` bool, the steps that count (others get 0).
        temperature, action_masks: the behaviour distribution (see :class:`Sampling`).

    Returns:
        ``(logp (B, T), logp_all (B, T, V))``, float32.
    """
    P = logits.shape[1] - completion_ids.shape[1]
    T = completion_ids.shape[1]
    logp_all = Sampling(temperature).logprobs(logits[:, P - 1 : P - 1 + T], action_masks)
    logp = logp_all.gather(-1, completion_ids[..., None]).squeeze(-1)  # (B, T)
    # where, not *: a masked step may hold a token outside the support (logp = -inf): 0 * inf = nan
    return torch.where(keep, logp, 0.0), logp_all


def evaluate_logits(
    logits: Tensor,
    rollout: Rollout,
    temperature: float = 1.0,
    entropy: bool = True,
    entropy_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """log π(a_t|s_t) and the entropy of π(·|s_t) from full-sequence logits ``(B, L, V)``.

    π is ``softmax(logits / temperature)`` renormalised over ``rollout.action_masks`` (the support
    each token was sampled from), i.e. the behaviour distribution when the logits are θ_old's.

    Returns:
        ``(logprobs, entropy)``, both ``(B, T)`` float32, 0 where ``completion_mask`` is 0;
        entropy is None when not asked for (it costs a pass over ``(B, T, V)``); with
        ``entropy_grad=False`` it is computed without gradients (for logging: backward then keeps
        no ``(B, T, V)`` tensor of it).
    """
    mask = rollout.completion_mask
    logp, logp_all = completion_logprobs(
        logits, rollout.completion_ids, mask > 0, temperature, rollout.action_masks
    )
    if not entropy:
        return logp, None
    if not entropy_grad:
        logp_all = logp_all.detach()
    probs = logp_all.exp()  # (B, T, V)
    ent = -(probs * logp_all.masked_fill(probs == 0, 0.0)).sum(-1) * mask  # (B, T)
    return logp, ent


def evaluate(
    policy: LanguageModel,
    rollout: Rollout,
    temperature: float = 1.0,
    value_head: Callable[[Tensor], Tensor] | None = None,
    entropy_grad: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Recompute log π_θ(a_t|s_t) (with gradients), the entropy, and V(s_t) in one forward pass.

    Args:
        policy: π_θ.
        rollout: the episodes to score (its ``action_masks`` give each step's support).
        temperature: the temperature the rollout was sampled at.
        value_head: ``hidden (B, L, H) -> (B, L)``; None skips values.
        entropy_grad: False when the loss does not use the entropy (it is then only logged).

    Returns:
        ``(logprobs (B, T), entropy (B, T), values (B, T) or None)``, 0 where masked.
    """
    ids, mask = rollout.input_ids, rollout.attention_mask
    if policy.logprob_chunk is not None:
        return _evaluate_chunked(policy, rollout, temperature, value_head, entropy_grad)
    values = None
    if value_head is None:
        logits = policy.forward(ids, mask)  # (B, L, V)
    else:
        logits, hidden = policy.forward_with_hidden(ids, mask)  # (B, L, V), (B, L, H)
        P, T = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
        # s_t is the prefix ending at position P - 1 + t (the token before a_t).
        values = value_head(hidden[:, P - 1 : P - 1 + T]).float() * rollout.completion_mask
    logp, entropy = evaluate_logits(logits, rollout, temperature, entropy_grad=entropy_grad)
    assert entropy is not None
    return logp, entropy, values


def _evaluate_chunked(
    policy: LanguageModel,
    rollout: Rollout,
    temperature: float,
    value_head: Callable[[Tensor], Tensor] | None,
    entropy_grad: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """:func:`evaluate` with ``policy.logprob_chunk = c``: the trunk runs once, then the LM head,
    the behaviour distribution, the gather and the entropy run on c completion positions at a
    time under activation checkpointing, so no ``(B, T, V)`` tensor is ever held whole (the same
    values as the full pass; memory grows with c·V instead of T·V)."""
    hidden, last = policy.last_hidden(rollout.input_ids, rollout.attention_mask)  # (B, L, H)
    head = checked_head(policy, hidden[:, -1:], last, "set logprob_chunk = None")
    P, T = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    states = hidden[:, P - 1 : P - 1 + T]  # (B, T, H): s_t ends at position P - 1 + t
    mask = rollout.completion_mask
    values = None if value_head is None else value_head(states).float() * mask
    masks = rollout.action_masks
    chunk = int(policy.logprob_chunk or T)

    def piece(
        states: Tensor, actions: Tensor, keep: Tensor, allowed: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        with policy.autocast():
            logits = F.linear(states, head.weight, head.bias)  # (B, c, V)
        logp_all = Sampling(temperature).logprobs(logits, allowed)  # float32
        logp = logp_all.gather(-1, actions[..., None]).squeeze(-1)  # (B, c)
        logq = logp_all if entropy_grad else logp_all.detach()
        probs = logq.exp()
        ent = -(probs * logq.masked_fill(probs == 0, 0.0)).sum(-1)  # (B, c)
        return torch.where(keep, logp, 0.0), ent

    parts = [
        checkpoint(
            piece,
            states[:, s : s + chunk],
            rollout.completion_ids[:, s : s + chunk],
            mask[:, s : s + chunk] > 0,
            None if masks is None else masks[:, s : s + chunk],
            use_reentrant=False,
        )
        for s in range(0, T, chunk)
    ]
    logp = torch.cat([p[0] for p in parts], dim=1)  # (B, T)
    entropy = torch.cat([p[1] for p in parts], dim=1) * mask  # (B, T)
    return logp, entropy, values
