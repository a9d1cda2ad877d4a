"""The benchmark models: built on demand at their sizes, and paths pass through."""

from __future__ import annotations

from pathlib import Path

import pytest

from textgym import LanguageModel
from textgym.assets.bench_models import BENCH_MODELS, bench_model, cache_dir


def test_paths_and_hub_names_pass_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    assert bench_model("gpt2") == "gpt2"
    assert bench_model(str(tmp_path / "x")) == str(tmp_path / "x")
    assert cache_dir() == tmp_path / "bench_models"
    assert not (tmp_path / "bench_models").exists()  # nothing built for a name it does not know


@pytest.mark.slow
def test_gpt2_14m_is_built_once_at_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    path = bench_model("gpt2-14m")
    lm = LanguageModel.from_pretrained(path, device="cpu")
    spec = BENCH_MODELS["gpt2-14m"]
    n = sum(p.numel() for p in lm.model.parameters())
    assert 13.5e6 < n < 15e6, n
    assert lm.vocab_size == spec.vocab_size
    assert len(lm.tokenizer) <= lm.vocab_size
    assert lm.model.config.n_layer == spec.n_layer
    stamp = (Path(path) / "model.safetensors").stat().st_mtime_ns
    assert bench_model("gpt2-14m") == path  # found, not rebuilt
    assert (Path(path) / "model.safetensors").stat().st_mtime_ns == stamp
