"""Tokens/s of a full rollout through ``TextGenVectorEnv`` against ``transformers``' ``generate``.

Same model, same prompts (the env's own reset picks them), batch 64, up to 48 new tokens, plain
sampling (temperature 1, no top-k/top-p), the task's sequence reward scored at the end, fp32 on
this machine's CPU (``--compute-dtype bf16``: both sides on the bf16-weight copy the agents sample
with, under autocast, and a row of textgym bf16 against textgym fp32 from the same run). Rows:

    textgym env + KV cache   the policy's cache lives beside the vector env: the prompt is fed once,
                             then one token per step (``LanguageModel.step``); the env appends,
                             checks EOS, autoresets, decodes and scores ended episodes
    HF generate              ``model.generate(do_sample=True, top_k=0)`` on the same left-padded
                             prompts, then one batched decode and reward call
    textgym env, no cache    the naive loop: a full forward over prompt + completion every step
    collect, compacted       ``textgym.rollout.collect`` (the loop agents use), by default: once at
                             most 3/4 of the LM batch's rows still run, the finished ones leave its
                             forward passes and KV cache (never below 16 rows)
    collect, not compacted   the same with ``compact=False``: every row is fed until the last
                             episode ends. Both draw the same samples (same seed, bit-identical
                             rollouts), so their steps are equal and the ratio is the time saved.
                             It pays where episodes end at EOS at mixed lengths (the embedded
                             model on its tasks; random-weight bench models rarely emit EOS)

    collect, multi-turn        ``collect`` on a multi-turn env against ``collect`` on a single-turn
    vs single-turn             one with the same token budget (own table row and ratio line): the
                               review prompts, EOS masked out on both sides (so every episode
                               spends its 48 tokens); multi-turn, each "." ends the policy's turn
                               and a responder answers the first three with " Tell me more:" (6
                               environment tokens each, teacher-forced into the KV cache) and the
                               later ones with nothing, so every episode runs to the budget.
                               Throughput counts transcript tokens (the policy's and the
                               environment's) per second; the totals are printed, equal but for
                               episodes whose answer would not fit (they end a few tokens early)

A rollout runs until every sub-env's first episode has ended (EOS or 48 tokens), as ``generate``
runs until every row has. Throughput counts row-steps (B x steps run, the batch's decode work,
finished rows included, as for ``generate``); the generated tokens (up to each EOS) are printed
too. Samples differ between the two, so lengths differ slightly; the median over interleaved
repeats evens that and the machine's load out.

    python experiments/bench_rollout.py            # full run
    python experiments/bench_rollout.py --quick    # about a minute
    python experiments/bench_rollout.py --check    # exit 1 when a ratio misses its target
    python experiments/bench_rollout.py --multiturn-only   # only the multi-turn row
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

import textgym
from textgym.assets.bench_models import MODEL_HELP, bench_model
from textgym.envs import TextGenVectorEnv, VocabularyMask, to_left_padded
from textgym.lm import LanguageModel
from textgym.multiturn import Transcript
from textgym.provenance import git_sha
from textgym.rollout import collect
from textgym.tasks import Task, load
from textgym.training import frozen_copy

TARGET = 0.9
MULTI_TURN_TARGET = 0.9
REPLY = " Tell me more:"
REPLIES = 3


@dataclass(frozen=True)
class BenchConfig:
    model: str = textgym.DEFAULT_MODEL
    task: str = "reviews"
    batch_size: int = 64
    max_new_tokens: int = 48
    repeats: int = 5
    naive_repeats: int = 1
    threads: int = 1  # DESIGN.md: one torch thread per rollout worker
    seed: int = 0


@dataclass
class Run:
    seconds: float
    steps: int  # decode steps run
    tokens: int  # generated tokens up to and including each row's EOS
    batch: int
    lm_rows: int = 0  # rows fed to the LM after the prompt, summed over steps (collect only)

    @property
    def row_steps_per_s(self) -> float:
        return self.batch * self.steps / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def prompts_of(venv: TextGenVectorEnv, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The env's reset prompts, left-padded and cut to the longest one, and their indices."""
    obs, info = venv.reset(seed=seed)
    pad = venv.config.pad_token_id
    ids, mask = to_left_padded(obs["input_ids"], obs["attention_mask"], pad, trim=True)
    return torch.as_tensor(ids), torch.as_tensor(mask), info["prompt_index"]


