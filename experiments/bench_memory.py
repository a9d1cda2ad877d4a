"""Peak memory of one DPO step and one PPO update: textgym against TRL, same model, batch and dtype.

Both sides train a fresh copy of the same model (by default the 124M-parameter GPT-2-shaped bench
model with GPT-2's 50,257-way LM head, ``textgym.assets.bench_models``), with AdamW, gradient
clipping at 1.0, on the same batch, in float32 (``--compute-dtype bf16``: textgym's
``compute_dtype="bf16"`` and TRL's ``bf16=True``; TRL 1.16 defaults to bf16 even on a CPU, so its
precision is always set explicitly). Activation checkpointing is the same on both sides: on by
default (TRL's default ``gradient_checkpointing=True``; textgym's
``training.checkpoint_activations`` plus log-probs over the vocabulary 64 positions at a time,
``lm.logprob_chunk = 16``), off on both with ``--checkpointing off``. TRL keeps its other defaults.

Rows (each measured in a fresh process, after one warm-up step, so Adam's moments exist):

    DPO step       textgym DPO                       one ``learn(1)``: π_θ forward of 2B rows,
                                                     loss, backward, clip, AdamW (log π_ref cached
                                                     at construction, as textgym always does)
                   TRL DPOTrainer (default)          one trainer step; the reference model runs
                                                     in every step
                   TRL DPOTrainer (precompute ref)   ``precompute_ref_log_probs=True``: no reference
                                                     model in memory during training
    PPO update     textgym PPO update                ``PPO._update(rollout)``, 1 epoch x 1
                                                     minibatch: one gradient step on the whole batch
    PPO iteration  textgym PPO collect + update      ``collect()`` (generation with KV cache, value
                                                     head, π_ref pass, reward) then the update
    RL step        TRL RLOOTrainer                   TRL has no PPO any more: RLOO's training step
                                                     (generation, π_θold and π_ref passes, reward,
                                                     loss, update), like for like with the PPO
                                                     iteration row

How peak memory is measured on a CPU: before the measured step the process runs ``gc.collect()``
and glibc's ``malloc_trim(0)`` (freed heap goes back to the kernel), resets the kernel's peak-RSS
counter (``echo 5 > /proc/self/clear_refs`` sets VmHWM to the current RSS) and reads VmRSS as the
baseline (what the process holds between steps); after the step it reads VmHWM. Every worker first
checks that the reset works on this kernel (a 64 MiB tensor allocated, freed, counter reset: VmHWM
must drop); where it does not, a thread samples VmRSS every millisecond instead, and the table says
so. TRL's step is bracketed by a ``TrainerCallback`` (``on_step_begin`` / ``on_step_end``). On CUDA
(``--device cuda``) both sides use ``torch.cuda.max_memory_allocated`` above ``memory_allocated``.

Between steps TRL's trainer frees the gradients (``model.zero_grad()`` after the optimizer step);
textgym frees them only at the next step's ``zero_grad``, after its forward pass. So that both
baselines hold the same things (weights, Adam moments, reference model where there is one, no
gradients), textgym's gradients are set to None before its baseline is read; they come back during
the measured step, on both sides.

The ratio that the target is about is the worst textgym / TRL ratio of the step peak above baseline
(the memory a step adds on top of what is held anyway): DPO against both TRL settings, the PPO
update and the PPO iteration against TRL's RLOO step. Target: textgym <= 0.6 x TRL. Absolute peaks
(VmHWM, which include the interpreter, the libraries each side imports, weights and optimizer
state) are printed beside them. Usage::

    python experiments/bench_memory.py                 # gpt2-124m: DPO 8 pairs x 256 tokens,
                                                       # PPO 16 completions x 64 new tokens
    python experiments/bench_memory.py --quick         # DPO 4 x 128, PPO 8 x 32
    python experiments/bench_memory.py --check         # exit 1 when the ratio misses its target
    python experiments/bench_memory.py --logprob-chunk 32   # plus a textgym DPO row that computes
                                                            # log-probs 32 positions at a time
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import textgym
from textgym.assets.bench_models import MODEL_HELP, bench_model
from textgym.lm import LanguageModel
from textgym.preference import PreferencePair
from textgym.provenance import describe
from textgym.training import checkpoint_activations

TARGET = 0.6
MIB = 2**20
LR = 1e-5
CHUNK = 16
"""textgym's log-prob chunk (positions) when checkpointing is on."""


