"""Pairs/s of one DPO training step: textgym's DPO against TRL's DPOTrainer, same model and data.

Both train the same model (fresh copies) on the same preference pairs, batch 8 pairs (16 rows),
rows cut to 64 tokens, fp32 (``--compute-dtype bf16``: bf16 mixed precision on both sides; TRL
1.16 defaults to bf16 even on a CPU, so its precision is always set explicitly), AdamW, gradient
clipping at 1.0, dropout off, on this machine's CPU.
Each implementation is built once (data preparation and reference caching are not timed); each
repeat then times ``--steps`` updates of every implementation in turn, order rotated. The table
gives the median (min-max) pairs/s over repeats and the median over repeats of the per-repeat
ratio: runs made seconds apart see the same foreign load, which a shared machine has plenty of.

Rows:
    textgym DPO (packed)   reference log-probs cached once per dataset, rows packed padding-free
                           (the defaults; ``textgym.packing``)
    textgym DPO (padded)   the same with ``DPOConfig(packing=False)``: one padded batch
    TRL DPOTrainer         TRL's default: the reference model runs on every step
    TRL DPOTrainer (pre)   TRL with precompute_ref_log_probs=True, the like-for-like setting

The pairs' rows have different lengths: the padding fraction of the padded batches and the filler
fraction of the packed rows are printed under the table. The ratio that the target is about is
textgym (packed, the default) / TRL default (TRL 1.16 measured 38 pairs/s here on a tiny GPT-2);
the like-for-like ratio and packed / padded are printed too. Usage::

    python experiments/bench_dpo.py            # full run
    python experiments/bench_dpo.py --quick    # about a minute
    python experiments/bench_dpo.py --check    # exit 1 when the ratio misses its target
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from textgym.agents.dpo import DPO, DPOConfig

import textgym
from textgym.assets.bench_models import MODEL_HELP, bench_model
from textgym.hf import hidden_size
from textgym.lm import LanguageModel
from textgym.packing import pack, pack_rows, padding_fraction
from textgym.preference import PreferenceBatch, PreferencePair, review_pairs
from textgym.provenance import describe

TARGET = 1.5


@dataclass(frozen=True)
class BenchConfig:
    model: str = textgym.DEFAULT_MODEL
    batch_size: int = 8
    max_length: int = 64
    n_pairs: int = 256
    steps: int = 15
    warmup: int = 3
    repeats: int = 9
    threads: int = 2
    seed: int = 0
    compute_dtype: str | None = None
    """None: float32 on both sides; "bf16": textgym's compute_dtype and TRL's bf16=True."""


class TextgymRunner:
    """textgym's DPO; reference log-probs are cached at construction, before any clock starts."""

    def __init__(self, cfg: BenchConfig, pairs: list[PreferencePair], packing: bool) -> None:
        self.name = f"textgym DPO ({'packed' if packing else 'padded'})"
        lm = LanguageModel.from_pretrained(cfg.model, device="cpu", compute_dtype=cfg.compute_dtype)
        dpo_cfg = DPOConfig(
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            lr=1e-5,
            seed=cfg.seed,
            packing=packing,
        )
        self.cfg = cfg
        self.agent = DPO(lm, data=pairs, config=dpo_cfg, device="cpu", progress_bar=False)
        self.agent.learn(cfg.warmup)

    def __call__(self, steps: int) -> float:
        """Pairs/s over ``steps`` updates."""
        start = time.perf_counter()
        self.agent.learn(steps)
        return steps * self.cfg.batch_size / (time.perf_counter() - start)


class TRLRunner:
    """TRL's DPOTrainer, built once; each call runs ``train()`` for warm-up + ``steps`` steps and
    times the steps after the warm-up (step-end to step-end), so set-up is never timed."""

    def __init__(self, cfg: BenchConfig, pairs: list[PreferencePair], precompute: bool) -> None:
        import datasets
        import trl
        from transformers import TrainerCallback

        class Clock(TrainerCallback):  # type: ignore[misc]  # transformers is untyped here
            def __init__(self) -> None:
                self.stamps: list[float] = []

            def on_step_end(self, *args: Any, **kwargs: Any) -> None:
                self.stamps.append(time.perf_counter())

        self.name = "TRL DPOTrainer (precompute ref)" if precompute else "TRL DPOTrainer (default)"
        self.cfg = cfg
        lm = LanguageModel.from_pretrained(cfg.model, device="cpu")
        # A space between prompt and completion, as textgym tokenizes them apart.
        rows = [
            {"prompt": p.prompt, "chosen": " " + p.chosen, "rejected": " " + p.rejected}
            for p in pairs
        ]
        self.out = tempfile.TemporaryDirectory()
        args = trl.DPOConfig(
            output_dir=self.out.name,
            per_device_train_batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            max_steps=cfg.warmup,
            learning_rate=1e-5,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_steps=10_000,
            disable_tqdm=True,
            seed=cfg.seed,
            precompute_ref_log_probs=precompute,
            dataloader_num_workers=0,
            # TRL 1.16 defaults to bf16=True, also on a CPU: say the precision on both sides.
            bf16=cfg.compute_dtype == "bf16",
        )
        self.clock = Clock()
        with contextlib.redirect_stdout(io.StringIO()):
            self.trainer = trl.DPOTrainer(
                model=lm.model,
                args=args,
                train_dataset=datasets.Dataset.from_list(rows),
                processing_class=lm.tokenizer,
                callbacks=[self.clock],
            )

    def __call__(self, steps: int) -> float:
        """Pairs/s over ``steps`` steps (after ``cfg.warmup`` untimed ones in the same train())."""
        self.trainer.args.max_steps = self.cfg.warmup + steps
        self.clock.stamps.clear()
        with contextlib.redirect_stdout(io.StringIO()):  # train() prints its metrics dict
            self.trainer.train()
        timed = self.clock.stamps[self.cfg.warmup - 1 :]  # from the end of the last warm-up step
        return (len(timed) - 1) * self.cfg.batch_size / (timed[-1] - timed[0])


