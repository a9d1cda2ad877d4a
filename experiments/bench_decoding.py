"""Decoding speed: textgym's sampling loop vs ``transformers``' ``model.generate``, side by side.

Both sample (``do_sample=True``) with the same temperature / top-k / top-p from the same
left-padded prompts, and both are forced to produce every one of the ``new_tokens`` tokens
(``min_new_tokens = new_tokens``: EOS is masked out on both sides). Runs alternate between the
two (ABAB, then BABA) so that drift in machine load hits both; the table shows medians over the
repeats. The last line is the batch-64 ratio (textgym tok/s / generate tok/s).

    python experiments/bench_decoding.py            # full run
    python experiments/bench_decoding.py --quick    # about a minute
    python experiments/bench_decoding.py --check    # exit 1 when the ratio misses its target
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
import transformers
from transformers import GenerationConfig

import textgym
from textgym.assets.bench_models import MODEL_HELP, bench_model
from textgym.decoding import generate
from textgym.lm import LanguageModel
from textgym.provenance import git_sha

FALLBACK_PROMPTS = [
    "Review: The film opens with",
    "Review: I expected little from this movie, but",
    "The story follows a young woman who",
    "Reverse: red blue green ->",
    "The acting was",
    "Review: A slow, beautiful drama about",
]


@dataclass(frozen=True)
class BenchConfig:
    model: str = textgym.DEFAULT_MODEL
    """Model path or hub name (the embedded model by default)."""
    device: str = "auto"
    batch_sizes: tuple[int, ...] = (1, 16, 64)
    new_tokens: int = 48
    repeats: int = 9
    """Timed runs per side and batch size; the table shows medians."""
    threads: int = 1
    """torch intra-op threads, the same for both sides (one rollout worker per core)."""
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float | None = 0.95
    seed: int = 0
    target: float = 1.0
    """textgym tok/s / generate tok/s at the largest batch must reach this."""


def prompts_for(batch: int) -> list[str]:
    """Validation prompts of the built-in review task (else fixed prompts), cycled to ``batch``."""
    path = Path(textgym.__file__).parent / "assets" / "data" / "reviews.jsonl"
    prompts: list[str] = []
    if path.exists():
        with path.open() as f:
            rows = [json.loads(line) for line in f if line.strip()]
        prompts = [r["prompt"] for r in rows if r.get("split") == "validation"][:64]
    prompts = prompts or FALLBACK_PROMPTS
    return [prompts[i % len(prompts)] for i in range(batch)]


def timed(fn: Callable[[], int], device: torch.device) -> float:
    """Tokens per second of one call of ``fn`` (which returns the number of tokens it made)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    n = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def bench_batch(lm: LanguageModel, cfg: BenchConfig, batch: int) -> tuple[list[float], list[float]]:
    """Tokens/s of textgym and of generate over ``cfg.repeats`` alternating runs."""
    ids, mask = lm.encode(prompts_for(batch))
    T = cfg.new_tokens
    hf_config = GenerationConfig(
        do_sample=True,
        max_new_tokens=T,
        min_new_tokens=T,
        temperature=cfg.temperature,
        top_k=cfg.top_k or 0,
        top_p=cfg.top_p if cfg.top_p is not None else 1.0,
        eos_token_id=lm.eos_token_id,
        pad_token_id=lm.pad_token_id,
    )

    def ours(seed: int) -> int:
        out = generate(
            lm,
            ids,
            attention_mask=mask,
            max_new_tokens=T,
            min_new_tokens=T,
            do_sample=True,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            generator=torch.Generator(lm.device).manual_seed(seed),
        )
        assert out.completion_ids.shape == (batch, T)
        assert bool(out.completion_mask.all())
        return batch * T

    def theirs(seed: int) -> int:
        torch.manual_seed(seed)  # generate samples from the global RNG
        with torch.inference_mode():
            out = lm.model.generate(ids, attention_mask=mask, generation_config=hf_config)
        assert out.shape == (batch, ids.shape[1] + T)
        return batch * T

    ours(cfg.seed)  # warm-up: allocator, lazy init
    theirs(cfg.seed)
    textgym_tps: list[float] = []
    hf_tps: list[float] = []
    for r in range(cfg.repeats):
        runs = [(ours, textgym_tps), (theirs, hf_tps)]
        for fn, results in runs if r % 2 == 0 else runs[::-1]:
            results.append(timed(partial(fn, cfg.seed + r), lm.device))
    return textgym_tps, hf_tps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default=BenchConfig.model,
        help=MODEL_HELP,
    )
    parser.add_argument("--device", default=BenchConfig.device)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=BenchConfig.threads)
    parser.add_argument("--quick", action="store_true", help="5 repeats (about a minute)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the ratio misses --target")
    parser.add_argument("--target", type=float, default=BenchConfig.target)
    args = parser.parse_args(argv)
    cfg = BenchConfig(
        model=bench_model(args.model), device=args.device, threads=args.threads, target=args.target
    )
    if args.quick:
        cfg = replace(cfg, repeats=5)
    if args.repeats is not None:
        cfg = replace(cfg, repeats=args.repeats)

    torch.set_num_threads(cfg.threads)
    lm = LanguageModel.from_pretrained(cfg.model, device=cfg.device)
    load_before = os.getloadavg()[0]
    n_params = sum(p.numel() for p in lm.model.parameters())
    cpu = platform.processor() or "cpu"
    device_name = torch.cuda.get_device_name(lm.device) if lm.device.type == "cuda" else cpu
    seeds = f"{cfg.seed}..{cfg.seed + cfg.repeats - 1}"
    print(f"model: {cfg.model} ({n_params / 1e6:.2f}M params, V={lm.vocab_size})")
    cores = os.cpu_count()
    print(f"device: {lm.device} ({device_name}), torch threads: {cfg.threads}, cores: {cores}")
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"python {platform.python_version()}, git {git_sha()}"
    )
    print(
        f"sampling: temperature={cfg.temperature} top_k={cfg.top_k} top_p={cfg.top_p}; "
        f"{cfg.new_tokens} new tokens forced (min_new_tokens); median of {cfg.repeats} runs "
        f"(seeds {seeds}), ± = std"
    )
    print()
    print(f"{'batch':>5} | {'textgym tok/s':>18} | {'generate tok/s':>18} | {'ratio':>5}")
    print(f"{'-' * 5}-+-{'-' * 18}-+-{'-' * 18}-+-{'-' * 5}")
    ratio = float("nan")
    for batch in cfg.batch_sizes:
        ours, theirs = bench_batch(lm, cfg, batch)
        a, b = statistics.median(ours), statistics.median(theirs)
        ratio = a / b
        sd_a = statistics.stdev(ours) if len(ours) > 1 else 0.0
        sd_b = statistics.stdev(theirs) if len(theirs) > 1 else 0.0
        print(
            f"{batch:>5} | {a:>9.0f} ± {sd_a:<6.0f} | {b:>9.0f} ± {sd_b:<6.0f} | {ratio:>5.2f}",
            flush=True,
        )
    load_after = os.getloadavg()[0]
    print()
    print(f"load average (1 min) before/after: {load_before:.2f} / {load_after:.2f}", end="")
    if max(load_before, load_after) > (os.cpu_count() or 1):
        print("  (busy machine: foreign load slows both sides; compare the ratio, not the tok/s)")
    else:
        print()
    print(f"ratio: {ratio:.2f} (target >= {cfg.target})")
    if args.check and not ratio >= cfg.target:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
