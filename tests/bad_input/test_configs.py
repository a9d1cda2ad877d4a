"""Every user-facing config refuses a bad field at construction, naming the field and the value.

Wrong type (a bool or a float for an int, a string for a number, a non-finite float, a dict for a
nested config) is a ``TypeError``; a value of the right type outside its range, or an unknown name,
is a ``ValueError``. The type cases are generated from each class's fields and type hints, so a
new field is covered without editing this file.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, Union

import numpy as np
import pytest
from textgym.agents import (
    BCConfig,
    DAggerConfig,
    DistillConfig,
    DPOConfig,
    GAILConfig,
    IRLConfig,
    IterativeDPOConfig,
    PPOConfig,
    REINFORCEConfig,
    RewardModelConfig,
)

from textgym.rollout import Sampling

CONFIGS: list[type] = [
    Sampling,
    PPOConfig,
    REINFORCEConfig,
    DPOConfig,
    BCConfig,
    DAggerConfig,
    GAILConfig,
    IterativeDPOConfig,
    RewardModelConfig,
    DistillConfig,
    IRLConfig,
]
NAN, INF = math.nan, math.inf


def _ids(cls: type) -> str:
    return cls.__name__


def _alternatives(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _kinds(cls: type, name: str) -> set[Any]:
    """What the field's annotation allows: int, float, str, bool, None, Literal, a dataclass."""
    kinds: set[Any] = set()
    for h in _alternatives(typing.get_type_hints(cls)[name]):
        kinds.add(Literal if typing.get_origin(h) is Literal else h)
    return kinds


def _message(cls: type, name: str, value: Any) -> str:
    """A regex: the message names ``Class.field`` and shows the value (in either order)."""
    shown = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
    return rf"(?s)(?=.*\b{cls.__name__}\.{name}\b)(?=.*{re.escape(shown)})"


# ---------------------------------------------------------------------------- the brief's table

# (field, value, exception): each row applies to every config that has the field.
BAD: list[tuple[str, Any, type[Exception]]] = [
    # wrong type
    ("lr", INF, TypeError),
    ("lr", -INF, TypeError),
    ("lr", "3e-4", TypeError),
    ("lr", None, TypeError),
    ("beta", NAN, TypeError),
    ("vf_coef", NAN, TypeError),
    ("max_grad_norm", NAN, TypeError),
    ("n_epochs", 1.5, TypeError),
    ("n_epochs", True, TypeError),
    ("n_epochs", 2.0, TypeError),
    ("batch_size", 2.5, TypeError),
    ("batch_size", "8", TypeError),
    ("seed", 1.0, TypeError),
    ("seed", None, TypeError),
    ("sampling", {"temperature": 0.7}, TypeError),
    ("ppo", None, TypeError),
    ("bc", {}, TypeError),
    ("dpo", DAggerConfig(), TypeError),
    ("greedy", "yes", TypeError),
    # right type, out of range
    ("lr", 0, ValueError),
    ("lr", -1e-3, ValueError),
    ("disc_lr", 0.0, ValueError),
    ("beta", -0.1, ValueError),
    ("vf_coef", -1.0, ValueError),
    ("ent_coef", -1.0, ValueError),
    ("max_grad_norm", -1.0, ValueError),
    ("weight_decay", -0.1, ValueError),
    ("n_epochs", 0, ValueError),
    ("n_minibatches", 0, ValueError),
    ("kl_horizon", 0, ValueError),
    ("kl_target", 0.0, ValueError),
    ("clip_eps", 0.0, ValueError),
    ("clip_value", -0.2, ValueError),
    ("gamma", 1.5, ValueError),
    ("lam", -0.5, ValueError),
    ("batch_size", 0, ValueError),
    ("batch_size", -4, ValueError),
    ("epochs", 0, ValueError),
    ("eval_batch_size", 0, ValueError),
    ("disc_epochs", 0, ValueError),
    ("disc_batch_size", 0, ValueError),
    ("rloo_k", 1, ValueError),
    ("ma_decay", 1.0, ValueError),
    ("eps", 0.5, ValueError),
    ("warmup_steps", -1, ValueError),
    ("eval_every", -1, ValueError),
    ("max_length", 1, ValueError),
    ("patience", 0, ValueError),
    ("val_fraction", 1.0, ValueError),
    ("val_fraction", -0.1, ValueError),
    ("beta0", 1.5, ValueError),
    ("beta_decay", -0.5, ValueError),
    ("beta_decay", 2.0, ValueError),  # the default schedule is exponential
    ("episodes_per_iteration", 0, ValueError),
    ("steps_per_iteration", -1, ValueError),
    ("label_budget", 0, ValueError),
    ("rounds", 0, ValueError),
    ("k", 1, ValueError),
    ("updates_per_round", 0, ValueError),
    ("prompts_per_round", 0, ValueError),
    ("max_new_tokens", 0, ValueError),
    ("temperature", 0.0, ValueError),
    ("temperature", -1.0, ValueError),
    ("top_p", 0.0, ValueError),
    ("top_p", 1.5, ValueError),
    ("top_k", 0, ValueError),
    ("seed", -1, ValueError),
    ("seed", 2**64, ValueError),
    # unknown names
    ("loss", "hinge", ValueError),
    ("baseline", "mean", ValueError),
    ("beta_schedule", "cosine", ValueError),
    ("reward", "wgan", ValueError),
]

