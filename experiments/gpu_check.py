"""GPU check: textgym's CUDA path in one run (decoding, rollout, agents) and a PASS/FAIL list.

1. decoding: ``textgym.decoding.greedy`` vs ``model.generate(do_sample=False)`` on left-padded
   prompts of different lengths, fp32 (checked: every token equal) and ``compute_dtype="bf16"``
   (generate inside the same ``lm.autocast()``; match fraction only: bf16 may flip near-ties).
2. rollout: tokens/s and peak memory of ``rollout.collect`` through ``gym.make_vec("TextGen-v0")``
   (rewards scored) vs ``generate(do_sample=True)`` on the same prompts, fp32 and bf16.
3. agents, bf16: one PPO iteration (1 epoch x 1 minibatch), one REINFORCE (RLOO, K=4) iteration,
   DPO steps; completions/s or pairs/s, peak memory, and beside them TRL's RLOOTrainer and
   DPOTrainer (bf16=True) when ``trl`` is installed. Checked: the agents' parameters are on the
   device.
4. summary: versions, device, bf16 support, every check. Exit 1 when one fails; 2 without CUDA.

``--model`` (every section): ``gpt2-124m`` on CUDA (GPT-2's shape, random weights, built on first
use by ``textgym.assets.bench_models``), the embedded model on CPU. Peak memory:
``torch.cuda.max_memory_allocated`` after a reset once warmed up ("n/a" on CPU). A section that
raises is a FAIL with its error; the next one still runs.

    python experiments/gpu_check.py                        # CUDA, the full sizes
    python experiments/gpu_check.py --quick                # CUDA, fewer iterations
    python experiments/gpu_check.py --device cpu --quick   # smoke run, embedded model, < 1 min
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import io
import logging
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import textgym.rewards
import torch
from textgym.agents import DPO, PPO, REINFORCE, DPOConfig, PPOConfig, REINFORCEConfig
from torch import Tensor
from transformers import TrainerCallback

import textgym
import textgym.tasks
from textgym.assets.bench_models import MODEL_HELP, bench_model
from textgym.decoding import greedy
from textgym.lm import LanguageModel
from textgym.preference import review_pairs
from textgym.provenance import describe
from textgym.rollout import collect

PROMPTS = [
    "The movie was", "I", "Once upon a time", "A", "We watched it twice and",
    "The acting was good but the plot", "Nothing in this film makes sense, and the ending",
    "This film is a story about a dog and a cat who live in a small town by the sea and",
]  # fmt: skip
"""Decoding prompts: lengths from 1 to ~20 tokens, so every batch is left-padded."""
PRECISIONS: dict[str, str | None] = {"fp32": None, "bf16": "bf16"}
"""Table rows -> ``compute_dtype`` (bf16: autocast; weights and optimizer state stay float32)."""


@dataclass(frozen=True)
class CheckConfig:
    device: str = "cuda"
    model: str = "gpt2-124m"
    """--model: a bench model name or an HF path; every section uses it."""
    decode_new_tokens: int = 32
    rollout_envs: int = 64
    rollout_new_tokens: int = 64
    rollout_repeats: int = 5
    agent_envs: int = 64
    """Completions per PPO / REINFORCE iteration (and per TRL RLOO step)."""
    agent_new_tokens: int = 32
    agent_iterations: int = 5
    dpo_batch: int = 16
    dpo_steps: int = 20
    rloo_k: int = 4
    seed: int = 0


QUICK: dict[str, Any] = dict(
    decode_new_tokens=12, rollout_envs=8, rollout_new_tokens=12, rollout_repeats=1, agent_envs=8,
    agent_new_tokens=8, agent_iterations=1, dpo_batch=4, dpo_steps=2,
)  # fmt: skip


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


# ---------------------------------------------------------------------------- measuring


def header(*columns: str) -> None:
    """A markdown table's header; each column as wide as its padded title."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("-" * (len(c) + 2) for c in columns) + "|")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[list[str]]:
    """Yields a list that holds, after the block, its peak allocated memory ("n/a" off CUDA)."""
    out: list[str] = []
    if device.type == "cuda":
        gc.collect()  # earlier sections' models, if cycles still hold them, would count here
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    sync(device)
    mib = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    out.append("n/a" if mib is None else f"{mib:,.0f} MiB")


@dataclass
class Speed:
    per_s: float
    memory: str


