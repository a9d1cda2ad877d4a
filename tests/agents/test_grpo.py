"""The GRPO family: advantages and losses by hand, TRL's GRPO loss, presets, errors, the agent's
groups and dynamic sampling, and (slow) learning on the embedded model."""

from __future__ import annotations

import math
import types
import warnings
from typing import Any

import pytest
import torch
from textgym.agents import GRPO, GRPOConfig
from textgym.agents.grpo import (
    PRESETS,
    advantages_dr_grpo,
    advantages_grpo,
    grpo_loss,
    informative_groups,
)
from torch.testing import assert_close
from toy import make_env

from textgym import LanguageModel
from textgym.rollout import evaluate_policy

# Two groups of G = 4: one with signal, one whose rewards are all equal (zero variance).
REWARDS = torch.tensor([1.0, 0.0, 0.0, 3.0, 2.0, 2.0, 2.0, 2.0])
LENGTHS = [3, 1, 2, 3]  # unequal completion lengths for the loss tests (one group, T = 3)


def test_grpo_and_dr_grpo_advantages_by_hand() -> None:
    mean, std = 1.0, math.sqrt((0 + 1 + 1 + 4) / 3)  # group 1; Bessel-corrected as TRL
    want = [(r - mean) / (std + 1e-4) for r in (1.0, 0.0, 0.0, 3.0)] + [0.0] * 4
    assert_close(advantages_grpo(REWARDS, 4), torch.tensor(want))
    assert_close(advantages_dr_grpo(REWARDS, 4), torch.tensor([0.0, -1.0, -1.0, 2.0, 0, 0, 0, 0]))
    assert advantages_grpo(REWARDS, 4)[4:].eq(0).all()  # no signal, no NaN from std = 0
    with pytest.raises(ValueError, match=r"\(8,\) do not split into groups of 3"):
        advantages_grpo(REWARDS, 3)


def test_informative_groups_drop_zero_variance_groups() -> None:
    assert informative_groups(REWARDS, 4).tolist() == [True] * 4 + [False] * 4
    assert informative_groups(REWARDS, 2).tolist() == [True, True, True, True] + [False] * 4


def loss_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1.0] * n + [0.0] * (3 - n) for n in LENGTHS])  # (4, 3)
    logp_old = -torch.rand(4, 3, generator=g) * 2 * mask
    logp = (logp_old + 0.4 * torch.randn(4, 3, generator=g)) * mask  # ratios well past the clip
    logp_ref = (logp_old + 0.3 * torch.randn(4, 3, generator=g)) * mask
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5])
    return logp, logp_old, logp_ref, adv, mask


def by_hand(
    importance: str, aggregation: str, lo: float, hi: float, beta: float, max_length: int = 5
) -> float:
    """The loss with Python floats, token by token (module docstring of agents/grpo.py)."""
    logp, logp_old, logp_ref, adv, _ = (t.tolist() for t in loss_inputs())
    rows = []
    for i, n in enumerate(LENGTHS):
        seq = sum(logp[i][t] - logp_old[i][t] for t in range(n)) / n
        row = []
        for t in range(n):
            log_rho = seq if importance == "sequence" else logp[i][t] - logp_old[i][t]
            rho = math.exp(log_rho)
            clipped = min(max(rho, 1 - lo), 1 + hi)
            loss = -min(rho * adv[i], clipped * adv[i])
            r = math.exp(logp_ref[i][t] - logp[i][t])
            row.append(loss + beta * (r - math.log(r) - 1))
        rows.append(row)
    if aggregation == "sequence_mean":
        return sum(sum(r) / len(r) for r in rows) / len(rows)
    if aggregation == "token_mean":
        return sum(map(sum, rows)) / sum(LENGTHS)
    return sum(map(sum, rows)) / (len(rows) * max_length)


@pytest.mark.parametrize("importance", ["token", "sequence"])
@pytest.mark.parametrize("aggregation", ["sequence_mean", "token_mean", "constant"])
@pytest.mark.parametrize(
    ("lo", "hi", "beta"), [(0.2, 0.2, 0.0), (0.2, 0.28, 0.04), (0.1, 0.3, 0.5)]
)
def test_loss_equals_a_hand_computation(
    importance: str, aggregation: str, lo: float, hi: float, beta: float
) -> None:
    logp, logp_old, logp_ref, adv, mask = loss_inputs()
    loss, terms = grpo_loss(
        logp, logp_old, adv, mask, clip_eps_low=lo, clip_eps_high=hi, importance=importance,  # type: ignore[arg-type]
        aggregation=aggregation, max_length=5, logp_ref=logp_ref, beta=beta,  # type: ignore[arg-type]
    )  # fmt: skip
    assert loss.item() == pytest.approx(by_hand(importance, aggregation, lo, hi, beta), rel=1e-5)
    if importance == "token":
        assert 0 < terms["clip_low_fraction"] + terms["clip_high_fraction"] < 1


