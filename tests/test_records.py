"""write_json: the round trip, and an interrupted write leaving the previous file whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from textgym.records import write_json


def test_write_json_round_trips_and_creates_parents(tmp_path: Path) -> None:
    path = write_json(tmp_path / "a" / "b.json", {"x": [1, 2.5, "y"]})
    assert json.loads(path.read_text()) == {"x": [1, 2.5, "y"]}
    assert path.read_text().endswith("\n")
    assert not path.read_text(encoding="utf-8").endswith("\n\n")
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    assert not write_json(tmp_path / "c.json", 1, newline=False).read_text().endswith("\n")


def test_an_interrupted_write_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_json(tmp_path / "cell.json", {"done": 1})
    real = Path.write_text

    def half_then_crash(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt  # the run is stopped mid-write

    monkeypatch.setattr(Path, "write_text", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"done": 2, "more": list(range(100))})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"done": 1}  # a resume still reads a whole cell
