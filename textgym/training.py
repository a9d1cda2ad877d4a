"""Plumbing shared by every agent: checkpoints with RNG states, logging, progress, value head, LoRA.

Nothing here knows an algorithm. An agent's ``save(dir)`` writes one checkpoint folder::

    dir/policy/            the policy, a plain Hugging Face directory (``from_pretrained`` loads it)
    dir/reference/         the frozen reference model, when the agent has its own copy
    dir/adapter/           the LoRA adapter (peft), when the policy is a peft model
    dir/trainer_state.pt   step count, optimizer, value head, RNG states, history (see save_state)
    dir/config.json        the agent's config, for people (the exact object is in trainer_state.pt)

Resuming is bit-exact on CPU when an agent saves every source of randomness: the torch generator it
samples with, its numpy generator, and the env's ``np_random`` (which picks prompts); the
``rng_state``/``set_rng_state`` pair below gathers all three.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm  # type: ignore[import-untyped]  # tqdm ships no type hints

from textgym.lm import LanguageModel, resolve_device

__all__ = [
    "CSVLogger",
    "ValueHead",
    "env_rng_state",
    "hidden_size",
    "is_peft",
    "load_state",
    "peft_language_model",
    "progress",
    "resolve_device",
    "rng_state",
    "save_state",
    "set_env_rng_state",
    "set_rng_state",
    "with_lora",
]

STATE_FILE = "trainer_state.pt"


class ValueHead(nn.Module):
    """V(s): one linear layer on the policy trunk's last hidden state (Ziegler et al. 2019, §2).

    Sharing the trunk makes the value a cheap extra output of the policy's own forward pass instead
    of a second LM. Initialised at zero so that V starts at 0 and the first advantages are the
    returns themselves, not noise from a random projection.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: Tensor) -> Tensor:  # (B, L, H) -> (B, L)
        return self.proj(hidden.float()).squeeze(-1)


def hidden_size(lm: LanguageModel) -> int:
    """H of the policy's last hidden state, from the model config."""
    config = lm.model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("hidden_size", "n_embd", "d_model"):
        value = getattr(text_config, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find the hidden size in the config of {type(lm.model).__name__}")


def with_lora(
    lm: LanguageModel,
    r: int = 8,
    alpha: int = 16,
    target_modules: list[str] | str | None = None,
) -> LanguageModel:
    """Wrap the policy in LoRA adapters (Hu et al. 2021, arXiv:2106.09685) with ``peft``.

    The base weights stay frozen; an agent sees a peft model and uses the base model with adapters
    disabled as its reference, so no second copy of the LM is kept.

    Args:
        lm: the model to adapt (its weights are not copied: the peft model wraps them).
        r, alpha: LoRA rank and scaling numerator (no dropout: agents keep the policy in eval
            mode so that recomputed log-probs equal the behaviour log-probs).
        target_modules: module names to adapt; None lets peft pick for known architectures.

    Returns:
        A new ``LanguageModel`` around the peft model and the same tokenizer.
    """
    try:
        import peft
    except ImportError as err:  # optional extra
        raise ImportError("LoRA needs the optional package `peft`: pip install peft") from err
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
        fan_in_fan_out=type(lm.model).__name__.startswith("GPT2"),
    )
    return peft_language_model(lm, peft.get_peft_model(lm.model, config))


def peft_language_model(base: LanguageModel, peft_model: Any) -> LanguageModel:
    """Wrap a peft model of ``base.model`` as a ``LanguageModel`` that calls it like ``base``.

    PeftModel.forward takes ``**kwargs``, which hides ``position_ids`` / the cache argument /
    ``logits_to_keep`` from LanguageModel's signature check; without position ids, left-padded
    rows would see shifted positions. The wrapped model takes exactly what the base model takes.
    """
    wrapped = LanguageModel(peft_model, base.tokenizer)
    for flag in ("_cache_arg", "_takes_position_ids", "_takes_logits_to_keep"):
        setattr(wrapped, flag, getattr(base, flag))
    return wrapped


def is_peft(lm: LanguageModel) -> bool:
    """Whether the policy is a peft model (its reference is then the base with adapters off)."""
    return hasattr(lm.model, "disable_adapter") and hasattr(lm.model, "peft_config")


# ---------------------------------------------------------------------------- RNG states


