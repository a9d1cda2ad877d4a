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

from textgym.decoding.beam import beam_search
from textgym.decoding.filters import check_finite_logits, filter_logits, sample
from textgym.decoding.generate import EosArg, GenerationOutput, generate, greedy

__all__ = [
    "EosArg",
    "GenerationOutput",
    "beam_search",
    "check_finite_logits",
    "filter_logits",
    "generate",
    "greedy",
    "sample",
]
