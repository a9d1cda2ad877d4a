"""Shared fixtures: tiny random models built from configs, so no test downloads anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

import textgym

WORDS = [
    "the",
    "a",
    "movie",
    "film",
    "was",
    "is",
    "great",
    "good",
    "bad",
    "awful",
    "plot",
    "actor",
    "acting",
    "story",
    "and",
    "but",
    "very",
    "not",
    "i",
    "loved",
    "hated",
    "it",
    "this",
    "that",
    "of",
    "to",
    "in",
    "with",
    "dog",
    "cat",
    "ball",
    "park",
    "runs",
    "plays",
    "sits",
    "on",
    ".",
    ",",
    "!",
    "red",
    "blue",
    "green",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
]
SPECIALS = ["<|endoftext|>", "<pad>", "<unk>"]
TINY_VOCAB = 64  # LM head size; the tokenizer holds fewer tokens (padding the head is legal)


def build_tiny_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS with eos/bos = <|endoftext|> (id 0) and pad (id 1)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    assert len(vocab) <= TINY_VOCAB
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.save_pretrained(path)
    return fast


def _save(model: torch.nn.Module, path: Path) -> str:
    build_tiny_tokenizer(path)
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random GPT-2 (2 layers, 32 dims, 64-token head) with its tokenizer, saved to a temp dir."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=TINY_VOCAB,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    return _save(GPT2LMHeadModel(config).eval(), tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random Llama-style model (rotary positions, RMSNorm, SwiGLU), to test beyond GPT-2."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    return _save(LlamaForCausalLM(config).eval(), tmp_path_factory.mktemp("tiny_llama"))


# ---- LanguageModel fixtures (tests/test_lm.py, test_decoding.py, test_perplexity.py) ----


@pytest.fixture(scope="session")
def tiny_gpt2_lm(tiny_gpt2_dir: str) -> textgym.LanguageModel:
    """The tiny GPT-2 wrapped in a LanguageModel on CPU (shared: do not modify it)."""
    return textgym.LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_llama_lm(tiny_llama_dir: str) -> textgym.LanguageModel:
    """The tiny Llama wrapped in a LanguageModel on CPU (shared: do not modify it)."""
    return textgym.LanguageModel.from_pretrained(tiny_llama_dir, device="cpu")


@pytest.fixture(scope="session")
def embedded_lm() -> textgym.LanguageModel:
    """The embedded default model on CPU; skips while it is not built yet."""
    if not (Path(textgym.DEFAULT_MODEL) / "config.json").exists():
        pytest.skip(f"embedded model not built yet: no config.json in {textgym.DEFAULT_MODEL}")
    return textgym.LanguageModel.from_pretrained(device="cpu")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run every test on one torch thread, restored at the end.

    Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two OpenMP threads
    made beam-search tests ~50x slower (1 s vs 60 s) through contended spin-waits.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
