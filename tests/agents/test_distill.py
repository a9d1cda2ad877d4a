"""On-policy distillation (GKD): the divergences against a direct computation and TRL, masking,
the on/off-policy mixture, input checks, resume, and learning towards the embedded model."""

from __future__ import annotations

import copy
import math
import typing
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from textgym.agents import Distill, DistillConfig
from textgym.agents.bc import Demonstrations, state_logits
from textgym.agents.distill import (
    DIVERGENCES,
    Divergence,
    distill_loss,
    evaluate_distillation,
    forward_kl,
    jsd,
    reverse_kl,
    teacher_samples,
)
from toy import make_env
from transformers import GPT2Config, GPT2LMHeadModel

from textgym import LanguageModel

PAIRS = [
    ("the movie was", "great and i loved it"),
    ("the plot", "is very good"),
    ("a dog", "plays in the park"),
    ("this film", "was not good but bad"),
    ("one two", "three four five"),
]
CASES = [("forward_kl", 0.0), ("reverse_kl", 0.0), ("jsd", 0.1), ("jsd", 0.5), ("jsd", 0.9)]


# ---------------------------------------------------------------------------- the losses


def random_logits(seed: int = 0, shape: tuple[int, ...] = (3, 4, 7)) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(shape, generator=g) * 2  # (B, T, V)
    teacher = torch.randn(shape, generator=g) * 2  # (B, T, V)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)  # (B, T)
    return student, teacher, mask


def by_hand(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, name: str, beta: float,
    tau: float,
) -> float:  # fmt: skip
    """The token mean of D(p_T ‖ q_θ), one state at a time, in float64 numpy."""

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z / tau - (z / tau).max())
        return e / e.sum()

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sum(a * np.log(a / b)))

    total, count = 0.0, 0
    for b in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if mask[b, t] == 0:
                continue
            p = softmax(teacher[b, t].double().numpy())  # p_T
            q = softmax(student[b, t].double().numpy())  # q_θ
            m = beta * p + (1 - beta) * q
            d = {
                "forward_kl": kl(p, q),
                "reverse_kl": kl(q, p),
                "jsd": beta * kl(p, m) + (1 - beta) * kl(q, m),
            }[name]
            total, count = total + d, count + 1
    return total / count


@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize(("name", "beta"), CASES)
def test_loss_equals_a_direct_computation(name: Any, beta: float, tau: float) -> None:
    student, teacher, mask = random_logits()
    got = distill_loss(student, teacher, mask, name, beta, tau)
    want = by_hand(student, teacher, mask, name, beta, tau)
    torch.testing.assert_close(got.double(), torch.tensor(want).double(), rtol=1e-5, atol=1e-6)


def test_jsd_ends_are_forward_and_reverse_kl_and_its_limits() -> None:
    student, teacher, _ = random_logits(1)
    logq = torch.log_softmax(student.double(), -1)  # (B, T, V)
    logp = torch.log_softmax(teacher.double(), -1)
    fkl, rkl = forward_kl(logq, logp), reverse_kl(logq, logp)  # (B, T)
    assert torch.equal(jsd(logq, logp, 0.0), fkl)  # β = 0: KL(p_T ‖ q_θ)
    assert torch.equal(jsd(logq, logp, 1.0), rkl)  # β = 1: KL(q_θ ‖ p_T)
    eps = 1e-7  # JSD(β)/β -> forward KL as β -> 0, JSD(β)/(1-β) -> reverse KL as β -> 1
    torch.testing.assert_close(jsd(logq, logp, eps) / eps, fkl, rtol=1e-4, atol=1e-8)
    near_one = 1 - eps
    torch.testing.assert_close(
        jsd(logq, logp, near_one) / (1 - near_one), rkl, rtol=1e-4, atol=1e-8
    )
    # JSD(0.5) is the symmetric Jensen-Shannon divergence: bounded by log 2, symmetric
    half = jsd(logq, logp, 0.5)
    assert bool((half <= math.log(2)).all())
    torch.testing.assert_close(half, jsd(logp, logq, 0.5))


