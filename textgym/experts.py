"""Experts: the expert's next token for any state of the token MDP (a dynamic oracle).

An expert π_E labels *any* state (including states off its own distribution, as DAgger needs) with
its next token; see the module docstring of :mod:`textgym.tasks` for the API. :class:`Expert` is
unbound data a task carries; ``expert.bind(task, tokenizer, max_new_tokens)`` returns a batched
:class:`BoundExpert` over the env's observation arrays.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from textgym.tasks import Task

__all__ = ["BoundExpert", "Expert", "FunctionExpert", "ReferenceExpert"]


class BoundExpert(Protocol):
    """An expert bound to a tokenizer: batched next-token labels for env states."""

    def __call__(
        self,
        prompt_index: np.ndarray,  # (B,) int64, row of the task's prompts
        input_ids: np.ndarray,  # (B, L) int64, right-padded prompt + completion so far
        prompt_lengths: np.ndarray,  # (B,) int64, prompt tokens of each row
        completion_lengths: np.ndarray,  # (B,) int64, completion tokens so far (t)
    ) -> np.ndarray:  # (B,) int64 next token ids
        """Return the expert's next token for each of the B states."""
        ...


class Expert(ABC):
    """An expert policy over the token MDP; tokenizer-free until :meth:`bind`."""

    @abstractmethod
    def bind(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int
    ) -> BoundExpert:
        """Prepare the expert for one env's tokenizer and horizon.

        Args:
            task: the task whose prompts ``prompt_index`` refers to.
            tokenizer: the env's tokenizer (never mutated).
            max_new_tokens: the env's horizon T.

        Returns:
            The batched labelling function.
        """


class ReferenceExpert(Expert):
    """Oracle that writes a reference: action at completion step t = reference token t, then EOS.

    Position-based, so it labels any prefix, including ones it would never produce: after a wrong
    token at step 2 it still answers reference token 3 at step 3. That is the exact oracle of a
    task whose answer does not depend on what was written before (the reverse task), and the
    usual "copy the reference" expert elsewhere. The reference is tokenised on its own, without
    special tokens, so write references with the separator (for GPT-2 BPE a leading space) that
    follows the prompt.

    Args:
        reference_index: which reference of each prompt to write (the first by default).
    """

    def __init__(self, reference_index: int = 0) -> None:
        if reference_index < 0:
            raise ValueError(f"reference_index must be >= 0, got {reference_index}")
        self.reference_index = reference_index

    def bind(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int
    ) -> BoundExpert:
        """Tokenise every reference once into a (N, T) table; labelling is then an index.

        Args:
            task: must have references.
            tokenizer: the env's tokenizer; needs ``eos_token_id``.
            max_new_tokens: T; longer references are cut (the expert then never emits EOS).

        Returns:
            The batched oracle.
        """
        if task.references is None:
            raise ValueError(f"ReferenceExpert needs references, task {task.name!r} has none")
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("ReferenceExpert needs a tokenizer with an eos_token_id")
        k = self.reference_index
        short = [i for i, refs in enumerate(task.references) if len(refs) <= k]
        if short:
            raise ValueError(
                f"reference_index={k} but prompt {short[0]} has only "
                f"{len(task.references[short[0]])} reference(s)"
            )
        texts = [refs[k] for refs in task.references]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        table = np.full((len(texts), max_new_tokens), eos, dtype=np.int64)  # (N, T)
        for i, ids in enumerate(encoded):
            n = min(len(ids), max_new_tokens)
            table[i, :n] = ids[:n]
        return _TableExpert(table)


class _TableExpert:
    """``table[prompt_index, t]``: a ReferenceExpert bound to one tokenizer."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table  # (N, T) int64
        self._last = table.shape[1] - 1

    def __call__(
        self,
        prompt_index: np.ndarray,
        input_ids: np.ndarray,
        prompt_lengths: np.ndarray,
        completion_lengths: np.ndarray,
    ) -> np.ndarray:  # (B,) int64
        # t = T only in a finished episode waiting for its autoreset, whose action the env
        # ignores: any label does there, and clipping keeps the index in range.
        t = np.minimum(completion_lengths, self._last)
        return self.table[prompt_index, t]


class FunctionExpert(Expert):
    """An expert from a per-row function ``fn(prompt_index, completion_ids) -> next token id``.

    Called once per row (a Python loop), so it suits experts that are slow anyway (a search, a
    solver, a big model). ``completion_ids`` is the list of tokens written so far.

    Args:
        fn: the labelling function.
    """

    def __init__(self, fn: Callable[[int, list[int]], int]) -> None:
        self.fn = fn

    def bind(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int
    ) -> BoundExpert:
        """Return the batched wrapper (the function needs no tokenizer state)."""
        fn = self.fn

        def label(
            prompt_index: np.ndarray,
            input_ids: np.ndarray,
            prompt_lengths: np.ndarray,
            completion_lengths: np.ndarray,
        ) -> np.ndarray:  # (B,) int64
            out = np.empty(len(prompt_index), dtype=np.int64)
            for b in range(len(prompt_index)):
                p, t = int(prompt_lengths[b]), int(completion_lengths[b])
                out[b] = int(fn(int(prompt_index[b]), input_ids[b, p : p + t].tolist()))
            return out

        return label