TABLE = [
    pytest.param(cls, name, value, exc, id=f"{cls.__name__}.{name}={value!r}")
    for cls in CONFIGS
    for name, value, exc in BAD
    if name in {f.name for f in dataclasses.fields(cls)}
]


def test_every_row_of_the_table_reaches_a_config() -> None:
    names = {f.name for cls in CONFIGS for f in dataclasses.fields(cls)}
    assert {name for name, _, _ in BAD} <= names


@pytest.mark.parametrize(("cls", "name", "value", "exc"), TABLE)
def test_bad_value_is_refused_naming_field_and_value(
    cls: type, name: str, value: Any, exc: type[Exception]
) -> None:
    with pytest.raises(exc, match=_message(cls, name, value)):
        cls(**{name: value})


def test_cross_field_rules() -> None:
    with pytest.raises(ValueError, match=r"PPOConfig\.kl_target.*beta=0"):
        PPOConfig(kl_target=6.0, beta=0.0)
    with pytest.raises(ValueError, match=r"IterativeDPOConfig\.k.*got 0"):
        IterativeDPOConfig(k=0, include_reference=True)
    IterativeDPOConfig(k=1, include_reference=True)
    DAggerConfig(beta_schedule="linear", beta_decay=2.0)  # a decrement > 1 is legal there


# ---------------------------------------------------------------------------- generated from hints


def _generated() -> list[Any]:
    """Per field, values its annotation refuses: nan/inf for a float, 1.5/True for an int..."""
    cases = []
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            kinds = _kinds(cls, f.name)
            bad: list[Any] = []
            if float in kinds:
                bad += [NAN, INF, -INF, "0.1", True]
            if int in kinds:
                bad += [1.5, True, False, "1"]
            if bool in kinds:
                bad += [1, 0, "True", None]
            if str in kinds or Literal in kinds:
                bad += [3, b"cpu"]
            if any(dataclasses.is_dataclass(k) for k in kinds):
                bad += [{}, 0]
            if type(None) not in kinds:
                bad.append(None)
            seen = set()  # by type and repr: True == 1 and 1.0 == 1 must not merge
            for value in bad:
                if (type(value), repr(value)) not in seen:
                    seen.add((type(value), repr(value)))
                    cases.append(
                        pytest.param(cls, f.name, value, id=f"{cls.__name__}.{f.name}={value!r}")
                    )
    return cases


GENERATED = _generated()


@pytest.mark.parametrize(("cls", "name", "value"), GENERATED)
def test_value_of_the_wrong_type_is_a_type_error(cls: type, name: str, value: Any) -> None:
    with pytest.raises(TypeError, match=_message(cls, name, value)):
        cls(**{name: value})


def test_every_field_is_generated() -> None:
    covered = {(p.values[0], p.values[1]) for p in GENERATED}
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            assert (cls, f.name) in covered, f"{cls.__name__}.{f.name} has no generated bad value"


# ---------------------------------------------------------------------------- what stays legal


@pytest.mark.parametrize("cls", CONFIGS, ids=_ids)
def test_defaults_are_valid_and_frozen(cls: type) -> None:
    cfg = cls()
    first = dataclasses.fields(cfg)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, first, getattr(cfg, first))


def test_legal_spellings_still_pass() -> None:
    PPOConfig(lr=1, n_epochs=np.int64(2), beta=np.float32(0.1), kl_target=6)  # int for float
    DPOConfig(max_length=None, max_grad_norm=0.0, eval_every=0)
    BCConfig(patience=None, val_fraction=0.0)
    Sampling(top_k=None, top_p=1, temperature=0.5)
    REINFORCEConfig(baseline="value", rloo_k=2)
    DAggerConfig(label_budget=None, beta_schedule="constant", steps_per_iteration=0)
    RewardModelConfig(max_grad_norm=None)
    GAILConfig(ppo=PPOConfig(), reward="gail")


def test_the_old_complaint_lr_as_string_names_the_field() -> None:
    """Before check_fields this was "'>' not supported between instances of 'str' and 'int'"."""
    with pytest.raises(
        TypeError, match=r"PPOConfig\.lr must be a finite float, got '3e-4' \(str\)"
    ):
        PPOConfig(lr="3e-4")  # type: ignore[arg-type]


def test_each_name_literal_lists_exactly_the_functions_it_picks() -> None:
    """The configs' Literal fields are what check_fields validates names against: each must list
    the keys of the table the agent picks its function from, no more and no fewer."""
    import typing

    from textgym.agents import dagger, dpo, gail, reinforce

    for literal, table in [
        (dpo.LossType, dpo.LOSSES),
        (reinforce.Baseline, reinforce.BASELINES),
        (dagger.BetaSchedule, dagger.BETA_SCHEDULES),
        (gail.RewardType, gail.REWARDS),
    ]:
        assert set(typing.get_args(literal)) == set(table)