@pytest.mark.parametrize(("name", "beta"), [*CASES, ("jsd", 0.0), ("jsd", 1.0)])
def test_masked_tokens_contribute_nothing(name: Any, beta: float) -> None:
    student, teacher, mask = random_logits(2)
    student.requires_grad_(True)
    loss = distill_loss(student, teacher, mask, name, beta)
    (grad,) = torch.autograd.grad(loss, student)
    off = mask == 0
    wild_s, wild_t = student.detach().clone(), teacher.clone()
    wild_s[off] = torch.randn(int(off.sum()), 7) * 1e3  # huge logits where the mask is 0
    wild_t[off] = torch.randn(int(off.sum()), 7) * 1e3
    wild_s.requires_grad_(True)
    wild = distill_loss(wild_s, wild_t, mask, name, beta)
    (wild_grad,) = torch.autograd.grad(wild, wild_s)
    assert torch.equal(wild.detach(), loss.detach())
    assert torch.equal(wild_grad, grad)
    assert bool((grad[off] == 0).all())
    assert distill_loss(student, teacher, torch.zeros_like(mask), name, beta) == 0  # no tokens


@pytest.mark.parametrize(("name", "beta"), [*CASES, ("jsd", 0.0), ("jsd", 1.0)])
def test_loss_is_zero_when_the_student_is_the_teacher(name: Any, beta: float) -> None:
    student, _, mask = random_logits(3)
    for tau in (1.0, 0.5):
        assert abs(float(distill_loss(student, student.clone(), mask, name, beta, tau))) < 1e-6


def test_a_swapped_direction_is_not_the_same_loss() -> None:
    """Forward and reverse KL differ on these logits: a swap would fail the by-hand test."""
    student, teacher, mask = random_logits()
    f = float(distill_loss(student, teacher, mask, "forward_kl"))
    r = float(distill_loss(student, teacher, mask, "reverse_kl"))
    assert abs(f - r) > 0.1


def test_logits_of_other_shapes_are_refused() -> None:
    student, teacher, mask = random_logits()
    with pytest.raises(ValueError, match=r"\(3, 4, 7\).*\(3, 4, 6\)"):
        distill_loss(student, teacher[..., :6], mask)


@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_jsd_equals_trl_gkd(beta: float, tau: float) -> None:
    pytest.importorskip("trl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trl.experimental warns that its API is unstable
        from trl.experimental.gkd import GKDTrainer
    student, teacher, mask = random_logits(4, (3, 4, 11))
    labels = torch.where(mask > 0, 5, -100)  # TRL masks label -100; its batchmean is a token mean
    want = GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=beta, temperature=tau)
    got = distill_loss(student, teacher, mask, "jsd", beta, tau)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- config and inputs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lmbda": 1.5}, "lmbda"),
        ({"lmbda": -0.1}, "lmbda"),
        ({"beta": 1.01}, "beta"),
        ({"temperature": 0.0}, "temperature"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"divergence": "kl"}, "unknown divergence"),
    ],
)
def test_config_is_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DistillConfig(**kwargs)


