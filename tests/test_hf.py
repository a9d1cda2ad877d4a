"""textgym.hf: one function per fact of a Hugging Face model, and everything reads it from there."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, LlamaConfig

import textgym
from textgym import assets, hf
from textgym.envs import TextGenEnv


def test_context_window_hidden_size_and_head_size_of_gpt2_and_llama_configs() -> None:
    gpt2 = GPT2Config(vocab_size=64, n_positions=48, n_embd=32, n_layer=1, n_head=2)
    llama = LlamaConfig(vocab_size=80, hidden_size=32, max_position_embeddings=96)
    assert (hf.context_window(gpt2), hf.hidden_size(gpt2), hf.head_size(gpt2)) == (48, 32, 64)
    assert (hf.context_window(llama), hf.hidden_size(llama), hf.head_size(llama)) == (
        96,
        32,
        80,
    )


def test_the_key_lists_cover_other_spellings_and_say_when_nothing_is_there() -> None:
    assert hf.context_window(SimpleNamespace(seq_length=2048)) == 2048
    assert hf.context_window(SimpleNamespace(n_ctx=0)) is None  # 0 is no window
    assert hf.hidden_size(SimpleNamespace(dim=24)) == 24
    with pytest.raises(ValueError, match="cannot find the hidden size"):
        hf.hidden_size(SimpleNamespace())
    with pytest.raises(ValueError, match="vocab_size"):
        hf.head_size(SimpleNamespace())


def test_head_size_of_a_model_is_its_output_embeddings(tiny_gpt2_lm: textgym.LanguageModel) -> None:
    model = tiny_gpt2_lm.model
    assert hf.head_size(model) == model.get_output_embeddings().weight.shape[0]
    assert hf.head_size(model) == hf.head_size(model.config) == tiny_gpt2_lm.vocab_size


def test_eos_id_comes_from_the_tokenizer_then_each_config_in_turn() -> None:
    no_eos = SimpleNamespace(eos_token_id=None)
    assert hf.eos_token_id(SimpleNamespace(eos_token_id=5), SimpleNamespace(eos_token_id=7)) == 5
    assert hf.eos_token_id(no_eos, no_eos, SimpleNamespace(eos_token_id=[7, 8])) == 7
    assert hf.eos_token_id(no_eos, None) is None
    assert hf.first_id((3, 4)) == 3
    assert hf.first_id("3") is None


def test_resolve_device_is_always_a_torch_device() -> None:
    assert hf.resolve_device("cpu") == torch.device("cpu")
    assert isinstance(hf.resolve_device("auto"), torch.device)
    assert isinstance(hf.resolve_device(None), torch.device)


def test_the_env_and_the_language_model_read_the_same_facts(
    tiny_gpt2_dir: str, tiny_gpt2_lm: textgym.LanguageModel
) -> None:
    from_path = TextGenEnv(model=tiny_gpt2_dir, task=["a b"], reward="length").config
    from_lm = TextGenEnv(model=tiny_gpt2_lm, task=["a b"], reward="length").config
    assert (from_path.vocab_size, from_path.eos_token_id) == (
        tiny_gpt2_lm.vocab_size,
        tiny_gpt2_lm.eos_token_id,
    )
    assert (from_lm.vocab_size, from_lm.eos_token_id) == (
        from_path.vocab_size,
        from_path.eos_token_id,
    )
    assert tiny_gpt2_lm.max_length == hf.context_window(tiny_gpt2_lm.model.config)


def test_the_old_import_places_still_work() -> None:
    from textgym.lm import check_model_dir, load_tokenizer, resolve_device
    from textgym.training import resolve_device as training_resolve_device

    assert check_model_dir is hf.check_model_dir
    assert load_tokenizer is hf.load_tokenizer
    assert resolve_device is training_resolve_device is hf.resolve_device
    assert textgym.DEFAULT_MODEL is assets.DEFAULT_MODEL
