"""Padding-free (packed) passes: the real tokens of a padded batch, concatenated, through the model.

A padded batch ``(B, L)`` spends the matrix products of every layer on its padding. Packing
concatenates the real tokens of all rows into R rows of C columns (R = 1: one ``(1, N)`` row),
with ``position_ids`` restarting at 0 at each sequence, runs the model once on them, and scatters
the per-token log-probs back to the padded ``(B, L)`` layout.

Why attention never crosses a sequence boundary: with ``attention_mask=None``, no cache and
``position_ids`` given, ``transformers`` (5.x, ``masking_utils.find_packed_sequence_indices``) reads
a new sequence wherever a position does not follow its predecessor by exactly 1, and builds the
causal mask as ``causal(position_ids[q], position_ids[k]) and segment[q] == segment[k]``: block-
diagonal causal, for sdpa, eager, flex and flash attention alike (flash uses the position ids for
its variable-length kernel). Two pitfalls, both checked: the detection is skipped when a cache is
passed, and GPT-2's forward creates a ``DynamicCache`` unless ``use_cache=False``, so a pack sent
with the model's default ``use_cache`` silently attends across sequences; and a model whose own
code ignores ``position_ids`` (remote code, older architectures) cannot be packed.
:func:`check_isolation` therefore runs a 7-token probe once per model (packed vs alone) and raises
when the packed sequence's logits differ; the tests compare log-probs and gradients with the padded
path on GPT-2, the embedded model and a Llama.

Rows of a pack: attention over a packed row of C tokens still costs C² per head (a dense block
mask: CPU kernels do not skip masked blocks), so one row of all N tokens trades the padding for
N² attention, which at 14M-92M parameters and 16 rows of 25-64 tokens made a step no faster.
:func:`pack` therefore spreads the sequences over R rows, longest first onto the emptiest row
(LPT), and :func:`pack_rows` picks R by a cost model of a transformer layer per token, 24H²
FLOPs of matrix products plus 4·C·H of attention: R·C·(6H + C), minimal. With R = 1 that is the
(1, N) pack; with R = B and equal lengths it is the padded batch. The tail of a row short of C is
filler, a sequence of its own (positions from 0 again), whose outputs are dropped.

Only the positions whose log-prob is asked for go through the LM head (``score_mask``: DPO scores
completion tokens only), in chunks of ``lm.logprob_chunk`` positions under activation checkpointing
as in :mod:`textgym.token_logprobs`, so the float32 logits are never larger than the padded
path's ``(B, L, V)``.

Shapes: B rows, L padded length, R pack rows, C pack columns, M real tokens, V vocab, H hidden.
"""

from __future__ import annotations

import heapq
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from textgym.hf import forward_parameters, hidden_size
from textgym.preference import PreferenceBatch, cached_logps, sequence_logps
from textgym.token_logprobs import checked_head, head_logprobs

if TYPE_CHECKING:
    from textgym.lm import LanguageModel

__all__ = [
    "CompletionLogps",
    "Pack",
    "check_isolation",
    "completion_logps",
    "completion_logps_cached",
    "pack",
    "pack_rows",
    "packed_logprobs",
    "padding_fraction",
]

_ISOLATED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()
"""Models whose packed sequences were checked to stay apart (the check runs once per model)."""


@dataclass(frozen=True)
class Pack:
    """B padded rows packed into R rows of C tokens, and the maps between the two layouts."""

    input_ids: Tensor  # (R, C) int64: the real tokens, then filler
    position_ids: Tensor  # (R, C) int64: 0 at the start of every sequence (filler included)
    src: Tensor  # (M,) int64: flat index of each real token in the padded (B·L) layout
    dst: Tensor  # (M,) int64: flat index of the same token in the packed (R·C) layout
    pos: Tensor  # (M,) int64: its position within its own sequence
    shape: tuple[int, int]  # (B, L)


def _bins(lengths: Sequence[int], rows: int) -> tuple[list[int], list[int], list[int]]:
    """Longest first onto the emptiest row: each sequence's row and offset; each row's fill."""
    row, offset = [0] * len(lengths), [0] * len(lengths)
    fill = [0] * rows
    heap = [(0, r) for r in range(rows)]  # (fill, row): ties go to the lower row, deterministic
    for b in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        f, r = heapq.heappop(heap)
        row[b], offset[b], fill[r] = r, f, f + lengths[b]
        heapq.heappush(heap, (fill[r], r))
    return row, offset, fill


def pack_rows(lengths: Sequence[int], hidden: int) -> int:
    """The number of pack rows R with the least modelled cost R·C·(6H + C) (module docstring).

    Args:
        lengths: the B sequence lengths.
        hidden: H, the model's hidden size.

    Returns:
        R in [1, number of non-empty sequences]; the smallest among equal costs.
    """
    best, best_rows = math.inf, 1
    longest = max(lengths, default=0)
    for rows in range(1, max(1, sum(n > 0 for n in lengths)) + 1):
        width = max(_bins(lengths, rows)[2])
        cost = rows * width * (6 * hidden + width)
        if cost < best:
            best, best_rows = cost, rows
        if width <= longest:  # rows are as short as they get: more rows only cost more
            break
    return best_rows


