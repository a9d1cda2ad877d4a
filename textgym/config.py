"""Agent configs: field checks driven by the type hints, and exact JSON round trips.

Every ``<Algo>Config`` is a frozen dataclass whose ``__post_init__`` starts with
:func:`check_fields`: each field must have the type its annotation names (an ``int`` field takes no
``bool``, ``float`` or ``str``; a ``float`` field takes an ``int`` or ``float`` that is finite; a
``Literal`` field takes one of its values; a dataclass field takes an instance of it), so a config
fails at construction with the field's name, the value and what is allowed, not 10 000 steps in.
Ranges stay in each config (:func:`check_range` writes their messages).

:func:`config_to_dict` / :func:`config_from_dict` are the config's part of a checkpoint: plain
JSON, rebuilt through the constructor (so a loaded config is validated like a new one) with
nested configs and tuples restored from the annotations, never from names stored in the file.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

import numpy as np

__all__ = ["check_fields", "check_range", "check_text_batch", "config_from_dict", "config_to_dict"]

C = TypeVar("C")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:  # resolving string annotations is slow: once per class
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type (numbers finite, no bool for numbers)."""
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    union = _union_args(hint)
    if union is not None:
        return any(_matches(value, h) for h in union)
    origin = typing.get_origin(hint)
    if origin is Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # numpy integers are Integral too; bools are not numbers here
        return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
    if hint is float:
        return (
            isinstance(value, numbers.Real)
            and not isinstance(value, bool | np.bool_)
            and math.isfinite(value)
        )
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        args = typing.get_args(hint)
        if not isinstance(value, origin):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        if origin is tuple and args:
            return len(value) == len(args) and all(map(_matches, value, args))
        return all(_matches(v, args[0]) for v in value) if args else True
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint this checker does not know (a Protocol, a TypeVar): not checked


def _describe(hint: Any) -> str:
    union = _union_args(hint)
    if union is not None:
        return " or ".join(_describe(h) for h in union)
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if hint is float:
        return "a finite float"
    if hint is int:
        return "an int (not a bool)"
    return getattr(hint, "__name__", str(hint))


def _string_choices(hint: Any) -> bool:
    """Whether ``hint`` is (or contains) a Literal of strings: names such as a loss or baseline."""
    union = _union_args(hint)
    if union is not None:
        return any(_string_choices(h) for h in union)
    args = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
    return any(isinstance(a, str) for a in args)


def check_fields(config: Any) -> None:
    """Raise ``TypeError`` naming the first field whose value does not have its annotated type
    (``ValueError`` for a string that is not one of a ``Literal``'s names).

    Floats must be finite (``lr=inf`` and ``beta=nan`` are refused here); ints are not bools or
    floats (``n_epochs=1.5`` is refused); strings are not numbers (``lr='3e-4'`` is refused).
    """
    cls = type(config)
    hints = _hints(cls)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        hint = hints[f.name]
        if not _matches(value, hint):
            if isinstance(value, str) and _string_choices(hint):  # a misspelt name: a bad value
                raise ValueError(
                    f"unknown {f.name} {value!r}: {cls.__name__}.{f.name} must be {_describe(hint)}"
                )
            raise TypeError(
                f"{cls.__name__}.{f.name} must be {_describe(hint)}, got {value!r} "
                f"({type(value).__name__})"
            )


def check_range(
    config: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ``ValueError`` unless ``config.name`` (if not None) lies in the given interval."""
    value = getattr(config, name)
    if value is None:
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "-inf" if low is None else _bound(low)
        right = "inf" if high is None else _bound(high)
        interval = f"{'(' if low_open or low is None else '['}{left}, {right}"
        interval += ")" if high_open or high is None else "]"
        raise ValueError(f"{type(config).__name__}.{name} must be in {interval}, got {value!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"  # 4294967295, not 4.29497e+09


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as JSON-ready data (nested configs as objects, tuples as lists, numpy scalars
    as Python numbers)."""
    out: dict[str, Any] = _plain(dataclasses.asdict(config))
    return out


def _rebuild(value: Any, hint: Any) -> Any:
    union = _union_args(hint)
    if union is not None:
        for h in union:
            if dataclasses.is_dataclass(h) and isinstance(value, Mapping):
                return _rebuild(value, h)
            if typing.get_origin(h) is tuple and isinstance(value, list):
                return _rebuild(value, h)
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return config_from_dict(hint, value)
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_rebuild(v, args[0]) for v in value)
        return tuple(_rebuild(v, h) for v, h in zip(value, args, strict=False))
    return value


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Rebuild ``cls`` from :func:`config_to_dict`'s output, through its constructor (validated).

    Raises:
        ValueError: a key that is not a field of ``cls`` (a config of another agent, say).
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"a {cls.__name__} must be a JSON object, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no field(s) {unknown}; its fields are {sorted(names)} "
            "(is this the config of another agent?)"
        )
    return cls(**{k: _rebuild(v, hints[k]) for k, v in data.items()})


def check_text_batch(
    name: str,
    prompts: object,
    completions: object,
    references: object = (),
    needs: str | None = None,
) -> None:
    """The batch checks of a reward that lives in the core (which may not import
    ``textgym.rewards.BaseReward``): lists, not one str; as many prompts as completions; and, when
    ``needs`` says what the references are, references present.

    Raises:
        TypeError: a single str instead of a list.
        ValueError: unequal lengths, or references missing where ``needs`` is set.
    """
    if isinstance(prompts, str) or isinstance(completions, str):
        raise TypeError(f"reward {name!r} is batched: pass lists, not a single str")
    n_prompts, n_completions = len(prompts), len(completions)  # type: ignore[arg-type]
    if n_prompts != n_completions:
        raise ValueError(f"{name}: {n_prompts} prompts, {n_completions} completions")
    if needs is not None and references is None:
        raise ValueError(f"reward {name!r} needs references ({needs})")
