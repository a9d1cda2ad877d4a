"""Preference data for DPO-style agents: (x, y_w, y_l) triples as text and as one padded batch.

Four ways in, one way out:

- ``load_jsonl(path)``: one JSON object a line with ``prompt``, ``chosen`` and ``rejected`` strings;
- ``from_records(rows)``: any iterable of mappings, e.g. a ``datasets.Dataset`` (iterating it yields
  dicts, so ``datasets`` is never imported here);
- ``sample_pairs(lm, prompts, k=..., reward=... | preference=...)``: on-policy pairs, K completions
  sampled per prompt from the model, ranked by a reward r(x, y) or by a pairwise preference
  P(y ≻ y' | x); the best and the worst form a pair, kept when their margin is large
  (Rosset et al. 2024, DNO-Prct, arXiv:2404.03715, Alg. 2);
- ``synthetic_preferences(lm, prompts, gold)``: the same samples paired by a hidden gold reward,
  every pair of a prompt's candidates with a large gold margin (a reward model's training data).

``tokenize_pairs(lm, pairs)`` turns N pairs into one ``PreferenceBatch`` of 2N rows, chosen rows
first: row i is x_i ⊕ y_w,i and row N + i is x_i ⊕ y_l,i, right-padded, with a mask of the
completion tokens, so chosen and rejected go through the model in one forward pass and their
log-probs are summed over completion tokens only.

Tokenization: the prompt goes through ``lm.encode`` (the same ids generation starts from), the
completion through the tokenizer without special tokens, then EOS is appended (``add_eos=True``)
so the model also learns where a preferred answer stops, as TRL does for plain-text data. Pairs
made by ``sample_pairs`` keep the exact sampled token ids (EOS included when one was sampled),
so re-tokenizing decoded text never changes what is scored.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from textgym.records import FieldTypeError, MissingFieldError, read_jsonl

if TYPE_CHECKING:
    from textgym.lm import LanguageModel

RewardFn = Callable[..., np.ndarray]
"""r(x, y): ``(prompts, completions, references) -> (B,)`` scores, the textgym reward protocol."""
PreferenceFn = Callable[[Sequence[str], Sequence[str], Sequence[str]], np.ndarray]
"""P(y ≻ y' | x): ``(prompts, completions_a, completions_b) -> (B,)`` probabilities in [0, 1]."""


@dataclass(frozen=True)
class PreferencePair:
    """One preference triple: for prompt x, completion y_w is preferred to y_l.

    ``chosen_ids`` / ``rejected_ids`` hold the exact completion token ids when known (sampled
    pairs); then they, not the text, are scored. ``margin`` is the score gap that selected the pair.
    """

    prompt: str
    chosen: str
    rejected: str
    chosen_ids: tuple[int, ...] | None = None
    rejected_ids: tuple[int, ...] | None = None
    margin: float | None = None

    def __post_init__(self) -> None:
        for name in ("prompt", "chosen", "rejected"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(
                    f"PreferencePair.{name} must be a str, "
                    f"got {type(value).__name__}: {value!r:.80}"
                    + (
                        " (conversational data: apply the chat template first)"
                        if name != "prompt"
                        else ""
                    )
                )
        for name in ("chosen", "rejected"):
            ids = getattr(self, f"{name}_ids")
            if ids is not None and len(ids) == 0:
                raise ValueError(f"PreferencePair.{name}_ids is empty (prompt {self.prompt!r:.80})")
            if ids is None and getattr(self, name) == "":
                raise ValueError(
                    f"PreferencePair.{name} is an empty completion (prompt {self.prompt!r:.80}); "
                    "an empty y has no tokens to score, drop the pair or give its token ids"
                )


@dataclass
class PreferenceBatch:
    """N pairs as 2N token rows: ``[x_i ⊕ y_w,i for i < N] + [x_i ⊕ y_l,i for i < N]``.

    Rows are right-padded (valid prefix first) to the longest row of the batch.
    """

    input_ids: Tensor  # (2N, L) int64, chosen rows then rejected rows
    attention_mask: Tensor  # (2N, L) int64, 1 on prompt and completion tokens
    completion_mask: Tensor  # (2N, L) bool, True on completion tokens only

    def __post_init__(self) -> None:
        shapes = {t.shape for t in (self.input_ids, self.attention_mask, self.completion_mask)}
        if len(shapes) != 1 or self.input_ids.dim() != 2 or self.input_ids.shape[0] % 2:
            raise ValueError(
                "PreferenceBatch needs three (2N, L) tensors, got "
                f"{[tuple(t.shape) for t in self.state_dict().values()]}"
            )

    def __len__(self) -> int:
        """N, the number of pairs (half the rows)."""
        return self.input_ids.shape[0] // 2

    def select(self, index: Tensor) -> PreferenceBatch:
        """The pairs ``index`` (B,), trimmed to their longest row.

        Args:
            index: (B,) int64 pair indices in [0, N).

        Returns:
            A batch of 2B rows, chosen first.
        """
        n = len(self)
        rows = torch.cat([index, index + n])  # (2B,)
        mask = self.attention_mask[rows]  # (2B, L)
        # Right padding: the longest row ends at the last column any row uses.
        length = int(mask.sum(1).max())
        return PreferenceBatch(
            self.input_ids[rows, :length], mask[:, :length], self.completion_mask[rows, :length]
        )

    def to(self, device: torch.device | str) -> PreferenceBatch:
        """The same batch on ``device``."""
        return PreferenceBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.completion_mask.to(device),
        )

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to save with a checkpoint."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "completion_mask": self.completion_mask,
        }


