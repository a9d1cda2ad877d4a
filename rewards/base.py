"""The reward protocol every textgym reward keeps.

Sequence-level rewards (the default) score whole completions, batched::

    reward(prompts, completions, references=None) -> np.ndarray  # (B,) float32

``references`` is one sequence of reference strings per prompt (several references are allowed).
A bare string in place of a reference tuple is read as one reference (``"a cat"`` means
``("a cat",)``, never the characters of it). A reward that needs references says so with
``needs_references = True`` and raises, naming itself, when called without them.

Token-level (dense) rewards set ``token_level = True`` and are paid by the env on every step, from
token ids alone so that nothing is decoded on the hot path::

    reward.step(input_ids, lengths, actions) -> np.ndarray  # (B,) float32

where ``input_ids`` (B, L) holds prompt + completion so far (right-padded), ``lengths`` (B,) the
valid length of each row *before* ``actions`` (B,) is appended. Calling a token-level reward on
whole texts (``__call__``) returns the sum of its per-token rewards, so every reward can also be
used for evaluation.

``BaseReward`` is the helper class every built-in reward derives from: its ``__call__`` checks the
inputs (equal lengths, references present when needed) and the output (shape (B,), finite), then
returns float32. Subclasses implement ``_score``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

References = Sequence[Sequence[str]]


@runtime_checkable
class Reward(Protocol):
    """A batched sequence-level reward r(x, y)."""

    name: str
    token_level: bool
    needs_references: bool

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: References | None = None,
    ) -> np.ndarray:  # (B,) float32
        ...


@runtime_checkable
class TokenReward(Reward, Protocol):
    """A dense reward r_t paid on every step from token ids (``token_level = True``)."""

    def step(
        self,
        input_ids: np.ndarray,  # (B, L) int, right-padded prompt + completion so far
        lengths: np.ndarray,  # (B,) int, valid length of each row before ``actions``
        actions: np.ndarray,  # (B,) int, the tokens being appended
    ) -> np.ndarray:  # (B,) float32
        ...


def normalize_references(
    references: References | None, batch_size: int, name: str, required: bool
) -> list[tuple[str, ...]] | None:
    """Return references as one tuple of strings per sample, or raise naming the reward.

    Args:
        references: one sequence of references per sample (a bare ``str`` counts as one reference).
        batch_size: B, the number of completions.
        name: the reward's name, for error messages.
        required: whether the reward needs references.

    Returns:
        ``None`` when no references were given (and none are required), else B tuples.
    """
    if references is None:
        if required:
            raise ValueError(
                f"reward {name!r} needs references (needs_references=True) but was called with "
                "references=None; pass one sequence of reference strings per completion"
            )
        return None
    if isinstance(references, str):
        raise TypeError(
            f"reward {name!r}: references must be one sequence of strings per completion, "
            f"got a single str {references[:60]!r}"
        )
    if len(references) != batch_size:
        raise ValueError(
            f"reward {name!r}: got {len(references)} reference sets for {batch_size} completions"
        )
    out: list[tuple[str, ...]] = []
    for i, refs in enumerate(references):
        # A bare str is a Sequence[str] too; iterating it would yield characters, never wanted.
        group = (refs,) if isinstance(refs, str) else tuple(refs)
        if required and len(group) == 0:
            raise ValueError(f"reward {name!r}: sample {i} has an empty reference set")
        out.append(group)
    return out


def check_batch(
    name: str,
    prompts: Sequence[str],
    completions: Sequence[str],
    references: References | None,
    needs_references: bool,
) -> list[tuple[str, ...]] | None:
    """The checks of every reward call before scoring: one prompt per completion, and the
    references as :func:`normalize_references` returns them (or raises, naming the reward)."""
    if len(prompts) != len(completions):
        raise ValueError(
            f"reward {name!r}: {len(prompts)} prompts but {len(completions)} completions"
        )
    return normalize_references(references, len(completions), name, needs_references)


def check_scores(
    scores: object,
    name: str,
    prompts: Sequence[str],
    completions: Sequence[str],
) -> np.ndarray:
    """Validate a reward's output: shape (B,), finite; return it as float32.

    Args:
        scores: what the reward returned.
        name: the reward's name, for error messages.
        prompts: the B prompts (shown with the offending sample).
        completions: the B completions (shown with the offending sample).

    Returns:
        ``scores`` as a float32 array of shape (B,).
    """
    batch_size = len(completions)
    try:
        arr = np.asarray(scores, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"reward {name!r} returned {type(scores).__name__}, not numbers: {err}"
        ) from err
    if arr.shape != (batch_size,):
        raise ValueError(
            f"reward {name!r} returned shape {arr.shape}, expected ({batch_size},) "
            f"(one score per completion)"
        )
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"reward {name!r} returned {arr[i]} for sample {i} "
            f"({bad.size} non-finite of {batch_size}): prompt={prompts[i]!r:.200} "
            f"completion={completions[i]!r:.200}"
        )
    return arr


class BaseReward(ABC):
    """Base of the built-in rewards: validates inputs and outputs around ``_score``.

    Subclasses set ``name`` (and ``needs_references`` / ``token_level`` when true) and implement
    ``_score(prompts, completions, references)`` returning B numbers.
    """

    name: str = "reward"
    token_level: bool = False
    needs_references: bool = False

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: References | None = None,
    ) -> np.ndarray:  # (B,) float32
        """Score B completions.

        Args:
            prompts: B prompt strings.
            completions: B completion strings (the text after the prompt).
            references: optional, one sequence of reference strings per completion.

        Returns:
            (B,) float32 rewards.
        """
        if isinstance(completions, str) or isinstance(prompts, str):
            raise TypeError(
                f"reward {self.name!r} is batched: pass lists of prompts and completions, "
                "not a single str"
            )
        refs = check_batch(self.name, prompts, completions, references, self.needs_references)
        if len(completions) == 0:
            return np.zeros(0, dtype=np.float32)
        out = self._score(list(prompts), list(completions), refs)
        return check_scores(out, self.name, prompts, completions)

    @abstractmethod
    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray | Sequence[float]:  # (B,)
        """Return B scores; inputs are already checked (see ``__call__``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