def test_the_divergence_names_are_the_functions_it_picks() -> None:
    assert set(typing.get_args(Divergence)) == set(DIVERGENCES)
    with pytest.raises(TypeError, match=r"DistillConfig\.lr must be a finite float"):
        DistillConfig(lr="1e-3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="beta"):
        DistillConfig(beta=math.nan)


def perturbed(tiny_gpt2_dir: str, seed: int = 1, **kwargs: Any) -> LanguageModel:
    """The tiny GPT-2 with Gaussian noise on every weight: a student that differs from it."""
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu", **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lm.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return lm


def test_a_teacher_of_another_vocabulary_is_refused(
    lm: LanguageModel, embedded_lm: LanguageModel
) -> None:
    env = make_env(lm, num_envs=2)
    with pytest.raises(ValueError, match=r"student .* 64 logits.*teacher .* 1536"):
        Distill(lm, embedded_lm, env)
    tokenizer = copy.deepcopy(lm.tokenizer)
    tokenizer.add_tokens(["zebra"])  # 64 logits still, but another token list
    other = LanguageModel(copy.deepcopy(lm.model), tokenizer)
    with pytest.raises(ValueError, match="different tokenizers"):
        Distill(lm, other, env)


def test_missing_or_inconsistent_inputs_are_refused(lm: LanguageModel, tiny_gpt2_dir: str) -> None:
    teacher = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    with pytest.raises(ValueError, match=r"env .* or data"):
        Distill(lm, teacher)
    with pytest.raises(ValueError, match=r"lmbda=0\.5 asks for on-policy"):
        Distill(lm, teacher, data=PAIRS)
    with pytest.raises(ValueError, match="the student itself"):
        Distill(lm, lm, make_env(lm, num_envs=2))
    with pytest.warns(UserWarning, match="data is never used"):
        Distill(lm, teacher, make_env(lm, num_envs=2), data=PAIRS, config=DistillConfig(lmbda=1))


# ---------------------------------------------------------------------------- the agent


def test_first_update_on_data_is_the_loss_of_the_data(tiny_gpt2_dir: str) -> None:
    teacher = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    student = perturbed(tiny_gpt2_dir)
    cfg = DistillConfig(lmbda=0.0, divergence="reverse_kl", batch_size=len(PAIRS))
    agent = Distill(student, teacher, data=PAIRS, config=cfg, progress_bar=False)
    d = Demonstrations.from_pairs(student, PAIRS)
    with torch.no_grad():
        want = distill_loss(
            state_logits(student, d), state_logits(teacher, d), d.mask, "reverse_kl"
        )
    row = agent.learn(1)[0]
    assert row["loss"] == pytest.approx(float(want), rel=1e-5)
    assert row["reverse_kl"] == pytest.approx(float(want), rel=1e-5)  # τ = 1: the same number
    assert row["on_policy"] == 0.0
    assert row["length"] == pytest.approx(float(d.mask.sum(-1).mean()))


@pytest.mark.parametrize("lmbda", [0.0, 0.5, 1.0])
def test_on_policy_fraction_follows_lambda(lmbda: float, tiny_gpt2_dir: str) -> None:
    teacher = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    student = perturbed(tiny_gpt2_dir)
    env = make_env(student, num_envs=2, max_new_tokens=3)
    agent = Distill(student, teacher, env, config=DistillConfig(lmbda=lmbda), progress_bar=False)
    rows = agent.learn(12)
    flags = [r["on_policy"] for r in rows]
    assert rows[-1]["on_policy_fraction"] == pytest.approx(sum(flags) / len(flags))
    if lmbda in (0.0, 1.0):
        assert set(flags) == {lmbda}
    else:
        assert set(flags) == {0.0, 1.0}  # the coin of GKD Alg. 1, seeded
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_the_teacher_passed_in_keeps_its_parameters_trainable(tiny_gpt2_dir: str) -> None:
    teacher = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    before = {n: p.clone() for n, p in teacher.model.named_parameters()}
    env = make_env(teacher, num_envs=2)
    agent = Distill(perturbed(tiny_gpt2_dir), teacher, env, progress_bar=False)
    agent.learn(2)
    for name, p in teacher.model.named_parameters():
        assert p.requires_grad, name  # a shared model used elsewhere is not frozen behind its back
        assert torch.equal(p, before[name]), name  # and it does not learn


def test_teacher_samples_are_the_teachers_completions(tiny_gpt2_dir: str) -> None:
    teacher = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    env = make_env(teacher, num_envs=4)
    data = teacher_samples(teacher, env, rounds=2, seed=3)
    assert len(data) == 8
    assert torch.equal(data.labels, data.completion_ids)
    again = teacher_samples(teacher, env, rounds=2, seed=3)
    assert torch.equal(again.completion_ids, data.completion_ids)  # seeded


def build(tiny_gpt2_dir: str, source: str) -> tuple[Distill, LanguageModel, Any]:
    teacher = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    student = perturbed(tiny_gpt2_dir)
    env = make_env(student, num_envs=3, max_new_tokens=4)
    data = PAIRS if source == "data" else None
    cfg = DistillConfig(lmbda=0.5, batch_size=2, divergence="jsd", beta=0.3, temperature=1.5)
    return Distill(student, teacher, env, data=data, config=cfg, progress_bar=False), teacher, env


def untimed(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if not k.startswith("time")} for r in rows]