def _pair_from_mapping(
    row: Mapping[str, Any], where: str, keys: tuple[str, str, str]
) -> PreferencePair:
    missing = [k for k in keys if k not in row]
    if missing:
        raise MissingFieldError(
            f"{where}: missing field(s) {missing}; a preference record needs {list(keys)}, "
            f"got fields {sorted(row)}"
        )
    try:
        return PreferencePair(prompt=row[keys[0]], chosen=row[keys[1]], rejected=row[keys[2]])
    except TypeError as err:
        raise FieldTypeError(f"{where}: {err}") from err
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def from_records(
    rows: Iterable[Mapping[str, Any]],
    *,
    prompt_key: str = "prompt",
    chosen_key: str = "chosen",
    rejected_key: str = "rejected",
) -> list[PreferencePair]:
    """Pairs from any iterable of mappings, e.g. a ``datasets.Dataset`` or a list of dicts.

    Args:
        rows: records holding a prompt, a chosen and a rejected string.
        prompt_key: field holding x.
        chosen_key: field holding y_w.
        rejected_key: field holding y_l.

    Returns:
        The pairs, in order. Raises on a missing field or an empty completion, naming the record.
    """
    keys = (prompt_key, chosen_key, rejected_key)
    columns = getattr(rows, "column_names", None)  # a datasets.Dataset: fail before iterating
    if columns is not None and not set(keys) <= set(columns):
        raise KeyError(
            f"dataset has columns {list(columns)}, a preference dataset needs {list(keys)}"
        )
    pairs = [_pair_from_mapping(row, f"record {i}", keys) for i, row in enumerate(rows)]
    if not pairs:
        raise ValueError("no preference records")
    return pairs


def load_jsonl(
    path: str | Path,
    *,
    prompt_key: str = "prompt",
    chosen_key: str = "chosen",
    rejected_key: str = "rejected",
) -> list[PreferencePair]:
    """Pairs from a JSON-lines file, one ``{"prompt", "chosen", "rejected"}`` object a line.

    Args:
        path: the file; blank lines are skipped.
        prompt_key: field holding x.
        chosen_key: field holding y_w.
        rejected_key: field holding y_l.

    Returns:
        The pairs, in file order.

    Raises:
        ValueError: a line that is not UTF-8, not JSON or not an object, a missing field
            (``MissingFieldError``, also a KeyError), a field that is not a str
            (``FieldTypeError``, also a TypeError), an empty completion, an empty file; each
            names the file and line.
    """
    keys = (prompt_key, chosen_key, rejected_key)
    pairs = [_pair_from_mapping(row, where, keys) for where, row in read_jsonl(path)]
    if not pairs:
        raise ValueError(f"{path}: no preference records")
    return pairs


