"""Which form of human feedback buys the most gold reward per judgment? (issue 18 §4)

Comparisons, rankings, ratings, thumbs up/down and corrections, all given by one simulated person
about one hidden gold reward, at the same number of judgments; a reward model and a policy learnt
from each; gold reward and KL(π‖π_ref) of what they give.

Protocol (fixed before any gold reward of this design was looked at)
---------------------------------------------------------------------
- π_ref: the embedded model (``textgym.DEFAULT_MODEL``) on the ``reviews`` task, completions of at
  most 20 new tokens, temperature 1. Every reward model starts from its trunk, every policy from it.
- Gold u(x, y): VADER sentiment of the completion, ``textgym.rewards.make("sentiment")``, in
  [0, 1] (0.5 neutral), the gold of the other RLHF studies here.
- The person: ``textgym.feedback.Annotator(gold, noise=0.1)``. Every judgment reads u through
  logistic noise of scale τ = 0.1 (π_ref's samples have u spread with std ~0.3, so a difference
  of 0.3 is judged right ~95% of the time, one of 0.05 ~62%): a comparison is Bradley-Terry on
  u/τ, a ranking Plackett-Luce on u/τ (for K = 2 the same draw as a comparison), a rating 1-5 the
  ordinal logit model with cuts 0.2, 0.4, 0.6, 0.8, a thumb up when u + noise > 0.5. A correction
  is a word edit: every word of the review grammar's negative lists (``neg_adj``, ``neg_acting``
  of ``textgym/assets/grammar/reviews.json``) becomes a word of its positive list; a completion
  without one is left as it is (no record). The editor never sees u (so it can make things worse:
  "not a bad film" -> "not a fantastic film").
- Judgments (``textgym.feedback.judgments``): one comparison, one rating, one thumb, one
  completion shown for correction (edited or not) = 1 judgment; a ranking of K = K - 1, the
  fewest comparisons that can produce it (each adjacent pair of the chain compared once), so a
  ranking is never cheaper than the comparisons it must at least hold. Budget J judgments a form:
      comparisons  J prompts, samples (y_0, y_1) compared: J pairs
      rankings     J/3 prompts, the 4 samples ranked: J/3 rankings of K = 4
      ratings      J/4 prompts, each of the 4 samples rated: J ratings (4 a prompt, so that
                   ``ratings_to_pairs`` has pairs to make)
      thumbs       J prompts, y_0 thumbed: J thumbs
      corrections  J prompts, y_0 shown to the editor: the edited ones become corrections
  All forms read one pool per seed: 4 samples of π_ref for each train prompt drawn by the seed
  (prompts with an empty sample dropped first). The forms share samples (y_0 of the thumbs is y_0
  of the comparisons and of the corrections), and a smaller budget is a prefix of a larger one.
  The noise of each form is drawn by (seed, form).
- Budgets: J = 600 for both routes; J = 150 for route A as well (how the ranking changes with J).
- Route A, reward models (``textgym.agents.RewardModelTrainer``, a fresh head on π_ref's trunk,
  AdamW lr 1e-3, batch 16, 3 epochs, the seed's head init): comparisons -> "bradley_terry",
  rankings -> "plackett_luce", ratings -> "regression" and "ordinal", thumbs -> "logistic",
  corrections -> "bradley_terry" on corrected ≻ original. Measured by
  (1) ``rm_accuracy``: the held-out fraction of gold-ordered pairs (4 π_ref samples on each of
      100 validation prompts 200-299, every pair with a gold margin > 0.1) it orders right;
  (2) ``bon16_gold``: the gold of best-of-16 under the reward model on validation prompts 0-199
      (16 π_ref samples each, the same samples for every reward model of a seed), at
      KL(π_bon‖π_ref) = log 16 - 15/16 = 1.84 nats for every form alike (Stiennon et al. 2020);
      ``bon4_gold`` the same for n = 4 (KL 0.64), exactly from the same 16 samples
      (``textgym.stats.best_of_n_weights``).
- Route B, policies learnt from each form directly (J = 600), each from π_ref, the same number of
  updates U and evaluations (below): comparisons -> DPO; rankings -> listwise DPO; ratings -> DPO
  on ``ratings_to_pairs`` (pairs of a prompt's differently rated samples); thumbs -> KTO;
  corrections -> DPO on corrected ≻ original and BC on the edits. β = 0.1, batch 8 examples (a
  pair, a ranking, a thumb, a demonstration), AdamW lr 1e-4 (the default of DPO, listwise DPO and
  KTO; BC's default 1e-3 put it at KL 13 after its first 10 updates in the pilot, past the KL
  where the methods are compared, so BC runs at 1e-4 too), the seed's data order; U = 100
  updates, evaluated after 5, 10, 15, 20, 25, 30, 40, 50, 75 and 100.
  Measured at each checkpoint: gold (mean over one sampled completion for each of validation
  prompts 0-199, sampler seed 4321 + seed, the same stream for every checkpoint and method of a
  seed) and KL (mean sequence-level k1 estimate against π_ref); π_ref once per seed.
  Reported: ``gold`` and ``kl`` at U updates, ``gold_change`` (paired with π_ref by seed), and
  ``gold_at_kl`` at KL = 1.84 (the best-of-16 KL), linear in log KL between the two checkpoints
  around it (between π_ref and the first checkpoint: linear in KL), "-" when a run never reaches
  it.
- U, the checkpoints and BC's lr come from a one-seed pilot (seed 0, J = 600) that printed the KL
  and the seconds of each checkpoint only, no gold reward: the DPO family and KTO pass KL 1.84
  between 20 and 35 updates and reach 6-23 by 100 (corrections' DPO between 10 and 15, BC at
  1e-4 between 15 and 20), so the checkpoints are dense below 30 updates. Each policy run took
  20-35 CPU-s, a reward model 3-10.
- Seeds 0, 1, 2: a seed draws the prompts, the samples, the person's noise, the heads, the data
  orders and the evaluation samplers.
- Statistics: mean and 95% percentile-bootstrap CI over seeds (``textgym.stats``); every form
  against comparisons paired by seed (``<metric>_minus_pairs`` rows: the same prompts, samples
  and evaluation stream).
- Verdict, per route and budget: the form with the highest mean buys the most; it "wins" when its
  paired difference with every other form has a CI above 0; forms whose difference with it has a
  CI reaching 0 "tie" with it. Route A's primary metric is ``bon16_gold`` at J = 600, route B's
  ``gold_at_kl``.

Caveats: the person is a model of a person (one noise model for all forms, which favours none by
design but is not measured on people); the correction editor is lexical and knows the grammar's
vocabulary, i.e. the edits are targeted at what VADER scores; ratings and thumbs are absolute and
so depend on the cut points matching u's scale, which they do here by construction; 3 seeds make
narrow bootstrap intervals that undercover.

    python experiments/repro_feedback.py           # 3 seeds: about 20 CPU-min
    python experiments/repro_feedback.py --quick   # 2 seeds, smaller: a few CPU-min

Results: ``experiments/results/feedback/`` (``--quick``: its ``quick/`` folder): summary.json,
summary.md, feedback.png, and ``runs/``, one JSON per (route, method, budget, seed), reused when
present with the same key, so an interrupted run loses at most the run it was in.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from textgym.agents import (
    BC,
    DPO,
    KTO,
    BCConfig,
    DPOConfig,
    KTOConfig,
    ListwiseDPO,
    ListwiseDPOConfig,
    RewardModelConfig,
    RewardModelTrainer,
)
from textgym.agents.reward_modeling import pairwise_accuracy
from textgym.rewards import make
from textgym.rewards.reward_model import RewardModel

import textgym
import textgym.assets
from textgym import feedback, plots, provenance, tasks
from textgym.decoding import generate
from textgym.evaluation import sample_with_kl
from textgym.lm import LanguageModel
from textgym.pair_sampling import synthetic_preferences
from textgym.records import write_json
from textgym.stats import best_of_n_kl, best_of_n_weights, bootstrap_ci, study_row, write_summary
from textgym.training import frozen_copy

STUDY = "feedback"
GOLD = "sentiment"
FORMS = ("comparisons", "rankings", "ratings", "thumbs", "corrections")
RM_METHODS = {  # method -> (form, RewardModelConfig.loss)
    "RM bradley_terry": ("comparisons", "bradley_terry"),
    "RM plackett_luce": ("rankings", "plackett_luce"),
    "RM regression": ("ratings", "regression"),
    "RM ordinal": ("ratings", "ordinal"),
    "RM logistic": ("thumbs", "logistic"),
    "RM bradley_terry (corrections)": ("corrections", "bradley_terry"),
}
POLICY_METHODS = {  # method -> form
    "DPO": "comparisons",
    "listwise DPO": "rankings",
    "DPO (rating pairs)": "ratings",
    "KTO": "thumbs",
    "DPO (corrections)": "corrections",
    "BC (corrections)": "corrections",
}
BASELINE = {"A": "RM bradley_terry", "B": "DPO"}
"""The comparisons' method of each route: every other form is paired against it."""


