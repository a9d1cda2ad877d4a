"""``make(spec)``: the one flat name -> reward table, weighted sums and wrapped callables.

A spec is one of:

- a name from ``REWARDS`` (``"bleu"``); keyword arguments of ``make`` go to that reward's
  constructor (``make("length", target=10)``);
- a dict of weights, ``{"bleu": 0.7, "length": 0.3}``: a ``WeightedSum`` whose ``components``
  gives each part's unweighted scores (the env puts them in ``info``). A key may also be a reward
  object, so components can be configured: ``{make("length", target=10): 0.3, "bleu": 0.7}``;
- a reward object (anything with ``name``, ``token_level``, ``needs_references`` and the batched
  ``__call__``): built-in rewards (``BaseReward``) pass through unchanged; foreign ones are wrapped
  so that their output is validated like the built-in ones;
- a plain callable. The rule: a function marked with ``@batched`` is called once per batch as
  ``fn(prompts, completions)``; any other callable is called once per sample as
  ``fn(prompt, completion)``. Either form also receives the references (the batch's list of
  tuples, or the sample's tuple) as a third positional argument when it accepts one.

Every reward made here validates its output: a wrong shape, or a NaN/inf score, raises and shows
the offending sample; a reward that needs references raises, naming itself, when called without.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from textgym.rewards.base import (
    BaseReward,
    References,
    Reward,
    check_batch,
    check_scores,
    normalize_references,
)

F = TypeVar("F", bound=Callable[..., Any])

_BATCHED_FLAG = "__textgym_batched__"


def batched(fn: F) -> F:
    """Mark ``fn(prompts, completions[, references]) -> (B,) scores`` as a batched reward.

    Without this mark ``make`` calls a function once per sample.

    Args:
        fn: the batched scoring function.

    Returns:
        ``fn`` itself, flagged.
    """
    setattr(fn, _BATCHED_FLAG, True)
    return fn


def _accepts_references(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes a third positional argument (the references)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: call them with two
        return False
    positional = 0
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 3


class FunctionReward(BaseReward):
    """A reward made from a plain callable (see the module docstring for the calling rule).

    Args:
        fn: ``(prompt, completion[, references]) -> float``, or, with ``is_batched``,
            ``(prompts, completions[, references]) -> (B,) scores``.
        name: defaults to ``fn.__name__``.
        is_batched: defaults to whether ``fn`` carries the ``@batched`` mark.
        needs_references: raise when called without references.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        is_batched: bool | None = None,
        needs_references: bool = False,
    ) -> None:
        self.fn = fn
        self.name = str(name or getattr(fn, "__name__", type(fn).__name__))
        self.is_batched = (
            bool(getattr(fn, _BATCHED_FLAG, False)) if is_batched is None else is_batched
        )
        self.needs_references = needs_references
        self._pass_refs = _accepts_references(fn)

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        if self.is_batched:
            if self._pass_refs:
                return np.asarray(self.fn(prompts, completions, references))
            return np.asarray(self.fn(prompts, completions))
        refs: Sequence[tuple[str, ...] | None] = references or [None] * len(completions)
        if self._pass_refs:
            vals = [self.fn(p, c, r) for p, c, r in zip(prompts, completions, refs, strict=True)]
        else:
            vals = [self.fn(p, c) for p, c in zip(prompts, completions, strict=True)]
        for i, v in enumerate(vals):
            if not isinstance(v, int | float | np.number):
                raise TypeError(
                    f"reward {self.name!r} must return a float per sample, got "
                    f"{type(v).__name__} for sample {i}"
                )
        return np.asarray(vals, dtype=np.float64)


