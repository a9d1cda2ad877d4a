"""Compaction: the rows of a decode batch that still need the LM, and its KV cache cut to them.

A batched decode loop (:func:`textgym.decoding.generate`, :func:`textgym.rollout.collect`) keeps
full-batch ``(B, ...)`` results, but once rows have ended (EOS) it need not feed them to the LM
any more. :class:`DecodeRows` records which of the B rows the LM batch holds, re-indexes the KV
cache (:func:`select_rows`) and scatters the LM's per-row outputs back to ``(B, ...)`` tensors.

Decisions:

- **When it pays.** The cache is re-indexed only when the rows still needed are at most
  :data:`SHRINK` (3/4) of the rows the LM batch holds: each compaction copies every layer's keys
  and values (about what one step's attention reads anyway), so it is repaid within a few steps,
  and a batch of 64 is compacted at most ~5 times (64 -> 48 -> 36 -> 27 -> 20 -> 16) instead of
  at every EOS. Measured (embedded model, ``collect`` on reviews, B = 256, 64 new tokens, speedup
  over no compaction): 1.42x at 1/2, 1.52x at 3/4, 1.51x at 0.95, 1.29x when cut at every EOS.
  Finished rows still in the LM batch are fed the pad id and their outputs ignored, as without
  compaction.
- **Never below** :data:`MIN_ROWS` **rows.** Compaction must not change a single bit of what the
  remaining rows compute, but a GEMM's kernel (hence its summation order) may depend on the
  number of rows M. Measured on this project's CPUs (MKL, fp32, 1 or 2 threads, K in 32..3072, N
  in 2..50257): ``F.linear`` (``x @ W.T``: Llama's projections, every LM head) differs from the
  full batch for M < 16 and agrees for every M >= 16; ``addmm`` (GPT-2's ``Conv1D``) differs at
  M = 1 (a GEMV) and, for a transposed weight, up to M = 6. So the LM batch keeps at least 16 rows
  (finished ones fill it up); a batch of at most 16 is never compacted. The guarantee is that of
  fp32 on CPU. Under bf16 autocast (oneDNN) some GEMM shapes depend on M at any size, and cuBLAS
  picks kernels by shape: there compacted and full-batch log-probs and values may differ at the
  compute precision's rounding level (embedded model, bf16: up to 0.02 in a log-prob; the tokens
  of 6 rollouts of 64 were the same). Runs stay reproducible (compaction is a function of the
  data); ``compact=False`` on the loops keeps the full batch's numerics.
- **Which caches.** Only caches whose row selection is known to be complete: a ``transformers``
  ``DynamicCache`` whose layers are all plain dynamic (or sliding-window, or indexed) attention
  layers (their ``batch_select_indices`` indexes every per-row tensor), and legacy tuples of
  per-layer ``(keys, values, ...)`` tensors with the batch first. Anything else (static caches,
  linear-attention states, a layer class defined in a model file) turns compaction off for that
  loop: it runs on the full batch, slower but the same.
- Outputs the loops keep per row (tokens, log-probs, values) are scattered into full-batch
  tensors, and noise is drawn for all B rows (``sample(..., rows=, batch_size=)``), so the
  samples of the remaining rows do not shift when others leave.

Shapes: B batch, n rows in the LM batch (n <= B).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformers import cache_utils as _hf_cache

__all__ = ["MIN_ROWS", "SHRINK", "DecodeRows", "select_rows"]

MIN_ROWS = 16
"""The fewest rows compaction leaves in the LM batch (see the module docstring)."""

SHRINK = 0.75
"""Compact when the rows still needed are at most this fraction of the LM batch's rows."""

_SELECTABLE_LAYERS = tuple(
    getattr(_hf_cache, name)
    for name in ("DynamicLayer", "DynamicSlidingWindowLayer", "DynamicIndexedLayer")
    if hasattr(_hf_cache, name)
)
"""Cache layer types (exact) whose ``batch_select_indices`` covers all their per-row state."""