def pack(input_ids: Tensor, attention_mask: Tensor, rows: int = 1, filler: int = 0) -> Pack:
    """Pack the real tokens of a padded batch into rows, each sequence whole and in token order.

    Args:
        input_ids: ``(B, L)`` token ids, padded on either side.
        attention_mask: ``(B, L)``, 1 = real token; each row's real tokens must be contiguous.
        rows: R, the number of pack rows (1: the (1, N) pack; see :func:`pack_rows`).
        filler: the token id written after the last sequence of a row.

    Returns:
        The :class:`Pack`, on the batch's device.

    Raises:
        ValueError: shapes differ, ``rows < 1``, or a row's real tokens have a gap (not left or
            right padding).
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if input_ids.shape != attention_mask.shape or input_ids.ndim != 2:
        raise ValueError(
            f"input_ids and attention_mask must both be (B, L), got {tuple(input_ids.shape)} "
            f"and {tuple(attention_mask.shape)}"
        )
    real = attention_mask.bool()  # (B, L)
    starts = torch.diff(real.long(), dim=1, prepend=real.new_zeros(real.shape[0], 1).long()) == 1
    if bool((starts.sum(1) > 1).any()):
        bad = int(torch.nonzero(starts.sum(1) > 1)[0, 0])
        raise ValueError(
            f"row {bad} of attention_mask has a gap between real tokens "
            f"({attention_mask[bad].tolist()}): packing needs left or right padding"
        )
    B, L = real.shape
    device = input_ids.device
    n = real.sum(1)  # (B,)
    first = real.long().argmax(1)  # (B,) the first real column (0 for an empty row)
    lengths = n.tolist()
    total = int(sum(lengths))
    row, offset, fill = _bins(lengths, rows)
    R, C = rows, max(max(fill), 1)
    pos = torch.arange(total, device=device) - torch.repeat_interleave(n.cumsum(0) - n, n)  # (M,)
    src = torch.repeat_interleave(torch.arange(B, device=device) * L + first, n) + pos  # (M,)
    row_t = torch.tensor(row, device=device)
    base = row_t * C + torch.tensor(offset, device=device)  # (B,)
    dst = torch.repeat_interleave(base, n) + pos  # (M,)
    ids = torch.full((R * C,), filler, dtype=input_ids.dtype, device=device)
    ids[dst] = input_ids.flatten()[src]
    # The filler after row r's last sequence is a sequence of its own, positions from 0 again
    # (restarting every L tokens: a pack row may be longer than the context window).
    fill_t = torch.tensor(fill, device=device)
    positions = (torch.arange(C, device=device)[None, :] - fill_t[:, None]) % max(L, 1)  # (R, C)
    positions = positions.flatten()  # (R·C,)
    positions[dst] = pos
    return Pack(ids.view(R, C), positions.view(R, C), src, dst, pos, (B, L))


def padding_fraction(attention_mask: Tensor) -> float:
    """The share of a padded batch's positions that are padding (what packing saves)."""
    return 1.0 - float(attention_mask.float().mean())


def _forward(lm: LanguageModel, ids: Tensor, positions: Tensor, keep_last: bool) -> Any:
    kwargs: dict[str, Any] = {}
    if keep_last and "logits_to_keep" in forward_parameters(lm.model):
        # The head runs on scored positions only, below. A position tensor, not the int 1: see
        # LanguageModel._call (torch's bf16 linear on the strided slice copies the head per row).
        kwargs["logits_to_keep"] = torch.tensor([ids.shape[1] - 1], device=ids.device)
    with lm.autocast():
        # use_cache=False is what makes transformers see the packing: with a cache (GPT-2 makes
        # one by default) it skips the packed-sequence detection and attends across sequences.
        return lm.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=None,
            use_cache=False,
            output_hidden_states=keep_last,
            **kwargs,
        )