def padding_stats(data: PreferenceBatch, batch_size: int, hidden: int) -> tuple[float, float]:
    """Mean over one epoch's batches (seed 0) of the padded batches' padding fraction and of the
    filler fraction of the same rows packed as ``textgym.packing`` packs them."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    pad, filler = [], []
    for i in range(0, len(data), batch_size):
        batch = data.select(order[i : i + batch_size])
        pad.append(padding_fraction(batch.attention_mask))
        rows = pack_rows(batch.attention_mask.sum(1).tolist(), hidden)
        packed = pack(batch.input_ids, batch.attention_mask, rows)
        filler.append(1.0 - len(packed.src) / packed.input_ids.numel())
    return statistics.mean(pad), statistics.mean(filler)


def fmt(xs: list[float]) -> str:
    if not xs:
        return "TRL not installed"
    return f"{statistics.median(xs):8.1f}  ({min(xs):.1f}-{max(xs):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (~1 min)")
    parser.add_argument("--check", action="store_true", help=f"exit 1 when ratio < {TARGET}")
    parser.add_argument(
        "--model",
        default=BenchConfig.model,
        help=MODEL_HELP,
    )
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=BenchConfig.threads, help="torch threads")
    parser.add_argument(
        "--compute-dtype", choices=["bf16"], help="mixed precision on both sides (default fp32)"
    )
    ns = parser.parse_args()
    cfg = BenchConfig(
        model=bench_model(ns.model), threads=ns.threads, compute_dtype=ns.compute_dtype
    )
    if ns.quick:
        cfg = dataclasses.replace(cfg, steps=10, warmup=2, repeats=3)
    cfg = dataclasses.replace(cfg, steps=ns.steps or cfg.steps, repeats=ns.repeats or cfg.repeats)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    load = os.getloadavg()[0]
    pairs = review_pairs(cfg.n_pairs)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")
    packed, padded = (
        TextgymRunner(cfg, pairs, packing=True),
        TextgymRunner(cfg, pairs, packing=False),
    )
    runners: list[Any] = [packed, padded]
    with contextlib.suppress(ImportError):
        runners += [TRLRunner(cfg, pairs, precompute=False), TRLRunner(cfg, pairs, precompute=True)]
    speeds: dict[str, list[float]] = {r.name: [] for r in runners}
    for rep in range(cfg.repeats):
        # Short interleaved windows, order rotated: each repeat's ratio compares runs made seconds
        # apart, so load that drifts over minutes (other processes) cancels in the ratio.
        for runner in runners[rep % len(runners) :] + runners[: rep % len(runners)]:
            speeds[runner.name].append(runner(cfg.steps))
        print(
            f"repeat {rep + 1}/{cfg.repeats}: "
            + ", ".join(f"{k} {v[-1]:.1f}" for k, v in speeds.items()),
            file=sys.stderr,
        )
    load_after = os.getloadavg()[0]

    print(
        "\nDPO training step, pairs/s "
        f"(median (min-max) of {cfg.repeats} repeats x {cfg.steps} steps)"
    )
    print(
        f"model {cfg.model}; batch {cfg.batch_size} pairs, length <= {cfg.max_length}, "
        f"{cfg.compute_dtype or 'fp32'} on both sides, "
        f"cpu x {cfg.threads} threads; seed {cfg.seed}"
    )
    busy = max(load, load_after) > cfg.threads + 0.5  # this run itself keeps `threads` busy
    print(
        f"{describe('trl')}; load average before/after {load:.2f}/{load_after:.2f}"
        + (f"  (WARNING: foreign load on {os.cpu_count()} cores)" if busy else "")
    )
    ours = speeds[packed.name]

    def ratio_to(name: str) -> float:
        """Median over repeats of textgym / ``name``, each from windows seconds apart."""
        return statistics.median(a / b for a, b in zip(ours, speeds[name], strict=True))

    print()
    print(f"{'implementation':<34}| {'pairs/s':<24}| textgym / this")
    print(f"{'-' * 34}+{'-' * 25}+{'-' * 15}")
    for name, xs in speeds.items():
        print(f"{name:<34}| {fmt(xs):<24}| {ratio_to(name):.2f}")
    agent = packed.agent
    pad, filler = padding_stats(agent.data, cfg.batch_size, hidden_size(agent.policy.model.config))
    print(
        f"\npacked / padded: {ratio_to(padded.name):.2f}; padding in the padded batches "
        f"{pad:.1%} of the tokens, filler in the packed rows {filler:.1%}"
    )
    default = "TRL DPOTrainer (default)"
    if default not in speeds:
        print("TRL not installed: pip install trl to compare")
        print(f"ratio: nan (target >= {TARGET})")
        return 1 if ns.check else 0
    ratio = ratio_to(default)
    print(
        f"\nlike-for-like (TRL with precomputed reference log-probs): "
        f"{ratio_to('TRL DPOTrainer (precompute ref)'):.2f}"
    )
    print(f"ratio: {ratio:.2f} (target >= {TARGET})")
    return 1 if ns.check and ratio < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