class CheckedReward:
    """Wraps a foreign reward object so that its inputs and outputs are validated.

    Attributes not defined here (``step`` of a token-level reward, its settings) are delegated.

    Args:
        reward: any object keeping the ``Reward`` protocol.
    """

    def __init__(self, reward: Reward) -> None:
        self.inner = reward
        self.name: str = reward.name
        self.token_level: bool = bool(reward.token_level)
        self.needs_references: bool = bool(reward.needs_references)

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: References | None = None,
    ) -> np.ndarray:  # (B,) float32
        """Call the wrapped reward and validate its output (see ``check_scores``)."""
        check_batch(self.name, prompts, completions, references, self.needs_references)
        out = self.inner(prompts, completions, references)
        return check_scores(out, self.name, prompts, completions)

    def step(
        self, input_ids: np.ndarray, lengths: np.ndarray, actions: np.ndarray
    ) -> np.ndarray:  # (B,) float32
        """Delegate a token-level step and check its shape and finiteness."""
        if not self.token_level:
            raise AttributeError(f"reward {self.name!r} is not token-level (token_level=False)")
        out = np.asarray(self.inner.step(input_ids, lengths, actions), dtype=np.float32)  # type: ignore[attr-defined]  # token_level promises step()
        if out.shape != (len(actions),) or not np.isfinite(out).all():
            raise ValueError(
                f"reward {self.name!r}.step returned shape {out.shape} with values {out[:8]}; "
                f"expected ({len(actions)},) finite floats"
            )
        return out

    def __getattr__(self, attr: str) -> Any:
        if attr == "inner":  # not set yet (unpickling, copying): no recursion through getattr
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def __repr__(self) -> str:
        return f"CheckedReward({self.inner!r})"


class WeightedSum(BaseReward):
    """r(x, y) = sum_i w_i * r_i(x, y).

    ``components`` returns each r_i unweighted, keyed by its name. When every component is
    token-level the sum is token-level too (``step`` sums the weighted steps); a mix of token- and
    sequence-level components raises, because the env pays the two kinds at different times.

    Args:
        parts: (reward, weight) pairs; reward names must be distinct.
    """

    def __init__(self, parts: Sequence[tuple[Reward, float]]) -> None:
        if not parts:
            raise ValueError("a weighted sum needs at least one component")
        names = [r.name for r, _ in parts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"component names must be distinct, got {dupes} more than once")
        for r, w in parts:
            if not np.isfinite(float(w)):
                raise ValueError(f"weight of {r.name!r} must be finite, got {w}")
        levels = {bool(r.token_level) for r, _ in parts}
        if len(levels) > 1:
            token = [r.name for r, _ in parts if r.token_level]
            raise ValueError(
                f"cannot sum token-level rewards {token} with sequence-level ones: the env pays "
                "them at different steps. Give the env each kind separately."
            )
        self.parts = [(r, float(w)) for r, w in parts]
        self.token_level = levels.pop()
        self.needs_references = any(r.needs_references for r, _ in parts)
        self.name = " + ".join(f"{w:g}*{r.name}" for r, w in self.parts)

    def components(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: References | None = None,
    ) -> dict[str, np.ndarray]:
        """Each component's unweighted scores.

        Args:
            prompts: B prompts.
            completions: B completions.
            references: one sequence of references per completion, if any component needs them.

        Returns:
            name -> (B,) float32 scores.
        """
        # Check once up front so that the error names the component that needs references.
        for r, _ in self.parts:
            normalize_references(references, len(completions), r.name, r.needs_references)
        return {r.name: r(prompts, completions, references) for r, _ in self.parts}

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: References | None = None,
    ) -> np.ndarray:  # (B,) float32
        """sum_i w_i * r_i; a missing-references error names the component that needs them."""
        for r, _ in self.parts:
            if r.needs_references and references is None:
                normalize_references(None, len(completions), r.name, True)
        return super().__call__(prompts, completions, references)

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        comps = self.components(prompts, completions, references)
        total = np.zeros(len(completions), dtype=np.float64)
        for r, w in self.parts:
            total += w * comps[r.name]
        return total

    def step(
        self, input_ids: np.ndarray, lengths: np.ndarray, actions: np.ndarray
    ) -> np.ndarray:  # (B,) float32
        """Weighted sum of the components' token-level rewards (token-level sums only)."""
        if not self.token_level:
            raise AttributeError(f"{self.name!r} is sequence-level: it has no step()")
        total = np.zeros(len(actions), dtype=np.float64)
        for r, w in self.parts:
            total += w * r.step(input_ids, lengths, actions)  # type: ignore[attr-defined]  # token_level checked
        return total.astype(np.float32)


# --- the name table --------------------------------------------------------------------------