def timed(fn: Callable[[], int], device: torch.device, repeats: int) -> Speed:
    """``fn`` once to warm up, then ``repeats`` times timed; ``fn`` returns the units it did."""
    fn()
    with peak_memory(device) as mem:
        start = time.perf_counter()
        units = sum(fn() for _ in range(repeats))
        sync(device)
        seconds = time.perf_counter() - start
    return Speed(units / seconds, mem[0])


def on_device(device: torch.device, *modules: torch.nn.Module | None) -> bool:
    """Every parameter of every module on ``device``'s type (the agents' placement check)."""
    types = {p.device.type for m in modules if m is not None for p in m.parameters()}
    return types == {device.type}


def load(cfg: CheckConfig, compute_dtype: str | None = None) -> LanguageModel:
    return LanguageModel.from_pretrained(cfg.model, device=cfg.device, compute_dtype=compute_dtype)


def with_dtype(lm: LanguageModel, compute_dtype: str | None) -> LanguageModel:
    """The same weights under another compute dtype (no second copy)."""
    return LanguageModel(lm.model, lm.tokenizer, compute_dtype=compute_dtype)


# ---------------------------------------------------------------------------- 1. decoding


def hf_generate(lm: LanguageModel, ids: Tensor, mask: Tensor, new: int, sample: bool) -> Tensor:
    """``model.generate`` in the model's autocast: greedy, or plain sampling (no top-k/top-p)."""
    plain = {"top_k": 0, "top_p": 1.0} if sample else {}  # greedy warns about sampling flags
    with torch.inference_mode(), lm.autocast():
        out: Tensor = lm.model.generate(
            input_ids=ids, attention_mask=mask, do_sample=sample, max_new_tokens=new,
            pad_token_id=lm.pad_token_id, eos_token_id=lm.eos_token_id, **plain,
        )  # fmt: skip
    return out


def token_match(ours: Tensor, ref: Tensor, prompt_len: int, pad: int) -> tuple[int, int]:
    """Equal generated tokens and their count, after padding the shorter output with ``pad``."""
    width = max(ours.shape[1], ref.shape[1])
    a, b = (torch.nn.functional.pad(x, (0, width - x.shape[1]), value=pad) for x in (ours, ref))
    a, b = a[:, prompt_len:], b[:, prompt_len:]  # (B, T)
    return int((a == b).sum()), a.numel()


def section_decoding(cfg: CheckConfig, lm: LanguageModel) -> list[Check]:
    print(f"\n## 1. greedy decoding == HF generate(do_sample=False), {cfg.decode_new_tokens} new")
    ids, mask = lm.encode(PROMPTS)
    lengths = mask.sum(-1)
    print(f"{len(PROMPTS)} prompts of {int(lengths.min())}-{int(lengths.max())} tokens")
    header(f"{'precision':9}", f"{'tokens equal':>20}", f"{'rows equal':>10}", "result")
    checks = []
    for precision, compute_dtype in PRECISIONS.items():
        model = with_dtype(lm, compute_dtype)
        ours = greedy(model, ids, attention_mask=mask, max_new_tokens=cfg.decode_new_tokens)
        ref = hf_generate(model, ids, mask, cfg.decode_new_tokens, sample=False)
        equal, total = token_match(ours.sequences, ref, ids.shape[1], lm.pad_token_id)
        same_shape = ours.sequences.shape == ref.shape
        rows = int((ours.sequences == ref).all(-1).sum()) if same_shape else 0
        exact = same_shape and rows == len(PROMPTS)
        result = ("PASS" if exact else "FAIL") if precision == "fp32" else "info"
        print(
            f"| {precision:9} | {equal / total:6.3f} ({equal:>5}/{total:<5}) | "
            f"{rows:>4}/{len(PROMPTS):<5} | {result:6} |"
        )
        if precision == "fp32":
            checks.append(Check("decoding fp32 == generate", exact, f"{equal}/{total} tokens"))
    print(f"decoding fp32 == generate: {'PASS' if checks[0].passed else 'FAIL'}")
    return checks


# ---------------------------------------------------------------------------- 2. rollout


def make_env(lm: LanguageModel, num_envs: int, max_new_tokens: int) -> Any:
    return gym.make_vec(
        "TextGen-v0", num_envs=num_envs, model=lm, task="reviews", reward="sentiment",
        max_new_tokens=max_new_tokens,
    )  # fmt: skip