@dataclass(frozen=True)
class BenchConfig:
    model: str = "gpt2-124m"
    device: str = "cpu"
    compute_dtype: str | None = None
    """None: float32 on both sides; "bf16": textgym's compute_dtype and TRL's bf16=True."""
    dpo_pairs: int = 8
    """B: pairs per DPO step (2B rows through π_θ)."""
    dpo_length: int = 256
    """Tokens per prompt + completion row; every pair is long enough to be cut to exactly this."""
    ppo_batch: int = 16
    """Completions per PPO update / RLOO step."""
    ppo_new_tokens: int = 64
    """New tokens per completion (random weights: EOS is rare, so nearly all run to the limit)."""
    num_generations: int = 4
    """K: TRL RLOO's completions per prompt (ppo_batch / K prompts per step)."""
    beta: float = 0.05
    """KL coefficient of PPO and RLOO (> 0: both keep a reference model)."""
    checkpointing: bool = True
    """Activation checkpointing on both sides: TRL's own default (its DPOConfig and RLOOConfig set
    gradient_checkpointing=True); textgym's checkpoint_activations with logprob_chunk = 16."""
    logprob_chunk: int | None = None
    """When set, an extra textgym DPO row with ``lm.logprob_chunk`` = this."""
    threads: int = 2
    seed: int = 0


# ---------------------------------------------------------------------------- peak memory


@dataclass(frozen=True)
class Peak:
    """Peak memory of one measured region, in MiB."""

    baseline: float
    """Held when the region started (VmRSS, or CUDA memory_allocated)."""
    above: float
    """Peak inside the region minus the baseline."""
    absolute: float
    """Peak inside the region (VmHWM, or CUDA max_memory_allocated)."""
    method: str
    """"vmhwm" (kernel counter, reset), "sampled" (VmRSS every ms) or "cuda"."""


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # the kernel writes kB
    raise RuntimeError(f"no {key} in /proc/self/status")


def rss_mib() -> float:
    """Resident set size of this process now."""
    return _status_mib("VmRSS")


def hwm_mib() -> float:
    """Peak resident set size of this process since it started or since :func:`reset_hwm`."""
    return _status_mib("VmHWM")


def reset_hwm() -> None:
    """Set VmHWM to the current RSS (Linux >= 4.0: "5" clears the peak-RSS counter)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def release_free_memory() -> None:
    """Collect garbage and hand glibc's free heap back to the kernel: RSS is then what is live."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS keeps some freed heap
        ctypes.CDLL(None).malloc_trim(0)


