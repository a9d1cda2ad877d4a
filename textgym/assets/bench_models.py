"""Random-weight GPT-2 models at real sizes, for the speed and memory benchmarks.

The embedded model (1M parameters) shows Python overhead, not the cost of real models. The
benchmarks also run on these shapes, built on demand by ``bench_model(name)`` (no download, about
ten seconds for the largest) into a cache folder, with a byte-level BPE tokenizer trained here on
the embedded corpus's documents:

    name       layers  d_model  heads  vocab (LM head)  parameters  for
    gpt2-14m        6      384      6            8,192        ~14M  speed rows
    gpt2-92m       12      768     12            8,192        ~92M  speed rows
    gpt2-124m      12      768     12           50,257       ~124M  memory rows (GPT-2's shape)

The weights are random (seeded): speed and memory do not depend on training. The tokenizer is
trained with a budget of 8,192 tokens but stops at about 2,500, where the grammar-made corpus runs
out of merges; the LM head keeps the size in the table (``len(tokenizer) <= V``, as for models with
padded embeddings), and that size is what the cost of the head and of (B, T, V) logits depends on.
``gpt2-124m`` has GPT-2's 50,257-way head.

    python -m textgym.assets.bench_models gpt2-92m      # build (or find) one, print its path
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BENCH_MODELS", "MODEL_HELP", "BenchModel", "bench_model", "cache_dir"]


@dataclass(frozen=True)
class BenchModel:
    """The shape of one benchmark model."""

    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int
    """The LM head's size V; the tokenizer is trained to at most ``tokenizer_vocab`` tokens."""
    tokenizer_vocab: int = 8192
    n_positions: int = 1024


BENCH_MODELS = {
    "gpt2-14m": BenchModel(n_layer=6, n_embd=384, n_head=6, vocab_size=8192),
    "gpt2-92m": BenchModel(n_layer=12, n_embd=768, n_head=12, vocab_size=8192),
    "gpt2-124m": BenchModel(n_layer=12, n_embd=768, n_head=12, vocab_size=50257),
}


MODEL_HELP = (
    "an HF path or hub name, or a bench model: " + ", ".join(BENCH_MODELS) + " (built on first use)"
)
"""The ``--model`` help of every bench script."""


def cache_dir() -> Path:
    """``$TEXTGYM_CACHE`` or ``~/.cache/textgym``: where bench models are built."""
    root = os.environ.get("TEXTGYM_CACHE") or Path.home() / ".cache" / "textgym"
    return Path(root) / "bench_models"


def bench_model(name_or_path: str) -> str:
    """The folder of bench model ``name`` (built on first use), or ``name_or_path`` itself when it
    is not one of :data:`BENCH_MODELS` (a path or a hub name passes through).

    Raises:
        ValueError: never for a path; the names are listed in errors of the benches' ``--model``.
    """
    spec = BENCH_MODELS.get(name_or_path)
    if spec is None:
        return name_or_path
    out = cache_dir() / name_or_path
    if not (out / "model.safetensors").exists():
        _build(spec, out)
    return str(out)


def _build(spec: BenchModel, out: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from textgym.assets.build import train_tokenizer
    from textgym.assets.corpus import lm_documents

    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    texts = [p + c for p, c in lm_documents(0, 20_000, 20_000, 2_000)]
    tokenizer = train_tokenizer(texts, spec.tokenizer_vocab, spec.n_positions, tmp)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=max(spec.vocab_size, len(tokenizer)),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    GPT2LMHeadModel(config).save_pretrained(tmp)
    tmp.replace(out)  # atomic: an interrupted build leaves no half model under the name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=sorted(BENCH_MODELS))
    for name in parser.parse_args(argv).names:
        print(bench_model(name))


if __name__ == "__main__":
    main()