def hf_sample(lm: LanguageModel, ids: Tensor, mask: Tensor, new: int) -> int:
    """Tokens sampled by ``generate`` up to each row's EOS."""
    new_ids = hf_generate(lm, ids, mask, new, True)[:, ids.shape[1] :]  # (B, T)
    is_eos = new_ids.eq(-1 if lm.eos_token_id is None else lm.eos_token_id).int()  # (B, T)
    return int(torch.where(is_eos.any(1), is_eos.argmax(1) + 1, is_eos.shape[1]).sum())


def rollout_row(cfg: CheckConfig, lm: LanguageModel, precision: str) -> Check:
    """One table row: env rollouts, then generate on the prompts of the first rollout."""
    B, T, device = cfg.rollout_envs, cfg.rollout_new_tokens, lm.device
    env = make_env(lm, B, T)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    rollouts = []

    def ours() -> int:
        # The same seed every time: the env resets to the same prompts that generate gets.
        rollouts.append(collect(lm, env, generator=gen, seed=cfg.seed))
        return int(rollouts[-1].completion_mask.sum())

    textgym_speed = timed(ours, device, cfg.rollout_repeats)
    env.close()
    first = rollouts[0]
    torch.manual_seed(cfg.seed)  # generate samples from torch's global generator
    hf_speed = timed(
        lambda: hf_sample(lm, first.prompt_ids, first.prompt_mask, T), device, cfg.rollout_repeats
    )
    print(
        f"| {precision:9} | {textgym_speed.per_s:13,.0f} | {hf_speed.per_s:14,.0f} | "
        f"{textgym_speed.per_s / hf_speed.per_s:5.2f} | {textgym_speed.memory:>12} | "
        f"{hf_speed.memory:>13} |"
    )
    placed = {first.completion_ids.device.type, first.logprobs.device.type} == {device.type}
    return Check(f"rollout {precision} on {device.type}", placed)


def section_rollout(cfg: CheckConfig, lm: LanguageModel) -> list[Check]:
    B, T = cfg.rollout_envs, cfg.rollout_new_tokens
    print(f"\n## 2. rollout: env + collect vs HF generate(do_sample=True), B={B}, T<={T}")
    header("precision", "textgym tok/s", "generate tok/s", "ratio", "textgym peak", "generate peak")
    return [rollout_row(cfg, with_dtype(lm, dtype), name) for name, dtype in PRECISIONS.items()]


# ---------------------------------------------------------------------------- 3. agents


def agent_row(name: str, speed: Speed | str, unit: str, placed: bool | None) -> None:
    rate = speed if isinstance(speed, str) else f"{speed.per_s:10.1f} {unit}"
    memory = "" if isinstance(speed, str) else speed.memory
    where = "" if placed is None else ("PASS" if placed else "FAIL")
    print(f"| {name:30} | {rate:>20} | {memory:>12} | {where:>9} |")


def on_policy(cfg: CheckConfig, kind: str) -> list[Check]:
    lm = load(cfg, "bf16")
    env = make_env(lm, cfg.agent_envs, cfg.agent_new_tokens)
    agent: PPO | REINFORCE
    if kind == "PPO":
        ppo_cfg = PPOConfig(n_epochs=1, n_minibatches=1, seed=cfg.seed)
        agent = PPO(lm, env, config=ppo_cfg, progress_bar=False)
    else:
        rloo = REINFORCEConfig(baseline="rloo", rloo_k=cfg.rloo_k, beta=0.05, seed=cfg.seed)
        agent = REINFORCE(lm, env, config=rloo, progress_bar=False)
    speed = timed(lambda: len(agent.learn(1)) * cfg.agent_envs, lm.device, cfg.agent_iterations)
    ref = agent.ref.model if isinstance(agent.ref, LanguageModel) else None
    placed = on_device(lm.device, agent.policy.model, agent.value_head, ref)
    label = "textgym PPO (1 epoch, bf16)" if kind == "PPO" else "textgym REINFORCE rloo (bf16)"
    agent_row(label, speed, "compl/s", placed)
    env.close()
    return [Check(f"{kind} on {lm.device.type}", placed)]