def hwm_reset_works(probe_mib: int = 64) -> bool:
    """Whether resetting VmHWM works here: a freed allocation must drop out of it on a reset."""
    try:
        release_free_memory()
        reset_hwm()
        probe = torch.ones(probe_mib * MIB // 4)  # ones, not empty: the pages must be touched
        high = hwm_mib()
        del probe
        release_free_memory()
        reset_hwm()
        return hwm_mib() < high - 0.75 * probe_mib
    except (OSError, RuntimeError):
        return False


class _Sampler(threading.Thread):
    """Reads VmRSS every ``period`` seconds and keeps the largest value (the fallback)."""

    def __init__(self, period: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.period, self.peak, self.done = period, rss_mib(), threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mib())
            time.sleep(self.period)

    def finish(self) -> float:
        self.done.set()
        self.join()
        return max(self.peak, rss_mib())


class PeakMeter:
    """Peak memory of the code between :meth:`start` and :meth:`stop`.

    Args:
        device: "cpu" (process RSS) or a CUDA device (the CUDA caching allocator's counters).
        method: force "vmhwm" or "sampled" on a CPU; None checks the VmHWM reset and picks it when
            it works, else sampling.
    """

    def __init__(self, device: str = "cpu", method: str | None = None) -> None:
        if torch.device(device).type == "cuda":
            self.method = "cuda"
        elif method is not None:
            if method not in ("vmhwm", "sampled"):
                raise ValueError(f"method must be 'vmhwm', 'sampled' or None, got {method!r}")
            self.method = method
        else:
            self.method = "vmhwm" if hwm_reset_works() else "sampled"
        self.baseline = 0.0
        self._sampler: _Sampler | None = None

    def start(self) -> None:
        release_free_memory()
        if self.method == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated() / MIB
        elif self.method == "vmhwm":
            reset_hwm()
            self.baseline = rss_mib()
        else:
            self.baseline = rss_mib()
            self._sampler = _Sampler()
            self._sampler.start()

    def stop(self) -> Peak:
        if self.method == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / MIB
        elif self.method == "vmhwm":
            peak = hwm_mib()
        else:
            assert self._sampler is not None, "stop() without start()"
            peak = self._sampler.finish()
        return Peak(self.baseline, peak - self.baseline, peak, self.method)


# ---------------------------------------------------------------------------- workloads


def make_pairs(n: int, pieces: int = 8) -> list[PreferencePair]:
    """Review prompts with chosen and rejected completions of ``pieces`` reference reviews each
    (~40 tokens apiece), so that every row is cut to ``max_length`` and both sides see (2B, L)."""
    path = Path(textgym.ASSETS) / "data" / "reviews.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    refs = [r["references"][0] for r in rows]  # each starts with a space

    def long(i: int) -> str:
        return "".join(refs[(i * pieces + k * 37) % len(refs)] for k in range(pieces))

    return [PreferencePair(rows[i]["prompt"], long(2 * i), long(2 * i + 1)) for i in range(n)]


def _textgym_lm(cfg: BenchConfig) -> LanguageModel:
    lm = LanguageModel.from_pretrained(
        cfg.model, device=cfg.device, compute_dtype=cfg.compute_dtype
    )
    if cfg.checkpointing:
        checkpoint_activations(lm)
        lm.logprob_chunk = CHUNK
    return lm


def textgym_dpo(cfg: BenchConfig, meter: PeakMeter, chunk: int | None = None) -> dict[str, Any]:
    """One ``DPO.learn(1)`` after a warm-up update."""
    from textgym.agents.dpo import DPO, DPOConfig

    lm = _textgym_lm(cfg)
    if chunk is not None:
        lm.logprob_chunk = chunk
    dpo_cfg = DPOConfig(batch_size=cfg.dpo_pairs, max_length=cfg.dpo_length, lr=LR, seed=cfg.seed)
    with warnings.catch_warnings():  # "completions were cut to fit": on purpose, see make_pairs
        warnings.simplefilter("ignore", UserWarning)
        agent = DPO(
            lm,
            data=make_pairs(2 * cfg.dpo_pairs),
            config=dpo_cfg,
            device=cfg.device,
            progress_bar=False,
        )
    agent.learn(1)
    agent.optimizer.zero_grad(set_to_none=True)  # the state TRL's trainer leaves between steps
    meter.start()
    agent.learn(1)
    key = "dpo/textgym" if chunk is None else "dpo/textgym-chunk"
    peak = meter.stop()
    shortest = int(agent.data.attention_mask.sum(-1).min())
    return {key: peak, "info": {"textgym dpo shortest row": shortest}}


def textgym_ppo(cfg: BenchConfig, meter: PeakMeter) -> dict[str, Any]:
    """``collect()`` then ``_update(rollout)`` after a warm-up iteration (1 epoch x 1 minibatch)."""
    import gymnasium as gym
    import textgym.rewards
    from textgym.agents import PPO, PPOConfig

    lm = _textgym_lm(cfg)
    env = gym.make_vec(
        "TextGen-v0",
        num_envs=cfg.ppo_batch,
        model=lm,
        task="reviews",
        reward=textgym.rewards.make("sentiment"),
        max_new_tokens=cfg.ppo_new_tokens,
    )
    ppo_cfg = PPOConfig(n_epochs=1, n_minibatches=1, beta=cfg.beta, lr=LR, seed=cfg.seed)
    agent = PPO(lm, env, config=ppo_cfg, progress_bar=False)
    agent.learn(1)
    agent.optimizer.zero_grad(set_to_none=True)  # the state TRL's trainer leaves between steps
    meter.start()
    rollout = agent.collect()
    collected = meter.stop()
    meter.start()  # the baseline now holds the rollout
    agent._update(rollout)
    update = meter.stop()
    top = max(collected.absolute, update.absolute)
    iteration = Peak(collected.baseline, top - collected.baseline, top, collected.method)
    lengths = rollout.completion_mask.sum(-1)
    info = {
        "ppo rollout": [len(rollout), rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]],
        "ppo mean new tokens": float(lengths.mean()),
    }
    return {"ppo-update/textgym": update, "ppo-iteration/textgym": iteration, "info": info}


