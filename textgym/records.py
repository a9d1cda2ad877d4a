"""Records from JSON-lines files, with errors that name the file, the line and the field.

:func:`write_json` is the other direction: one JSON document written atomically (a study's
resumable cell, a summary), so an interrupted write never leaves half a file to resume from.

Shared by the task loader (:meth:`textgym.tasks.Task.from_jsonl`) and the preference-data loader
(:func:`textgym.preference.load_jsonl`): a line that is not UTF-8, not JSON or not an object, and
a field that is missing or of the wrong type, is an error naming ``path:line``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FieldTypeError", "MissingFieldError", "read_jsonl", "write_json"]


class MissingFieldError(ValueError, KeyError):
    """A record lacks a required field: bad data (a ValueError), and the KeyError raised before."""

    __str__ = BaseException.__str__  # KeyError's own would print the message as a repr


class FieldTypeError(ValueError, TypeError):
    """A record field has the wrong type: bad data (a ValueError), and the TypeError of before."""


def read_jsonl(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """The JSON objects of a JSON-lines file, each with its ``"path:line"``; blank lines skipped.

    Args:
        path: the file (UTF-8).

    Returns:
        ``(where, record)`` pairs in file order; empty when the file holds no records.

    Raises:
        ValueError: a line that is not UTF-8 or not JSON; ``FieldTypeError`` (a ValueError) for
            a line that is JSON but not an object. Each names the file and line.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    # Bytes, decoded line by line, so that a decoding error can name its line.
    for lineno, raw in enumerate(Path(path).read_bytes().splitlines(), 1):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = raw[err.start : err.start + 4]
            raise ValueError(
                f"{where}: not UTF-8 text (byte {err.start} of the line: {bad!r}); "
                "re-encode the file as UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg})") from err
        if not isinstance(rec, dict):
            raise FieldTypeError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        out.append((where, rec))
    return out


def write_json(path: str | os.PathLike[str], data: Any, newline: bool = True) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (a temporary file, then a rename);
    parent folders are created. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + ("\n" if newline else ""))
    os.replace(tmp, path)
    return path
