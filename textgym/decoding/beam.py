"""Beam search over the KV cache: reproduces ``model.generate(num_beams=K, do_sample=False)``
token for token (length penalty, early stopping and the refill of finished beams as there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from textgym.decoding.filters import check_finite_logits
from textgym.decoding.generate import EosArg, GenerationOutput, _eos_ids, _output, _prompts, greedy
from textgym.lm import LanguageModel

__all__ = ["beam_search"]


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
