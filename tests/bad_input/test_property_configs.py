"""Property: any mix of field values gives a valid config or a ValueError / TypeError that names
one field (``Class.field``) that was given a non-default value; never another exception."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .test_configs import CONFIGS


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _literals(hint: Any) -> list[Any]:
    """Members of every Literal inside the hint (so valid names are drawn too)."""
    if typing.get_origin(hint) is Literal:
        return list(typing.get_args(hint))
    return [v for h in typing.get_args(hint) for v in _literals(h)]


def _field_values(cls: type, f: dataclasses.Field[Any]) -> st.SearchStrategy[Any]:
    choices = [
        st.just(_default(f)),
        st.integers(min_value=-3, max_value=10),
        st.integers(),
        st.floats(),  # nan, ±inf, subnormals, -0.0 included
        st.floats(min_value=0.0, max_value=1.0),
        st.booleans(),
        st.text(max_size=6),
        st.none(),
    ]
    members = _literals(typing.get_type_hints(cls)[f.name])
    if members:
        choices.append(st.sampled_from(members))
    return st.one_of(choices)


@st.composite
def _kwargs(draw: st.DrawFn, cls: type) -> dict[str, Any]:
    """All fields, a few of them (0 to 4) drawn from the mix: so valid configs come up too, and
    each field gets to be the first bad one."""
    fields = dataclasses.fields(cls)
    changed = draw(st.sets(st.sampled_from([f.name for f in fields]), max_size=4))
    return {
        f.name: draw(_field_values(cls, f)) if f.name in changed else _default(f) for f in fields
    }


def _is_default(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default  # False == 0, 1.0 == 1: not defaults


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_construction_is_valid_or_names_a_changed_field(cls: type) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}

    @settings(
        max_examples=100,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(kwargs=_kwargs(cls))
    def check(kwargs: dict[str, Any]) -> None:
        try:
            cfg, err = cls(**kwargs), None
        except (ValueError, TypeError) as caught:  # anything else fails the test as it is
            cfg, err = None, caught
        if err is None:
            assert isinstance(cfg, cls)
            for name, value in kwargs.items():
                assert getattr(cfg, name) is value  # validated, never silently changed
            return
        named = re.findall(rf"\b{cls.__name__}\.(\w+)", str(err))
        assert named, f"{type(err).__name__} names no field of {cls.__name__}: {err}"
        assert named[0] in fields, f"{named[0]!r} is not a field of {cls.__name__}: {err}"
        assert not _is_default(kwargs[named[0]], _default(fields[named[0]])), (
            f"blames {named[0]}, which kept its default: {err}"
        )

    check()