@dataclass(frozen=True)
class StudyConfig:
    model: str = textgym.DEFAULT_MODEL
    seeds: int = 3
    budgets: tuple[int, ...] = (150, 600)
    """J of route A; route B runs the largest."""
    noise: float = 0.1
    """τ of the simulated person."""
    k: int = 4
    """samples a prompt in the pool (the ranking's K)."""
    max_new_tokens: int = 20
    rm_lr: float = 1e-3
    rm_batch: int = 16
    rm_epochs: int = 3
    bon_prompts: int = 200
    bon_samples: int = 16
    accuracy_prompts: int = 100
    """validation prompts after the evaluation ones, for the gold-ordered held-out pairs."""
    batch_size: int = 8
    eval_at: tuple[int, ...] = (5, 10, 15, 20, 25, 30, 40, 50, 75, 100)
    """update counts where a policy is evaluated; the last is U."""
    eval_prompts: int = 200
    eval_seed: int = 4321
    out: str = "experiments/results/feedback"
    threads: int = 1


QUICK: dict[str, Any] = {
    "seeds": 2,
    "budgets": (60, 240),
    "rm_epochs": 2,
    "bon_prompts": 64,
    "accuracy_prompts": 48,
    "eval_at": (10, 20, 40),
    "eval_prompts": 64,
    "out": "experiments/results/feedback/quick",
}
KL_STAR = best_of_n_kl(16)
"""1.84 nats: KL of best-of-16, where route B's gold is read (``gold_at_kl``)."""


