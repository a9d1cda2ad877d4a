"""What textgym reads from a Hugging Face model: the loading checks and the facts of its config.

Each fact has one function here, and everything in textgym, ``textgym.rewards`` and
``textgym.agents`` calls it (STYLE.md §1b): a fix to a key list lands once.

- Loading: :func:`check_model_dir` (a local folder is checked before ``transformers`` reads it),
  :func:`check_trust_remote_code`, :func:`load_tokenizer`, :func:`load_config`. Every
  ``from_pretrained`` passes ``trust_remote_code`` explicitly: left unset, ``transformers`` asks on
  stdin whether to run a folder's own code (DESIGN.md, "Checkpoints and loading").
- Facts: :func:`context_window`, :func:`hidden_size`, :func:`head_size` (V, the action space),
  :func:`eos_token_id` (with :func:`first_id` for config fields that hold a list),
  :func:`forward_parameters` (what ``forward`` accepts), :func:`resolve_device`. Multimodal
  configs are read through their text config.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

__all__ = [
    "TOKENIZER_FILES",
    "as_compute_dtype",
    "check_model_dir",
    "check_trust_remote_code",
    "compute_dtype_name",
    "context_window",
    "eos_token_id",
    "first_id",
    "forward_parameters",
    "head_size",
    "hidden_size",
    "load_config",
    "load_tokenizer",
    "resolve_device",
]

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "spm.model",
    "sentencepiece.bpe.model",
    "merges.txt",
    "tokenizer.tiktoken",
)
"""Files of which a model folder needs at least one for ``AutoTokenizer`` to load it."""

_CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
    "max_sequence_length",
    "seq_length",
)
"""Config fields that hold the context window, in the order they are tried."""

_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
"""Config fields that hold H, the width of the last hidden state, in the order they are tried."""


# ---------------------------------------------------------------------------- loading


def check_model_dir(
    name_or_path: str | os.PathLike[str], *, config: bool = True, tokenizer: bool = True
) -> str:
    """Check a local model folder before ``transformers`` reads it; hub names pass through.

    The rule: a path that exists locally is a folder and must hold ``config.json`` (``config``)
    and a tokenizer file (``tokenizer``, one of ``TOKENIZER_FILES``). A path that does not exist
    is a missing local folder when it is a ``PathLike``, starts with ``/``, ``.`` or ``~``, holds
    a backslash or more than one ``/``; anything else (``"gpt2"``, ``"org/model"``) is a hub name,
    left to ``transformers``. Without this, a typo in a local path reaches the hub client and
    comes back as "Repo id must be in the form ...".

    Args:
        name_or_path: a local folder or a hub name.
        config: require ``config.json`` (the model's weights or config are loaded).
        tokenizer: require tokenizer files (the tokenizer is loaded).

    Returns:
        ``name_or_path`` as a str, unchanged.

    Raises:
        FileNotFoundError: a local folder that does not exist, or lacks a required file.
        NotADirectoryError: the path is a file.
    """
    path = os.fspath(name_or_path)
    p = Path(path)
    if not p.exists():
        local = (
            isinstance(name_or_path, os.PathLike)
            or path.startswith(("/", ".", "~"))
            or "\\" in path
            or path.count("/") > 1
        )
        if local:
            hint = " ('~' is not expanded: pass os.path.expanduser(path))" if "~" in path else ""
            raise FileNotFoundError(f"model directory {path!r} does not exist{hint}")
        return path
    if not p.is_dir():
        raise NotADirectoryError(f"model directory {path!r} is a file, not a model folder")
    if config and not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"model directory {path!r} has no config.json (files: {sorted(os.listdir(p))[:10]})"
        )
    if tokenizer and not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"model directory {path!r} has no tokenizer files (one of {list(TOKENIZER_FILES)}; "
            f"files: {sorted(os.listdir(p))[:10]})"
        )
    return path


def check_trust_remote_code(value: object) -> bool:
    """``trust_remote_code`` as given, when it is a bool: a truthy string must not run code."""
    if not isinstance(value, bool):
        raise TypeError(f"trust_remote_code must be True or False, got {value!r}")
    return value


def load_tokenizer(
    name_or_path: str | os.PathLike[str], *, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """``AutoTokenizer`` for a folder (checked by :func:`check_model_dir`) or a hub name.

    ``trust_remote_code`` is passed explicitly: left unset, ``transformers`` asks on stdin whether
    to run a folder's own code.
    """
    path = check_model_dir(name_or_path, config=False)
    return AutoTokenizer.from_pretrained(
        path, trust_remote_code=check_trust_remote_code(trust_remote_code)
    )


def load_config(
    name_or_path: str | os.PathLike[str], *, trust_remote_code: bool = False
) -> PretrainedConfig:
    """``AutoConfig`` for a folder or a hub name (the config only: no weights, no tokenizer).

    The caller checks the folder (:func:`check_model_dir`, with the files it will load);
    ``trust_remote_code`` is passed explicitly, never None.
    """
    return AutoConfig.from_pretrained(
        os.fspath(name_or_path), trust_remote_code=check_trust_remote_code(trust_remote_code)
    )


# ---------------------------------------------------------------------------- facts


def _text_config(config: Any) -> Any:
    """The text model's config (a multimodal config nests it), else ``config`` itself."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def context_window(config: Any) -> int | None:
    """The context window (most positions) from a model config, or None when it does not say."""
    text_config = _text_config(config)
    for key in _CONTEXT_KEYS:
        value = getattr(text_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def hidden_size(config: Any) -> int:
    """H, the width of the last hidden state, from a model config.

    Raises:
        ValueError: none of ``hidden_size``, ``n_embd``, ``d_model``, ``dim`` is set.
    """
    text_config = _text_config(config)
    for key in _HIDDEN_KEYS:
        value = getattr(text_config, key, None)
        if isinstance(value, int):
            return value
    name = type(config).__name__
    raise ValueError(f"cannot find the hidden size in config {name} (tried {list(_HIDDEN_KEYS)})")


def head_size(model_or_config: Any) -> int:
    """V, the number of logits the LM head produces: the size of the action space.

    A loaded model is asked for its output embeddings (after ``resize_token_embeddings`` they are
    the truth); a config, or a model without them, gives its text config's ``vocab_size``. V may
    exceed ``len(tokenizer)`` (heads are padded) and is never guessed from the tokenizer.

    Raises:
        ValueError: the config has no ``vocab_size``.
    """
    get_head = getattr(model_or_config, "get_output_embeddings", None)
    if callable(get_head):
        weight = getattr(get_head(), "weight", None)
        if isinstance(weight, Tensor) and weight.ndim == 2:
            return int(weight.shape[0])
    config = getattr(model_or_config, "config", model_or_config)
    v = getattr(config, "vocab_size", None)
    if v is None:
        v = getattr(_text_config(config), "vocab_size", None)
    if v is None:
        raise ValueError(f"cannot read the LM head size (vocab_size) from {type(config).__name__}")
    return int(v)


def first_id(value: Any) -> int | None:
    """An id from a config field that may hold an int, a list of ints, or None."""
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple) and value and isinstance(value[0], int):
        return int(value[0])
    return None


def eos_token_id(tokenizer: PreTrainedTokenizerBase, *configs: Any) -> int | None:
    """The EOS id: the tokenizer's, else the first of ``configs`` (generation or model config)
    whose ``eos_token_id`` holds one; None when none does (some tokenizers leave EOS to the
    config)."""
    eos = tokenizer.eos_token_id
    for config in configs:
        if eos is not None:
            break
        eos = first_id(getattr(config, "eos_token_id", None))
    return None if eos is None else int(eos)


def forward_parameters(model: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of ``model.forward``, read on the wrapped model for wrappers such as peft's,
    whose ``forward(..., **kwargs)`` passes cache, position ids and ``logits_to_keep`` through."""
    get_base_model = getattr(model, "get_base_model", None)
    inner = get_base_model() if callable(get_base_model) else model
    return inspect.signature(inner.forward).parameters


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None) -> CUDA when available, else CPU; anything else goes to torch."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                   "fp16": torch.float16}  # fmt: skip


def as_compute_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    """The autocast dtype of a ``compute_dtype`` argument: None (compute in the weights' dtype),
    ``torch.bfloat16`` or ``torch.float16`` (or their names).

    Why autocast and not bf16 weights: the weights, their gradients and Adam's moments stay in
    float32 ("master weights"), so small updates are not rounded away, while the matrix products,
    which dominate the cost, run in bf16 (on CPUs with AMX/AVX512-BF16 units and on CUDA). bf16 has
    float32's exponent range, so no loss scaling is needed. Log-softmax, sampling and losses read
    the logits as float32 everywhere in textgym. Frozen copies (π_ref, and the copy that samples
    an on-policy agent's rollouts) hold their weights in the compute dtype: they are never
    trained, so they need no master weights (:func:`textgym.training.frozen_copy`).

    Raises:
        ValueError: another dtype or name.
    """
    if value is None:
        return None
    dtype = _COMPUTE_DTYPES.get(value) if isinstance(value, str) else value
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(
            "compute_dtype must be None, 'bfloat16' or 'float16' (or the torch dtype), "
            f"got {value!r}"
        )
    return dtype


def compute_dtype_name(dtype: torch.dtype | None) -> str | None:
    """The name a checkpoint records for a ``compute_dtype`` ("bfloat16"; None for none), which
    :func:`as_compute_dtype` reads back."""
    return None if dtype is None else str(dtype).removeprefix("torch.")
