"""DPO family: loss values and gradients against the formulas and TRL, padding, resume, learning."""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from textgym.agents import iterative_dpo
from textgym.agents.dpo import (
    DPO,
    LOSSES,
    DPOConfig,
    PairLogps,
    cdpo_loss,
    dpo_loss,
    dpop_loss,
    ipo_loss,
)
from textgym.agents.iterative_dpo import IterativeDPO, IterativeDPOConfig
from textgym.rewards import make
from torch.testing import assert_close
from toy import PAIRS as TOY_PAIRS
from transformers import AutoTokenizer, GPT2LMHeadModel

import textgym
from textgym.decoding import generate
from textgym.lm import LanguageModel
from textgym.pair_sampling import sample_pairs
from textgym.preference import PreferenceBatch, cached_logps, sequence_logps, tokenize_pairs
from textgym.tasks import load

PAIRS = TOY_PAIRS[:6]


def _lm(path: str, seed: int | None = None) -> LanguageModel:
    model = GPT2LMHeadModel.from_pretrained(path)
    if seed is not None:  # a different random model, so that π_θ ≠ π_ref
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(model.config)
    return LanguageModel(model.eval(), AutoTokenizer.from_pretrained(path))


RT: dict[str, Any] = {"device": "cpu", "progress_bar": False}
"""The runtime settings of every agent in these tests."""


def _cfg(**kw: object) -> DPOConfig:
    return DPOConfig(**{"batch_size": 4, **kw})  # type: ignore[arg-type]