# ---------------------------------------------------------------------------- the person


def review_editor() -> Callable[[str, str], str]:
    """The correction editor: each negative word of the review grammar -> a positive word."""
    grammar = Path(textgym.assets.__file__).parent / "grammar" / "reviews.json"
    words = json.loads(grammar.read_text())
    negative = list(dict.fromkeys(words["neg_adj"] + words["neg_acting"]))
    positive = words["pos_adj"]
    swap = {w: positive[i % len(positive)] for i, w in enumerate(negative)}
    pattern = re.compile(r"\b(" + "|".join(negative) + r")\b", re.IGNORECASE)
    return lambda prompt, text: pattern.sub(lambda m: swap[m.group(0).lower()], text)


def sample(lm: LanguageModel, prompts: Sequence[str], n: int, cfg: StudyConfig, seed: int) -> list:
    """n samples of π_ref for each prompt (temperature 1), seeded."""
    g = torch.Generator().manual_seed(seed)
    texts: list[str] = []
    for start in range(0, len(prompts), 128):
        chunk = [p for p in prompts[start : start + 128] for _ in range(n)]
        out = generate(lm, chunk, max_new_tokens=cfg.max_new_tokens, do_sample=True, generator=g)
        texts += list(out.texts)
    return [texts[i : i + n] for i in range(0, len(texts), n)]


def make_feedback(lm: LanguageModel, cfg: StudyConfig, seed: int) -> dict[str, Any]:
    """The pool of seed ``seed`` and every form's records at the largest budget."""
    top = max(cfg.budgets)
    train = list(tasks.load("reviews", split="train").prompts)
    order = np.random.default_rng(seed).permutation(len(train))
    prompts = [train[i] for i in order[: int(top * 1.2)]]
    samples = sample(lm, prompts, cfg.k, cfg, seed)
    keep = [i for i, s in enumerate(samples) if all(t.strip() for t in s)][:top]
    if len(keep) < top:
        raise RuntimeError(f"only {len(keep)} prompts with {cfg.k} non-empty samples, need {top}")
    prompts, samples = [prompts[i] for i in keep], [samples[i] for i in keep]
    person = feedback.Annotator(make(GOLD), noise=cfg.noise)
    rng = {f: np.random.default_rng([seed, i]) for i, f in enumerate(FORMS)}
    n_rank, n_rate = top // (cfg.k - 1), top // cfg.k
    first = [s[0] for s in samples]
    rate_p = [p for p in prompts[:n_rate] for _ in range(cfg.k)]
    rate_y = [y for s in samples[:n_rate] for y in s]
    edits = [review_editor()(p, y) for p, y in zip(prompts, first, strict=True)]
    return {
        "comparisons": person.compare(prompts, first, [s[1] for s in samples], rng["comparisons"]),
        "rankings": person.rank(prompts[:n_rank], samples[:n_rank], rng["rankings"]),
        "ratings": person.rate(rate_p, rate_y, rng["ratings"]),
        "thumbs": person.thumb(prompts, first, rng["thumbs"]),
        # one entry per completion shown (None: left as it is), so that a budget is a prefix
        "corrections": [
            feedback.Correction(p, y, e) if e != y else None
            for p, y, e in zip(prompts, first, edits, strict=True)
        ],
    }


