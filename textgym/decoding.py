"""Decoding: small pure functions over logits, and loops over :meth:`LanguageModel.step`.

- :func:`filter_logits` is the single source of truth for "the distribution really sampled
  from": allowed-token mask, then temperature, then top-k, then top-p (the order of
  ``transformers``' processors and warpers). The RL rollout takes ``log_softmax`` of its output
  for behaviour log-probs, and :func:`generate` samples from exactly that output.
- :func:`generate` (greedy or sampling) and :func:`beam_search` are batched loops over the KV
  cache: the left-padded prompt is fed once, then one token per row per step. A row that emitted
  EOS keeps emitting the pad id (masked out), and the loop stops when every row is done. Greedy
  and beam search reproduce ``model.generate(do_sample=False[, num_beams=k])`` token for token.
- Ties: top-k and top-p keep every token tied with the last one kept, so a filter is a function of
  the logits alone, not of a sort order.
- Sampling draws one uniform number per row from the caller's ``torch.Generator`` and inverts the
  cumulative distribution: same generator seed, same samples, no global RNG. (``torch.multinomial``
  draws one exponential per vocabulary entry, ~10x slower on CPU.)

Shapes: B batch, P prompt length, T completion length, V vocab, K beams.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from textgym.lm import LanguageModel

__all__ = [
    "GenerationOutput",
    "beam_search",
    "check_finite_logits",
    "filter_logits",
    "generate",
    "greedy",
    "sample",
]

EosArg = int | Sequence[int] | None | Literal["model"]
"""EOS ids that end a row: ``"model"`` = ``lm.eos_token_id``; None = never stop before the end."""

_NUCLEUS_START = 128
"""Top-p first looks at this many top tokens and widens only if their mass is below p: a full sort
of a (64, 8192) batch took ~20x a top-k on this CPU, and trained models have small nuclei."""


@dataclass
class GenerationOutput:
    """What :func:`generate` and :func:`beam_search` return (all tensors on the model's device).

    ``logprobs`` are those of the filtered distribution (:func:`filter_logits`) at the chosen
    tokens: the behaviour log-probs for sampling; for beam search, the model's log-probs.
    """

    sequences: Tensor  # (B, P + T) the left-padded prompt, then the completion
    attention_mask: Tensor  # (B, P + T) 1 = prompt or completion token
    completion_ids: Tensor  # (B, T) generated ids, the pad id after EOS
    completion_mask: Tensor  # (B, T) int64, 1 = a generated token (EOS included)
    logprobs: Tensor  # (B, T) float32, log-prob of each generated token; 0 where masked
    terminated: Tensor  # (B,) bool, the row ended with EOS (else it hit max_new_tokens)
    texts: list[str]  # B decoded completions, special tokens skipped
    sequence_scores: Tensor | None = None  # (B,) beam search only: length-penalised score


# ---------------------------------------------------------------------------------- pure functions


def _check_filter_args(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    mask: Tensor | None,
) -> None:
    if not logits.is_floating_point() or logits.ndim < 1:
        raise ValueError(
            f"logits must be a floating tensor (..., V), got {logits.dtype} of shape "
            f"{tuple(logits.shape)}"
        )
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and temperature > 0
    ):
        raise ValueError(f"temperature must be a float > 0, got {temperature!r}")
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True = allowed), got {mask.dtype}")
        try:
            shape = torch.broadcast_shapes(mask.shape, logits.shape)
        except RuntimeError:
            shape = None
        if shape != logits.shape:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to logits "
                f"{tuple(logits.shape)}"
            )


def _nucleus(x: Tensor, top_p: float, sorted_top: Tensor | None) -> Tensor:
    """Top-p on (..., V) logits; ``sorted_top`` = the top-k values (descending) when known."""
    lse = torch.logsumexp(x, dim=-1, keepdim=True)  # (..., 1)
    V = x.shape[-1]
    k = min(V, _NUCLEUS_START)
    while True:
        # After top-k every other token is -inf: its sorted values are all the candidates.
        values = x.topk(k, dim=-1).values if sorted_top is None else sorted_top  # (..., k)
        probs = (values - lse).exp()  # (..., k)
        cum = probs.cumsum(-1)  # (..., k)
        # Widen until every row's candidates hold mass >= p (any token past them is then out).
        if sorted_top is not None or k == V or bool((cum[..., -1] >= top_p).all()):
            break
        k = min(V, 8 * k)
    # Keep a token iff the mass strictly before it is < p: the smallest set with mass >= p
    # (the top token always has mass-before 0, so at least one survives).
    n_keep = ((cum - probs) < top_p).sum(-1, keepdim=True)  # (..., 1) >= 1
    threshold = values.gather(-1, n_keep - 1)  # (..., 1)
    return x.masked_fill(x < threshold, float("-inf"))


def _filter(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    mask: Tensor | None,
) -> Tensor:
    """:func:`filter_logits` without argument checks, for decoding loops that checked them once."""
    x = logits if mask is None else logits.masked_fill(~mask, float("-inf"))  # (..., V)
    if temperature != 1.0:
        x = x / temperature  # (..., V)
    sorted_top = None
    if top_k is not None and top_k < x.shape[-1]:
        sorted_top = x.topk(top_k, dim=-1).values  # (..., k) descending
        x = x.masked_fill(x < sorted_top[..., -1:], float("-inf"))  # (..., V)
    if top_p is not None and top_p < 1.0:
        x = _nucleus(x, top_p, sorted_top)  # (..., V)
    return x


def filter_logits(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """The logits of the distribution tokens are sampled from; filtered-out entries are -inf.

    Applied in this order: ``mask`` (allowed tokens), temperature, top-k, top-p. Top-p keeps the
    smallest set of most likely tokens whose probability (after the steps before it) is >= p,
    always at least one token; tokens tied with the last one kept are kept too. The input is not
    modified. ``log_softmax`` of the output gives the log-probs of what is really sampled.

    Args:
        logits: ``(..., V)`` float logits, e.g. ``(B, V)`` from :meth:`LanguageModel.step`.
        temperature: > 0; logits are divided by it.
        top_k: keep the k largest logits (None: all).
        top_p: in (0, 1]; nucleus mass (None or 1: all).
        mask: bool, broadcastable to ``logits`` (e.g. ``(V,)`` or ``(B, V)``); True = allowed.

    Returns:
        ``(..., V)`` filtered logits, same dtype.

    Raises:
        ValueError: a bad argument, or a mask that allows no token in some row.
    """
    _check_filter_args(logits, temperature, top_k, top_p, mask)
    if mask is not None and not bool(mask.any(-1).all()):
        raise ValueError("mask allows no token in some row: every row needs at least one True")
    return _filter(logits, temperature, top_k, top_p, mask)


def sample(logits: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row from ``softmax(logits)`` (e.g. the output of :func:`filter_logits`).

    Args:
        logits: ``(..., V)``; -inf entries are never drawn.
        generator: the source of randomness (on the logits' device); None uses torch's default.

    Returns:
        ``(...)`` int64 token ids.
    """
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (..., 1)
    check_finite_logits(torch.isfinite(lse))
    return _draw(logits, lse, generator)


def check_finite_logits(finite: Tensor, step: int | None = None) -> None:
    """Raise ``FloatingPointError`` unless every row's log-normaliser is finite.

    A NaN or infinite logit (a diverged model, ``lr=inf``) would otherwise be drawn as token id V,
    outside the vocabulary, or taken as argmax 0, and generation would go on with garbage.

    Args:
        finite: bool, one entry per row: ``isfinite(logsumexp(logits))``.
        step: the generation step, for the message.
    """
    if not bool(finite.all()):
        rows = (~finite).reshape(-1).nonzero().flatten()[:8].tolist()
        at = "" if step is None else f" at step {step}"
        raise FloatingPointError(
            f"the model's logits are not finite (NaN or inf){at} in rows {rows}: the model has "
            "diverged (check the learning rate and the loss) or its weights hold NaN"
        )


def _draw(logits: Tensor, lse: Tensor, generator: torch.Generator | None) -> Tensor:
    """Inverse-CDF sampling: one uniform per row, searched in the cumulative probabilities."""
    lead = logits.shape[:-1]
    cum = (logits - lse).exp().cumsum(-1).reshape(-1, logits.shape[-1])  # (N, V)
    total = cum[:, -1:]  # (N, 1) ~1, exactly what the cumsum reached
    u = torch.rand(
        total.shape, generator=generator, device=logits.device, dtype=cum.dtype
    )  # (N, 1)
    # Strictly below the total: token i is drawn iff cum[i-1] <= v < cum[i], so zero-probability
    # tokens (flat steps of cum) are never drawn, including a -inf tail after the last real token.
    v = torch.minimum(u * total, total.nextafter(torch.zeros_like(total)))  # (N, 1)
    return torch.searchsorted(cum, v, right=True).reshape(lead)  # (...)


# ---------------------------------------------------------------------------------- loops


def _eos_ids(lm: LanguageModel, eos_token_id: EosArg) -> list[int]:
    if isinstance(eos_token_id, str):
        if eos_token_id != "model":
            raise ValueError(
                f"eos_token_id must be an int, ints, None or 'model', got {eos_token_id!r}"
            )
        return [] if lm.eos_token_id is None else [lm.eos_token_id]
    if eos_token_id is None:
        return []
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < lm.vocab_size:
            raise ValueError(f"eos_token_id {i!r} is not a token id in [0, {lm.vocab_size - 1}]")
    return ids


def _prompts(
    lm: LanguageModel,
    prompts: str | Sequence[str] | Tensor,
    attention_mask: Tensor | None,
    max_new_tokens: int,
) -> tuple[Tensor, Tensor]:
    """Left-padded ``(B, P)`` ids and mask from texts or ids, checked against the context window."""
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if isinstance(prompts, Tensor):
        ids = prompts.to(lm.device)
        if ids.ndim == 1:
            ids = ids.unsqueeze(0)  # (1, P)
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(
                f"prompt ids must be a non-empty (B, P) tensor, got shape {tuple(ids.shape)}"
            )
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(lm.device)
        if mask.shape != ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(mask.shape)} != prompt ids shape {tuple(ids.shape)}"
            )
        mask = mask.long()
        # Left padding only: 0s then 1s in every row, and at least one real token.
        if not bool((mask[:, 1:] >= mask[:, :-1]).all()) or not bool((mask[:, -1] == 1).all()):
            raise ValueError(
                "prompts must be left-padded (each mask row 0...0 1...1, ending in 1): build them "
                "with lm.encode(texts)"
            )
    else:
        if attention_mask is not None:
            raise ValueError("attention_mask goes with prompt ids, not with texts")
        ids, mask = lm.encode(prompts)
    lm._check_batch(ids, mask)
    longest = int(mask.sum(-1).max())
    if lm.max_length is not None and longest + max_new_tokens > lm.max_length:
        raise ValueError(
            f"a prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the context "
            f"window of {lm.max_length}: use shorter prompts or at most "
            f"{lm.max_length - longest} new tokens"
        )
    return ids, mask


