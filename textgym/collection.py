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

Multi-turn envs (``docs/multiturn.md``) report ``info["env_tokens"]``, the environment tokens a
step appended after the action. They are teacher-forced, never sampled: after the usual pass over
the step's actions, one more pass feeds the environment tokens of the rows that got some
(right-aligned in a block of K columns, the block's left padding masked out, so positions count
real tokens only), and the next policy token is drawn from the logits after the last of them.
Only those rows are computed (:func:`_feed_env_tokens`); every row's KV cache grows by the K
columns, masked where a row got fewer tokens. Once the cache is 1.25 times as wide as the longest
row still running, :func:`repack_columns` moves each row's columns together (the same attention,
a narrower cache). The loop records the tokens per step (:class:`EnvTokens`) and
:func:`interleave` puts every row's policy and environment tokens back in transcript order.
Without environment tokens none of this runs.

Shapes: B batch, n rows in the LM batch, P prompt length, V vocab, H hidden, S steps, K the most
environment tokens a row got in one step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import cache_utils as _hf_cache

from textgym.decoding import sample
from textgym.envs import to_left_padded
from textgym.kv_cache import DecodeRows
from textgym.lm import LanguageModel

__all__ = [
    "EnvTokens",
    "Episodes",
    "Steps",
    "env_token_block",
    "env_tokens_of",
    "interleave",
    "repack_columns",
    "run_episodes",
]


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
    env: list[EnvTokens] = field(default_factory=list)  # the steps that appended env tokens


@dataclass
class EnvTokens:
    """The environment tokens one step appended after each row's action (multi-turn)."""

    step: int  # the step's index
    ids: Tensor  # (B, K) int64, left-aligned, pad after each row's count
    counts: Tensor  # (B,) int64, 0 for rows that got none


def env_tokens_of(
    input_ids: np.ndarray,  # (B, L) the env's right-padded observation after the step
    attention_mask: np.ndarray,  # (B, L)
    counts: np.ndarray,  # (B,) environment tokens appended after each action (0: none)
    pad: int,
) -> np.ndarray:  # (B, K) int64
    """The environment tokens a multi-turn step appended (the last ``counts[b]`` valid tokens of
    row b), left-aligned, ``pad`` after each row's count; K = the most a row got."""
    K = int(counts.max(initial=0))
    length = attention_mask.sum(axis=1)  # (B,) valid tokens after the step
    j = np.arange(K)[None, :]  # (1, K)
    cols = np.clip(length[:, None] - counts[:, None] + j, 0, input_ids.shape[1] - 1)
    return np.where(j < counts[:, None], np.take_along_axis(input_ids, cols, axis=1), pad)