def records(data: dict[str, Any], form: str, budget: int, k: int) -> list[Any]:
    """The records J = ``budget`` judgments of ``form`` bought (a prefix of the largest budget)."""
    if form == "rankings":
        return data[form][: budget // (k - 1)]
    if form == "corrections":
        return [c for c in data[form][:budget] if c is not None]
    return data[form][:budget]


# ---------------------------------------------------------------------------- route A


def bon_pool(lm: LanguageModel, cfg: StudyConfig, seed: int) -> dict[str, Any]:
    """16 π_ref samples on each evaluation prompt, their gold, and π_ref's gold."""
    prompts = list(tasks.load("reviews", split="validation").prompts[: cfg.bon_prompts])
    texts = sample(lm, prompts, cfg.bon_samples, cfg, 20_000 + seed)
    flat_p = [p for p in prompts for _ in range(cfg.bon_samples)]
    flat_y = [y for row in texts for y in row]
    gold = np.asarray(make(GOLD)(flat_p, flat_y), dtype=np.float64).reshape(len(prompts), -1)
    return {"prompts": flat_p, "texts": flat_y, "gold": gold}


def best_of_n(rm_scores: np.ndarray, gold: np.ndarray, n: int) -> float:
    """Mean over prompts of the exact best-of-n gold under the reward model (all N samples)."""
    order = np.argsort(rm_scores, axis=1, kind="stable")
    sorted_gold = np.take_along_axis(gold, order, axis=1)  # (E, N) by the model's score, ascending
    return float((sorted_gold @ best_of_n_weights(gold.shape[1], n)).mean())


def train_reward_model(
    lm: LanguageModel,
    cfg: StudyConfig,
    data: list[Any],
    loss: str,
    seed: int,
    pool: dict,
    held: list,
) -> dict[str, Any]:
    torch.manual_seed(seed)  # the head's init, then dropout's masks
    rm = RewardModel.from_backbone(lm, device="cpu")
    config = RewardModelConfig(
        loss=loss,  # type: ignore[arg-type]
        lr=cfg.rm_lr,
        batch_size=cfg.rm_batch,
        epochs=cfg.rm_epochs,
        seed=seed,
    )
    history = RewardModelTrainer(rm, data, None, config, device="cpu", progress_bar=False).learn()
    scores = rm.score(pool["prompts"], pool["texts"]).reshape(pool["gold"].shape)
    return {
        "rm_accuracy": pairwise_accuracy(rm, held),
        "bon16_gold": best_of_n(scores, pool["gold"], cfg.bon_samples),
        "bon4_gold": best_of_n(scores, pool["gold"], 4),
        "train_acc": history[-1]["train_acc"],
    }


# ---------------------------------------------------------------------------- route B


def measure(policy: LanguageModel, ref: LanguageModel, cfg: StudyConfig, seed: int) -> dict:
    out, kl = sample_with_kl(
        policy,
        ref,
        reward=GOLD,
        n_prompts=cfg.eval_prompts,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.eval_seed + seed,
    )
    return {"kl": float(kl.mean()), "gold": float(out.rewards.mean())}


def policy_agent(method: str, policy: LanguageModel, data: list[Any], cfg: StudyConfig, seed: int):  # type: ignore[no-untyped-def]
    b = cfg.batch_size
    if method == "DPO":
        return DPO(policy, data=data, config=DPOConfig(batch_size=b, seed=seed), progress_bar=False)
    if method == "listwise DPO":
        config = ListwiseDPOConfig(batch_size=b, seed=seed)
        return ListwiseDPO(policy, data=data, config=config, progress_bar=False)
    if method == "DPO (rating pairs)":
        pairs = feedback.ratings_to_pairs(data)
        return DPO(
            policy, data=pairs, config=DPOConfig(batch_size=b, seed=seed), progress_bar=False
        )
    if method == "KTO":
        return KTO(policy, data=data, config=KTOConfig(batch_size=b, seed=seed), progress_bar=False)
    if method == "DPO (corrections)":
        pairs = feedback.corrections_to_pairs(data)
        return DPO(
            policy, data=pairs, config=DPOConfig(batch_size=b, seed=seed), progress_bar=False
        )
    demos = feedback.corrections_to_demonstrations(data)
    config = BCConfig(lr=1e-4, batch_size=b, val_fraction=0.0, patience=None, seed=seed)
    return BC(policy, demos, config, progress_bar=False)


def train_policy(
    cfg: StudyConfig, method: str, data: list[Any], seed: int, on_point: Callable[[dict], None]
) -> list[dict]:
    torch.manual_seed(seed)
    policy = LanguageModel.from_pretrained(cfg.model, device="cpu")
    ref = frozen_copy(policy)
    agent = policy_agent(method, policy, data, cfg, seed)
    points, done = [], 0
    for u in cfg.eval_at:
        agent.learn(u - done)
        done = u
        points.append({"update": u, **measure(policy, ref, cfg, seed)})
        on_point(points[-1])
    return points


def gold_at_kl(points: Sequence[dict], start: dict, kl_star: float = KL_STAR) -> float:
    """Gold at KL = kl_star on a run's checkpoints: linear in log KL between the two around it
    (from π_ref to the first: linear in KL); NaN when the run never reaches it."""
    pts = [start, *sorted(points, key=lambda p: p["update"])]
    for a, b in itertools.pairwise(pts):
        lo, hi = a["kl"], b["kl"]
        if lo <= kl_star <= hi and hi > lo:
            if a is start or lo <= 0:
                w = (kl_star - lo) / (hi - lo)
            else:
                w = (math.log(kl_star) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return a["gold"] + w * (b["gold"] - a["gold"])
    return math.nan


# ---------------------------------------------------------------------------- the run files


def run_key(cfg: StudyConfig, route: str, method: str, budget: int, seed: int) -> dict[str, Any]:
    """Everything a run's numbers depend on: a saved run is reused only when this matches."""
    key: dict[str, Any] = {
        "route": route,
        "method": method,
        "budget": budget,
        "seed": seed,
        "model": Path(cfg.model).name,
        "noise": cfg.noise,
        "k": cfg.k,
        "max_new_tokens": cfg.max_new_tokens,
        "pool": max(cfg.budgets),
    }
    if route == "A":
        key |= {
            "rm": [cfg.rm_lr, cfg.rm_batch, cfg.rm_epochs],
            "bon": cfg.bon_prompts,
            "bon_samples": cfg.bon_samples,
            "accuracy_prompts": cfg.accuracy_prompts,
        }
    elif route == "B":
        key |= {
            "batch": cfg.batch_size,
            "eval_at": list(cfg.eval_at),
            "eval_prompts": cfg.eval_prompts,
            "eval_seed": cfg.eval_seed + seed,
        }
    return key


def run_path(cfg: StudyConfig, route: str, method: str, budget: int, seed: int) -> Path:
    name = re.sub(r"[^A-Za-z0-9_]+", "_", f"{route}_{method}_J{budget}_seed{seed}").strip("_")
    return Path(cfg.out) / "runs" / f"{name}.json"


def cached(
    cfg: StudyConfig,
    route: str,
    method: str,
    budget: int,
    seed: int,
    compute: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """The run's saved result when its key matches, else ``compute()`` (timed and saved)."""
    key = run_key(cfg, route, method, budget, seed)
    path = run_path(cfg, route, method, budget, seed)
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("key") == key:
            return data
    start, cpu = time.perf_counter(), time.process_time()
    result = compute()
    data = {
        "key": key,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        **result,
    }
    write_json(path, data)  # atomic: an interrupted write leaves no half run to resume from
    return data


def run_seed(cfg: StudyConfig, seed: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every run of ``seed`` (loaded when saved with the same key)."""
    state: dict[str, Any] = {}

    def base() -> LanguageModel:
        if "lm" not in state:
            state["lm"] = LanguageModel.from_pretrained(cfg.model, device="cpu")
        return state["lm"]

    def data() -> dict[str, Any]:
        if "data" not in state:
            state["data"] = make_feedback(base(), cfg, seed)
        return state["data"]

    def route_a_inputs() -> tuple[dict, list]:
        if "pool" not in state:
            val = list(tasks.load("reviews", split="validation").prompts)
            held_prompts = val[cfg.bon_prompts : cfg.bon_prompts + cfg.accuracy_prompts]
            state["held"] = synthetic_preferences(
                base(),
                held_prompts,
                make(GOLD),
                k=cfg.k,
                min_margin=0.1,
                max_new_tokens=cfg.max_new_tokens,
                seed=30_000 + seed,
            )
            state["pool"] = bon_pool(base(), cfg, seed)
        return state["pool"], state["held"]

    runs: list[dict[str, Any]] = []

    def start_point() -> dict[str, Any]:
        lm = base()
        pool, _ = route_a_inputs()
        return {
            "point": measure(lm, frozen_copy(lm), cfg, seed),
            "bon1_gold": float(pool["gold"].mean()),
        }

    runs.append(
        {
            "route": "start",
            "method": "π_ref",
            "budget": 0,
            "seed": seed,
            **cached(cfg, "start", "π_ref", 0, seed, start_point),
        }
    )
    for budget in cfg.budgets:
        for method, (form, loss) in RM_METHODS.items():

            def rm_run(form: str = form, loss: str = loss, budget: int = budget) -> dict:
                recs = records(data(), form, budget, cfg.k)
                pool, held = route_a_inputs()
                data_in = feedback.corrections_to_pairs(recs) if form == "corrections" else recs
                out = train_reward_model(base(), cfg, data_in, loss, seed, pool, held)
                return {"records": len(recs), "held_out_pairs": len(held), **out}

            r = cached(cfg, "A", method, budget, seed, rm_run)
            log(f"seed {seed} J={budget} {method}: {r['records']} records, {r['seconds']:.0f} s")
            runs.append(
                {"route": "A", "method": method, "form": form, "budget": budget, "seed": seed, **r}
            )
    top = max(cfg.budgets)
    for method, form in POLICY_METHODS.items():

        def policy_run(method: str = method, form: str = form) -> dict:
            recs = records(data(), form, top, cfg.k)
            show = lambda p: log(f"  {method} seed {seed} update {p['update']}: KL {p['kl']:.2f}")  # noqa: E731
            return {"records": len(recs), "points": train_policy(cfg, method, recs, seed, show)}

        r = cached(cfg, "B", method, top, seed, policy_run)
        log(f"seed {seed} J={top} {method}: {r['records']} records, {r['seconds']:.0f} s")
        runs.append(
            {"route": "B", "method": method, "form": form, "budget": top, "seed": seed, **r}
        )
    return runs


# ---------------------------------------------------------------------------- the summary


def values_of(runs: list[dict], route: str, method: str, budget: int, metric: str) -> list[float]:
    """``metric`` of every seed's run, in seed order."""
    start = {r["seed"]: r for r in runs if r["route"] == "start"}
    out = []
    for r in sorted(runs, key=lambda r: r["seed"]):
        if r["route"] != route or r["method"] != method or r["budget"] != budget:
            continue
        if route == "A":
            out.append(float(r[metric]))
            continue
        s, last = start[r["seed"]]["point"], r["points"][-1]
        value = {
            "gold": last["gold"],
            "kl": last["kl"],
            "gold_change": last["gold"] - s["gold"],
            "gold_at_kl": gold_at_kl(r["points"], s),
        }[metric]
        out.append(float(value))
    return out


ROUTE_METRICS = {
    "A": ("bon16_gold", "bon4_gold", "rm_accuracy"),
    "B": ("gold_at_kl", "gold", "kl", "gold_change"),
}
PRIMARY = {"A": "bon16_gold", "B": "gold_at_kl"}


def row(
    method: str, form: str, budget: int, metric: str, values: list[float], **extra: Any
) -> dict:
    setting = f"J={budget}"
    if any(math.isnan(v) for v in values):  # a run that never reached the KL: no mean, no CI
        return {
            "method": method,
            "metric": metric,
            "values": [None if math.isnan(v) else v for v in values],  # JSON has no NaN
            "mean": None,
            "ci95": None,
            "study": STUDY,
            "setting": setting,
            "form": form,
            "judgments": budget,
            **extra,
        }
    return study_row(STUDY, method, setting, metric, values, form=form, judgments=budget, **extra)


def summarise(cfg: StudyConfig, runs: list[dict]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    start = sorted((r for r in runs if r["route"] == "start"), key=lambda r: r["seed"])
    top = max(cfg.budgets)
    rows.append(row("π_ref", "none", 0, "gold", [r["point"]["gold"] for r in start]))
    rows.append(row("π_ref", "none", 0, "bon1_gold", [r["bon1_gold"] for r in start]))
    for route, methods in (("A", RM_METHODS), ("B", POLICY_METHODS)):
        budgets = cfg.budgets if route == "A" else (top,)
        for budget in budgets:
            for method, spec in methods.items():
                form = spec[0] if isinstance(spec, tuple) else spec
                n_records = [
                    float(r["records"])
                    for r in runs
                    if r["route"] == route and r["method"] == method and r["budget"] == budget
                ]
                for metric in ROUTE_METRICS[route]:
                    vals = values_of(runs, route, method, budget, metric)
                    rows.append(
                        row(
                            method,
                            form,
                            budget,
                            metric,
                            vals,
                            route=route,
                            records=statistics.fmean(n_records),
                        )
                    )
                    if method != BASELINE[route]:
                        base = values_of(runs, route, BASELINE[route], budget, metric)
                        diff = [a - b for a, b in zip(vals, base, strict=True)]
                        rows.append(
                            row(
                                f"{method} - {BASELINE[route]}",
                                form,
                                budget,
                                f"{metric}_minus_pairs",
                                diff,
                                route=route,
                            )
                        )
    return rows


def verdicts(cfg: StudyConfig, runs: list[dict]) -> dict[str, Any]:
    """The docstring's rule per route and budget on the primary metric."""
    out: dict[str, Any] = {}
    top = max(cfg.budgets)
    for route, methods in (("A", RM_METHODS), ("B", POLICY_METHODS)):
        for budget in cfg.budgets if route == "A" else (top,):
            metric = PRIMARY[route]
            vals = {m: values_of(runs, route, m, budget, metric) for m in methods}
            vals = {m: v for m, v in vals.items() if not any(math.isnan(x) for x in v)}
            if not vals:
                continue
            best = max(vals, key=lambda m: statistics.fmean(vals[m]))
            ties, beats = [], []
            for m, v in vals.items():
                if m == best:
                    continue
                low, _ = bootstrap_ci([a - b for a, b in zip(vals[best], v, strict=True)])
                (beats if low > 0 else ties).append(m)
            out[f"{route} J={budget}"] = {
                "metric": metric,
                "best": best,
                "mean": statistics.fmean(vals[best]),
                "wins": not ties,
                "ties_with": ties,
                "beats": beats,
                "missing": sorted(set(methods) - set(vals)),
            }
    return out


def fmt(values: Sequence[float] | None, digits: int = 3) -> str:
    if not values or any(math.isnan(v) for v in values):
        return "-"
    low, high = bootstrap_ci(values)
    return f"{statistics.fmean(values):.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def report(cfg: StudyConfig, runs: list[dict], verdict: dict[str, Any], seconds: float) -> str:
    top = max(cfg.budgets)
    start = sorted((r for r in runs if r["route"] == "start"), key=lambda r: r["seed"])
    cpu = sum(r["cpu_seconds"] for r in runs)
    wall = sum(r["seconds"] for r in runs)

    def diff(route: str, method: str, budget: int, metric: str) -> str:
        if method == BASELINE[route]:
            return "-"
        a = values_of(runs, route, method, budget, metric)
        b = values_of(runs, route, BASELINE[route], budget, metric)
        return fmt([x - y for x, y in zip(a, b, strict=True)])

    def n_rec(route: str, method: str, budget: int) -> str:
        n = [
            r["records"]
            for r in runs
            if r["route"] == route and r["method"] == method and r["budget"] == budget
        ]
        return f"{statistics.fmean(n):.0f}"

    lines = [
        f"# Which form of feedback buys the most? ({cfg.seeds} seeds)",
        "",
        f"{provenance.describe('vaderSentiment')}",
        "",
        f"Runs: {wall / 60:.1f} min wall, {cpu / 60:.1f} CPU-min (reused runs included; one "
        f"torch thread on a shared machine); this report {seconds:.0f} s. Gold: VADER sentiment; "
        f"person: logistic noise τ = {cfg.noise}; mean [95% bootstrap CI] over seeds; "
        '"- pairs": the paired difference with the comparisons\' method of the same seed.',
        "",
        f"π_ref: gold {fmt([r['point']['gold'] for r in start])} (policy evaluation prompts), "
        f"{fmt([r['bon1_gold'] for r in start])} (best-of-1 on the reward models' samples).",
        "",
        f"## Route A: a reward model from each form, best-of-n under it (KL {KL_STAR:.2f} at "
        "n = 16)",
        "",
        "| judgments | method | form | records | best-of-16 gold | - pairs | best-of-4 gold | "
        "held-out accuracy | - pairs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for budget in cfg.budgets:
        for method, (form, _) in RM_METHODS.items():
            v = lambda m: values_of(runs, "A", method, budget, m)  # noqa: B023, E731
            lines.append(
                f"| {budget} | {method} | {form} | {n_rec('A', method, budget)} | "
                f"{fmt(v('bon16_gold'))} | {diff('A', method, budget, 'bon16_gold')} | "
                f"{fmt(v('bon4_gold'))} | {fmt(v('rm_accuracy'))} | "
                f"{diff('A', method, budget, 'rm_accuracy')} |"
            )
    lines += [
        "",
        f"## Route B: a policy learnt from each form directly (J = {top}, {cfg.eval_at[-1]} "
        "updates)",
        "",
        f"| method | form | records | gold at KL {KL_STAR:.2f} | - pairs | gold | KL | "
        "gold change | - pairs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, form in POLICY_METHODS.items():
        v = lambda m: values_of(runs, "B", method, top, m)  # noqa: B023, E731
        lines.append(
            f"| {method} | {form} | {n_rec('B', method, top)} | {fmt(v('gold_at_kl'))} | "
            f"{diff('B', method, top, 'gold_at_kl')} | {fmt(v('gold'))} | {fmt(v('kl'), 2)} | "
            f"{fmt(v('gold_change'))} | {diff('B', method, top, 'gold_change')} |"
        )
    lines += ["", "## Verdict (rule in the script's docstring)", ""]
    for where, v in verdict.items():
        word = "wins" if v["wins"] else f"ties with {', '.join(v['ties_with'])}"
        lines.append(
            f"- {where}, {v['metric']}: {v['best']} ({v['mean']:.3f}) {word}"
            + (f"; missing: {', '.join(v['missing'])}" if v["missing"] else "")
        )
    return "\n".join(lines) + "\n"


def plot(cfg: StudyConfig, runs: list[dict], out: Path) -> Path:
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), dpi=80)
    colors = {f: f"C{i}" for i, f in enumerate(FORMS)}
    for i, (method, (form, _)) in enumerate(RM_METHODS.items()):
        for ax, metric in zip(axes[:2], ("bon16_gold", "rm_accuracy"), strict=True):
            xs = np.array(cfg.budgets, dtype=float) * (1 + 0.03 * (i - 2.5))  # spread the bars
            vals = [values_of(runs, "A", method, b, metric) for b in cfg.budgets]
            mean = [statistics.fmean(v) for v in vals]
            ci = np.array([bootstrap_ci(v) for v in vals])
            ls = "--" if method in ("RM ordinal", "RM bradley_terry (corrections)") else "-"
            ax.errorbar(
                xs,
                mean,
                yerr=[np.subtract(mean, ci[:, 0]), np.subtract(ci[:, 1], mean)],
                color=colors[form],
                ls=ls,
                marker="o",
                ms=4,
                capsize=3,
                label=method,
            )
    start = [r for r in runs if r["route"] == "start"]
    axes[0].axhline(statistics.fmean(r["bon1_gold"] for r in start), color="grey", lw=0.8, ls=":")
    for ax, title in zip(
        axes[:2],
        ("best-of-16 gold under the reward model", "held-out accuracy on gold-ordered pairs"),
        strict=True,
    ):
        ax.set_xscale("log")
        ax.set_xticks(cfg.budgets, [str(b) for b in cfg.budgets])
        ax.minorticks_off()
        ax.set_xlabel("judgments")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    top = max(cfg.budgets)
    s = statistics.fmean(r["point"]["gold"] for r in start)
    for method, form in POLICY_METHODS.items():
        mine = [r for r in runs if r["route"] == "B" and r["method"] == method]
        kl = [statistics.fmean(r["points"][j]["kl"] for r in mine) for j in range(len(cfg.eval_at))]
        gold = [
            statistics.fmean(r["points"][j]["gold"] for r in mine) for j in range(len(cfg.eval_at))
        ]
        ls = "--" if method.startswith("BC") else "-"
        axes[2].plot(
            [1e-3, *kl], [s, *gold], color=colors[form], ls=ls, marker="o", ms=3, label=method
        )
    for method, (form, _) in RM_METHODS.items():
        v = values_of(runs, "A", method, top, "bon16_gold")
        axes[2].plot([KL_STAR], [statistics.fmean(v)], color=colors[form], marker="*", ms=9, ls="")
    axes[2].axvline(KL_STAR, color="grey", lw=0.8, ls=":")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("KL(π‖π_ref), nats a sequence (π_ref drawn at 0.001)")
    axes[2].set_title(f"policies from J = {top} judgments (★: best-of-16 under each RM)")
    axes[2].legend(fontsize=7)
    return plots.save(fig, out / "feedback.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, small budgets")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--out")
    parser.add_argument("--threads", type=int)
    ns = parser.parse_args(argv)
    cfg = replace(StudyConfig(), **QUICK) if ns.quick else StudyConfig()
    given = {k: getattr(ns, k) for k in ("seeds", "out", "threads")}
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    out = Path(cfg.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for seed in range(cfg.seeds):
        runs += run_seed(cfg, seed, lambda line: print(line, flush=True))
    verdict = verdicts(cfg, runs)
    seconds = time.perf_counter() - start
    write_summary(
        out / "summary.json",
        summarise(cfg, runs),
        study=STUDY,
        config=asdict(cfg),
        judgments={
            "comparison": 1,
            "rating": 1,
            "thumb": 1,
            "correction shown": 1,
            f"ranking of {cfg.k}": cfg.k - 1,
        },
        kl_star=KL_STAR,
        verdict=verdict,
        runtime_s=seconds,
        runs_seconds_total=sum(r["seconds"] for r in runs),
        runs_cpu_seconds_total=sum(r["cpu_seconds"] for r in runs),
        provenance={
            "git": provenance.git_sha(),
            "versions": provenance.versions("vaderSentiment"),
            "describe": provenance.describe("vaderSentiment"),
        },
    )
    md = report(cfg, runs, verdict, seconds)
    (out / "summary.md").write_text(md)
    plot(cfg, runs, out)
    print(md)


if __name__ == "__main__":
    main()