def _random_logps(seed: int = 0, n: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        (-20 * torch.rand(n, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(4)
    ]


# ---------------------------------------------------------------- the pure losses


def test_loss_is_log2_when_policy_equals_ref() -> None:
    w, lo, _, _ = _random_logps()
    for name, fn in LOSSES.items():
        if name == "ipo":
            continue  # IPO's optimum is h̄ = 1/(2τ), not a sigmoid: no log 2 there
        p = PairLogps(w, lo, w.detach(), lo.detach(), torch.ones(16), torch.ones(16))
        assert_close(fn(p, DPOConfig()).item(), math.log(2), rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_losses_and_gradients_match_the_formulas(beta: float) -> None:
    lam, eps = 5.0, 0.2
    len_w, len_l = (
        torch.arange(1.0, 17.0, dtype=torch.float64),
        torch.full((16,), 3.0, dtype=torch.float64),
    )

    def direct(
        name: str, tw: torch.Tensor, tl: torch.Tensor, rw: torch.Tensor, rl: torch.Tensor
    ) -> torch.Tensor:
        # Written from the papers, without logsigmoid: sigmoid by hand, in float64.
        h = tw - rw - tl + rl
        sig = lambda z: 1 / (1 + torch.exp(-z))  # noqa: E731
        if name == "sigmoid":
            return -torch.log(sig(beta * h)).mean()
        if name == "dpop":
            return -torch.log(sig(beta * (h - lam * torch.relu(rw - tw)))).mean()
        if name == "cdpo":
            return -((1 - eps) * torch.log(sig(beta * h)) + eps * torch.log(sig(-beta * h))).mean()
        return (((tw - rw) / len_w - (tl - rl) / len_l - 1 / (2 * beta)) ** 2).mean()

    ours = {
        "sigmoid": lambda *a: dpo_loss(*a, beta),
        "dpop": lambda *a: dpop_loss(*a, beta, lam),
        "cdpo": lambda *a: cdpo_loss(*a, beta, eps),
        "ipo": lambda *a: ipo_loss(*a, len_w, len_l, beta),
    }
    for name, fn in ours.items():
        a = _random_logps(seed=1)
        b = [t.detach().clone().requires_grad_() for t in a]
        got, want = fn(*a), direct(name, *b)
        assert_close(got, want, rtol=1e-10, atol=1e-12, msg=name)
        got.backward()
        want.backward()
        for x, y in zip(a, b, strict=True):
            assert_close(x.grad, y.grad, rtol=1e-8, atol=1e-12, msg=name)


def test_dpop_penalty_is_zero_when_chosen_stays_above_the_reference() -> None:
    _, tl, rw, rl = (t.detach() for t in _random_logps(seed=2))
    up = rw + torch.rand(16, dtype=torch.float64)  # π_θ(y_w) ≥ π_ref(y_w)
    assert_close(
        dpop_loss(up, tl, rw, rl, 0.3, 50.0), dpo_loss(up, tl, rw, rl, 0.3), rtol=0, atol=0
    )
    down = (rw - 0.1).requires_grad_()  # π_θ(y_w) < π_ref(y_w): the penalty acts
    plain = down.detach().clone().requires_grad_()
    penalised, unpenalised = (
        dpop_loss(down, tl, rw, rl, 0.3, 50.0),
        dpo_loss(plain, tl, rw, rl, 0.3),
    )
    assert penalised > unpenalised + 0.1
    penalised.backward()
    unpenalised.backward()
    # Gradient descent raises log π_θ(y_w) much harder while the penalty is active.
    assert (-down.grad > -plain.grad * 10).all()


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        DPOConfig(loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta must be > 0, got 0"):
        DPOConfig(beta=0)
    with pytest.raises(ValueError, match=r"eps must be in \[0, 0.5\)"):
        DPOConfig(eps=0.5)
    with pytest.raises(ValueError, match="batch_size"):
        DPOConfig(batch_size=0)


# ---------------------------------------------------------------- log-probs on a real model


def test_padding_does_not_change_the_logprobs(tiny_gpt2_dir: str) -> None:
    lm = _lm(tiny_gpt2_dir)
    alone = tokenize_pairs(lm, PAIRS[2:3])
    with_longer = tokenize_pairs(lm, [PAIRS[2], PAIRS[0], PAIRS[4]])
    assert with_longer.input_ids.shape[1] > alone.input_ids.shape[1]
    extra = 7  # and a batch with extra right padding columns
    padded = PreferenceBatch(
        F.pad(alone.input_ids, (0, extra), value=lm.pad_token_id),
        F.pad(alone.attention_mask, (0, extra)),
        F.pad(alone.completion_mask, (0, extra)),
    )
    a = sequence_logps(lm, alone)  # (2,)
    b = sequence_logps(lm, with_longer)[[0, 3]]  # pair 0's chosen and rejected rows
    c = sequence_logps(lm, padded)
    assert_close(b, a, rtol=0, atol=1e-5)
    assert_close(c, a, rtol=0, atol=1e-5)
    # Only completion tokens count: a longer prompt row with the same completion differs.
    assert (a < 0).all()


def test_first_loss_is_log2_and_metrics_are_neutral(tiny_gpt2_dir: str) -> None:
    agent = DPO(_lm(tiny_gpt2_dir), data=PAIRS, eval_data=PAIRS[:3], config=_cfg(), **RT)
    ev = agent.evaluate()
    assert_close(ev["loss"], math.log(2), rtol=0, atol=1e-6)
    assert (ev["margin"], ev["accuracy"], ev["logratio_chosen"]) == (0, 0, 0)
    history = agent.learn(1)
    assert_close(history[0]["loss"], math.log(2), rtol=0, atol=1e-6)
    assert agent.evaluate()["loss"] < math.log(2)  # one step on overlapping pairs already helps


def test_dpo_loss_matches_trl(tiny_gpt2_dir: str, tmp_path: Path) -> None:
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(
        [
            {"prompt": p.prompt, "chosen": " " + p.chosen, "rejected": " " + p.rejected}
            for p in PAIRS
        ]
    )
    for loss_type in ("sigmoid", "ipo"):
        # Fresh models per trainer: DPOTrainer patches the model it is given (fused LM head).
        policy, ref = _lm(tiny_gpt2_dir), _lm(tiny_gpt2_dir, seed=1)
        args = trl.DPOConfig(
            output_dir=str(tmp_path),
            per_device_train_batch_size=len(PAIRS),
            beta=0.3,
            loss_type=[loss_type],
            report_to=[],
            use_cpu=True,
            max_length=64,
            disable_tqdm=True,
        )
        trainer = trl.DPOTrainer(
            model=policy.model,
            ref_model=ref.model,
            args=args,
            train_dataset=ds,
            processing_class=policy.tokenizer,
        )
        batch = next(iter(trainer.get_train_dataloader()))
        trl_loss = trainer.compute_loss(trainer.model, batch)
        # The same token rows through textgym: concatenated forward, summed completion log-probs.
        rows = PreferenceBatch(
            batch["input_ids"], batch["attention_mask"], batch["completion_mask"].bool()
        )
        n = len(rows)
        theta_w, theta_l = sequence_logps(policy, rows).chunk(2)
        with torch.no_grad():
            ref_w, ref_l = sequence_logps(ref, rows).chunk(2)
        len_w, len_l = rows.completion_mask.sum(-1).float().chunk(2)
        p = PairLogps(theta_w, theta_l, ref_w, ref_l, len_w, len_l)
        ours = LOSSES[loss_type](p, DPOConfig(beta=0.3))
        assert n == len(PAIRS)
        assert abs(ours.item() - math.log(2)) > 1e-3  # π_θ ≠ π_ref: a non-trivial comparison
        assert_close(ours, trl_loss, rtol=1e-5, atol=1e-6, msg=loss_type)
        # Same gradients on the shared policy weights.
        params = list(policy.model.parameters())
        trl_grads = torch.autograd.grad(trl_loss, params)
        our_grads = torch.autograd.grad(ours, params)
        for g_trl, g_ours in zip(trl_grads, our_grads, strict=True):
            assert_close(g_ours, g_trl, rtol=1e-4, atol=1e-6, msg=loss_type)


def test_csv_log_and_periodic_eval(tiny_gpt2_dir: str, tmp_path: Path) -> None:
    cfg = _cfg(eval_every=2)
    agent = DPO(
        _lm(tiny_gpt2_dir), data=PAIRS, eval_data=PAIRS[:2], config=cfg,
        log_dir=tmp_path / "log", **RT
    )  # fmt: skip
    history = agent.learn(4)
    rows = list(csv.DictReader((tmp_path / "log" / "progress.csv").open()))
    assert [int(float(r["update"])) for r in rows] == [1, 2, 3, 4]
    assert math.isnan(history[0]["eval_accuracy"])
    assert not math.isnan(history[1]["eval_accuracy"])
    assert float(rows[3]["loss"]) == pytest.approx(history[3]["loss"])


def test_eval_every_needs_eval_data(tiny_gpt2_dir: str) -> None:
    with pytest.raises(ValueError, match="eval_every=5 needs eval_data"):
        DPO(_lm(tiny_gpt2_dir), data=PAIRS, config=_cfg(eval_every=5), **RT)


def test_non_finite_loss_raises_with_the_terms(tiny_gpt2_dir: str) -> None:
    agent = DPO(
        _lm(tiny_gpt2_dir),
        data=PAIRS,
        config=_cfg(),
        ref_logps=torch.full((2 * len(PAIRS),), float("nan")),
        **RT,
    )
    with pytest.raises(
        FloatingPointError, match=r"non-finite loss at update 0: sigmoid_loss=nan.*logp_ref_w=nan"
    ):
        agent.learn(1)


# ---------------------------------------------------------------- iterative DPO (tiny model)

PROMPTS = ["the movie was", "the plot is", "a dog", "this film", "the cat", "i loved", "the acting"]


def _n_good(prompts: Sequence[str], completions: Sequence[str], refs: object = None) -> np.ndarray:
    return np.array(
        [sum(w in ("good", "great") for w in c.split()) for c in completions], dtype=np.float32
    )


def _iter_cfg(**kw: object) -> IterativeDPOConfig:
    base = {
        "rounds": 2,
        "k": 4,
        "updates_per_round": 3,
        "max_new_tokens": 6,
        "min_margin": -1.0,
        "dpo": _cfg(lr=1e-2, batch_size=4),
    }
    return IterativeDPOConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_iterative_dpo_rounds_history_and_best_policy(tiny_gpt2_dir: str) -> None:
    agent = IterativeDPO(_lm(tiny_gpt2_dir), PROMPTS, reward=_n_good, config=_iter_cfg(), **RT)
    rows = agent.learn()
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(r["pairs"] >= 1 for r in rows[1:])
    assert agent.best_score == max(r["val_score"] for r in rows)
    best = agent.best_policy()
    assert best.model is not agent.policy.model
    assert agent.best_score == pytest.approx(
        IterativeDPO(best, PROMPTS, reward=_n_good, config=_iter_cfg(), **RT).validate()
    )


def test_iterative_dpo_with_a_pairwise_preference(tiny_gpt2_dir: str) -> None:
    def prefer_good(prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        ga, gb = _n_good(prompts, a), _n_good(prompts, b)
        return np.where(ga > gb, 1.0, np.where(ga < gb, 0.0, 0.5))

    agent = IterativeDPO(
        _lm(tiny_gpt2_dir), PROMPTS, preference=prefer_good, config=_iter_cfg(rounds=1), **RT
    )
    rows = agent.learn()
    assert rows[0]["val_score"] == 0.5  # π_1 against itself
    assert 0.0 <= rows[1]["val_score"] <= 1.0


def test_iterative_dpo_argument_errors(tiny_gpt2_dir: str) -> None:
    lm = _lm(tiny_gpt2_dir)
    with pytest.raises(ValueError, match="exactly one of reward= or preference="):
        IterativeDPO(lm, PROMPTS, config=_iter_cfg(), **RT)
    with pytest.raises(ValueError, match="k must be >= 2"):
        IterativeDPOConfig(k=1)
    with pytest.raises(ValueError, match="needs references"):
        IterativeDPO(lm, PROMPTS, reward=_n_good, config=_iter_cfg(include_reference=True), **RT)


def test_iterative_dpo_anti_hacking_config_errors() -> None:
    with pytest.raises(ValueError, match=r"IterativeDPOConfig\.select_kl_coef.*got -0\.1"):
        _iter_cfg(select_kl_coef=-0.1)
    with pytest.raises(ValueError, match="reference"):
        _iter_cfg(reference="first")


def _dpo_rounds(
    tiny_gpt2_dir: str, monkeypatch: pytest.MonkeyPatch, reference: str
) -> tuple[LanguageModel, list[tuple[PreferenceBatch, torch.Tensor]]]:
    """π_1 (a copy of the start) and each round's DPO pairs with the π_ref log-probs DPO cached."""
    made: list[tuple[PreferenceBatch, torch.Tensor]] = []

    class RecordingDPO(DPO):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append((self.data, self.ref_logps.clone()))

    monkeypatch.setattr(iterative_dpo, "DPO", RecordingDPO)
    lm = _lm(tiny_gpt2_dir)
    pi_1 = LanguageModel(copy.deepcopy(lm.model), lm.tokenizer)
    cfg = _iter_cfg(reference=reference)
    IterativeDPO(lm, PROMPTS, reward=_n_good, config=cfg, **RT).learn()
    return pi_1, made


def test_iterative_dpo_original_reference_is_pi1_in_every_round(
    tiny_gpt2_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pi_1, made = _dpo_rounds(tiny_gpt2_dir, monkeypatch, "original")
    assert len(made) == 2
    for data, ref_logps in made:  # round 2's π_ref log-probs are π_1's, not π_2's
        assert_close(ref_logps, cached_logps(pi_1, data), rtol=0, atol=1e-4)
    # The default (DNO-Prct): round 2 is against π_2, which round 1 moved away from π_1.
    pi_1, made = _dpo_rounds(tiny_gpt2_dir, monkeypatch, "previous")
    data, ref_logps = made[1]
    assert (ref_logps - cached_logps(pi_1, data)).abs().max() > 1e-2


VAL_PROMPTS = ["one two", "three four"]


def _scheduled_val_reward(scores: Sequence[float]) -> Any:
    """``_n_good`` on the training prompts; on VAL_PROMPTS the next of ``scores`` (one a round)."""
    left = list(scores)

    def reward(prompts: Sequence[str], completions: Sequence[str], refs: object = None) -> Any:
        if list(prompts) == VAL_PROMPTS:
            return np.full(len(prompts), left.pop(0), dtype=np.float32)
        return _n_good(prompts, completions)

    return reward


def test_iterative_dpo_select_best_round_restores_the_best_rounds_weights(
    tiny_gpt2_dir: str,
) -> None:
    def run(select: bool) -> IterativeDPO:
        reward = _scheduled_val_reward([0.2, 1.0, 0.5])  # rounds 0, 1, 2: round 1 is best
        cfg = _iter_cfg(select_best_round=select)
        kw = {"reward": reward, "val_prompts": VAL_PROMPTS, "config": cfg}
        return IterativeDPO(_lm(tiny_gpt2_dir), PROMPTS, **kw, **RT)  # type: ignore[arg-type]

    agent = run(select=True)
    agent.learn(1)
    after_round_1 = {k: v.clone() for k, v in agent.policy.model.state_dict().items()}
    rows = agent.learn(1)  # the last round: ends with the best round's weights
    assert agent.best_round == 1
    assert rows[-1]["best_round"] == 1
    for k, v in agent.policy.model.state_dict().items():
        assert torch.equal(v, after_round_1[k]), k
    # Without selection the same run (same seeds) ends with round 2's weights.
    plain = run(select=False)
    plain.learn()
    assert plain.best_round == 1
    final = plain.policy.model.state_dict()
    assert any(not torch.equal(v, after_round_1[k]) for k, v in final.items())


def _kl_by_hand(policy: LanguageModel, ref: LanguageModel, out: Any) -> float:
    """Mean over rows of Σ log π(y_j) - log π_ref(y_j) over the completion, from HF logits."""
    kls = []
    with torch.no_grad():
        for b in range(out.sequences.shape[0]):
            ids = out.sequences[b][out.attention_mask[b].bool()][None]  # (1, L) unpadded
            n = int(out.completion_mask[b].sum())
            per_model = []
            for lm in (policy, ref):
                logp = lm.model(ids).logits.log_softmax(-1)[0, :-1]  # (L - 1, V)
                picked = logp.gather(-1, ids[0, 1:, None])[:, 0]  # (L - 1,)
                per_model.append(float(picked[-n:].sum()) if n else 0.0)
            kls.append(per_model[0] - per_model[1])
    return float(np.mean(kls))


def test_iterative_dpo_validation_score_pays_the_kl_to_pi1(tiny_gpt2_dir: str) -> None:
    lm = _lm(tiny_gpt2_dir)
    pi_1 = LanguageModel(copy.deepcopy(lm.model), lm.tokenizer)
    cfg = _iter_cfg(select_kl_coef=0.5, dpo=_cfg(lr=3e-2, batch_size=4))
    agent = IterativeDPO(lm, PROMPTS, reward=_n_good, config=cfg, **RT)
    rows = agent.learn()
    assert rows[0]["val_kl"] == pytest.approx(0.0, abs=1e-5)  # π_1 against itself
    for r in rows:
        assert r["val_score"] == pytest.approx(r["val_reward"] - 0.5 * r["val_kl"])
    by_hand = _kl_by_hand(agent.policy, pi_1, agent._sample_val())
    assert rows[-1]["val_kl"] == pytest.approx(by_hand, rel=1e-4, abs=1e-4)
    assert by_hand > 0.05  # the rounds moved the policy
    scores = [r["val_score"] for r in rows]
    assert agent.best_round == scores.index(max(scores))
    # β_sel = 0 (the default): the score is the reward alone and no KL is computed.
    plain = IterativeDPO(_lm(tiny_gpt2_dir), PROMPTS, reward=_n_good, config=_iter_cfg(), **RT)
    rows = plain.learn(1)
    assert math.isnan(rows[-1]["val_kl"])
    assert rows[-1]["val_score"] == rows[-1]["val_reward"]
    assert plain.ref is None  # nothing needs π_1: no copy kept


def test_iterative_dpo_resume_keeps_pi1_and_the_selection(
    tiny_gpt2_dir: str, tmp_path: Path
) -> None:
    cfg = _iter_cfg(
        reference="original", select_best_round=True, select_kl_coef=0.1, prompts_per_round=4
    )

    def fresh() -> IterativeDPO:
        return IterativeDPO(_lm(tiny_gpt2_dir), PROMPTS, reward=_n_good, config=cfg, **RT)

    straight = fresh()
    straight.learn()
    first = fresh()
    first.learn(1)
    first.save(tmp_path / "ckpt")
    del first
    resumed = IterativeDPO.load(tmp_path / "ckpt", reward=_n_good, **RT)
    resumed.learn()
    assert json.dumps(resumed.history) == json.dumps(straight.history)  # NaN as NaN
    assert resumed.best_round == straight.best_round
    assert straight.ref is not None
    assert resumed.ref is not None
    for model in ("policy", "ref"):
        a, b = getattr(straight, model).model, getattr(resumed, model).model
        for (name, x), y in zip(a.named_parameters(), b.parameters(), strict=True):
            assert torch.equal(x, y), (model, name)


# ---------------------------------------------------------------- learning on the embedded model


def _gold_of_samples(lm: LanguageModel, prompts: Sequence[str], gold: Any, n_new: int) -> float:
    """Mean gold reward of one sampled completion per prompt (fixed seed: common random numbers)."""
    out = generate(
        lm,
        list(prompts),
        max_new_tokens=n_new,
        do_sample=True,
        generator=torch.Generator().manual_seed(123),
    )
    return float(np.mean(gold(list(prompts), out.texts)))


@pytest.mark.slow
def test_dpo_and_dpop_learn_hidden_gold_preferences() -> None:
    """Review prompts, 4 completions sampled from the embedded model, best/worst by VADER (hidden).

    DPO and DPO-Positive train on the same pairs. Both raise held-out implicit-reward accuracy and
    the gold reward of sampled completions; DPO lowers log π_θ(y_w) on its training pairs while
    DPO-Positive keeps it above π_ref.
    """
    torch.manual_seed(0)
    gold = make("sentiment")
    train, val = load("reviews", "train"), load("reviews", "validation")
    lm0 = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    n_new = 16
    tr = sample_pairs(
        lm0,
        train.prompts[:128],
        k=4,
        reward=gold,
        min_margin=0.1,
        max_new_tokens=n_new,
        generator=torch.Generator().manual_seed(0),
    )
    va = sample_pairs(
        lm0,
        val.prompts[:64],
        k=4,
        reward=gold,
        min_margin=0.1,
        max_new_tokens=n_new,
        generator=torch.Generator().manual_seed(1),
    )
    assert len(tr.pairs) >= 96
    assert len(va.pairs) >= 48
    eval_prompts = val.prompts[64:128]
    gold_before = _gold_of_samples(lm0, eval_prompts, gold, n_new)
    results = {}
    for loss in ("sigmoid", "dpop"):
        policy = LanguageModel(copy.deepcopy(lm0.model), lm0.tokenizer)
        cfg = DPOConfig(loss=loss, lr=3e-4, batch_size=16)
        agent = DPO(policy, data=tr.pairs, eval_data=va.pairs, config=cfg, **RT)
        agent.learn(30)
        results[loss] = (
            agent.evaluate(),
            agent.evaluate(tr.pairs),
            _gold_of_samples(policy, eval_prompts, gold, n_new),
        )
    for loss, (held_out, _, gold_after) in results.items():
        assert held_out["accuracy"] >= 0.7, (loss, held_out)  # 0 before training (all r̂ = 0)
        assert held_out["margin"] > 0.1, (loss, held_out)
        assert gold_after > gold_before + 0.1, (loss, gold_before, gold_after)
    # DPO pushes y_l down harder than y_w rises: log π_θ(y_w) falls below π_ref on training pairs.
    assert results["sigmoid"][1]["logratio_chosen"] < -1.0, results["sigmoid"][1]
    assert results["dpop"][1]["logratio_chosen"] >= 0.0, results["dpop"][1]


@pytest.mark.slow
def test_iterative_dpo_raises_gold_reward_round_over_round() -> None:
    torch.manual_seed(0)
    train, val = load("reviews", "train"), load("reviews", "validation")
    lm = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    cfg = IterativeDPOConfig(
        rounds=3,
        k=4,
        updates_per_round=10,
        prompts_per_round=64,
        max_new_tokens=16,
        min_margin=0.05,
        dpo=DPOConfig(lr=1.5e-4, batch_size=16),
    )
    agent = IterativeDPO(
        lm, train.prompts, reward=make("sentiment"), val_prompts=val.prompts[:64], config=cfg, **RT
    )
    rows = agent.learn()
    scores = [r["val_score"] for r in rows]
    assert all(b > a for a, b in itertools.pairwise(scores)), scores
    assert scores[-1] > scores[0] + 0.2, scores
    assert agent.best_score == scores[-1]