def review_pairs(n: int) -> list[PreferencePair]:
    """``n`` pairs for benchmarks and smoke runs, from the shipped review task: a review prompt
    with two different reference reviews as chosen and rejected (no preference is implied)."""
    from textgym.assets import load_jsonl as load_task_rows  # assets import nothing of textgym

    rows = load_task_rows("reviews")
    refs = [r["references"][0] for r in rows]
    return [
        PreferencePair(
            rows[i % len(rows)]["prompt"], refs[i % len(refs)], refs[(i * 7 + 3) % len(refs)]
        )
        for i in range(n)
    ]


def completion_ids(lm: LanguageModel, texts: Sequence[str], add_eos: bool) -> list[list[int]]:
    """Token ids of completion texts (no special tokens added), EOS appended when ``add_eos``."""
    encoded = lm.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    eos = lm.eos_token_id
    if not add_eos:
        return [list(ids) for ids in encoded]
    if eos is None:
        raise ValueError("add_eos=True but the tokenizer has no eos token; pass add_eos=False")
    return [list(ids) if ids and ids[-1] == eos else [*ids, eos] for ids in encoded]


def pad_right(
    rows: Sequence[Sequence[int]], completion: Sequence[Sequence[bool]], pad_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Token rows right-padded into one batch (valid prefix first), on the CPU.

    Args:
        rows: B rows of token ids, each at least one token.
        completion: for each row, one flag per token, True on the completion's tokens.
        pad_id: the id padding is written with (masked out).

    Returns:
        ``(input_ids, attention_mask, completion_mask)``: (B, L) int64, (B, L) int64 and (B, L)
        bool, L the longest row.
    """
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, L)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.bool)  # (B, L)
    for i, (row, side) in enumerate(zip(rows, completion, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
        completion_mask[i, : len(row)] = torch.tensor(side, dtype=torch.bool)
    return input_ids, attention_mask, completion_mask


def tokenize_pairs(
    lm: LanguageModel,
    pairs: Sequence[PreferencePair],
    *,
    max_length: int | None = None,
    add_eos: bool = True,
) -> PreferenceBatch:
    """Tokenize N pairs into one right-padded ``PreferenceBatch`` of 2N rows (chosen first).

    Args:
        lm: supplies the tokenizer (prompts through ``lm.encode``), EOS, pad id and context length.
        pairs: the N pairs; pairs with token ids use them instead of their text.
        max_length: most tokens per row (prompt + completion); defaults to the model's context.
            A prompt that leaves no room for a completion raises; a completion that overflows is
            cut at the end (with a warning giving the count).
        add_eos: append EOS to text completions that do not end with it.

    Returns:
        The batch, on the CPU.
    """
    if not pairs:
        raise ValueError("tokenize_pairs: no pairs")
    ctx = lm.max_length
    if max_length is not None and (max_length < 2 or (ctx is not None and max_length > ctx)):
        raise ValueError(f"max_length must be in [2, {ctx}] (the context window), got {max_length}")
    limit = max_length if max_length is not None else ctx
    try:
        # A prompt must leave room for at least one completion token.
        prompt_ids, prompt_mask = lm.encode(
            [p.prompt for p in pairs], max_length=None if limit is None else limit - 1
        )  # (N, P) left-padded
    except ValueError as err:
        raise ValueError(f"tokenize_pairs: {err} (text i is pair i's prompt)") from err
    prompts = [
        ids[m.bool()].tolist() for ids, m in zip(prompt_ids.cpu(), prompt_mask.cpu(), strict=True)
    ]
    completions: list[list[int]] = []
    for side in ("chosen", "rejected"):
        need = [i for i, p in enumerate(pairs) if getattr(p, f"{side}_ids") is None]
        texts = completion_ids(lm, [getattr(pairs[i], side) for i in need], add_eos) if need else []
        by_index = dict(zip(need, texts, strict=True))
        completions += [list(getattr(p, f"{side}_ids") or by_index[i]) for i, p in enumerate(pairs)]
    empty = next((r for r, comp in enumerate(completions) if not comp), None)
    if empty is not None:
        i, side = empty % len(pairs), ("chosen", "rejected")[empty // len(pairs)]
        raise ValueError(
            f"pair {i}: the {side} completion {getattr(pairs[i], side)!r:.80} encodes to no tokens "
            "(add_eos=False); there is nothing to score"
        )
    rows: list[tuple[list[int], list[int]]] = []
    cut = 0
    for r, comp in enumerate(completions):
        i = r % len(pairs)
        prompt = prompts[i]
        if limit is not None and len(prompt) + len(comp) > limit:
            comp = comp[: limit - len(prompt)]
            cut += 1
        rows.append((prompt, comp))
    if cut:
        warnings.warn(
            f"{cut} of {len(rows)} completions were cut to fit {limit} tokens with their prompt",
            stacklevel=2,
        )
    sides = [[False] * len(prompt) + [True] * len(comp) for prompt, comp in rows]
    return PreferenceBatch(*pad_right([p + c for p, c in rows], sides, lm.pad_token_id))


def sequence_logps(lm: LanguageModel, batch: PreferenceBatch) -> Tensor:  # (2B,)
    """log π(y|x) of every row, summed over its completion tokens (prompt and padding excluded).

    Chosen and rejected rows go through the model in one forward pass.

    Args:
        lm: the model π.
        batch: 2B rows on ``lm.device``.

    Returns:
        (2B,) float32, differentiable when gradients are on.
    """
    logp = lm.logprobs(batch.input_ids, batch.attention_mask)  # (2B, L)
    return torch.where(batch.completion_mask, logp, torch.zeros_like(logp)).sum(-1)  # (2B,)


@torch.no_grad()
def cached_logps(
    lm: LanguageModel,
    data: PreferenceBatch,
    batch_size: int = 32,
    score: Callable[[LanguageModel, PreferenceBatch], Tensor] | None = None,
) -> Tensor:
    """``sequence_logps`` of all 2N rows of ``data`` (chosen first), in chunks, without gradients.

    Args:
        lm: the model, e.g. π_ref.
        data: N pairs (on any device).
        batch_size: pairs per forward.
        score: how a chunk is scored (``(lm, chunk) -> (2b,)``, chosen rows first); None:
            :func:`sequence_logps` (``textgym.packing.completion_logps`` scores packed).

    Returns:
        (2N,) float32 on the CPU, in ``data``'s row order.
    """
    score = sequence_logps if score is None else score
    chunks = [
        score(lm, data.select(torch.arange(i, min(i + batch_size, len(data)))).to(lm.device))
        for i in range(0, len(data), batch_size)
    ]  # each (2b,): the chosen then the rejected rows of its slice
    halves = [c.chunk(2) for c in chunks]
    return torch.cat([h[0] for h in halves] + [h[1] for h in halves]).cpu()  # (2N,)


def without_ties(batch: PreferenceBatch) -> PreferenceBatch:
    """The pairs whose chosen and rejected rows differ once tokenized (and cut to max_length).

    A pair with y_w = y_l has margin 0 whatever θ is: it adds log 2 to the loss and nothing to the
    gradient, so a data set of such pairs would train silently at loss log 2. Dropped with a
    warning that gives the count; none left is an error.
    """
    n = len(batch)
    chosen, rejected = (batch.input_ids * batch.attention_mask).chunk(2)  # (N, L) each
    c_mask, r_mask = batch.attention_mask.chunk(2)  # (N, L) each
    tied = (chosen == rejected).all(1) & (c_mask == r_mask).all(1)  # (N,)
    n_tied = int(tied.sum())
    if n_tied == 0:
        return batch
    if n_tied == n:
        raise ValueError(
            f"all {n} preference pairs have chosen == rejected (after tokenization), which "
            "carries no preference: check how the pairs were built"
        )
    warnings.warn(
        f"dropped {n_tied} of {n} preference pairs whose chosen and rejected completions are "
        "the same tokens (they carry no preference and add log 2 to the loss)",
        stacklevel=3,
    )
    return batch.select(torch.nonzero(~tied).flatten())
