"""The demo (``python -m textgym``): its learning-curve PNG, without running the demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from textgym.__main__ import save_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("with_kl", [True, False])
def test_save_plot_writes_a_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_kl: bool
) -> None:
    history = [{"reward": 0.1 * i, **({"kl": 0.02 * i} if with_kl else {})} for i in range(5)]
    monkeypatch.chdir(tmp_path)
    out = save_plot(history, "curve.png")
    assert out == (tmp_path / "curve.png").resolve()
    assert out.is_absolute()
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 5_000  # axes, labels and a line, not an empty canvas


def test_save_plot_refuses_an_empty_history(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one PPO update"):
        save_plot([], tmp_path / "curve.png")
    assert not (tmp_path / "curve.png").exists()