def env_token_block(
    input_ids: np.ndarray,  # (B, L) the env's right-padded observation after the step
    attention_mask: np.ndarray,  # (B, L)
    action: np.ndarray,  # (B,) the step's actions
    counts: np.ndarray,  # (B,) environment tokens appended after each action (0: none)
    pad: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # (B, 1 + K), (B, 1 + K), (B, K)
    """One LM pass's input after a multi-turn step: each row's action and the environment tokens
    that followed it, right-aligned in a block of width 1 + K, with the block's mask (0 on its
    left padding); and the environment tokens left-aligned (:func:`env_tokens_of`)."""
    left = env_tokens_of(input_ids, attention_mask, counts, pad)  # (B, K)
    K = left.shape[1]
    idx = np.arange(1 + K)[None, :]  # (1, 1 + K)
    start = (K - counts)[:, None]  # (B, 1) where each row's action sits in the block
    src = np.clip(idx - start - 1, 0, max(K - 1, 0))  # (B, 1 + K) column of ``left``
    tokens = np.take_along_axis(left, src, axis=1) if K else np.full_like(idx, pad)
    block = np.where(idx > start, tokens, np.where(idx == start, action[:, None], pad))
    return block, (idx >= start).astype(np.int64), left


def interleave(
    columns: dict[str, Tensor],
    fills: dict[str, float | bool],
    env: list[EnvTokens],
    alive: Tensor,
    pad: int,
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Per-step records ``(B, S, ...)`` in transcript order ``(B, T, ...)``: each row's action of
    step s, then the environment tokens that step appended, and so on.

    Args:
        columns: name -> ``(B, S, ...)`` recorded per step (the actions under ``"tokens"``).
        fills: name -> the value of that record at environment-token (and padding) positions.
        env: the steps that appended environment tokens.
        alive: ``(B, S)`` bool, the steps where each row acted.
        pad: the pad id (token columns after each row's end).

    Returns:
        ``(columns (B, T, ...), env_mask (B, T) float32, positions (B, S))``: T = the longest
        row's actions plus environment tokens; ``positions`` where each step's action went.
    """
    tokens = columns["tokens"]
    B, S = tokens.shape
    device = tokens.device
    counts = torch.zeros(B, S, dtype=torch.long, device=device)
    for e in env:
        counts[:, e.step] = e.counts
    before = counts.cumsum(1) - counts  # (B, S) environment tokens before each step
    positions = torch.arange(S, device=device)[None, :] + before  # (B, S)
    width = S + int(counts.sum(1).max())
    T = int((alive.sum(1) + counts.sum(1)).max())
    out: dict[str, Tensor] = {}
    for name, x in columns.items():
        fill = pad if name == "tokens" else fills[name]
        full = x.new_full((B, width, *x.shape[2:]), fill)
        index = positions.reshape(B, S, *([1] * (x.ndim - 2))).expand_as(x)
        out[name] = full.scatter(1, index, x)  # (B, width, ...)
    env_mask = torch.zeros(B, width, device=device)
    for e in env:
        j = torch.arange(e.ids.shape[1], device=device)[None, :]  # (1, K)
        rows, cols = (j < e.counts[:, None]).nonzero(as_tuple=True)
        where = positions[rows, e.step] + 1 + cols
        out["tokens"][rows, where] = e.ids[rows, cols]
        env_mask[rows, where] = 1.0
    return {k: v[:, :T] for k, v in out.items()}, env_mask[:, :T], positions


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


REPACK_SLACK = 1.25
"""Repack the KV cache when its width exceeds this many times the longest needed row (plus 8)."""


def repack_columns(cache: Any, attention: Tensor, width: int) -> tuple[Any, Tensor] | None:
    """The KV cache and mask with each row's attended columns moved to its right end, in order,
    keeping the last ``width`` columns (None, nothing changed, for a cache of unknown layout).

    Blocks of environment tokens leave masked columns in every row that got fewer of them; they
    cost attention and the cache's copy on every later step. Keys hold their positions already
    (GPT-2's position embeddings are added at the input, rotary ones rotate the keys) and position
    ids count attended columns only, so attention over the moved columns is the same. Rows with
    more than ``width`` attended columns lose their oldest ones: pass the longest row still
    needed. Only ``transformers`` ``DynamicCache`` objects of plain dynamic layers are moved.

    Args:
        cache: the cache of the LM batch, ``(n, heads, S, head_dim)`` per layer.
        attention: ``(n, S)`` its mask.
        width: the columns to keep (<= S).
    """
    if type(cache) is not _hf_cache.DynamicCache:
        return None
    layers = getattr(cache, "layers", None)
    if layers is None or not all(type(layer) is _hf_cache.DynamicLayer for layer in layers):
        return None
    S = attention.shape[1]
    order = torch.sort((attention > 0).to(torch.int8), dim=1, stable=True).indices  # (n, S)
    index = order[:, S - width :]  # (n, width): masked columns first, then attended, in order
    for layer in layers:
        keys, values = layer.keys, layer.values
        at = index[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[-1])
        layer.keys, layer.values = keys.gather(2, at), values.gather(2, at)
    return cache, attention.gather(1, index)


def _env_tokens(
    obs: dict[str, np.ndarray],
    info: dict[str, Any],
    active: Tensor,
    step: int,
    steps: Steps,
    pad: int,
) -> EnvTokens | None:
    """The environment tokens a step appended to rows still running (recorded in
    ``steps.env``); None after any other step."""
    counts = info.get("env_tokens")
    if counts is None:
        return None  # a single-turn env
    counts = np.where(active.cpu().numpy(), counts, 0)  # rows that ended get no more tokens
    if not counts.any():
        return None
    left = env_tokens_of(obs["input_ids"], obs["attention_mask"], counts, pad)
    device = active.device
    env = EnvTokens(
        step, torch.as_tensor(left, device=device), torch.as_tensor(counts, device=device)
    )
    steps.env.append(env)
    return env


def _feed_env_tokens(
    policy: LanguageModel,
    cache: Any,
    attention: Tensor,
    logits: Tensor,
    hidden: Tensor | None,
    env: EnvTokens,
    rows: DecodeRows,
    pad: int,
) -> tuple[Any, Tensor, Tensor, Tensor | None]:
    """After the pass over a step's actions: one pass over the environment tokens, whose last
    position gives the next logits (and hidden state) of the rows that got them.

    Every row's cache grows by K columns (masked where a row got fewer tokens, or none). Only the
    r rows that got tokens are computed: the layers of a plain ``DynamicCache`` are cut to them for
    the pass and padded back after it (K masked columns for the other rows); any other cache is
    fed the whole batch, the other rows' columns masked.

    Returns:
        ``(cache, attention (n, past + K), logits (n, V), hidden (n, H) or None)``.
    """
    counts = rows.take(env.counts)  # (n,)
    K = env.ids.shape[1]
    j = torch.arange(K, device=counts.device)[None, :]
    start = (K - counts)[:, None]  # right-aligned: the newest token last, padding on the left
    ids = rows.take(env.ids).gather(1, (j - start).clamp(min=0))
    block_mask = (j >= start).long()  # (n, K)
    ids = torch.where(block_mask > 0, ids, pad)
    got = (counts > 0).nonzero().squeeze(1)  # (r,) positions in the LM batch
    layers = getattr(cache, "layers", None)
    plain = (
        type(cache) is _hf_cache.DynamicCache
        and layers is not None
        and all(type(layer) is _hf_cache.DynamicLayer for layer in layers)
    )
    full_attention = torch.cat([attention, block_mask], dim=1)  # (n, past + K)
    want_hidden = hidden is not None
    if not plain:
        new_logits, new_hidden, cache = _policy_step(
            policy, ids, full_attention, cache, want_hidden
        )
        logits, hidden = logits.clone(), None if hidden is None else hidden.clone()
        logits[got] = new_logits[got]
        if hidden is not None and new_hidden is not None:
            hidden[got] = new_hidden[got]
        return cache, full_attention, logits, hidden
    assert layers is not None  # a plain DynamicCache
    full = [(layer.keys, layer.values) for layer in layers]
    for layer, (k, v) in zip(layers, full, strict=True):
        layer.keys, layer.values = k[got], v[got]
    sub_logits, sub_hidden, cache = _policy_step(
        policy, ids[got], full_attention[got], cache, want_hidden
    )
    for layer, (k, v) in zip(layers, full, strict=True):
        for name, old in (("keys", k), ("values", v)):
            grown = F.pad(old, (0, 0, 0, K))  # (n, heads, past + K, head_dim): masked columns
            grown.index_copy_(0, got, getattr(layer, name))
            setattr(layer, name, grown)
    logits = logits.clone()
    logits[got] = sub_logits
    if hidden is not None and sub_hidden is not None:
        hidden = hidden.clone()
        hidden[got] = sub_hidden
    return cache, full_attention, logits, hidden


def _repacked(cache: Any, attention: Tensor, needed: Tensor) -> tuple[Any, Tensor]:
    """:func:`repack_columns` when the cache has grown past :data:`REPACK_SLACK` times the
    longest row still needed (the same decision with and without compaction: it reads only the
    needed rows, which both hold alike)."""
    longest = int(attention[needed].sum(-1).max()) if bool(needed.any()) else 1
    if attention.shape[1] <= REPACK_SLACK * longest + 8:
        return cache, attention
    moved = repack_columns(cache, attention, longest)
    return (cache, attention) if moved is None else moved


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
        env = _env_tokens(obs, info, active, len(steps.tokens) - 1, steps, pad)
        if env is not None:  # teacher-force the environment tokens after the action (multi-turn)
            cache, attention = _repacked(cache, attention, rows.take(needed))
            cache, attention, logits, hidden = _feed_env_tokens(
                policy, cache, attention, logits, hidden, env, rows, pad
            )
        if running == 0:  # the extra pass above gave V(s_T) of the rows that just ended
            assert value_fn is not None
            assert hidden is not None
            steps.values.append(_value(value_fn, hidden, rows, needed))
            break
    return out