def _output(
    lm: LanguageModel,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    logprobs: Tensor,
    terminated: Tensor,
    sequence_scores: Tensor | None = None,
) -> GenerationOutput:
    # Cloned out of inference mode, so that callers may feed them to a forward pass with gradients.
    completion_ids = completion_ids.clone()  # (B, T)
    completion_mask = completion_mask.clone()  # (B, T)
    return GenerationOutput(
        sequences=torch.cat([prompt_ids, completion_ids], dim=1),  # (B, P + T)
        attention_mask=torch.cat([prompt_mask, completion_mask], dim=1),  # (B, P + T)
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        logprobs=logprobs.clone(),
        terminated=terminated.clone(),
        texts=lm.decode(completion_ids),
        sequence_scores=None if sequence_scores is None else sequence_scores.clone(),
    )


def generate(
    lm: LanguageModel,
    prompts: str | Sequence[str] | Tensor,
    *,
    max_new_tokens: int,
    attention_mask: Tensor | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    eos_token_id: EosArg = "model",
    min_new_tokens: int = 0,
) -> GenerationOutput:
    """Batched greedy decoding or sampling with the KV cache.

    Each step filters the logits with :func:`filter_logits` (``mask``, then ``temperature``,
    ``top_k``, ``top_p``) and takes the argmax (``do_sample=False``) or samples from the result.
    With ``do_sample=False`` and no filters it reproduces ``model.generate(do_sample=False)``.

    Args:
        lm: the model.
        prompts: a text, texts (encoded with ``lm.encode``), or left-padded ids ``(B, P)``.
        max_new_tokens: the most tokens to generate per row (T <= this).
        attention_mask: ``(B, P)`` with prompt ids; None means no padding.
        do_sample: sample (True) or take the argmax (False).
        temperature, top_k, top_p, mask: the filter, see :func:`filter_logits`; ``mask`` is
            ``(V,)`` or ``(B, V)`` bool, True = allowed, the same at every step.
        generator: randomness for sampling (same seed, same samples); None: torch's default.
        eos_token_id: ids that end a row; ``"model"`` = ``lm.eos_token_id``; None: run all
            ``max_new_tokens`` steps.
        min_new_tokens: EOS is forbidden before this many tokens (as ``generate``'s
            ``min_new_tokens``), e.g. to force fixed lengths.

    Returns:
        A :class:`GenerationOutput`; T is the number of steps run (< max_new_tokens when every row
        ended early).

    Raises:
        ValueError: bad arguments, or prompt + ``max_new_tokens`` longer than the context window.
    """
    ids, prompt_mask = _prompts(lm, prompts, attention_mask, max_new_tokens)
    _check_filter_args(torch.empty(1, lm.vocab_size), temperature, top_k, top_p, None)
    if not isinstance(do_sample, bool):
        raise ValueError(f"do_sample must be True or False, got {do_sample!r}")
    if (
        not isinstance(min_new_tokens, int)
        or isinstance(min_new_tokens, bool)
        or min_new_tokens < 0
    ):
        raise ValueError(f"min_new_tokens must be an int >= 0, got {min_new_tokens!r}")
    eos = _eos_ids(lm, eos_token_id)
    allowed = _allowed(lm, mask, ids.shape[0])
    early = allowed
    if eos and min_new_tokens > 0:
        ones = torch.ones(lm.vocab_size, dtype=torch.bool, device=lm.device)  # (V,)
        early = ones if allowed is None else allowed.clone()  # (V,) or (B, V)
        early[..., eos] = False
        if not bool(early.any(-1).all()):
            raise ValueError("min_new_tokens with this mask leaves no allowed token before EOS")
    pick = _Filter(temperature, top_k, top_p, early, allowed, min_new_tokens)
    with torch.inference_mode():
        parts = _decode_loop(lm, ids, prompt_mask, max_new_tokens, pick, do_sample, generator, eos)
    return _output(lm, ids, prompt_mask, *parts)