def _trl_step(
    cfg: BenchConfig, meter: PeakMeter, build: Callable[[list[Any]], Any]
) -> tuple[Peak, Any]:
    """Run ``build(callbacks).train()`` for 2 steps; the second step's peak, and the trainer."""
    from transformers import TrainerCallback

    class Bracket(TrainerCallback):
        peak: Peak | None = None

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 1:  # after the warm-up step
                meter.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 2:
                self.peak = meter.stop()

    bracket = Bracket()
    trainer = build([bracket])
    with contextlib.redirect_stdout(io.StringIO()):  # train() prints its metrics dict
        trainer.train()
    assert bracket.peak is not None, "the trainer ran fewer than 2 steps"
    return bracket.peak, trainer


def _trl_common(cfg: BenchConfig, out: str) -> dict[str, Any]:
    return {
        "output_dir": out,
        "max_steps": 2,
        "learning_rate": LR,
        "use_cpu": torch.device(cfg.device).type == "cpu",
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 10_000,
        "disable_tqdm": True,
        "seed": cfg.seed,
        "dataloader_num_workers": 0,
        # TRL 1.16 defaults to bf16=True, also on a CPU: say the precision on both sides.
        "bf16": cfg.compute_dtype == "bf16",
        "gradient_checkpointing": cfg.checkpointing,
    }


def trl_dpo(cfg: BenchConfig, meter: PeakMeter, precompute: bool) -> dict[str, Any]:
    """One ``trl.DPOTrainer`` step after a warm-up step."""
    import datasets
    import trl

    lm = LanguageModel.from_pretrained(cfg.model, device=cfg.device)
    pairs = make_pairs(2 * cfg.dpo_pairs)
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    with tempfile.TemporaryDirectory() as out:
        args = trl.DPOConfig(
            per_device_train_batch_size=cfg.dpo_pairs,
            max_length=cfg.dpo_length,
            precompute_ref_log_probs=precompute,
            **_trl_common(cfg, out),
        )

        def build(callbacks: list[Any]) -> Any:
            with contextlib.redirect_stdout(io.StringIO()):
                return trl.DPOTrainer(
                    model=lm.model,
                    args=args,
                    train_dataset=datasets.Dataset.from_list(rows),
                    processing_class=lm.tokenizer,
                    callbacks=callbacks,
                )

        peak, trainer = _trl_step(cfg, meter, build)
    ds = trainer.train_dataset  # tokenized: rows longer than max_length are cut by the collator
    shortest = min(
        len(p) + min(len(c), len(r))
        for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"], strict=True)
    )
    return {
        "dpo/trl-pre" if precompute else "dpo/trl": peak,
        "info": {"trl dpo shortest row": shortest},
    }