def env_rollout(lm: LanguageModel, venv: TextGenVectorEnv, seed: int, *, cache: bool) -> Run:
    """One rollout through the vector env; the policy samples with or without its KV cache."""
    gen = torch.Generator().manual_seed(seed)
    B = venv.num_envs
    start = time.perf_counter()
    obs, _ = venv.reset(seed=seed)
    pad = venv.config.pad_token_id
    ids, mask = to_left_padded(obs["input_ids"], obs["attention_mask"], pad, trim=True)
    seq = torch.as_tensor(ids)  # (B, P)
    width = seq.shape[1]
    # The mask only grows by a column of ones: write it once, hand the model a growing view.
    full_attn = torch.ones(B, width + venv.config.max_new_tokens, dtype=torch.long)  # (B, P + T)
    full_attn[:, :width] = torch.as_tensor(mask)
    attn = full_attn[:, :width]  # (B, P)
    with torch.inference_mode():
        if cache:
            logits, kv = lm.step(seq, attn, None)  # (B, V)
        else:
            logits = lm.forward(seq, attn)[:, -1]  # (B, V)
        running = np.ones(B, dtype=bool)
        steps = tokens = 0
        while True:
            action = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)  # (B, 1)
            _, _, term, trunc, _ = venv.step(action[:, 0].numpy())
            steps += 1
            tokens += int(running.sum())
            running &= ~(term | trunc)
            if not running.any():
                break
            attn = full_attn[:, : width + steps]  # (B, P + t)
            if cache:
                logits, kv = lm.step(action, attn, kv)
            else:
                seq = torch.cat([seq, action], dim=1)  # (B, P + t)
                logits = lm.forward(seq, attn)[:, -1]
    return Run(time.perf_counter() - start, steps, tokens, B)


def collect_rollout(lm: LanguageModel, venv: TextGenVectorEnv, seed: int, *, compact: bool) -> Run:
    """``textgym.rollout.collect`` with or without compaction; counts the rows the LM is fed."""
    fed: list[int] = []
    forward = lm.model.forward

    def counting(*args: object, **kwargs: torch.Tensor) -> object:
        fed.append(int(kwargs["input_ids"].shape[0]))
        return forward(*args, **kwargs)

    lm.model.forward = counting
    try:
        start = time.perf_counter()
        out = collect(
            lm, venv, generator=torch.Generator().manual_seed(seed), seed=seed, compact=compact
        )
        seconds = time.perf_counter() - start
    finally:
        del lm.model.forward  # the class's own forward again
    steps = out.completion_ids.shape[1]
    return Run(seconds, steps, int(out.lengths.sum()), len(out), lm_rows=sum(fed[1:]))


def tell_me_more(transcript: Transcript) -> str:
    """The multi-turn row's responder: " Tell me more:" to the first three turns, then an empty
    answer (no environment tokens: the policy goes on until the budget is spent, so both sides
    write the same number of tokens)."""
    return REPLY if len(transcript.env_turns) < REPLIES else ""


def turn_envs(lm: LanguageModel, cfg: BenchConfig) -> tuple[TextGenVectorEnv, TextGenVectorEnv]:
    """(single-turn, multi-turn) envs with the same prompts and budget, EOS masked out on both."""
    task = load(cfg.task, split="train")
    no_eos = VocabularyMask(
        [i for i in range(lm.vocab_size) if i != lm.eos_token_id], lm.vocab_size
    )
    turns = Task(
        task.name, task.prompts, task.references, stop_sequences=(".",), reward=task.reward
    )
    common = {"model": lm, "max_new_tokens": cfg.max_new_tokens, "action_mask": no_eos}
    single = TextGenVectorEnv(cfg.batch_size, task=task, **common)
    multi = TextGenVectorEnv(cfg.batch_size, task=turns, responder=tell_me_more, **common)
    return single, multi


def transcript_rollout(lm: LanguageModel, venv: TextGenVectorEnv, seed: int) -> Run:
    """``collect`` counting transcript tokens: the policy's and (multi-turn) the environment's."""
    start = time.perf_counter()
    out = collect(lm, venv, generator=torch.Generator().manual_seed(seed), seed=seed)
    seconds = time.perf_counter() - start
    tokens = out.completion_mask.sum()
    if out.env_mask is not None:
        tokens = tokens + out.env_mask.sum()
    return Run(seconds, out.completion_ids.shape[1], int(tokens), len(out))


