"""Greedy and sampled generation: a batched loop over the KV cache of :class:`LanguageModel`.

The left-padded prompt is fed once, then one token per row per step; a row that emitted EOS keeps
emitting the pad id (masked out), and the loop stops when every row is done. Greedy decoding
reproduces ``model.generate(do_sample=False)`` token for token.

Compaction (``compact=True``, :mod:`textgym.kv_cache`): once at most 3/4 of the LM batch's rows
are still running, the finished ones leave the LM batch, its KV cache and its attention mask
(never below 16 rows); tokens and log-probs are scattered back to ``(B, T)``, and sampling draws
its uniforms for all B rows, so the output is the same as with ``compact=False`` (bit for bit in
fp32 on CPU; :mod:`textgym.kv_cache` says where else).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from textgym.decoding.filters import _check_filter_args, _draw, _filter, check_finite_logits
from textgym.kv_cache import DecodeRows
from textgym.lm import LanguageModel

__all__ = ["EosArg", "GenerationOutput", "generate", "greedy"]

EosArg = int | Sequence[int] | None | Literal["model"]
"""EOS ids that end a row: ``"model"`` = ``lm.eos_token_id``; None = never stop before the end."""


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
    compact: bool = True,
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
        compact: drop finished rows from the LM batch (see the module docstring); False feeds
            every row until the last one ends. The output is the same either way (fp32, CPU).

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
    if not isinstance(compact, bool):
        raise ValueError(f"compact must be True or False, got {compact!r}")
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
    rows = DecodeRows(ids.shape[0], enabled=compact and bool(eos))
    with torch.inference_mode():
        parts = _decode_loop(
            lm, ids, prompt_mask, max_new_tokens, pick, do_sample, generator, eos, rows
        )
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

    def select(self, local: Tensor) -> _Filter:
        """The filter of a compacted batch: per-row ``(n, V)`` masks cut to rows ``local``."""
        early, mask = self.early_mask, self.mask
        return replace(
            self,
            early_mask=early[local] if early is not None and early.ndim == 2 else early,
            mask=mask[local] if mask is not None and mask.ndim == 2 else mask,
        )


def _decode_loop(
    lm: LanguageModel,
    ids: Tensor,
    prompt_mask: Tensor,
    max_new_tokens: int,
    pick: _Filter,
    do_sample: bool,
    generator: torch.Generator | None,
    eos: list[int],
    rows: DecodeRows,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The per-token loop of :func:`generate`: tensors preallocated, nothing decoded per step.

    The LM sees the rows ``rows`` holds (all B until finished rows are compacted away); what it
    returns for them is scattered into the ``(B, ...)`` results.

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
    steps, running = T, B
    finite = torch.ones(B, dtype=torch.bool, device=device)  # (B,) checked once, after the loop
    for t in range(T):
        x = pick(logits, t)  # (n, V), the LM batch's rows
        lse = torch.logsumexp(x, dim=-1, keepdim=True)  # (n, 1)
        finite &= rows.scatter(torch.isfinite(lse.squeeze(-1)), True) | done
        if do_sample:  # uniforms for all B rows: a compacted batch draws what the full one would
            tok = _draw(x, lse, generator, rows.rows, None if rows.rows is None else B)  # (n,)
        else:
            tok = x.argmax(-1)  # (n,)
        tok = tok.clamp(max=x.shape[-1] - 1)  # a NaN row draws V: keep going, raise after the loop
        logp = x.gather(-1, tok.unsqueeze(-1)).squeeze(-1) - lse.squeeze(-1)  # (n,)
        # Finished rows emit the pad id and record nothing.
        tok = torch.where(done, pad, rows.scatter(tok, lm.pad_token_id))  # (B,)
        tokens[:, t] = tok
        logps[:, t] = torch.where(done, zero, rows.scatter(logp, 0.0))
        alive_mask[:, t] = (~done).long()
        if eos:
            done |= tok == eos_ids[0] if len(eos) == 1 else torch.isin(tok, eos_ids)
            running = B - int(done.sum())
            if running == 0:
                steps = t + 1
                break
        if t + 1 < T:
            if rows.pays(running):
                local, cache = rows.compact(~done, cache)
                if local is not None:
                    full_mask, positions = full_mask[local], positions[local]  # (n, P + T), (n, T)
                    pick = pick.select(local)
            logits, cache = lm.step_unchecked(
                rows.take(tok).unsqueeze(-1),
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
    compact: bool = True,
) -> GenerationOutput:
    """Greedy decoding: :func:`generate` with ``do_sample=False`` (equals HF's greedy generate)."""
    return generate(
        lm,
        prompts,
        max_new_tokens=max_new_tokens,
        attention_mask=attention_mask,
        eos_token_id=eos_token_id,
        min_new_tokens=min_new_tokens,
        compact=compact,
    )