def trl_rloo(cfg: BenchConfig, meter: PeakMeter) -> dict[str, Any]:
    """One ``trl.RLOOTrainer`` step (generation included) after a warm-up step."""
    import datasets
    import textgym.rewards
    import trl

    import textgym.tasks

    lm = LanguageModel.from_pretrained(cfg.model, device=cfg.device)
    sentiment = textgym.rewards.make("sentiment")

    def reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return [float(x) for x in sentiment(prompts, completions)]

    task = textgym.tasks.load("reviews", split="train")
    with tempfile.TemporaryDirectory() as out:
        args = trl.RLOOConfig(
            per_device_train_batch_size=cfg.ppo_batch,
            num_generations=cfg.num_generations,
            max_completion_length=cfg.ppo_new_tokens,
            beta=cfg.beta,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            **_trl_common(cfg, out),
        )

        def build(callbacks: list[Any]) -> Any:
            return trl.RLOOTrainer(
                model=lm.model,
                reward_funcs=reward,
                args=args,
                train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in task.prompts]),
                processing_class=lm.tokenizer,
                callbacks=callbacks,
            )

        peak, _ = _trl_step(cfg, meter, build)
    return {"rl-step/trl-rloo": peak}


WORKERS: dict[str, Callable[[BenchConfig, PeakMeter], dict[str, Any]]] = {
    "textgym-dpo": textgym_dpo,
    "textgym-dpo-chunk": lambda c, m: textgym_dpo(c, m, chunk=c.logprob_chunk),
    "trl-dpo": lambda c, m: trl_dpo(c, m, precompute=False),
    "trl-dpo-pre": lambda c, m: trl_dpo(c, m, precompute=True),
    "textgym-ppo": textgym_ppo,
    "trl-rloo": trl_rloo,
}

WORKER_ROWS = {  # the table rows each worker measures
    "textgym-dpo": ["dpo/textgym"],
    "textgym-dpo-chunk": ["dpo/textgym-chunk"],
    "trl-dpo": ["dpo/trl"],
    "trl-dpo-pre": ["dpo/trl-pre"],
    "textgym-ppo": ["ppo-update/textgym", "ppo-iteration/textgym"],
    "trl-rloo": ["rl-step/trl-rloo"],
}


