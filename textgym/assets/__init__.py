"""The embedded default model and the data of the built-in tasks.

Both are made by ``python -m textgym.assets.build`` (see ``build.py``; the text comes from the
grammars in ``corpus.py``, whose docstring fixes every prompt format, with their word lists and
templates in ``grammar/*.json``). Nothing here imports torch, so reading task data stays cheap.

Attributes:
    ASSETS_DIR: this folder.
    DATA_DIR: ``data/``, one ``<task>.jsonl`` per built-in task (``reviews``, ``concepts``,
        ``reverse``), one JSON object per line:
        ``{"prompt": str, "references": [str, ...], "split": "train"|"validation"|"test", ...}``.
    MODEL_DIR: ``model/``, a Hugging Face directory (config, safetensors weights, tokenizer,
        generation config).
    DEFAULT_MODEL: ``MODEL_DIR`` as a string, the default model everywhere (public as
        ``textgym.DEFAULT_MODEL``).
    GRAMMAR_DIR: ``grammar/``, the tables of the corpus grammars, one JSON file per group
        (``english``, ``reviews``, ``concepts``, ``reverse``), read by :func:`load_grammar`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ASSETS_DIR = Path(__file__).resolve().parent
DATA_DIR = ASSETS_DIR / "data"
MODEL_DIR = ASSETS_DIR / "model"
DEFAULT_MODEL: str = str(MODEL_DIR)
"""Path of the embedded model: a Hugging Face directory, so ``from_pretrained(DEFAULT_MODEL)``
works with ``textgym.LanguageModel`` and with ``transformers`` alike."""
GRAMMAR_DIR = ASSETS_DIR / "grammar"
TASK_NAMES = ("reviews", "concepts", "reverse")


def load_jsonl(name: str, data_dir: str | Path | None = None) -> list[dict]:
    """Rows of a built-in task's data file, in file order.

    Args:
        name: a task name from ``TASK_NAMES`` (``"reviews"``), or a file name (``"reviews.jsonl"``).
        data_dir: folder to read from; ``DATA_DIR`` by default.

    Returns:
        One dict per line.

    Raises:
        FileNotFoundError: the file does not exist (the message names the build command).
    """
    stem = name.removesuffix(".jsonl")
    path = Path(data_dir) if data_dir is not None else DATA_DIR
    path = path / f"{stem}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"no task data {path}; built-in tasks are {list(TASK_NAMES)}. "
            "Make the files with: python -m textgym.assets.build"
        )
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_grammar(name: str) -> dict[str, Any]:
    """The tables of ``grammar/<name>.json``: lists and dicts in file order (order is meaningful).

    Raises:
        FileNotFoundError: the file is missing (the message names it).
    """
    path = GRAMMAR_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus table file {path} is missing: it ships inside the textgym package "
            "(textgym/assets/grammar/*.json); reinstall textgym or restore the file"
        )
    with path.open(encoding="utf-8") as fh:
        tables: dict[str, Any] = json.load(fh)
    return tables


__all__ = [
    "ASSETS_DIR",
    "DATA_DIR",
    "DEFAULT_MODEL",
    "GRAMMAR_DIR",
    "MODEL_DIR",
    "TASK_NAMES",
    "load_grammar",
    "load_jsonl",
]