def _allowed(lm: LanguageModel, mask: Tensor | None, batch: int) -> Tensor | None:
    """Validate a fixed allowed-token mask, ``(V,)`` or ``(B, V)`` bool."""
    if mask is None:
        return None
    if mask.dtype != torch.bool or mask.shape not in ((lm.vocab_size,), (batch, lm.vocab_size)):
        raise ValueError(
            f"mask must be bool of shape ({lm.vocab_size},) or ({batch}, {lm.vocab_size}), got "
            f"{mask.dtype} {tuple(mask.shape)}"
        )
    if not bool(mask.any(-1).all()):
        raise ValueError("mask allows no token in some row: every row needs at least one True")
    return mask.to(lm.device)


@dataclass(frozen=True)
class _Filter:
    """The checked settings of :func:`filter_logits` for one generation, per step."""

    temperature: float
    top_k: int | None
    top_p: float | None
    early_mask: Tensor | None
    """Allowed tokens before ``min_new_tokens`` (EOS removed)."""
    mask: Tensor | None
    """Allowed tokens afterwards."""
    min_new_tokens: int

    def __call__(self, logits: Tensor, t: int) -> Tensor:
        mask = self.early_mask if t < self.min_new_tokens else self.mask
        return _filter(logits, self.temperature, self.top_k, self.top_p, mask)


