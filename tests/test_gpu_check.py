"""experiments/gpu_check.py: its CPU smoke run reports every section, and no CUDA means exit 2."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
import torch

import textgym

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


@pytest.fixture
def gpu_check(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module; experiments/ goes on sys.path as when it runs as a script."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    return importlib.import_module("gpu_check")


@pytest.mark.slow
def test_cpu_quick_run_reports_every_section(
    gpu_check: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (Path(textgym.DEFAULT_MODEL) / "config.json").exists():
        pytest.skip(f"embedded model not built yet: no config.json in {textgym.DEFAULT_MODEL}")
    code = gpu_check.main(["--device", "cpu", "--quick"])
    out = capsys.readouterr().out
    assert "decoding fp32 == generate: PASS" in out
    assert "PASS  decoding fp32 == generate" in out
    for header in ("## 1. greedy decoding", "## 2. rollout", "## 3. agents", "## 4. summary"):
        assert header in out, header
    for row in ("| fp32 ", "| bf16 ", "textgym PPO", "textgym REINFORCE rloo", "textgym DPO"):
        assert row in out, row
    assert "TRL RLOOTrainer" in out
    for check in ("rollout fp32 on cpu", "PPO on cpu", "REINFORCE on cpu", "DPO on cpu"):
        assert f"PASS  {check}" in out, check
    assert "FAIL" not in out
    assert code == 0


@pytest.mark.parametrize("argv", [[], ["--device", "cuda"]])
def test_no_cuda_exits_2_with_a_message(
    gpu_check: ModuleType,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(argv) == 2
    assert "CUDA is not available" in capsys.readouterr().out