def print_multiturn(multi: list[Run], single: list[Run]) -> float:
    """The multi-turn row: transcript tokens/s of each side and the median paired ratio."""
    m, m_sd = median_run(multi, lambda x: x.tokens_per_s)
    s, s_sd = median_run(single, lambda x: x.tokens_per_s)
    ratio = statistics.median(
        a.tokens_per_s / b.tokens_per_s for a, b in zip(multi, single, strict=True)
    )
    label = "tokens/s, collect multi/single-turn"
    print(f"| {label:34} | {m:9.0f} ± {m_sd:4.0f} | {s:9.0f} ± {s_sd:4.0f} | {ratio:6.2f} |")
    tm, ts = (statistics.median(x.tokens for x in runs) for runs in (multi, single))
    print(f"| {'transcript tokens per rollout':34} | {tm:16.0f} | {ts:16.0f} | {'':>6} |")
    return ratio


def generate_rollout(lm: LanguageModel, venv: TextGenVectorEnv, seed: int) -> Run:
    """``generate`` on the env's prompts, then one decode and one reward call, as the env does."""
    ids, mask, index = prompts_of(venv, seed)  # untimed: the env side times its reset
    torch.manual_seed(seed)
    cfg = venv.config
    start = time.perf_counter()
    autocast = torch.autocast("cpu", dtype=lm.compute_dtype, enabled=lm.compute_dtype is not None)
    with torch.inference_mode(), autocast:
        out = lm.model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            max_new_tokens=cfg.max_new_tokens,
            pad_token_id=cfg.pad_token_id,
            eos_token_id=cfg.eos_token_id,
        )
    new = out[:, ids.shape[1] :]  # (B, T)
    is_eos = (new == cfg.eos_token_id).int()
    # Tokens up to and including the first EOS; later columns are generate's padding.
    lengths = torch.where(is_eos.any(1), is_eos.argmax(1) + 1, new.shape[1])
    cut = [
        row[: n - int(row[n - 1] == cfg.eos_token_id)].tolist()
        for row, n in zip(new, lengths.tolist(), strict=True)
    ]
    texts = cfg.tokenizer.batch_decode(cut, skip_special_tokens=True)
    prompts = [cfg.task.prompts[i] for i in index]
    refs = cfg.task.references
    cfg.scorer(prompts, list(texts), None if refs is None else [refs[i] for i in index])
    return Run(time.perf_counter() - start, new.shape[1], int(lengths.sum()), len(texts))