@torch.no_grad()
def check_isolation(lm: LanguageModel) -> None:
    """Raise unless a packed sequence's logits equal those of the same sequence alone.

    Runs once per model (the answer is cached): a 3-token and a 4-token sequence, packed, against
    the 4-token one by itself.

    Raises:
        ValueError: the model's forward takes no ``position_ids``, or attention crossed the
            boundary (or the positions were ignored); the fix is to turn packing off.
    """
    model = lm.model
    if _ISOLATED.get(model):
        return
    fix = "turn packing off (e.g. DPOConfig(packing=False))"
    if "position_ids" not in forward_parameters(model):
        raise ValueError(f"{type(model).__name__}.forward takes no position_ids: {fix}")
    device = lm.device
    vocab = min(lm.vocab_size, len(lm.tokenizer))
    a = torch.tensor([3, 5, 7], device=device) % vocab
    s = torch.tensor([11, 13, 17, 19], device=device) % vocab
    packed = torch.cat([a, s])[None]  # (1, 7)
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3]], device=device)
    was_training = model.training
    model.eval()  # dropout would make the two passes differ
    try:  # through the very call packed_logprobs makes
        got = _forward(lm, packed, positions, keep_last=False).logits[0, 3:]
        alone = _forward(lm, s[None], positions[:, 3:], keep_last=False).logits[0]
    finally:
        model.train(was_training)
    got, alone = got.float(), alone.float()  # (4, V) each
    fp32 = next(model.parameters()).dtype == torch.float32 and lm.compute_dtype is None
    tol = (1e-3 if fp32 else 5e-2) * (1.0 + float(alone.abs().max()))
    err = float((got - alone).abs().max())
    if not err <= tol:
        raise ValueError(
            f"{type(model).__name__} does not keep packed sequences apart: a sequence's logits "
            f"moved by {err:.3g} (> {tol:.3g}) when another sequence was packed before it, "
            f"{model.config._attn_implementation!r} attention: {fix}"
        )
    _ISOLATED[model] = True


def packed_logprobs(
    lm: LanguageModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    score_mask: Tensor | None = None,
    *,
    rows: int | None = None,
) -> Tensor:
    """``lm.logprobs`` of a padded batch, computed on the packed real tokens.

    Args:
        lm: the model (its forward must take ``position_ids``; see :func:`check_isolation`).
        input_ids: ``(B, L)`` token ids, padded on either side.
        attention_mask: ``(B, L)``, 1 = real token (contiguous in each row).
        score_mask: ``(B, L)`` bool, the positions whose log-prob is needed (the LM head runs on
            these only); None: every real token.
        rows: pack rows R (1: one row of all real tokens); None: :func:`pack_rows` chooses.

    Returns:
        ``(B, L)`` float32, differentiable: ``out[b, t] = log p(x_t | x_<t)`` at scored real
        tokens, 0 at a sequence's first token, at padding and outside ``score_mask``.
    """
    check_isolation(lm)
    B, L = input_ids.shape
    # Filler is any id but pad's: GPT-2 warns about a missing attention mask when it sees pad ids.
    eos = lm.eos_token_id
    filler = (
        eos if eos is not None and eos != lm.pad_token_id else (lm.pad_token_id + 1) % lm.vocab_size
    )
    if rows is None:
        rows = pack_rows(attention_mask.sum(1).tolist(), hidden_size(lm.model.config))
    p = pack(input_ids, attention_mask, rows, filler=filler)
    want = p.pos > 0  # (M,) a first token has no context to be predicted from
    if score_mask is not None:
        want &= score_mask.flatten()[p.src]
    src, dst = p.src[want], p.dst[want]  # (M',) each
    out = _forward(lm, p.input_ids, p.position_ids, keep_last=True)
    hidden = out.hidden_states[-1]  # (R, C, H) after the final norm
    logits = out.logits  # (R, 1, V), or (R, C, V) for a model without logits_to_keep
    head = checked_head(lm, hidden[:, -1:], logits[:, -1:], "use packing=False")
    states = hidden.flatten(0, 1)[dst - 1]  # (M', H): a token is predicted one position earlier
    targets = p.input_ids.flatten()[dst]  # (M',)
    logp = head_logprobs(lm, head, states[None], targets[None], lm.logprob_chunk)[0]  # (M',)
    return logp.new_zeros(B * L).index_put((src,), logp).view(B, L)  # (B, L)


def completion_logps(lm: LanguageModel, batch: PreferenceBatch, *, packing: bool = True) -> Tensor:
    """``textgym.preference.sequence_logps`` (log π(y|x) summed over completion tokens, (2B,)
    float32, differentiable), packed when ``packing``."""
    if not packing:
        return sequence_logps(lm, batch)
    logp = packed_logprobs(lm, batch.input_ids, batch.attention_mask, batch.completion_mask)
    return logp.sum(-1)  # (2B,): logp is 0 outside the completions


class CompletionLogps(nn.Module):
    """:func:`completion_logps` of a batch's rows as a module, so that DDP wraps the forward it
    syncs (the LM's model is this module's only submodule)."""

    lm: LanguageModel

    def __init__(self, lm: LanguageModel, *, packing: bool) -> None:
        super().__init__()
        self.model = lm.model
        object.__setattr__(self, "lm", lm)  # not a submodule: its model is registered above
        self.packing = packing

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor
    ) -> Tensor:  # (2B,)
        batch = PreferenceBatch(input_ids, attention_mask, completion_mask)
        return completion_logps(self.lm, batch, packing=self.packing)


@torch.no_grad()
def completion_logps_cached(
    lm: LanguageModel,
    data: PreferenceBatch,
    batch_size: int = 32,
    *,
    packing: bool,
) -> Tensor:  # (2N,)
    """``textgym.preference.cached_logps`` (all 2N rows, chosen first, on the CPU), packed when
    ``packing``."""
    return cached_logps(lm, data, batch_size, score=completion_logps if packing else None)
