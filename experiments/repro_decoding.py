"""Decoding strategies compared: quality vs diversity, no training.

The known picture (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration",
arXiv:1904.09751): likelihood-maximising decoding (greedy, beam search) gives low-perplexity,
repetitive, low-diversity text; pure sampling gives diverse but higher-perplexity text; top-k and
nucleus (top-p) sampling sit in between. On reference-based tasks (CommonGen-like concepts),
beam/greedy usually score highest on BLEU/CIDEr because the metrics reward the mode.

For each strategy the embedded model (or ``--model``) completes the first ``n_prompts`` test
prompts of ``reviews`` (sentiment, perplexity, distinct-n) and ``concepts`` (BLEU, CIDEr-D,
METEOR, perplexity, distinct-n). Perplexity is that of the completion under the same model,
conditioned on the prompt. Sampling strategies run ``seeds`` times (mean ± std).

    python experiments/repro_decoding.py            # ~2 min on 2 CPU cores
    python experiments/repro_decoding.py --quick
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

import textgym
from textgym import plots
from textgym.decoding import GenerationOutput, beam_search, generate
from textgym.evaluation import score_texts, task_reward
from textgym.lm import LanguageModel
from textgym.tasks import load

STRATEGIES: dict[str, dict[str, Any]] = {
    "greedy": {"do_sample": False},
    "beam (4)": {"num_beams": 4},
    "temperature 0.7": {"do_sample": True, "temperature": 0.7},
    "pure sampling": {"do_sample": True},
    "top-k 20": {"do_sample": True, "top_k": 20},
    "top-p 0.9": {"do_sample": True, "top_p": 0.9},
}
METRICS = {
    "reviews": ("sentiment", "ppl", "distinct1", "distinct2", "length"),
    "concepts": ("bleu", "cider", "meteor", "ppl", "distinct1", "distinct2", "length"),
}


@dataclass(frozen=True)
class DecodingConfig:
    model: str = textgym.DEFAULT_MODEL
    n_prompts: int = 128
    max_new_tokens: int = 24
    seeds: int = 3
    batch_size: int = 64
    out: str = "experiments/results"
    threads: int = 1


def decode(
    lm: LanguageModel, prompts: list[str], strategy: dict[str, Any], cfg: DecodingConfig, seed: int
) -> GenerationOutput:
    if "num_beams" in strategy:
        return beam_search(
            lm, prompts, num_beams=strategy["num_beams"], max_new_tokens=cfg.max_new_tokens
        )
    g = torch.Generator(device=lm.device).manual_seed(seed)
    return generate(lm, prompts, max_new_tokens=cfg.max_new_tokens, generator=g, **strategy)


@torch.no_grad()
def run_one(
    lm: LanguageModel, task: str, strategy: dict[str, Any], cfg: DecodingConfig, seed: int
) -> dict[str, float]:
    spec = load(task, "test")
    n = min(cfg.n_prompts, len(spec))
    texts: list[str] = []
    logp, tokens = 0.0, 0.0
    for start in range(0, n, cfg.batch_size):
        prompts = list(spec.prompts[start : min(start + cfg.batch_size, n)])
        out = decode(lm, prompts, strategy, cfg, seed + start)
        P = out.sequences.shape[1] - out.completion_ids.shape[1]
        # The model's own log-probs (unfiltered), not the sampler's: perplexity of the text.
        lp = lm.sequence_logprob(
            out.sequences[:, :P], out.attention_mask[:, :P], out.completion_ids, out.completion_mask
        )  # (B,)
        logp += float(lp.sum())
        tokens += float(out.completion_mask.sum())
        texts += out.texts
    prompts = list(spec.prompts[:n])
    refs = None if spec.references is None else [spec.references[i] for i in range(n)]
    m = score_texts(spec, prompts, texts, refs)
    m["reward"] = task_reward(spec, prompts, texts, refs)
    m["ppl"] = math.exp(-logp / max(tokens, 1.0))
    m["length"] = tokens / n
    return m


def fmt(xs: list[float]) -> str:
    digits = 1 if abs(statistics.mean(xs)) >= 10 else 3
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def plot(results: dict[str, dict[str, list[dict[str, float]]]], out: Path) -> Path:
    """Quality vs diversity: task metric against distinct-2, one point per strategy and task."""
    plt = plots.pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.3), dpi=80)
    for ax, (task, ykey) in zip(
        axes, (("reviews", "sentiment"), ("concepts", "cider")), strict=True
    ):
        for name, runs in results[task].items():
            x = statistics.mean(r["distinct2"] for r in runs)
            y = statistics.mean(r[ykey] for r in runs)
            ax.scatter(x, y)
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("distinct-2 (diversity)")
        ax.set_ylabel(ykey)
        ax.set_title(task)
    return plots.save(fig, out / "decoding.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--out")
    ns = parser.parse_args()
    cfg = DecodingConfig()
    if ns.quick:
        cfg = replace(cfg, n_prompts=48, seeds=2)
    cfg = replace(
        cfg,
        **{
            k: v
            for k, v in {"model": ns.model, "seeds": ns.seeds, "out": ns.out}.items()
            if v is not None
        },
    )
    torch.set_num_threads(cfg.threads)
    lm = LanguageModel.from_pretrained(cfg.model, device=ns.device)
    start = time.perf_counter()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for task in METRICS:
        results[task] = {}
        for name, strategy in STRATEGIES.items():
            seeds = range(cfg.seeds) if strategy.get("do_sample") else range(1)
            results[task][name] = [run_one(lm, task, strategy, cfg, s) for s in seeds]
            print(f"# {task} {name} done", flush=True)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# repro_decoding: model "
        f"{'embedded' if cfg.model == textgym.DEFAULT_MODEL else cfg.model}, {cfg.n_prompts} "
        f"test prompts, <= {cfg.max_new_tokens} new tokens, {cfg.seeds} seeds for sampling, "
        f"torch {torch.__version__}, {time.perf_counter() - start:.0f} s"
    ]
    for task, keys in METRICS.items():
        lines += [
            f"\n### {task}\n",
            "| strategy | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 1) + "|",
        ]
        for name, runs in results[task].items():
            lines.append(
                f"| {name} | " + " | ".join(fmt([r[k] for r in runs]) for k in keys) + " |"
            )
    md = "\n".join(lines) + "\n"
    (out / "decoding.md").write_text(md)
    plot(results, out)
    print(md)


if __name__ == "__main__":
    main()
