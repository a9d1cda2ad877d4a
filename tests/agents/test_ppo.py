"""PPO: clipped loss by hand, ρ = 1 on the first minibatch, KL control, errors, LoRA, learning."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from textgym.agents import PPO, PPOConfig
from textgym.agents.ppo import KLController, ppo_loss
from torch.testing import assert_close
from toy import make_env
from transformers import GPT2Config, GPT2LMHeadModel

from textgym import LanguageModel
from textgym.rollout import Sampling, collect, evaluate, evaluate_policy

# ---------------------------------------------------------------------------- the loss by hand


def test_ppo_loss_by_hand() -> None:
    # Two tokens, ε = 0.2: ρ = (1.5, 0.5) with Â = (1, 1): min(1.5, 1.2) = 1.2, min(0.5, 0.8) = 0.5.
    logp_old = torch.log(torch.tensor([[0.2, 0.4]]))
    logp = torch.log(torch.tensor([[0.3, 0.2]]))
    adv, mask = torch.ones(1, 2), torch.ones(1, 2)
    # Values: V = (1.0, 0.0), V_old = (0.0, 0.0), R = (2.0, 1.0), ε_V = 0.5:
    # unclipped (1, 1); clipped V = (0.5, 0.0) -> (2.25, 1); max -> (2.25, 1); ½·mean = 0.8125.
    values, values_old, returns = (
        torch.tensor([[1.0, 0.0]]),
        torch.zeros(1, 2),
        torch.tensor([[2.0, 1.0]]),
    )
    entropy = torch.tensor([[1.0, 3.0]])
    loss, terms = ppo_loss(
        logp,
        logp_old,
        adv,
        values,
        values_old,
        returns,
        entropy,
        mask,
        clip_eps=0.2,
        clip_value=0.5,
        vf_coef=0.5,
        ent_coef=0.1,
        n_tokens=2.0,
    )
    assert_close(terms["policy_loss"], torch.tensor(-(1.2 + 0.5) / 2))
    assert_close(terms["value_loss"], torch.tensor(0.8125))
    assert_close(terms["entropy"], torch.tensor(2.0))
    assert_close(loss, torch.tensor(-0.85 + 0.5 * 0.8125 - 0.1 * 2.0))
    assert_close(terms["clip_fraction"], torch.tensor(1.0))


def test_ppo_loss_at_ratio_one_is_minus_mean_advantage() -> None:
    logp = torch.randn(3, 4)
    adv = torch.randn(3, 4)
    mask = torch.ones(3, 4)
    zeros = torch.zeros(3, 4)
    loss, terms = ppo_loss(
        logp, logp, adv, zeros, zeros, zeros, zeros, mask, 0.2, 0.2, 0.0, 0.0, 12.0
    )
    assert_close(loss, -adv.mean())
    assert terms["clip_fraction"] == 0
    assert terms["approx_kl"] == 0


def test_adaptive_kl_controller_follows_ziegler() -> None:
    ctl = KLController(beta=0.1, target=6.0, horizon=100)
    ctl.update(kl=12.0, n_episodes=10)  # error clipped to +0.2: β·(1 + 0.2·10/100)
    assert math.isclose(ctl.value, 0.1 * 1.02)
    ctl.update(kl=5.4, n_episodes=10)  # error -0.1
    assert math.isclose(ctl.value, 0.1 * 1.02 * 0.99)
    fixed = KLController(beta=0.1, target=None, horizon=100)
    fixed.update(kl=50.0, n_episodes=10)
    assert fixed.value == 0.1


# ---------------------------------------------------------------------------- ρ = 1


@pytest.mark.parametrize(
    "sampling",
    [
        Sampling(),
        Sampling(temperature=0.7),
        Sampling(temperature=1.3, top_k=5),
        Sampling(top_p=0.8),
    ],
)
def test_recomputed_logprobs_equal_behaviour_logprobs(
    lm: LanguageModel, sampling: Sampling
) -> None:
    env = make_env(lm)
    rollout = collect(
        lm, env, sampling=sampling, generator=torch.Generator().manual_seed(0), seed=0
    )
    with torch.no_grad():
        logp, entropy, _ = evaluate(lm, rollout, sampling.temperature)
    assert_close(logp, rollout.logprobs, rtol=0, atol=1e-5)  # ρ = exp(logp - logp_old) = 1
    assert torch.isfinite(entropy).all()
    assert (rollout.action_masks is not None) == sampling.truncates


def test_first_minibatch_has_ratio_one(lm: LanguageModel) -> None:
    cfg = PPOConfig(n_epochs=1, n_minibatches=1, sampling=Sampling(temperature=0.8, top_k=8))
    agent = PPO(lm, make_env(lm), config=cfg, progress_bar=False)
    row = agent.learn(1)[0]
    assert row["clip_fraction"] == 0.0
    assert abs(row["approx_kl"]) < 1e-9


def test_kl_is_zero_while_the_policy_is_its_reference(lm: LanguageModel) -> None:
    # π_ref is scored on the support the policy sampled from, at the same temperature.
    cfg = PPOConfig(n_epochs=1, n_minibatches=1, sampling=Sampling(temperature=0.8, top_p=0.9))
    row = PPO(lm, make_env(lm), config=cfg, progress_bar=False).learn(1)[0]
    assert abs(row["kl"]) < 1e-5


def test_action_mask_is_applied_inside_the_policy(lm: LanguageModel) -> None:
    allowed = [0, 5, 6, 7]  # eos and three words
    env = make_env(lm, action_mask=allowed)
    rollout = collect(
        lm, env, sampling=Sampling(), generator=torch.Generator().manual_seed(1), seed=0
    )
    taken = rollout.completion_ids[rollout.completion_mask.bool()]
    assert set(taken.tolist()) <= set(allowed)
    assert rollout.action_masks is not None
    with torch.no_grad():
        logp, _, _ = evaluate(lm, rollout)
    assert_close(logp, rollout.logprobs, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- errors


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="clip_eps"):
        PPOConfig(clip_eps=0)
    with pytest.raises(ValueError, match="lam"):
        PPOConfig(lam=1.5)
    with pytest.raises(ValueError, match="kl_target"):
        PPOConfig(kl_target=1.0, beta=0.0)


def test_minibatches_must_divide_the_batch(lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match="n_minibatches=4"):
        PPO(lm, make_env(lm, num_envs=6), config=PPOConfig(n_minibatches=4))


def test_reference_with_another_vocabulary_is_refused(lm: LanguageModel) -> None:
    config = GPT2Config(vocab_size=80, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    other = LanguageModel(GPT2LMHeadModel(config), lm.tokenizer)
    with pytest.raises(ValueError, match="80 logits"):
        PPO(lm, make_env(lm), ref=other)


def test_the_policy_itself_is_refused_as_reference(lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match="ref is the policy itself"):
        PPO(lm, make_env(lm), ref=lm)


class PairReward:
    name, token_level, needs_references = "pairs", False, False

    def __call__(self, prompts: Any, completions: Any, references: Any = None) -> np.ndarray:
        return np.zeros((len(completions), 2), dtype=np.float32)


def test_reward_of_wrong_shape_fails_at_construction(lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match="shape"):
        PPO(lm, make_env(lm, reward=PairReward()))


def test_non_finite_loss_names_update_and_terms(lm: LanguageModel) -> None:
    agent = PPO(lm, make_env(lm), config=PPOConfig(n_minibatches=2), progress_bar=False)
    assert agent.value_head is not None
    with torch.no_grad():
        agent.value_head.proj.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"update 0: loss=nan.*value_loss=nan"):
        agent.learn(1)


# ---------------------------------------------------------------------------- LoRA, logging


def test_lora_policy_uses_base_as_reference(lm: LanguageModel, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from textgym.agents._common import AdapterOff

    from textgym.training import with_lora

    policy = with_lora(lm, r=4, target_modules=["c_attn"])
    base_before = {k: v.clone() for k, v in policy.model.named_parameters() if "lora" not in k}
    cfg = PPOConfig(n_minibatches=2, lr=1e-2, beta=0.1)
    agent = PPO(policy, make_env(policy), config=cfg, progress_bar=False)
    assert isinstance(agent.ref, AdapterOff)
    rows = agent.learn(2)
    assert rows[1]["kl"] != 0.0  # adapters moved the policy away from the base
    for k, v in policy.model.named_parameters():
        if "lora" not in k:
            assert torch.equal(v, base_before[k]), k
    agent.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "adapter").is_dir()
    merged = LanguageModel.from_pretrained(tmp_path / "ckpt" / "policy", device="cpu")
    rollout = collect(policy, make_env(policy), generator=torch.Generator().manual_seed(0), seed=0)
    with torch.no_grad():
        assert_close(evaluate(merged, rollout)[0], evaluate(policy, rollout)[0], rtol=0, atol=1e-4)
    again = PPO.load(tmp_path / "ckpt", make_env(policy), device="cpu", progress_bar=False)
    assert again.step == 2


def test_csv_and_tensorboard_logs(lm: LanguageModel, tmp_path: Path) -> None:
    tensorboard = True
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        tensorboard = False
    agent = PPO(
        lm,
        make_env(lm),
        config=PPOConfig(n_minibatches=2, n_epochs=1),
        log_dir=tmp_path,
        tensorboard=tensorboard,
        progress_bar=False,
    )
    history = agent.learn(2)
    lines = (tmp_path / "progress.csv").read_text().splitlines()
    assert len(lines) == 3
    assert "reward" in lines[0]
    assert "kl" in lines[0]
    assert {"reward", "kl", "entropy", "value_loss", "clip_fraction", "time_rollout"} <= set(
        history[0]
    )
    if tensorboard:
        assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


@pytest.mark.slow
def test_ppo_raises_held_out_sentiment_with_bounded_kl() -> None:
    lm = LanguageModel.from_pretrained(device="cpu")
    kwargs = {"model": lm, "task": "reviews", "reward": "sentiment", "max_new_tokens": 16}
    train = gym.make_vec("TextGen-v0", num_envs=32, split="train", **kwargs)
    held_out = gym.make_vec("TextGen-v0", num_envs=64, split="validation", **kwargs)
    cfg = PPOConfig(lr=3e-4, beta=0.02, n_epochs=2, n_minibatches=2, seed=0)
    agent = PPO(lm, train, config=cfg, progress_bar=False)
    before = evaluate_policy(lm, held_out, ref=agent.ref, seed=1)
    history = agent.learn(12)
    after = evaluate_policy(lm, held_out, ref=agent.ref, seed=1)
    # Measured (seed 0): 0.533 -> 0.820, KL 10.8 nats/episode; experiments/repro_rl_sentiment.py
    assert after["reward"] > before["reward"] + 0.15, (before, after)
    assert after["kl"] < 20.0, after
    assert max(row["kl"] for row in history) < 20.0


def _fresh_agent(shared: LanguageModel, config: PPOConfig) -> tuple[LanguageModel, PPO, Any]:
    """A PPO agent on a fresh copy of the embedded model (the shared fixture may be frozen), and
    one round it collected."""
    policy = LanguageModel(
        GPT2LMHeadModel.from_pretrained(shared.model.name_or_path), shared.tokenizer
    )
    env = make_env(policy, num_envs=4, reward=lambda prompt, completion: 1.0)
    agent = PPO(policy, env, config=config, progress_bar=False)
    return policy, agent, agent.collect()


@pytest.mark.parametrize("ent_coef", [0.0, 0.01])
def test_entropy_has_gradients_only_when_the_loss_uses_it(
    embedded_lm: LanguageModel, ent_coef: float
) -> None:
    policy, agent, rollout = _fresh_agent(embedded_lm, PPOConfig(ent_coef=ent_coef))
    logp, entropy, _ = agent.trainable(rollout)
    assert logp.requires_grad
    assert entropy.requires_grad == (ent_coef != 0)  # logged only: backward keeps no (B, T, V)
    with_grad = evaluate(policy, rollout, value_head=agent.value_head)[1]
    assert_close(entropy, with_grad)  # the same values either way


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=0.7, top_k=20)])
def test_chunked_evaluate_equals_the_full_pass(
    embedded_lm: LanguageModel, sampling: Sampling
) -> None:
    policy, agent, rollout = _fresh_agent(embedded_lm, PPOConfig(sampling=sampling))
    assert rollout.completion_ids.shape[1] > 3  # several chunks of 3 below

    def run(chunk: int | None) -> list[torch.Tensor]:
        policy.logprob_chunk = chunk
        policy.model.zero_grad(set_to_none=True)
        logp, ent, values = evaluate(policy, rollout, sampling.temperature, agent.value_head)
        assert values is not None
        (logp.sum() + ent.sum() + values.sum()).backward()
        grads = [p.grad.clone() for p in policy.model.parameters() if p.grad is not None]
        return [logp.detach(), ent.detach(), values.detach(), *grads]

    full, chunked = run(None), run(3)
    assert len(full) == len(chunked)
    for a, b in zip(full, chunked, strict=True):
        assert_close(a, b, rtol=1e-4, atol=1e-5)