def run_worker(name: str, cfg: BenchConfig, out: Path) -> None:
    """Body of a worker process: one workload, its peaks written as JSON to ``out``."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    meter = PeakMeter(cfg.device)
    result = WORKERS[name](cfg, meter)
    info = result.pop("info", {})
    peaks = {k: dataclasses.asdict(v) for k, v in result.items()}
    out.write_text(json.dumps({"peaks": peaks, "info": info}))


def spawn(name: str, cfg: BenchConfig) -> dict[str, Any] | str:
    """Run worker ``name`` in a fresh interpreter: its peaks, or a line saying why none came."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", name, "--worker-out", str(out)]
        cmd += ["--worker-config", json.dumps(dataclasses.asdict(cfg))]
        env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env["PYTHONWARNINGS"] = "ignore::FutureWarning"  # transformers' renames, once per worker
        start = time.perf_counter()
        # The worker's stdout (TRL's prints) goes to our stderr: stdout is the report.
        proc = subprocess.run(cmd, stdout=sys.stderr, env=env, check=False)
        print(f"# {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        if proc.returncode != 0 or not out.exists():
            return f"failed (exit {proc.returncode})"
        result: dict[str, Any] = json.loads(out.read_text())
        return result


# ---------------------------------------------------------------------------- report

ROWS = [  # key, workload, system
    ("dpo/textgym", "DPO step", "textgym DPO (cached log π_ref)"),
    ("dpo/textgym-chunk", "DPO step", "textgym DPO, logprob_chunk={chunk}"),
    ("dpo/trl", "DPO step", "TRL DPOTrainer (default)"),
    ("dpo/trl-pre", "DPO step", "TRL DPOTrainer (precompute ref)"),
    ("ppo-update/textgym", "PPO update", "textgym PPO update (1x1)"),
    ("ppo-iteration/textgym", "PPO iteration", "textgym PPO collect + update"),
    ("rl-step/trl-rloo", "RL step", "TRL RLOOTrainer step"),
]

RATIOS = [  # label, textgym key, TRL key
    ("DPO step vs TRL precompute ref (like for like)", "dpo/textgym", "dpo/trl-pre"),
    ("DPO step vs TRL default", "dpo/textgym", "dpo/trl"),
    ("PPO update vs TRL RLOO step", "ppo-update/textgym", "rl-step/trl-rloo"),
    ("PPO iteration vs TRL RLOO step (like for like)", "ppo-iteration/textgym", "rl-step/trl-rloo"),
]

METHODS = {
    "vmhwm": "VmHWM after a reset through /proc/self/clear_refs (checked to work here)",
    "sampled": "VmRSS sampled every 1 ms by a thread (FALLBACK: the VmHWM reset does not "
    "work on this kernel; peaks shorter than a millisecond can be missed)",
    "cuda": "torch.cuda.max_memory_allocated above memory_allocated",
}


def print_report(cfg: BenchConfig, peaks: dict[str, Peak | str], info: dict[str, Any]) -> float:
    """The table, the ratios and the ``ratio:`` line; returns the worst ratio (nan without TRL)."""
    from transformers import AutoConfig

    model_cfg = AutoConfig.from_pretrained(cfg.model)
    methods = sorted({p.method for p in peaks.values() if isinstance(p, Peak)})
    print(f"# bench_memory: {describe('trl', 'transformers')}")
    print(
        f"# model {Path(cfg.model).name} ({model_cfg.n_layer} layers, d {model_cfg.n_embd}, "
        f"V {model_cfg.vocab_size}); {cfg.compute_dtype or 'fp32'} on both sides; "
        f"{cfg.device} x {cfg.threads} threads; AdamW lr {LR}; seed {cfg.seed}"
    )
    print(
        f"# DPO: {cfg.dpo_pairs} pairs ({2 * cfg.dpo_pairs} rows) x {cfg.dpo_length} tokens "
        f"(shortest row: textgym {info.get('textgym dpo shortest row', '?')} after its cut, "
        f"TRL {info.get('trl dpo shortest row', '?')} before its collator's cut); "
        f"PPO: {cfg.ppo_batch} completions x "
        f"{cfg.ppo_new_tokens} new tokens (textgym rollout B, P, T = "
        f"{info.get('ppo rollout', '?')}, mean {info.get('ppo mean new tokens', float('nan')):.1f} "
        f"new tokens), beta {cfg.beta}, TRL RLOO K = {cfg.num_generations}"
    )
    print(
        f"# activation checkpointing {'on' if cfg.checkpointing else 'off'} on both sides "
        "(TRL's default: on); each row in a fresh process after one "
        "warm-up step; textgym's gradients set to None before its baseline, as TRL's trainer "
        "leaves them"
    )
    for method in methods:
        print(f"# peak memory: {METHODS[method]}")
    print()
    print(
        f"| {'workload':13} | {'system':36} | {'held MiB':>9} | {'step peak above held MiB':>24} "
        f"| {'absolute peak MiB':>17} |"
    )
    print(f"|{'-' * 15}|{'-' * 38}|{'-' * 11}|{'-' * 26}|{'-' * 19}|")
    for key, workload, system in ROWS:
        if key not in peaks:
            continue
        p = peaks[key]
        name = system.format(chunk=cfg.logprob_chunk)
        if isinstance(p, Peak):
            print(
                f"| {workload:13} | {name:36} | {p.baseline:9.0f} | {p.above:24.0f} "
                f"| {p.absolute:17.0f} |"
            )
        else:
            print(f"| {workload:13} | {name:36} | {'':9} | {p:>24} | {'':17} |")
    print()
    print("textgym / TRL: step peak above held (absolute peak)")
    worst = float("nan")
    for label, ours, theirs in RATIOS:
        a, b = peaks.get(ours), peaks.get(theirs)
        if not (isinstance(a, Peak) and isinstance(b, Peak)):
            print(f"  {label:50} n/a")
            continue
        r = a.above / b.above
        print(f"  {label:50} {r:.2f} ({a.absolute / b.absolute:.2f})")
        worst = r if worst != worst else max(worst, r)  # nan != nan: the first ratio
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="DPO 4 pairs x 128, PPO 8 x 32")
    parser.add_argument("--check", action="store_true", help=f"exit 1 when ratio > {TARGET}")
    parser.add_argument("--model", default=BenchConfig.model, help=MODEL_HELP)
    parser.add_argument("--device", default="cpu", help="cpu (default) or a CUDA device")
    parser.add_argument(
        "--compute-dtype", choices=["bf16"], help="mixed precision on both sides (default fp32)"
    )
    parser.add_argument("--threads", type=int, default=BenchConfig.threads, help="torch threads")
    parser.add_argument("--workloads", nargs="+", choices=["dpo", "ppo"], default=["dpo", "ppo"])
    parser.add_argument(
        "--checkpointing",
        choices=["on", "off"],
        default="on",
        help="activation checkpointing on both sides (default on, TRL's own default)",
    )
    parser.add_argument(
        "--logprob-chunk",
        type=int,
        default=None,
        help="also measure textgym DPO with lm.logprob_chunk = this (the headline keeps None)",
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        run_worker(ns.worker, BenchConfig(**json.loads(ns.worker_config)), ns.worker_out)
        return 0

    cfg = BenchConfig(
        model=bench_model(ns.model),
        device=ns.device,
        compute_dtype=ns.compute_dtype,
        threads=ns.threads,
        checkpointing=ns.checkpointing == "on",
        logprob_chunk=ns.logprob_chunk,
    )
    if ns.quick:
        cfg = dataclasses.replace(cfg, dpo_pairs=4, dpo_length=128, ppo_batch=8, ppo_new_tokens=32)
    has_trl = all(importlib.util.find_spec(m) is not None for m in ("trl", "datasets"))
    names = []
    if "dpo" in ns.workloads:
        names += ["textgym-dpo"] + (["textgym-dpo-chunk"] if cfg.logprob_chunk else [])
        names += ["trl-dpo", "trl-dpo-pre"] if has_trl else []
    if "ppo" in ns.workloads:
        names += ["textgym-ppo"] + (["trl-rloo"] if has_trl else [])
    load_before = os.getloadavg()[0]
    peaks: dict[str, Peak | str] = {}
    info: dict[str, Any] = {}
    for name in names:
        result = spawn(name, cfg)
        if isinstance(result, str):
            peaks |= dict.fromkeys(WORKER_ROWS[name], result)
            continue
        peaks |= {k: Peak(**v) for k, v in result["peaks"].items()}
        info |= result["info"]
    if not has_trl:
        for key in ("dpo/trl", "dpo/trl-pre", "rl-step/trl-rloo"):
            peaks[key] = "TRL not installed"
    worst = print_report(cfg, peaks, info)
    load_after = os.getloadavg()[0]
    print(f"\n# load average {load_before:.2f} before, {load_after:.2f} after")
    if not has_trl:
        print("TRL not installed: pip install trl datasets to compare")
        print(f"ratio: nan (target <= {TARGET})")
        return 1 if ns.check else 0
    print(f"ratio: {worst:.2f} (target <= {TARGET})")
    return 1 if ns.check and not worst <= TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