@pytest.mark.parametrize("source", ["data", "teacher_samples"])
def test_resume_equals_uninterrupted_run(source: str, tiny_gpt2_dir: str, tmp_path: Path) -> None:
    straight, _, _ = build(tiny_gpt2_dir, source)
    straight.learn(8)
    first, teacher, env = build(tiny_gpt2_dir, source)
    first.learn(4)
    first.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "student" / "config.json").exists()
    assert not (tmp_path / "ckpt" / "teacher").exists()  # the teacher is passed again on load
    resumed = Distill.load(tmp_path / "ckpt", teacher, env, device="cpu", progress_bar=False)
    resumed.learn(4)
    assert untimed(resumed.history) == untimed(straight.history)
    for (name, a), b in zip(
        straight.student.model.named_parameters(), resumed.student.model.parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    assert resumed.epoch == straight.epoch
    assert resumed.rounds == straight.rounds


def test_load_refuses_another_teacher_or_a_missing_env(tiny_gpt2_dir: str, tmp_path: Path) -> None:
    agent, teacher, env = build(tiny_gpt2_dir, "data")
    agent.learn(1)
    agent.save(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="not the one"):
        Distill.load(tmp_path / "ckpt", perturbed(tiny_gpt2_dir, seed=5), env, device="cpu")
    with pytest.raises(ValueError, match="saved with an env"):
        Distill.load(tmp_path / "ckpt", teacher, device="cpu")


def test_a_bf16_student_trains_and_resumes_in_bf16(tiny_gpt2_dir: str, tmp_path: Path) -> None:
    teacher = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    student = perturbed(tiny_gpt2_dir, compute_dtype="bfloat16")  # passes under autocast
    agent = Distill(
        student, teacher, data=PAIRS, config=DistillConfig(lmbda=0.0), progress_bar=False
    )
    rows = agent.learn(2)
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert rows[1]["loss"] < rows[0]["loss"]
    agent.save(tmp_path / "ckpt")
    resumed = Distill.load(tmp_path / "ckpt", teacher, device="cpu", progress_bar=False)
    assert resumed.student.compute_dtype == torch.bfloat16


# ---------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_student_gets_closer_to_the_embedded_teacher(embedded_lm: LanguageModel) -> None:
    """A fresh 2-layer, 64-dim GPT-2 on the embedded model's tokenizer (a quarter of its width,
    half its depth) distilled from the embedded model: GKD's JSD(0.5), λ = 0.5, 120 updates of 16
    completions of the review task. Per-token KL to the teacher on the student's own completions
    of held-out (validation) prompts, same sampler seed before and after, drops by a clear margin
    (seed 0: reverse KL 8.4 -> 4.7, forward KL 6.0 -> 3.7; about 30 s on a shared 2-core CPU)."""
    teacher = embedded_lm
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=teacher.vocab_size, n_positions=128, n_embd=64, n_layer=2, n_head=2,
        bos_token_id=0, eos_token_id=0, pad_token_id=1,
    )  # fmt: skip
    student = LanguageModel(GPT2LMHeadModel(config), teacher.tokenizer, device="cpu")

    def env(split: str, n: int) -> Any:
        return gym.make_vec(
            "TextGen-v0", num_envs=n, model=student, task="reviews", split=split,
            reward=lambda p, c: 0.0, max_new_tokens=16,
        )  # fmt: skip

    held_out = env("validation", 32)
    before = evaluate_distillation(student, teacher, held_out, seed=1)
    agent = Distill(student, teacher, env("train", 16), config=DistillConfig(lr=3e-3))
    agent.learn(120)
    after = evaluate_distillation(student, teacher, held_out, seed=1)
    assert after["reverse_kl"] < 0.7 * before["reverse_kl"], (before, after)
    assert after["forward_kl"] < 0.7 * before["forward_kl"], (before, after)
    assert 0.3 < agent.history[-1]["on_policy_fraction"] < 0.7
