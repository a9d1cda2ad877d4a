"""The loop of :func:`textgym.rollout.collect`: a vector env stepped beside the policy's KV cache.

:func:`run_episodes` resets every sub-env, feeds the prompts to the policy once, then one token per
row per step, and records each step's tokens, behaviour log-probs, rewards, supports and values
as full-batch ``(B, ...)`` tensors; :func:`textgym.rollout.collect` stacks them into a
``Rollout``. The env always steps all B sub-envs (a finished one is in Gymnasium's NEXT_STEP
autoreset and ignores its action, which is the pad id).

Compaction (:mod:`textgym.kv_cache`): the LM pass covers only the rows still needed, once they are
at most 3/4 of the rows it holds (never fewer than 16). A row is needed while its episode runs,
and with a value function for one more pass after its last action, which gives V(s_T). The
uniforms of the draw are drawn for all B rows (``sample(..., rows=, batch_size=)``) and the value
function sees full-batch hidden states, so tokens, log-probs and values are those of the
uncompacted loop (``compact=False``) bit for bit in fp32 on CPU (see :mod:`textgym.kv_cache` for
other precisions and devices). Both ways, a step where a row no longer acts records value 0 and,
under top-k/top-p, an all-True support (those steps are masked out).

Shapes: B batch, n rows in the LM batch, P prompt length, V vocab, H hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from textgym.decoding import sample
from textgym.envs import to_left_padded
from textgym.kv_cache import DecodeRows
from textgym.lm import LanguageModel

__all__ = ["Episodes", "Steps", "run_episodes"]


class Behaviour(Protocol):
    """What the loop needs of ``textgym.rollout.Sampling``."""

    @property
    def truncates(self) -> bool: ...

    def logprobs(self, logits: Tensor, mask: Tensor | None = None) -> Tensor: ...


@dataclass
class Steps:
    """What the collection loop records, one entry per step (stacked into a Rollout at the end)."""

    tokens: list[Tensor] = field(default_factory=list)  # (B,) each
    logps: list[Tensor] = field(default_factory=list)  # (B,)
    alive: list[Tensor] = field(default_factory=list)  # (B,) bool
    rewards: list[Tensor] = field(default_factory=list)  # (B,)
    masks: list[Tensor] = field(default_factory=list)  # (B, V) bool
    values: list[Tensor] = field(default_factory=list)  # (B,), one more than the steps


@dataclass
class Episodes:
    """One round of :func:`run_episodes`: the prompts, the recorded steps and how each ended."""

    prompt_ids: Tensor  # (B, P) int64, left-padded
    prompt_mask: Tensor  # (B, P) int64
    prompts: list[str]  # B prompt texts
    prompt_indices: np.ndarray  # (B,) the task's prompt index of each episode
    steps: Steps
    texts: list[str | None]  # B completions from the env's info (None if it gave none)
    terminated: Tensor  # (B,) bool
    truncated: Tensor  # (B,) bool


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
    """Next-token logits ``(n, V)`` float32, the last hidden state ``(n, H)`` if asked, the cache.

    The ids are the env's and our own samples, so step()'s per-call validation is skipped.
    """
    if not hidden:
        logits, cache = policy.step_unchecked(input_ids, attention_mask, cache)
        return logits, None, cache
    return policy.step_with_hidden(input_ids, attention_mask, cache)


def _value(
    value_fn: Callable[[Tensor], Tensor], hidden: Tensor, rows: DecodeRows, needed: Tensor
) -> Tensor:  # (B,)
    """V(s_t) of the needed rows, 0 elsewhere. The head sees all B rows (zeros for rows the LM
    batch no longer holds): a GEMM's result may depend on its row count, so the head's batch
    stays the same whatever was compacted."""
    values = value_fn(rows.scatter(hidden, 0.0))  # (B,)
    return torch.where(needed, values, 0.0)


@torch.no_grad()
def run_episodes(
    policy: LanguageModel,
    vec_env: Any,
    *,
    sampling: Behaviour,
    generator: torch.Generator,
    value_fn: Callable[[Tensor], Tensor] | None,
    seed: int | None,
    options: dict[str, Any] | None,
    compact: bool,
) -> Episodes:
    """Step every sub-env of a NEXT_STEP-autoreset vector env until each episode has ended.

    Arguments as :func:`textgym.rollout.collect`'s.
    """
    device = policy.device
    pad = policy.pad_token_id
    obs, info = vec_env.reset(seed=seed, options=options)
    left_ids, left_mask = to_left_padded(
        obs["input_ids"], obs["attention_mask"], pad, trim=True
    )  # (B, P)
    prompt_ids = torch.as_tensor(left_ids, device=device)
    prompt_mask = torch.as_tensor(left_mask, device=device).long()
    B, every = prompt_ids.shape[0], np.arange(prompt_ids.shape[0])
    out = Episodes(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        prompts=[str(p) for p in _info_column(info, "prompt", every)],
        prompt_indices=np.asarray(_info_column(info, "prompt_index", every)),
        steps=Steps(),
        texts=[None] * B,
        terminated=torch.zeros(B, dtype=torch.bool, device=device),
        truncated=torch.zeros(B, dtype=torch.bool, device=device),
    )
    steps, rows, attention = out.steps, DecodeRows(B, enabled=compact), prompt_mask
    active = torch.ones(B, dtype=torch.bool, device=device)
    needed, running = active.clone(), B  # rows the next LM pass must cover; episodes running
    logits, hidden, cache = _policy_step(
        policy, prompt_ids, prompt_mask, None, value_fn is not None
    )
    while True:
        if value_fn is not None and hidden is not None:
            steps.values.append(_value(value_fn, hidden, rows, needed))  # V(s_t)
        allowed = _action_mask(info, device)  # (B, V) or None
        logp = sampling.logprobs(logits, None if allowed is None else rows.take(allowed))  # (n, V)
        drawn = sample(
            logp, generator=generator, rows=rows.rows, batch_size=None if rows.rows is None else B
        )  # (n,)
        taken = logp.gather(1, drawn[:, None]).squeeze(1)  # (n,)
        # A finished sub-env's action is ignored by its autoreset: send pad, record nothing.
        action = torch.where(active, rows.scatter(drawn, pad), pad)  # (B,)
        steps.tokens.append(action)
        steps.logps.append(torch.where(active, rows.scatter(taken, 0.0), 0.0))
        steps.alive.append(active.clone())
        if sampling.truncates:  # the env's mask narrowed by top-k/p; all-True once finished
            support = rows.scatter(torch.isfinite(logp), True)  # (B, V)
            steps.masks.append(support | ~active[:, None])
        elif allowed is not None:
            steps.masks.append(allowed)
        obs, reward, term, trunc, info = vec_env.step(action.cpu().numpy())
        steps.rewards.append(torch.as_tensor(reward, dtype=torch.float32, device=device) * active)
        ended = torch.as_tensor(np.logical_or(term, trunc), device=device) & active  # (B,)
        alive, acted = steps.alive[-1], running
        if ended.any():
            done = ended.nonzero().squeeze(1).cpu().numpy()
            for i, text in zip(done, _info_column(info, "text", done), strict=True):
                out.texts[i] = text
            out.terminated |= torch.as_tensor(term, device=device) & active
            out.truncated |= torch.as_tensor(trunc, device=device) & active
            active &= ~ended
            running -= len(done)
        if running == 0 and value_fn is None:
            break
        # V(s_T) of a row that just ended needs one more pass over its last action.
        needed, count = (alive, acted) if value_fn is not None else (active, running)
        if rows.pays(count):
            local, cache = rows.compact(needed, cache)
            attention = attention if local is None else attention[local]
        attention = torch.cat([attention, attention.new_ones(rows.size, 1)], dim=1)  # (n, past + 1)
        logits, hidden, cache = _policy_step(
            policy, rows.take(action)[:, None], attention, cache, value_fn is not None
        )
        if running == 0:  # the extra pass above gave V(s_T) of the rows that just ended
            assert value_fn is not None
            assert hidden is not None
            steps.values.append(_value(value_fn, hidden, rows, needed))
            break
    return out
