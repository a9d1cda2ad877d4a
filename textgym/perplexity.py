"""Perplexity of texts under a causal LM, with a strided sliding window for long texts.

``perplexity = exp(total NLL / number of predicted tokens)`` over all texts together (a corpus
perplexity, not a mean of per-text perplexities). Each text is tokenized on its own (special tokens
as the tokenizer adds them, e.g. BOS for Llama); its first token has no context and is never scored.

A text longer than the window (``max_length`` tokens) is scored as in the Hugging Face perplexity
guide: windows start every ``stride`` tokens, each window scores only the tokens not scored by the
previous one, with the window's earlier tokens as context. So every token after the first is
scored exactly once, with at least ``max_length - stride`` tokens of context (fewer at the start of
the text, and the first token of a window has none when ``stride == max_length``: it is skipped,
as the guide's labels do). A text that fits in one window gets ``exp(HF mean loss)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from textgym.lm import LanguageModel

__all__ = ["perplexity", "windows"]


def windows(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """The guide's sliding windows over a text of ``n_tokens`` tokens.

    Returns:
        ``(begin, end, first_scored)`` per window: the window is tokens ``[begin, end)`` and it
        scores tokens ``[max(first_scored, begin + 1), end)`` (a window's first token has no
        context)
    """
    spans: list[tuple[int, int, int]] = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + max_length, n_tokens)
        spans.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n_tokens:
            break
    return spans


def perplexity(
    model: LanguageModel | str,
    texts: str | Sequence[str],
    *,
    stride: int | None = None,
    max_length: int | None = None,
    batch_size: int = 8,
) -> float:
    """Perplexity of ``texts`` under ``model``: exp(total NLL / total predicted tokens).

    Args:
        model: a :class:`LanguageModel`, or a path / hub name for ``LanguageModel.from_pretrained``.
        texts: one text or several (scored together, each tokenized on its own).
        stride: how far the window moves for long texts; defaults to ``max_length // 2``.
        max_length: window size in tokens; defaults to the model's context window.
        batch_size: windows per forward pass.

    Returns:
        The perplexity (a float >= 1 in exact arithmetic).

    Raises:
        ValueError: bad sizes, no texts, or no token to predict (every text shorter than 2 tokens).
    """
    lm = model if isinstance(model, LanguageModel) else LanguageModel.from_pretrained(model)
    batch = [texts] if isinstance(texts, str) else list(texts)
    if not batch:
        raise ValueError("texts is empty: pass at least one string")
    window = lm.max_length if max_length is None else max_length
    if window is None:
        raise ValueError("the model config has no context window: pass max_length")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"max_length must be an int >= 2, got {window!r}")
    if lm.max_length is not None and window > lm.max_length:
        raise ValueError(
            f"max_length={window} exceeds the model's context window of {lm.max_length}"
        )
    step = max(1, window // 2) if stride is None else stride
    if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= window:
        raise ValueError(f"stride must be an int in [1, max_length={window}], got {step!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")

    # Every window of every text becomes one job: (token ids, index of its first scored token).
    jobs: list[tuple[list[int], int]] = []
    for ids in lm.tokenizer(batch)["input_ids"]:
        for begin, end, first in windows(len(ids), window, step):
            if first < end:
                jobs.append((ids[begin:end], first - begin))
    if not jobs:
        raise ValueError("no token to predict: every text has fewer than 2 tokens")
    jobs.sort(key=lambda job: len(job[0]))  # similar lengths together: less padding per batch

    total_nll = 0.0
    n_tokens = 0
    with torch.inference_mode():
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            # Right padding: causal attention keeps pads from touching the tokens before them.
            rows = [ids + [lm.pad_token_id] * (width - len(ids)) for ids, _ in chunk]
            input_ids = torch.tensor(rows, dtype=torch.long, device=lm.device)  # (B, L)
            lengths = torch.tensor([len(ids) for ids, _ in chunk], device=lm.device)  # (B,)
            firsts = torch.tensor([first for _, first in chunk], device=lm.device)  # (B,)
            cols = torch.arange(width, device=lm.device)  # (L,)
            attention_mask = (cols < lengths.unsqueeze(-1)).long()  # (B, L)
            scored = attention_mask.bool() & (cols >= firsts.unsqueeze(-1))  # (B, L)
            logp = lm.logprobs(input_ids, attention_mask)  # (B, L)
            total_nll -= float(logp[scored].double().sum())
            n_tokens += int(scored.sum())
    return math.exp(total_nll / n_tokens)