def test_the_loss_has_the_policy_gradient_at_ratio_one() -> None:
    """At π_θ = π_old (μ = 1), ∇L = -(1/G)·Σ_i Â_i·(1/|o_i|)·Σ_t ∇log π_θ for "sequence_mean"."""
    _, logp_old, _, adv, mask = loss_inputs()
    logp = logp_old.clone().requires_grad_(True)
    loss, _ = grpo_loss(logp, logp_old, adv, mask, clip_eps_low=0.2, clip_eps_high=0.2)
    loss.backward()
    lengths = torch.tensor(LENGTHS, dtype=torch.float32)[:, None]
    assert_close(logp.grad, -(adv[:, None] / lengths / 4) * mask)


def test_loss_errors_name_what_is_missing() -> None:
    logp, logp_old, _, adv, mask = loss_inputs()
    with pytest.raises(ValueError, match="'constant' needs max_length"):
        grpo_loss(logp, logp_old, adv, mask, clip_eps_low=0.2, clip_eps_high=0.2,
                  aggregation="constant")  # fmt: skip
    with pytest.raises(ValueError, match="pass logp_ref"):
        grpo_loss(logp, logp_old, adv, mask, clip_eps_low=0.2, clip_eps_high=0.2, beta=0.1)


# ---------------------------------------------------------------------------- TRL