def _decode_loop(
    lm: LanguageModel,
    ids: Tensor,
    prompt_mask: Tensor,
    max_new_tokens: int,
    pick: _Filter,
    do_sample: bool,
    generator: torch.Generator | None,
    eos: list[int],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The per-token loop of :func:`generate`: tensors preallocated, nothing decoded per step.

    Returns:
        ``(completion_ids, completion_mask, logprobs, terminated)``: ``(B, T)`` x3 and ``(B,)``.
    """
    B, P = ids.shape
    T = max_new_tokens
    device = lm.device
    tokens = torch.full((B, T), lm.pad_token_id, dtype=torch.long, device=device)  # (B, T)
    alive_mask = torch.zeros((B, T), dtype=torch.long, device=device)  # (B, T)
    logps = torch.zeros((B, T), dtype=torch.float32, device=device)  # (B, T)
    done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    eos_ids = torch.tensor(eos, dtype=torch.long, device=device)  # (E,)
    pad = torch.tensor(lm.pad_token_id, device=device)
    zero = torch.zeros((), device=device)
    # Without padding, attention needs no mask at all (generate drops an all-ones mask too).
    padded = not bool(prompt_mask.all())
    full_mask = torch.ones((B, P + T), dtype=torch.long, device=device)  # (B, P + T)
    full_mask[:, :P] = prompt_mask
    # Positions of the new tokens continue each row's real length: no cumsum per step.
    positions = prompt_mask.sum(-1, keepdim=True) + torch.arange(T, device=device)  # (B, T)
    logits, cache = lm.step_unchecked(ids, prompt_mask if padded else None)  # (B, V)
    steps = T
    finite = torch.ones(B, dtype=torch.bool, device=device)  # (B,) checked once, after the loop
    for t in range(T):
        x = pick(logits, t)  # (B, V)
        lse = torch.logsumexp(x, dim=-1, keepdim=True)  # (B, 1)
        finite &= torch.isfinite(lse.squeeze(-1)) | done
        tok = _draw(x, lse, generator) if do_sample else x.argmax(-1)  # (B,)
        tok = tok.clamp(max=x.shape[-1] - 1)  # a NaN row draws V: keep going, raise after the loop
        logp = x.gather(-1, tok.unsqueeze(-1)).squeeze(-1) - lse.squeeze(-1)  # (B,)
        # Finished rows emit the pad id and record nothing.
        tok = torch.where(done, pad, tok)  # (B,)
        tokens[:, t] = tok
        logps[:, t] = torch.where(done, zero, logp)
        alive_mask[:, t] = (~done).long()
        if eos:
            done |= tok == eos_ids[0] if len(eos) == 1 else torch.isin(tok, eos_ids)
            if bool(done.all()):
                steps = t + 1
                break
        if t + 1 < T:
            logits, cache = lm.step_unchecked(
                tok.unsqueeze(-1),
                full_mask[:, : P + t + 1] if padded else None,
                cache,
                positions[:, t : t + 1],
            )
    check_finite_logits(finite)
    return tokens[:, :steps], alive_mask[:, :steps], logps[:, :steps], done


def greedy(
    lm: LanguageModel,
    prompts: str | Sequence[str] | Tensor,
    *,
    max_new_tokens: int,
    attention_mask: Tensor | None = None,
    eos_token_id: EosArg = "model",
    min_new_tokens: int = 0,
) -> GenerationOutput:
    """Greedy decoding: :func:`generate` with ``do_sample=False`` (equals HF's greedy generate)."""
    return generate(
        lm,
        prompts,
        max_new_tokens=max_new_tokens,
        attention_mask=attention_mask,
        eos_token_id=eos_token_id,
        min_new_tokens=min_new_tokens,
    )


# ---------------------------------------------------------------------------------- beam search


@dataclass
class _Beams:
    """K hypotheses per prompt: generated tokens, their log-probs, scores, a done flag."""

    tokens: Tensor  # (B, K, T)
    logps: Tensor  # (B, K, T)
    scores: Tensor  # (B, K)
    lengths: Tensor  # (B, K) tokens generated
    done: Tensor  # (B, K) bool (for finished hypotheses: a real one, not a placeholder)

    def take(self, index: Tensor) -> _Beams:
        """Rows ``index`` (B, K') of each prompt's hypotheses."""
        idx3 = index.unsqueeze(-1).expand(-1, -1, self.tokens.shape[-1])  # (B, K', T)
        return _Beams(
            self.tokens.gather(1, idx3),
            self.logps.gather(1, idx3),
            self.scores.gather(1, index),
            self.lengths.gather(1, index),
            self.done.gather(1, index),
        )

    @staticmethod
    def cat(a: _Beams, b: _Beams) -> _Beams:
        return _Beams(
            *(torch.cat([x, y], dim=1) for x, y in zip(a.astuple(), b.astuple(), strict=True))
        )

    def astuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return self.tokens, self.logps, self.scores, self.lengths, self.done


_NEG = -1.0e9
"""Score that rules a hypothesis out while keeping arithmetic finite (as generate does)."""


def beam_search(
    lm: LanguageModel,
    prompts: str | Sequence[str] | Tensor,
    *,
    num_beams: int,
    max_new_tokens: int,
    attention_mask: Tensor | None = None,
    length_penalty: float = 1.0,
    early_stopping: bool | Literal["never"] = False,
    eos_token_id: EosArg = "model",
) -> GenerationOutput:
    """Batched beam search; reproduces ``model.generate(num_beams=K, do_sample=False)``.

    Each step expands every running beam by every token, keeps the best ``max(2, 1 + #eos) * K``
    candidates (by summed log-prob), moves those among the best K that end (EOS or the length
    limit) to the finished set with score ``sum_logp / length ** length_penalty``, and continues
    the K best that did not end. ``early_stopping``: True stops a prompt once K hypotheses are
    finished; False stops when the best running beam (scored at the current length) can no longer
    beat the worst finished one; ``"never"`` scores it at the longest possible length instead
    (when ``length_penalty > 0``).

    Args:
        lm: the model.
        prompts: texts or left-padded ids ``(B, P)`` (with ``attention_mask``).
        num_beams: K >= 1 (K = 1 is greedy decoding, as in ``generate``).
        max_new_tokens: the most tokens to generate.
        attention_mask: ``(B, P)`` with prompt ids.
        length_penalty: exponent of the length in the finished score (> 0 favours longer).
        early_stopping: True, False or ``"never"`` (as in ``generate``).
        eos_token_id: ids that end a hypothesis (``"model"`` = ``lm.eos_token_id``).

    Returns:
        A :class:`GenerationOutput` with the best hypothesis per prompt, ``logprobs`` = the model's
        log-prob of each of its tokens, and ``sequence_scores`` = its length-penalised score.
    """
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an int >= 1, got {num_beams!r}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if not isinstance(length_penalty, (int, float)) or not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite float, got {length_penalty!r}")
    if num_beams == 1:
        return greedy(
            lm,
            prompts,
            max_new_tokens=max_new_tokens,
            attention_mask=attention_mask,
            eos_token_id=eos_token_id,
        )
    ids, prompt_mask = _prompts(lm, prompts, attention_mask, max_new_tokens)
    eos = _eos_ids(lm, eos_token_id)
    with torch.inference_mode():
        parts = _beam_loop(
            lm,
            ids,
            prompt_mask,
            num_beams,
            max_new_tokens,
            float(length_penalty),
            early_stopping,
            eos,
        )
    return _output(lm, ids, prompt_mask, *parts)


def _beam_loop(
    lm: LanguageModel,
    ids: Tensor,
    prompt_mask: Tensor,
    K: int,
    T: int,
    length_penalty: float,
    early_stopping: bool | Literal["never"],
    eos: list[int],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The loop of :func:`beam_search`.

    Returns:
        ``(completion_ids, completion_mask, logprobs, terminated, scores)`` of the best hypotheses:
        ``(B, T)`` x3, ``(B,)`` x2.
    """
    B, P = ids.shape
    V = lm.vocab_size
    device = lm.device
    n_cand = max(2, 1 + len(eos)) * K  # enough candidates to refill K beams if the top K all end
    eos_ids = torch.tensor(eos, dtype=torch.long, device=device)  # (E,)
    flat_mask = prompt_mask.repeat_interleave(K, dim=0)  # (B*K, P)
    padded = not bool(prompt_mask.all())
    full_mask = torch.ones((B * K, P + T), dtype=torch.long, device=device)  # (B*K, P + T)
    full_mask[:, :P] = flat_mask
    positions = flat_mask.sum(-1, keepdim=True) + torch.arange(T, device=device)  # (B*K, T)
    offsets = torch.arange(B, device=device).unsqueeze(-1) * K  # (B, 1) flat index of each beam 0

    def empty(score: float) -> _Beams:
        return _Beams(
            torch.full((B, K, T), lm.pad_token_id, dtype=torch.long, device=device),
            torch.zeros((B, K, T), device=device),
            torch.full((B, K), score, device=device),
            torch.zeros((B, K), dtype=torch.long, device=device),
            torch.zeros((B, K), dtype=torch.bool, device=device),
        )

    running = empty(0.0)
    # All K beams start as copies of the prompt: only beam 0 may expand at the first step.
    running.scores[:, 1:] = _NEG
    finished = empty(_NEG)
    open_ = torch.ones((B, 1), dtype=torch.bool, device=device)  # (B, 1) can still improve
    top_k_slots = torch.arange(n_cand, device=device) < K  # (C,) only these may finish
    logits, cache = lm.step_unchecked(
        ids.repeat_interleave(K, dim=0), flat_mask if padded else None
    )
    finite = torch.ones(B * K, dtype=torch.bool, device=device)  # (B*K,) checked after the loop
    for t in range(T):
        finite &= torch.isfinite(logits.logsumexp(-1))
        logp = torch.log_softmax(logits, dim=-1).view(B, K * V)  # (B, K*V)
        total = (logp.view(B, K, V) + running.scores.unsqueeze(-1)).view(B, K * V)  # (B, K*V)
        cand_scores, cand_index = total.topk(n_cand, dim=-1)  # (B, C) descending
        cand_beam = cand_index // V  # (B, C)
        cand_tok = cand_index % V  # (B, C)
        cand = running.take(cand_beam)
        cand.tokens[:, :, t] = cand_tok
        cand.logps[:, :, t] = logp.gather(1, cand_index)
        cand.scores = cand_scores
        cand.lengths = torch.full_like(cand_beam, t + 1)
        ends = (
            torch.isin(cand_tok, eos_ids) if eos else torch.zeros_like(cand_tok, dtype=torch.bool)
        )
        if t == T - 1:
            ends = torch.ones_like(ends)  # the length limit ends every candidate
        # Running beams: the K best candidates that did not end.
        keep = cand_scores + ends.float() * _NEG  # (B, C)
        next_index = keep.topk(K, dim=-1).indices  # (B, K)
        running = cand.take(next_index)
        running.scores = keep.gather(1, next_index)
        source = cand_beam.gather(1, next_index)  # (B, K) which old beam each continues
        # Finished: candidates among the top K that ended, scored with the length penalty.
        just_done = ends & top_k_slots  # (B, C)
        fin_scores = cand_scores / float(t + 1) ** length_penalty  # (B, C)
        full = finished.done.all(-1, keepdim=True) & (early_stopping is True)  # (B, 1)
        fin_scores = fin_scores + full.float() * _NEG
        fin_scores = fin_scores + (~open_).float() * _NEG
        fin_scores = fin_scores + (~just_done).float() * _NEG
        cand.scores = fin_scores
        cand.done = just_done
        merged = _Beams.cat(finished, cand)
        finished = merged.take(merged.scores.topk(K, dim=-1).indices)
        # Can a running beam still beat the worst finished one? (generate's heuristic)
        best_length = T if early_stopping == "never" and length_penalty > 0.0 else t + 1
        best_running = running.scores[:, :1] / float(best_length) ** length_penalty  # (B, 1)
        worst = finished.scores.min(dim=1, keepdim=True).values  # (B, 1)
        worst_finished = torch.where(finished.done, worst, torch.full_like(finished.scores, _NEG))
        open_ = open_ & (best_running > worst_finished).any(-1, keepdim=True)  # (B, 1)
        all_full = bool(finished.done.all()) and early_stopping is True
        if not bool(open_.any()) or all_full or bool(ends.all()):
            break
        cache.reorder_cache((source + offsets).view(-1))
        logits, cache = lm.step_unchecked(
            running.tokens[:, :, t].reshape(B * K, 1),
            full_mask[:, : P + t + 1] if padded else None,
            cache,
            positions[:, t : t + 1],
        )
    check_finite_logits(finite)
    best = finished.take(torch.zeros((B, 1), dtype=torch.long, device=device))
    lengths = best.lengths[:, 0]  # (B,)
    steps = int(lengths.max())
    completion = best.tokens[:, 0, :steps]  # (B, T')
    completion_mask = (torch.arange(steps, device=device) < lengths.unsqueeze(-1)).long()  # (B, T')
    last = completion.gather(1, (lengths - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B,)
    terminated = torch.isin(last, eos_ids) if eos else torch.zeros_like(last, dtype=torch.bool)
    return completion, completion_mask, best.logps[:, 0, :steps], terminated, best.scores[:, 0]