def select_rows(cache: Any, index: Tensor) -> Any | None:
    """The KV cache restricted to the batch rows ``index``, or None when its type is not known to
    be safe to cut (then nothing is changed).

    Args:
        cache: what :meth:`LanguageModel.step_unchecked` returned: a ``transformers``
            ``DynamicCache`` (cut in place and returned) or legacy per-layer tuples (a new tuple).
        index: ``(k,)`` int64 rows to keep, in order, on the cache's device.
    """
    if type(cache) is _hf_cache.DynamicCache:
        layers = getattr(cache, "layers", None)  # transformers < 5 keeps plain key/value lists
        if layers is not None and not all(type(layer) in _SELECTABLE_LAYERS for layer in layers):
            return None
        cache.batch_select_indices(index)
        return cache
    if isinstance(cache, (tuple, list)) and cache:
        rows = _legacy_rows(cache)
        if rows is None or int(index.max()) >= rows:
            return None
        return tuple(tuple(t.index_select(0, index) for t in layer) for layer in cache)
    return None


def _legacy_rows(cache: tuple[Any, ...] | list[Any]) -> int | None:
    """The batch size of legacy ``((keys, values), ...)`` tensors, None if they disagree on it."""
    sizes = set()
    for layer in cache:
        if not isinstance(layer, (tuple, list)) or not layer:
            return None
        for t in layer:
            if not isinstance(t, Tensor) or t.ndim != 4:
                return None
            sizes.add(int(t.shape[0]))
    return sizes.pop() if len(sizes) == 1 else None


class DecodeRows:
    """Which of a batch's B rows the LM batch holds: all of them, until :meth:`compact`.

    Args:
        batch: B.
        enabled: False keeps every row in the LM batch (``compact=False`` of the loops).
    """

    def __init__(self, batch: int, *, enabled: bool) -> None:
        self.batch = batch
        self.enabled = enabled and batch > MIN_ROWS
        self.rows: Tensor | None = None
        """``(n,)`` int64 sorted rows of the LM batch; None while it holds all B."""

    @property
    def size(self) -> int:
        """n, the rows the LM batch holds."""
        return self.batch if self.rows is None else int(self.rows.shape[0])

    def pays(self, needed: int) -> bool:
        """Whether cutting the LM batch to ``needed`` rows (at least :data:`MIN_ROWS`) pays."""
        return self.enabled and max(needed, MIN_ROWS) <= SHRINK * self.size

    def compact(self, needed: Tensor, cache: Any) -> tuple[Tensor | None, Any]:
        """Cut the LM batch to the rows where ``needed`` ``(B,)`` is True (filled up with other
        rows it holds to :data:`MIN_ROWS`) and the cache with it.

        Returns:
            ``(local, cache)``: ``local`` ``(k,)`` the kept positions within the old LM batch (to
            index the caller's other per-row tensors with), None when the cache cannot be cut
            (compaction is then off for good and nothing changed).
        """
        keep = needed if self.rows is None else needed[self.rows]  # (n,) bool
        short = MIN_ROWS - int(keep.sum())
        if short > 0:  # fill up with finished rows the LM batch already holds
            keep = keep.clone()
            keep[(~keep).nonzero().squeeze(1)[:short]] = True
        local = keep.nonzero().squeeze(1)  # (k,)
        cut = select_rows(cache, local)
        if cut is None:
            self.enabled = False
            return None, cache
        self.rows = local if self.rows is None else self.rows[local]
        return local, cut

    def take(self, full: Tensor) -> Tensor:
        """The LM batch's rows ``(n, ...)`` of a full-batch tensor ``(B, ...)``."""
        return full if self.rows is None else full[self.rows]

    def scatter(self, part: Tensor, fill: float | bool) -> Tensor:
        """A full-batch ``(B, ...)`` tensor holding ``part`` ``(n, ...)`` at the LM batch's rows
        and ``fill`` elsewhere."""
        if self.rows is None:
            return part
        full = part.new_full((self.batch, *part.shape[1:]), fill)  # (B, ...)
        full[self.rows] = part
        return full