def trl_loss(loss_type: str, importance: str, lo: float, hi: float, beta: float) -> torch.Tensor:
    """TRL's ``GRPOTrainer._compute_loss`` on our tensors, its model call replaced by them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl import GRPOTrainer
    logp, logp_old, logp_ref, adv, mask = loss_inputs()
    accelerator = types.SimpleNamespace(
        num_processes=1, gather=lambda x: x, gather_for_metrics=lambda x: x,
        reduce=lambda x, reduction: x, sync_gradients=True,
    )  # fmt: skip
    fake = types.SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level=importance, beta=beta, loss_type=loss_type,
        epsilon_low=lo, epsilon_high=hi, use_vllm=False, model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=5, accelerator=accelerator,
        _entropy_bonus_enabled=False, aux_loss_enabled=False,
        args=types.SimpleNamespace(
            use_bias_correction_kl=False, delta=None, steps_per_generation=1
        ),
        _metrics={"train": _Lists(), "eval": _Lists()},
    )  # fmt: skip
    inputs = {
        "prompt_ids": torch.zeros(4, 1, dtype=torch.long),
        "prompt_mask": torch.ones(4, 1, dtype=torch.long),
        "completion_ids": torch.zeros(4, 3, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": logp_old,
        "ref_per_token_logps": logp_ref,
        "num_items_in_batch": mask.sum(),
    }
    return GRPOTrainer._compute_loss(fake, None, inputs)


class _Lists(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> list[float]:
        self[key] = []
        return self[key]


@pytest.mark.parametrize(
    ("loss_type", "aggregation"),
    [("grpo", "sequence_mean"), ("dapo", "token_mean"), ("dr_grpo", "constant")],
)
@pytest.mark.parametrize("importance", ["token", "sequence"])
@pytest.mark.parametrize(("lo", "hi", "beta"), [(0.2, 0.2, 0.0), (0.2, 0.28, 0.04)])
def test_loss_equals_trl(
    loss_type: str, aggregation: str, importance: str, lo: float, hi: float, beta: float
) -> None:
    pytest.importorskip("trl")
    logp, logp_old, logp_ref, adv, mask = loss_inputs()
    ours, _ = grpo_loss(
        logp, logp_old, adv, mask, clip_eps_low=lo, clip_eps_high=hi, importance=importance,  # type: ignore[arg-type]
        aggregation=aggregation, max_length=5, logp_ref=logp_ref, beta=beta,  # type: ignore[arg-type]
    )  # fmt: skip
    assert_close(ours, trl_loss(loss_type, importance, lo, hi, beta), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- config


def test_presets_are_the_papers_choices() -> None:
    dapo = GRPOConfig.preset("dapo", lr=1e-3)
    assert (dapo.loss_aggregation, dapo.clip_eps_high, dapo.dynamic_sampling, dapo.lr) == (
        "token_mean", 0.28, True, 1e-3,
    )  # fmt: skip
    dr = GRPOConfig.preset("dr_grpo")
    assert (dr.advantage, dr.loss_aggregation, dr.beta) == ("dr_grpo", "constant", 0.0)
    assert GRPOConfig.preset("gspo").importance == "sequence"
    assert GRPOConfig.preset("grpo") == GRPOConfig()
    assert set(PRESETS) == {"grpo", "dr_grpo", "dapo", "gspo"}
    with pytest.raises(ValueError, match=r"unknown GRPO preset 'ppo'.*'dapo'"):
        GRPOConfig.preset("ppo")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"group_size": 1}, ValueError, "group_size"),
        ({"advantage": "rloo"}, ValueError, "unknown advantage 'rloo'"),
        ({"loss_aggregation": "sum"}, ValueError, "unknown loss_aggregation"),
        ({"importance": "seq"}, ValueError, "unknown importance"),
        ({"kl": "k2"}, ValueError, "unknown kl"),
        ({"clip_eps_low": 1.0}, ValueError, "clip_eps_low"),
        ({"clip_eps_high": 0.0}, ValueError, "clip_eps_high"),
        ({"beta": -0.1}, ValueError, "beta"),
        ({"lr": "1e-4"}, TypeError, "GRPOConfig.lr must be"),
    ],
)
def test_config_is_validated(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        GRPOConfig(**kwargs)


def test_num_envs_must_hold_whole_groups(tiny_gpt2_lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match="num_envs=6 must split into groups of group_size=4"):
        GRPO(tiny_gpt2_lm, make_env(tiny_gpt2_lm, num_envs=6), progress_bar=False)
    with pytest.raises(ValueError, match="2 groups into n_minibatches=4"):
        GRPO(tiny_gpt2_lm, make_env(tiny_gpt2_lm, num_envs=8),
             config=GRPOConfig(n_minibatches=4), progress_bar=False)  # fmt: skip


# ---------------------------------------------------------------------------- the agent


def fresh(tiny_gpt2_dir: str) -> LanguageModel:
    return LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")


def test_rounds_pin_prompts_in_groups_and_update(tiny_gpt2_dir: str) -> None:
    lm = fresh(tiny_gpt2_dir)
    agent = GRPO(lm, make_env(lm, num_envs=8), config=GRPOConfig(lr=1e-2), progress_bar=False)
    rollout = agent.collect()
    idx = rollout.prompt_indices.reshape(2, 4)
    assert (idx == idx[:, :1]).all()  # G consecutive rows share a prompt
    before = [p.detach().clone() for p in lm.model.parameters()]
    row = agent.learn(1)[0]
    assert math.isfinite(row["loss"])
    assert row["clip_low_fraction"] == row["clip_high_fraction"] == 0.0  # μ = 1: ρ = 1
    assert row["kl_k3"] == pytest.approx(0.0, abs=1e-6)  # first step: π_θ = π_ref
    assert any(not torch.equal(a, b) for a, b in zip(before, lm.model.parameters(), strict=True))


def test_dynamic_sampling_skips_a_round_without_signal(tiny_gpt2_dir: str) -> None:
    lm = fresh(tiny_gpt2_dir)
    env = make_env(lm, num_envs=8, reward=lambda prompt, completion: 1.0)  # every group constant
    agent = GRPO(lm, env, config=GRPOConfig.preset("dapo"), progress_bar=False)
    before = [p.detach().clone() for p in lm.model.parameters()]
    row = agent.learn(1)[0]
    assert row["groups_kept"] == 0.0
    assert row["skipped"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, lm.model.parameters(), strict=True))


def test_k1_in_the_reward_shifts_the_advantages(tiny_gpt2_dir: str) -> None:
    """β·Σ_t k1 is subtracted from R_i before the group advantages: the first update is β = 0's
    (π_θ = π_ref, k1 = 0), the second differs once the policy has moved; "k3_loss" puts k3 in the
    loss instead and reports it."""
    params, rows = {}, {}
    for name, beta, kl in [("none", 0.0, "k1_reward"), ("k1", 0.5, "k1_reward"),
                           ("k3", 0.5, "k3_loss")]:  # fmt: skip
        lm = fresh(tiny_gpt2_dir)
        cfg = GRPOConfig(lr=1e-2, beta=beta, kl=kl)  # type: ignore[arg-type]
        agent = GRPO(lm, make_env(lm, num_envs=8), config=cfg, progress_bar=False)
        rows[name] = agent.learn(1)
        params[name, 1] = [p.detach().clone() for p in lm.model.parameters()]
        rows[name] += agent.learn(1)
        params[name, 2] = list(lm.model.parameters())

    def same(a: str, b: str, step: int) -> bool:  # k1 at step 0 is 0 up to cache round-off
        pairs = zip(params[a, step], params[b, step], strict=True)
        return all(torch.allclose(x, y, atol=1e-5) for x, y in pairs)

    assert same("none", "k1", 1)
    assert not same("none", "k1", 2)
    assert rows["k1"][1]["kl"] != 0.0
    assert rows["k1"][1]["kl_k3"] == 0.0
    assert rows["k3"][1]["kl_k3"] > 0.0


# ---------------------------------------------------------------------------- slow: learning


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["grpo", "dr_grpo", "dapo"])
def test_grpo_family_raises_held_out_sentiment(preset: str) -> None:
    import gymnasium as gym

    lm = LanguageModel.from_pretrained(device="cpu")
    kwargs = {"model": lm, "task": "reviews", "reward": "sentiment", "max_new_tokens": 16}
    train = gym.make_vec("TextGen-v0", num_envs=32, split="train", **kwargs)
    held_out = gym.make_vec("TextGen-v0", num_envs=64, split="validation", **kwargs)
    cfg = GRPOConfig.preset(preset, lr=3e-4, seed=0)
    agent = GRPO(lm, train, config=cfg, progress_bar=False)
    before = evaluate_policy(lm, held_out, seed=1)
    agent.learn(20)
    after = evaluate_policy(lm, held_out, seed=1)
    assert after["reward"] > before["reward"] + 0.1, (before, after)