def _lazy(cls: str, **fixed: Any) -> Callable[..., Reward]:
    """A factory of the reward class ``cls`` of ``textgym.rewards``, imported when first made
    (through the package's table of lazy names), so that ``import textgym.rewards`` stays light:
    torch, sacrebleu and nltk load only when a reward that needs them is made."""

    def factory(**kw: Any) -> Reward:
        import textgym.rewards as package

        reward: Reward = getattr(package, cls)(**fixed, **kw)
        return reward

    return factory


REWARDS: dict[str, Callable[..., Reward]] = {
    "bleu": _lazy("BLEU"),
    "chrf": _lazy("ChrF"),
    "ter": _lazy("TER"),
    **{t: _lazy("ROUGE", rouge_type=t) for t in ("rouge1", "rouge2", "rougeL", "rougeLsum")},
    "meteor": _lazy("METEOR"),
    "cider": _lazy("CIDErD"),
    "sentiment": _lazy("VaderSentiment"),
    "classifier": _lazy("HFClassifier"),
    "toxicity": _lazy("ProfanityToxicity"),
    "similarity": _lazy("SemanticSimilarity"),
    "reward_model": _lazy("RewardModelReward"),
    "linear": _lazy("LinearReward"),
    "length": _lazy("Length"),
    "repetition": _lazy("Repetition"),
    "keywords": _lazy("KeywordInclusion"),
    "exact_match": _lazy("ExactMatch"),
    "banned_tokens": _lazy("BannedTokens"),
    "token_repetition": _lazy("TokenRepetition"),
    "math": _lazy("MathReward"),
    "format": _lazy("FormatReward"),
    "regex": _lazy("RegexReward"),
}
"""The flat name -> constructor table behind ``make(name)``."""


def names() -> list[str]:
    """The reward names ``make`` accepts."""
    return sorted(REWARDS)


def _from_name(name: str, kwargs: Mapping[str, Any]) -> Reward:
    try:
        factory = REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; valid names: {', '.join(names())}") from None
    try:
        return factory(**kwargs)
    except TypeError as err:  # a missing or unknown argument: say which reward it was for
        raise TypeError(f"make({name!r}): {err}") from err


def _is_reward_object(obj: object) -> bool:
    return all(hasattr(obj, a) for a in ("name", "token_level", "needs_references")) and callable(
        obj
    )


def make(spec: str | Mapping[Any, float] | Reward | Callable[..., Any], **kwargs: Any) -> Reward:
    """Build a reward from a name, a dict of weights, a reward object or a callable.

    Args:
        spec: see the module docstring.
        **kwargs: for a name, the reward's constructor arguments; for a callable, those of
            ``FunctionReward`` (``name``, ``is_batched``, ``needs_references``).

    Returns:
        A reward keeping the ``Reward`` protocol.

    Examples:
        >>> r = make({"length": 0.5, "sentiment": 0.5})
        >>> r(["Say:"], ["what a lovely day"]).shape
        (1,)
    """
    if isinstance(spec, str):
        return _from_name(spec, kwargs)
    if isinstance(spec, Mapping):
        if kwargs:
            raise TypeError(
                f"make(dict) takes no keyword arguments, got {sorted(kwargs)}; configure a "
                "component with make(name, ...) and use the object as the dict key"
            )
        if not spec:
            raise ValueError(f"a dict of weights needs at least one reward, got {dict(spec)!r}")
        parts: list[tuple[Reward, float]] = []
        for key, weight in spec.items():
            if not isinstance(weight, int | float | np.number) or isinstance(weight, bool):
                raise TypeError(f"weight of {key!r} must be a number, got {weight!r}")
            parts.append((make(key), float(weight)))
        return WeightedSum(parts)
    if isinstance(spec, BaseReward):
        if kwargs:
            raise TypeError(f"make(reward object) takes no keyword arguments, got {sorted(kwargs)}")
        return spec
    if isinstance(spec, CheckedReward) or _is_reward_object(spec):
        if kwargs:
            raise TypeError(f"make(reward object) takes no keyword arguments, got {sorted(kwargs)}")
        return spec if isinstance(spec, CheckedReward) else CheckedReward(spec)  # type: ignore[arg-type]  # duck-typed protocol checked above
    if callable(spec):
        return FunctionReward(spec, **kwargs)
    raise TypeError(
        f"cannot make a reward from {type(spec).__name__} {spec!r:.80}; pass a name "
        f"({', '.join(names())}), a dict of weights, a reward object or a callable"
    )