def dpo(cfg: CheckConfig) -> list[Check]:
    lm = load(cfg, "bf16")
    pairs = review_pairs(cfg.dpo_batch * (cfg.dpo_steps + 1))
    dpo_cfg = DPOConfig(batch_size=cfg.dpo_batch, max_length=64, lr=1e-5, seed=cfg.seed)
    agent = DPO(lm, data=pairs, config=dpo_cfg, device=cfg.device, progress_bar=False)
    speed = timed(lambda: len(agent.learn(1)) * cfg.dpo_batch, lm.device, cfg.dpo_steps)
    placed = on_device(lm.device, agent.policy.model, agent.ref.model)
    agent_row("textgym DPO (bf16)", speed, "pairs/s", placed)
    return [Check(f"DPO on {lm.device.type}", placed)]


class Clock(TrainerCallback):
    """Times step ends (after the device finished the step)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        sync(self.device)
        self.stamps.append(time.perf_counter())


def trl_train(trainer: Any, device: torch.device, per_step: int) -> Speed:
    """Units/s of ``trainer.train()`` between step ends after the first step; its peak memory."""
    clock = Clock(device)
    trainer.add_callback(clock)
    with peak_memory(device) as mem, contextlib.redirect_stdout(io.StringIO()):
        trainer.train()  # it prints its metrics dict
    stamps = clock.stamps
    return Speed((len(stamps) - 1) * per_step / (stamps[-1] - stamps[0]), mem[0])


def trl_common(cfg: CheckConfig, out: str, steps: int) -> dict[str, Any]:
    """TRL arguments both trainers share; bf16 mixed precision like the textgym rows."""
    return dict(
        output_dir=out, max_steps=steps + 1, learning_rate=1e-5, use_cpu=cfg.device == "cpu",
        bf16=True, report_to=[], save_strategy="no", logging_steps=10_000, disable_tqdm=True,
        seed=cfg.seed, dataloader_num_workers=0,
    )  # fmt: skip  # max_steps: the first step is the warm-up


def trl_rloo(cfg: CheckConfig, out: str) -> Speed:
    import datasets
    import trl

    lm = load(cfg)
    sentiment = textgym.rewards.make("sentiment")

    def reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return [float(x) for x in sentiment(prompts, completions)]

    prompts = textgym.tasks.load("reviews", split="train").prompts
    # TRL's sampling defaults (temperature 1, top_k 0, top_p 1) are the textgym rows' too.
    args = trl.RLOOConfig(
        per_device_train_batch_size=cfg.agent_envs, num_generations=cfg.rloo_k, beta=0.05,
        max_completion_length=cfg.agent_new_tokens, **trl_common(cfg, out, cfg.agent_iterations),
    )  # fmt: skip
    data = datasets.Dataset.from_list([{"prompt": p} for p in prompts])
    trainer = trl.RLOOTrainer(
        model=lm.model, reward_funcs=reward, args=args, train_dataset=data,
        processing_class=lm.tokenizer,
    )  # fmt: skip
    return trl_train(trainer, lm.device, cfg.agent_envs)


def trl_dpo(cfg: CheckConfig, out: str) -> Speed:
    import datasets
    import trl

    lm = load(cfg)
    # A space between prompt and completion, as textgym tokenizes them apart (see bench_dpo).
    rows = [
        {"prompt": p.prompt, "chosen": " " + p.chosen, "rejected": " " + p.rejected}
        for p in review_pairs(cfg.dpo_batch * (cfg.dpo_steps + 1))
    ]
    args = trl.DPOConfig(
        per_device_train_batch_size=cfg.dpo_batch, max_length=64,
        **trl_common(cfg, out, cfg.dpo_steps),
    )  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = trl.DPOTrainer(
            model=lm.model, args=args, train_dataset=datasets.Dataset.from_list(rows),
            processing_class=lm.tokenizer,
        )  # fmt: skip
    return trl_train(trainer, lm.device, cfg.dpo_batch)


def trl_row(name: str, fn: Callable[[], Speed], unit: str) -> None:
    """A TRL row; TRL failing is reported in its row, not as a failed check of textgym."""
    try:
        with warnings.catch_warnings():  # TRL's own FutureWarnings about transformers 6
            warnings.simplefilter("ignore", FutureWarning)
            speed: Speed | str = fn()
    except Exception as err:  # the reference row of a check run; the textgym rows still count
        traceback.print_exc()
        speed = f"error: {type(err).__name__}"
    agent_row(name, speed, unit, None)


def section_agents(cfg: CheckConfig) -> list[Check]:
    print(
        f"\n## 3. agents in bf16 on {cfg.model}: PPO/REINFORCE {cfg.agent_envs} completions "
        f"x {cfg.agent_iterations} iterations, DPO {cfg.dpo_batch} pairs x {cfg.dpo_steps} steps"
    )
    header(f"{'agent':30}", f"{'rate':>20}", f"{'peak memory':>12}", "on device")
    checks = run_section("PPO", on_policy, cfg, "PPO")
    checks += run_section("REINFORCE", on_policy, cfg, "REINFORCE")
    checks += run_section("DPO", dpo, cfg)
    if importlib.util.find_spec("trl") is None:
        agent_row("TRL RLOOTrainer / DPOTrainer", "TRL not installed", "", None)
        return checks
    logging.getLogger("transformers").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as out:
        trl_row("TRL RLOOTrainer (bf16)", lambda: trl_rloo(cfg, out), "compl/s")
        trl_row("TRL DPOTrainer (bf16)", lambda: trl_dpo(cfg, out), "pairs/s")
    return checks


# ---------------------------------------------------------------------------- 4. summary


def run_section(
    name: str, fn: Callable[..., list[Check]], *args: Any, clock: bool = False
) -> list[Check]:
    """``fn(*args)``'s checks (and its seconds with ``clock``), or one FAIL with its error
    (traceback on stderr) when it raises."""
    start = time.perf_counter()
    try:
        checks = fn(*args)
        if clock:
            print(f"({name}: {time.perf_counter() - start:.1f} s)")
        return checks
    except Exception as err:  # a GPU check reports every failure, then goes on
        traceback.print_exc()
        print(f"{name}: FAIL ({type(err).__name__}: {err})")
        return [Check(name, False, f"{type(err).__name__}: {err}")]


def summary(device: torch.device, checks: list[Check]) -> int:
    print("\n## 4. summary")
    if device.type == "cuda":
        name, bf16 = torch.cuda.get_device_name(device), torch.cuda.is_bf16_supported()
    else:
        threads = f"{os.cpu_count()} cores, torch threads: {torch.get_num_threads()}"
        name = f"cpu ({threads}, {torch.backends.cpu.get_cpu_capability()})"
        bf16 = True  # CPU autocast runs bf16 everywhere; it is fast only with AMX / AVX512-BF16
    print(describe("trl"))
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"device: {name}; bf16 supported: {bf16}")
    for c in checks:
        detail = f"  ({c.detail})" if c.detail else ""
        print(f"{'PASS' if c.passed else 'FAIL'}  {c.name}{detail}")
    failed = sum(not c.passed for c in checks)
    print(f"{len(checks) - failed}/{len(checks)} checks passed")
    return 1 if failed else 0


def parse(argv: list[str] | None) -> CheckConfig | None:
    """The config, or None when CUDA is wanted and missing (main exits 2)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", help="cuda (default when available), cuda:N, cpu (smoke)")
    parser.add_argument("--model", help=MODEL_HELP + "; default gpt2-124m on CUDA, embedded on cpu")
    parser.add_argument("--quick", action="store_true", help="fewer prompts, tokens, iterations")
    ns = parser.parse_args(argv)
    device = ns.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
        print(
            "CUDA is not available here (torch.cuda.is_available() is False, torch "
            f"{torch.__version__}): run this on a GPU machine, or pass --device cpu for the "
            "smoke run on the embedded model"
        )
        return None
    default = textgym.DEFAULT_MODEL if device == "cpu" else CheckConfig.model
    cfg = CheckConfig(device=device, model=bench_model(ns.model or default))
    return replace(cfg, **QUICK) if ns.quick else cfg


def model_sections(cfg: CheckConfig) -> list[Check]:
    """Sections 1 and 2, on one model (freed before the agents load their own)."""
    lm = load(cfg)
    checks = run_section("decoding", section_decoding, cfg, lm, clock=True)
    return checks + run_section("rollout", section_rollout, cfg, lm, clock=True)


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    if cfg is None:
        return 2
    start = time.perf_counter()
    device = torch.device(cfg.device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # One thread, as the benches: on a shared machine a 2-thread run stalls 3-6x.
        torch.set_num_threads(1)
    try:
        print(f"# gpu_check on {device}, model {cfg.model}")
        checks = run_section("load model", model_sections, cfg)
        checks += run_section("agents", section_agents, cfg, clock=True)
        code = summary(device, checks)
    finally:
        torch.set_num_threads(threads)
    print(f"# {time.perf_counter() - start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
