"""Agents on multi-turn episodes: losses over the policy's tokens only, by hand; BC and DAgger on
multi-turn demonstrations; (slow) RL raises the calculator task's accuracy over a BC start."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from textgym.agents import GRPO, PPO, REINFORCE, GRPOConfig, PPOConfig, REINFORCEConfig
from textgym.agents.bc import Demonstrations, bc_loss, state_logits
from textgym.agents.dagger import collect_labelled

from textgym import LanguageModel
from textgym.envs import TextGenVectorEnv
from textgym.multiturn import MultiTurnTask, Reply, Transcript, load
from textgym.rollout import evaluate
from textgym.tasks import Task

PROMPTS = ["the movie was", "i loved the film", "red blue green", "a dog"]
STOPS = ("the", "a", "and", "is", "it")  # frequent enough that a random policy ends turns


def respond(transcript: Transcript) -> Reply:
    """Answers two turns (paying -0.5 each), then ends the episode (paying 1 more)."""
    if len(transcript.env_turns) >= 2:
        return Reply(None, reward=1.0)
    return Reply(" the dog runs", reward=-0.5)


def words(prompt: str, completion: str) -> float:
    return float(len(completion.split()))


def multi_turn_env(lm: LanguageModel, num_envs: int = 4) -> TextGenVectorEnv:
    task = MultiTurnTask.from_task(
        Task.from_list(PROMPTS, stop_sequences=STOPS), responder=respond, max_turns=4
    )
    return TextGenVectorEnv(num_envs, model=lm, task=task, reward=words, max_new_tokens=30)


def policy_columns(rollout: Any, b: int, x: torch.Tensor) -> list[float]:
    """Row b of x at its policy tokens, in transcript order."""
    return x[b][rollout.completion_mask[b] > 0].tolist()


def test_reinforce_loss_by_hand_over_policy_tokens(lm: LanguageModel) -> None:
    cfg = REINFORCEConfig(baseline="none", lr=1e-3)
    agent = REINFORCE(lm, multi_turn_env(lm), config=cfg, progress_bar=False)
    rollout = agent.collect()
    assert rollout.env_mask is not None
    assert rollout.env_mask.sum() > 0
    with torch.no_grad():
        logp = evaluate(lm, rollout)[0]
    expected = 0.0
    for b in range(len(rollout)):
        r = np.array(policy_columns(rollout, b, rollout.token_rewards))
        g = r[::-1].cumsum()[::-1]  # G_t over the row's policy tokens
        expected -= float((g * np.array(policy_columns(rollout, b, logp))).sum())
        assert r.sum() == pytest.approx(float(rollout.rewards[b]))  # every reward at an action
    stats = agent._update(rollout)
    assert stats["policy_loss"] == pytest.approx(expected / len(rollout), rel=1e-5)


def test_ppo_first_minibatch_has_ratio_one_on_multi_turn_rollouts(lm: LanguageModel) -> None:
    cfg = PPOConfig(n_epochs=1, n_minibatches=1, beta=0.05)
    agent = PPO(lm, multi_turn_env(lm), config=cfg, progress_bar=False)
    row = agent.learn(1)[0]
    assert row["clip_fraction"] == 0.0
    assert abs(row["approx_kl"]) < 1e-6
    assert abs(row["kl"]) < 1e-5  # π_θ = π_ref: the reference scored the same transcript


def test_grpo_token_mean_counts_policy_tokens_only(lm: LanguageModel) -> None:
    cfg = GRPOConfig(group_size=2, loss_aggregation="token_mean", beta=0.0, lr=1e-3)
    agent = GRPO(lm, multi_turn_env(lm), config=cfg, progress_bar=False)
    rollout = agent.collect()
    assert rollout.env_mask is not None
    assert rollout.env_mask.sum() > 0
    g = rollout.rewards.reshape(-1, 2)
    adv = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + cfg.std_eps)).reshape(-1)
    n = rollout.completion_mask.sum(-1)  # policy tokens, not the environment's
    stats = agent._update(rollout)
    assert stats["loss"] == pytest.approx(float(-(adv * n).sum() / n.sum()), abs=1e-5)


# --- imitation ------------------------------------------------------------------------------------


@pytest.fixture
def embedded() -> LanguageModel:
    """A fresh copy of the embedded model (the agents train in place)."""
    return LanguageModel.from_pretrained(device="cpu")


def test_dialogue_demonstrations_are_the_env_tokens_and_bc_labels_policy_turns(
    embedded: LanguageModel,
) -> None:
    task = load("calculator", split="validation")
    rows = np.arange(4)
    demos = Demonstrations.from_dialogues(embedded, [task.dialogues()[i] for i in rows])
    venv = TextGenVectorEnv(4, model=embedded, task=task, max_new_tokens=64)
    gen = torch.Generator().manual_seed(0)
    run = collect_labelled(embedded, venv, 1.0, generator=gen, options={"prompt_index": rows})
    d = run.data
    assert d.env_mask is not None
    assert demos.env_mask is not None
    for name in ("completion_ids", "mask", "env_mask", "prompt_ids", "prompt_mask"):
        assert torch.equal(getattr(d, name), getattr(demos, name)), name
    labelled = d.mask > 0
    assert torch.equal(d.labels[labelled], demos.labels[labelled])
    assert torch.equal(d.labels[labelled], d.completion_ids[labelled])  # β = 1: the expert acted
    assert d.n_labels == int(labelled.sum())
    assert not (labelled & (d.env_mask > 0)).any()
    # BC's loss: the mean NLL of the policy's tokens, each transcript seen whole (env tokens too)
    expected, count = 0.0, 0
    with torch.no_grad():
        for b in range(4):
            p = d.prompt_ids[b][d.prompt_mask[b] > 0]
            seen = d.completion_attention[b] > 0
            ids = torch.cat([p, d.completion_ids[b][seen]])[None]
            logp = embedded.logprobs(ids, torch.ones_like(ids))[0, len(p) :]  # (T_b,)
            expected -= float(logp[d.mask[b][seen] > 0].sum())
            count += int(d.mask[b].sum())
        loss = bc_loss(state_logits(embedded, demos), demos.labels, demos.mask)
    assert float(loss) == pytest.approx(expected / count, rel=1e-5)
    # a label budget keeps each row's first labelled states, across its turns
    cut = demos.within_budget(int(demos.mask[0].sum()) + 3)
    assert cut.n_labels == int(demos.mask[0].sum()) + 3
    second = cut.mask[1] > 0
    assert torch.equal(second.nonzero()[:3], (demos.mask[1] > 0).nonzero()[:3])


def test_dagger_on_a_multi_turn_task_labels_policy_states_only(embedded: LanguageModel) -> None:
    from textgym.agents import DAgger, DAggerConfig

    venv = TextGenVectorEnv(4, model=embedded, task="calculator", max_new_tokens=32)
    cfg = DAggerConfig(beta0=0.8, episodes_per_iteration=4, steps_per_iteration=1)
    agent = DAgger(embedded, venv, cfg, progress_bar=False)
    row = agent.learn(1)[0]
    d = agent.data
    assert d is not None
    assert d.env_mask is not None
    assert d.env_mask.sum() > 0
    assert row["new_labels"] == d.n_labels == int((d.mask > 0).sum())
    assert not ((d.mask > 0) & (d.env_mask > 0)).any()
    # every environment token follows an action that ended a turn: EOS, the calculator's turn end
    before_env = torch.zeros_like(d.env_mask, dtype=torch.bool)
    before_env[:, :-1] = (d.env_mask[:, 1:] > 0) & (d.env_mask[:, :-1] == 0)
    assert (d.completion_ids[before_env] == embedded.eos_token_id).all()


# --- learning (slow) ------------------------------------------------------------------------------


@pytest.mark.slow
def test_reinforce_raises_calculator_accuracy_over_a_bc_start() -> None:
    """BC on 120 batches of the planner's dialogues gives a policy that calls the tool but often
    miscopies a number; REINFORCE (b = 0: the 0/1 reward reinforces the right transcripts) then
    raises its sampled accuracy on held-out expressions (one seed; the multi-seed study is
    experiments/repro_multiturn.py)."""
    from textgym.agents import BC, BCConfig

    from textgym.multiturn import CalculatorConfig, calculator_task
    from textgym.rollout import evaluate_policy

    cfg = CalculatorConfig(train=120, validation=20, test=20, steps=(1,), max_factor=9, max_term=9)
    train = calculator_task("train", cfg)
    policy = LanguageModel.from_pretrained(device="cpu")
    bc = BCConfig(lr=3e-3, batch_size=16, eval_every=10**6, patience=None, val_fraction=0.0)
    BC(policy, train, bc, progress_bar=False).learn(120)
    held_out = TextGenVectorEnv(
        128, model=policy, task=calculator_task("validation", cfg), max_new_tokens=32
    )

    def accuracy() -> float:
        return evaluate_policy(policy, held_out, seed=123)["reward"]

    start = accuracy()
    venv = TextGenVectorEnv(32, model=policy, task=train, max_new_tokens=32)
    config = REINFORCEConfig(baseline="none", lr=1e-3)
    rows = REINFORCE(policy, venv, config=config, progress_bar=False).learn(10)
    after = accuracy()
    assert 0.1 < start < 0.6, start  # the BC start uses the tool, miscopies often
    assert after > start + 0.15, (start, after)
    assert np.mean([r["reward"] for r in rows[-5:]]) > np.mean([r["reward"] for r in rows[:5]])