_ENV_RNG_ATTRS = ("_np_random", "_rngs")
"""Where gymnasium envs keep their generators: ``_np_random`` (behind the ``np_random``
property) and, in ``TextGenVectorEnv``, ``_rngs`` (one stream per sub-env)."""


def _rng_holders(env: Any) -> list[Any]:
    return [getattr(e, "unwrapped", e) for e in [env, *getattr(env, "envs", [])]]


def env_rng_state(env: Any) -> list[dict[str, Any]]:
    """Copies of the random generators of a (vector) env and of its sub-envs, if it has any.

    Gymnasium envs draw every random choice (here: which prompt) from their generators; saving them
    is what makes a resumed run see the same prompts as an uninterrupted one.
    """
    return [
        {
            attr: copy.deepcopy(getattr(holder, attr))
            for attr in _ENV_RNG_ATTRS
            if hasattr(holder, attr)
        }
        for holder in _rng_holders(env)
    ]


def set_env_rng_state(env: Any, states: list[dict[str, Any]]) -> None:
    """Restore what :func:`env_rng_state` returned onto an env of the same structure."""
    holders = _rng_holders(env)
    if len(holders) != len(states):
        raise ValueError(f"env has {len(holders)} RNG holders but the checkpoint {len(states)}")
    for holder, state in zip(holders, states, strict=True):
        for attr, value in state.items():
            setattr(holder, attr, copy.deepcopy(value))


def rng_state(generator: torch.Generator, np_rng: np.random.Generator, env: Any) -> dict[str, Any]:
    """Every RNG an agent draws from: its torch generator, its numpy generator, the env's."""
    return {
        "torch": generator.get_state(),
        "numpy": np_rng.bit_generator.state,
        "env": env_rng_state(env),
    }


def set_rng_state(
    state: Mapping[str, Any], generator: torch.Generator, np_rng: np.random.Generator, env: Any
) -> None:
    """Restore :func:`rng_state` in place."""
    generator.set_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    set_env_rng_state(env, state["env"])


# ---------------------------------------------------------------------------- checkpoint files


def save_state(directory: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write ``trainer_state.pt`` (and ``config.json`` when ``state["config"]`` is a dataclass).

    Args:
        directory: the checkpoint folder (created if missing).
        state: picklable objects and tensors: step, optimizer state dict, RNG states, config...
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state), path / STATE_FILE)
    config = state.get("config")
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        text = json.dumps(dataclasses.asdict(config), indent=2, default=str)
        (path / "config.json").write_text(text + "\n")


def load_state(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read what :func:`save_state` wrote.

    The file holds RNG states and a config object, which ``weights_only`` loading refuses; load only
    checkpoints you wrote yourself (torch.load unpickles).
    """
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {STATE_FILE} in {directory}: not a textgym agent checkpoint")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


# ---------------------------------------------------------------------------- logging


class CSVLogger:
    """Append one row per update to ``log_dir/progress.csv`` and, optionally, TensorBoard.

    TensorBoard is used only when ``torch.utils.tensorboard`` imports (it needs the optional
    ``tensorboard`` package); asking for it without the package raises, naming the fix.

    Args:
        log_dir: folder for ``progress.csv`` (and the TensorBoard event files).
        tensorboard: also write TensorBoard scalars.
    """

    def __init__(self, log_dir: str | os.PathLike[str], tensorboard: bool = False) -> None:
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._file = (self.dir / "progress.csv").open("a", newline="")
        self._writer: csv.DictWriter[str] | None = None
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError(
                    "tensorboard logging needs the optional package: pip install tensorboard"
                ) from err
            self._tb = SummaryWriter(str(self.dir))

    def log(self, row: Mapping[str, float | int]) -> None:
        """Write one row; the first row's keys fix the CSV columns (later extras are dropped)."""
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row), extrasaction="ignore")
            if self._file.tell() == 0:
                self._writer.writeheader()
        self._writer.writerow(dict(row))
        self._file.flush()
        if self._tb is not None:
            step = int(row.get("update", 0))
            for key, value in row.items():
                self._tb.add_scalar(key, float(value), step)

    def close(self) -> None:
        """Flush and close the files."""
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def progress(iterable: Iterable[int], desc: str, disable: bool = False) -> Any:
    """A tqdm progress bar over ``iterable`` (hidden with ``disable=True``, e.g. in tests)."""
    return tqdm(iterable, desc=desc, disable=disable, dynamic_ncols=True)