def median_run(runs: list[Run], key: Callable[[Run], float]) -> tuple[float, float]:
    values = [key(r) for r in runs]
    return statistics.median(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def print_paired(label: str, ours: list[Run], ref: list[Run]) -> float:
    """One table row of row-steps/s, median ± sd of each side and the median of the paired
    (interleaved) ratios, which is returned."""
    o, o_sd = median_run(ours, lambda x: x.row_steps_per_s)
    g, g_sd = median_run(ref, lambda x: x.row_steps_per_s)
    ratio = statistics.median(
        a.row_steps_per_s / b.row_steps_per_s for a, b in zip(ours, ref, strict=True)
    )
    print(f"| {label:34} | {o:9.0f} ± {o_sd:4.0f} | {g:9.0f} ± {g_sd:4.0f} | {ratio:6.2f} |")
    return ratio


def print_compaction(compacted: list[Run], full: list[Run]) -> None:
    """Rows of the table: collect() compacted (textgym column) vs not (reference column)."""
    print_paired("row-steps/s, collect compacted/not", compacted, full)
    fed_c, fed_f = (
        statistics.median(x.lm_rows / (x.batch * max(1, x.steps - 1)) for x in runs)
        for runs in (compacted, full)
    )
    print(f"| {'LM rows fed per row-step':34} | {fed_c:16.2f} | {fed_f:16.2f} | {'':>6} |")
    ended = statistics.median(x.tokens / (x.batch * x.steps) for x in compacted)
    print(f"| {'episode steps / row-steps':34} | {ended:16.2f} | {ended:16.2f} | {'':>6} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=BenchConfig.model,
        help=MODEL_HELP,
    )
    parser.add_argument("--task", default=BenchConfig.task)
    parser.add_argument("--batch-size", type=int, default=BenchConfig.batch_size)
    parser.add_argument("--max-new-tokens", type=int, default=BenchConfig.max_new_tokens)
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    parser.add_argument("--threads", type=int, default=BenchConfig.threads)
    parser.add_argument("--no-naive", action="store_true", help="skip the no-cache row")
    parser.add_argument(
        "--compute-dtype",
        choices=["bf16"],
        help="bf16 on both sides: the bf16-weight copy agents sample with, generate on it under "
        "autocast; plus a textgym fp32 row",
    )
    parser.add_argument("--quick", action="store_true", help="3 repeats, about a minute")
    parser.add_argument("--check", action="store_true", help="exit 1 when a ratio < target")
    parser.add_argument(
        "--multiturn-only", action="store_true", help="only the multi-turn vs single-turn row"
    )
    args = parser.parse_args(argv)
    cfg = BenchConfig(
        model=bench_model(args.model),
        task=args.task,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        repeats=args.repeats,
        threads=args.threads,
    )
    if args.quick:
        cfg = replace(cfg, repeats=3)
    torch.set_num_threads(cfg.threads)

    load_before = os.getloadavg()[0]
    lm = LanguageModel.from_pretrained(cfg.model, device="cpu", compute_dtype=args.compute_dtype)
    fp32: LanguageModel | None = None
    if lm.compute_dtype is not None:
        # What the agents sample with under a compute dtype: a frozen copy in bf16 weights (no
        # per-step weight casts), on both sides; the float32 model runs beside it for the
        # bf16 / fp32 row of the same run.
        fp32, lm = lm, frozen_copy(lm)
    venv = TextGenVectorEnv(
        cfg.batch_size, model=lm, task=cfg.task, max_new_tokens=cfg.max_new_tokens
    )
    single_turn, multi_turn = turn_envs(lm, cfg)
    if args.multiturn_only:
        return multiturn_only(lm, cfg, single_turn, multi_turn, args.check)
    # Warm-up: first calls allocate, import the reward's dependencies, build caches.
    env_rollout(lm, venv, seed=999, cache=True)
    generate_rollout(lm, venv, seed=999)
    collect_rollout(lm, venv, seed=999, compact=True)
    transcript_rollout(lm, single_turn, seed=999)
    transcript_rollout(lm, multi_turn, seed=999)

    ours: list[Run] = []
    ref: list[Run] = []
    naive: list[Run] = []
    compacted: list[Run] = []
    full: list[Run] = []
    single: list[Run] = []  # the float32 model's env rollouts, with --compute-dtype
    one_turn: list[Run] = []  # collect on the single-turn env of the multi-turn row
    turns: list[Run] = []  # collect on its multi-turn env
    for r in range(cfg.repeats):  # interleaved, so that both sides see the same load
        seed = cfg.seed + r
        ours.append(env_rollout(lm, venv, seed, cache=True))
        ref.append(generate_rollout(lm, venv, seed))
        if not args.no_naive and r < cfg.naive_repeats:
            naive.append(env_rollout(lm, venv, seed, cache=False))
        compacted.append(collect_rollout(lm, venv, seed, compact=True))
        full.append(collect_rollout(lm, venv, seed, compact=False))
        if fp32 is not None:
            single.append(env_rollout(fp32, venv, seed, cache=True))
        one_turn.append(transcript_rollout(lm, single_turn, seed))
        turns.append(transcript_rollout(lm, multi_turn, seed))
    load_after = os.getloadavg()[0]

    o = median_run(ours, lambda x: x.row_steps_per_s)[0]
    g = median_run(ref, lambda x: x.row_steps_per_s)[0]
    print(
        f"# bench_rollout  git {git_sha()}  {platform.processor() or platform.machine()}, "
        f"{cfg.threads} torch threads, cpu"
    )
    print(
        f"# torch {torch.__version__}  transformers {__import__('transformers').__version__}  "
        f"numpy {np.__version__}  python {sys.version.split()[0]}"
    )
    print(
        f"# model {Path(cfg.model).name} ({lm!r}), task {cfg.task}, batch {cfg.batch_size}, "
        f"{cfg.max_new_tokens} new tokens, seeds {cfg.seed}..{cfg.seed + cfg.repeats - 1}, "
        f"compute dtype {lm.compute_dtype or 'the weights (float32)'}"
    )
    print(
        f"# load average {load_before:.2f} before, {load_after:.2f} after ({os.cpu_count()} cores)"
    )
    if max(load_before, load_after) > 0.5 * (os.cpu_count() or 1):
        print(
            "# WARNING: other processes are using this machine; the absolute numbers are low "
            "and noisy, the ratio (interleaved repeats) less so"
        )
    print()
    print(f"| {'metric':34} | {'textgym':>16} | {'reference':>16} | {'ratio':>6} |")
    print(f"|{'-' * 36}|{'-' * 18}|{'-' * 18}|{'-' * 8}|")
    ratio = print_paired("row-steps/s, env+cache vs generate", ours, ref)
    ot, _ = median_run(ours, lambda x: x.tokens_per_s)
    gt, _ = median_run(ref, lambda x: x.tokens_per_s)
    print(f"| {'generated tokens/s (up to EOS)':34} | {ot:16.0f} | {gt:16.0f} | {ot / gt:6.2f} |")
    steps_o, steps_g = (median_run(runs, lambda x: x.steps)[0] for runs in (ours, ref))
    print(f"| {'steps per rollout (median)':34} | {steps_o:16.0f} | {steps_g:16.0f} | {'':>6} |")
    ms_o, ms_g = (median_run(runs, lambda x: x.seconds)[0] * 1e3 for runs in (ours, ref))
    print(f"| {'ms per rollout (median)':34} | {ms_o:16.1f} | {ms_g:16.1f} | {'':>6} |")
    if naive:
        n, _ = median_run(naive, lambda x: x.row_steps_per_s)
        print(f"| {'row-steps/s, env without cache':34} | {n:16.0f} | {g:16.0f} | {n / g:6.2f} |")
    if single:
        s, _ = median_run(single, lambda x: x.row_steps_per_s)
        label = "row-steps/s, textgym bf16 vs fp32"
        print(f"| {label:34} | {o:16.0f} | {s:16.0f} | {o / s:6.2f} |")
    print_compaction(compacted, full)
    multi_ratio = print_multiturn(turns, one_turn)
    print()
    print(f"multi-turn ratio: {multi_ratio:.2f} (target >= {MULTI_TURN_TARGET})")
    print(f"ratio: {ratio:.2f} (target >= {TARGET})")
    if args.check and (ratio < TARGET or multi_ratio < MULTI_TURN_TARGET):
        return 1
    return 0


def multiturn_only(
    lm: LanguageModel,
    cfg: BenchConfig,
    single_turn: TextGenVectorEnv,
    multi_turn: TextGenVectorEnv,
    check: bool,
) -> int:
    """``--multiturn-only``: the multi-turn row alone, ending with its ``ratio:`` line."""
    transcript_rollout(lm, single_turn, seed=999)  # warm-up
    transcript_rollout(lm, multi_turn, seed=999)
    load_before = os.getloadavg()[0]
    one_turn, turns = [], []
    for r in range(cfg.repeats):  # interleaved, so that both sides see the same load
        one_turn.append(transcript_rollout(lm, single_turn, cfg.seed + r))
        turns.append(transcript_rollout(lm, multi_turn, cfg.seed + r))
    load_after = os.getloadavg()[0]
    print(f"# bench_rollout --multiturn-only  git {git_sha()}  {cfg.threads} torch threads, cpu")
    print(
        f"# model {Path(cfg.model).name}, task {cfg.task}, batch {cfg.batch_size}, "
        f"{cfg.max_new_tokens} tokens, seeds {cfg.seed}..{cfg.seed + cfg.repeats - 1}, "
        f"load average {load_before:.2f} before, {load_after:.2f} after ({os.cpu_count()} cores)"
    )
    print()
    print(f"| {'metric':34} | {'multi-turn':>16} | {'single-turn':>16} | {'ratio':>6} |")
    print(f"|{'-' * 36}|{'-' * 18}|{'-' * 18}|{'-' * 8}|")
    ratio = print_multiturn(turns, one_turn)
    print()
    print(f"ratio: {ratio:.2f} (target >= {MULTI_TURN_TARGET})")
    return 1 if check and ratio < MULTI_TURN_TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
