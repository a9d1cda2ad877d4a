"""IRL (apprenticeship learning): feature expectations and weight steps by hand, the score stage,
config checks, resume, exported rewards (IRL's and GAIL's discriminator), and (slow) recovery."""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from textgym.agents import GAIL, IRL, GAILConfig, IRLConfig, PPOConfig, REINFORCEConfig
from textgym.agents.bc import Demonstrations
from textgym.agents.irl import (
    feature_expectations,
    max_margin_step,
    ng_russell_step,
    project,
    projection_step,
    recovery_check,
    spearman,
)
from textgym.rewards import make
from textgym.rewards.linear import LinearReward
from torch.testing import assert_close

import textgym
from textgym import LanguageModel
from textgym.features import FunctionFeatures, HiddenFeatures, NgramCounts
from textgym.rollout import collect
from textgym.tasks import ReferenceExpert, Task

PROMPTS = ["the movie was", "i loved the", "a dog runs in the park", "the plot"]
VOCAB = ["good", "bad", "movie", "good movie"]
DEMOS = [
    ("the movie was", "good good movie"),
    ("i loved the", "movie good"),
    ("the plot", "bad"),
    ("a dog runs in the park", "good movie good"),
]


def word_ids(lm: LanguageModel) -> list[int]:
    """EOS and the tiny tokenizer's words: samples then decode and re-encode to the same ids."""
    tok = lm.tokenizer
    words = [w for w in tok.get_vocab() if w.isalpha()]
    return [int(lm.eos_token_id), *sorted(tok.convert_tokens_to_ids(words))]


def make_env(lm: LanguageModel, num_envs: int = 4, **kwargs: Any) -> Any:
    kwargs = {"reward": lambda p, c: float(c.split().count("good")), "max_new_tokens": 6, **kwargs}
    task = Task.from_list(PROMPTS)
    return gym.make_vec(
        "TextGen-v0", num_envs=num_envs, model=lm, task=task, action_mask=word_ids(lm), **kwargs
    )


def small_config(**kwargs: Any) -> IRLConfig:
    rl = REINFORCEConfig(rloo_k=2, lr=1e-3, beta=0.0)
    return IRLConfig(n_rl_updates=1, n_eval_rounds=1, reinforce=rl, **kwargs)


# ---------------------------------------------------------------------------- by hand


def test_feature_expectations_are_discounted_counts_by_hand(lm: LanguageModel) -> None:
    phi = NgramCounts(lm, VOCAB, gamma=0.5)
    # "good good movie": good at t = 0, 1; movie at t = 2; "good movie" ends at t = 2.
    # "movie good": movie at 0, good at 1. "bad": bad at 0. "good movie good": good at 0 and 2,
    # movie at 1, "good movie" ends at 1.
    expected = np.array(
        [
            [1 + 0.5, 0, 0.25, 0.25],
            [0.5, 0, 1, 0],
            [0, 1, 0, 0],
            [1 + 0.25, 0, 0.5, 0.5],
        ]
    )
    prompts, completions = zip(*DEMOS, strict=True)
    np.testing.assert_allclose(phi(prompts, completions), expected)
    mu = feature_expectations(phi, prompts, completions)
    np.testing.assert_allclose(mu, expected.mean(0))
    np.testing.assert_allclose(mu, [3.25 / 4, 0.25, 1.75 / 4, 0.75 / 4])


def test_projection_step_equals_abbeel_and_ng_by_hand() -> None:
    mu_e = np.array([1.0, 1.0])
    mus = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    # i = 1: w = μ_E - μ^(0) = (1, 1), t = √2.
    w, t = projection_step(mu_e, mus[:1])
    np.testing.assert_allclose(w, np.array([1.0, 1.0]) / math.sqrt(2))
    assert t == pytest.approx(math.sqrt(2))
    # μ̄^(1) = μ̄^(0) + [(2, 0)·(1, 1) / (2, 0)·(2, 0)]·(2, 0) = (1, 0): w = (0, 1), t = 1.
    np.testing.assert_allclose(project(mus[0], mus[1], mu_e), [1.0, 0.0])
    w, t = projection_step(mu_e, mus[:2])
    np.testing.assert_allclose(w, [0.0, 1.0], atol=1e-12)
    assert t == pytest.approx(1.0)
    # Δ = μ^(2) - μ̄^(1) = (-1, 2); Δ·(μ_E - μ̄^(1)) = 2, Δ·Δ = 5: μ̄^(2) = (1, 0) + 0.4·(-1, 2).
    np.testing.assert_allclose(project(np.array([1.0, 0.0]), mus[2], mu_e), [0.6, 0.8])
    w, t = projection_step(mu_e, mus)
    np.testing.assert_allclose(w, np.array([2.0, 1.0]) / math.sqrt(5))
    assert t == pytest.approx(math.sqrt(0.2))


def test_max_margin_step_on_toys_with_known_answers() -> None:
    mu_e = np.array([1.0, 1.0])
    # The hull is the segment (0, 1)-(1, 0); its closest point to μ_E is (1/2, 1/2).
    for mus in ([[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0], [-1.0, -1.0]]):
        w, t = max_margin_step(mu_e, np.array(mus))
        np.testing.assert_allclose(w, np.array([1.0, 1.0]) / math.sqrt(2), atol=1e-9)
        assert t == pytest.approx(math.sqrt(0.5))
    # One policy: the margin is the distance and agrees with the projection method.
    w, t = max_margin_step(mu_e, np.array([[0.0, -1.0]]))
    np.testing.assert_allclose(w, np.array([1.0, 2.0]) / math.sqrt(5))
    assert t == pytest.approx(math.sqrt(5))
    # μ_E inside the hull: no separating reward.
    w, t = max_margin_step(mu_e, np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]]))
    assert t == 0.0
    assert not w.any()


def test_max_margin_beats_every_sampled_direction() -> None:
    rng = np.random.default_rng(0)
    mu_e, mus = rng.normal(size=4) + 3.0, rng.normal(size=(6, 4))
    w, t = max_margin_step(mu_e, mus)
    d = mu_e[None] - mus  # (6, 4)
    assert np.linalg.norm(w) == pytest.approx(1.0)
    assert (d @ w).min() == pytest.approx(t)  # t is the margin of ŵ
    dirs = rng.normal(size=(20_000, 4))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    assert (dirs @ d.T).min(1).max() <= t + 1e-12  # no unit direction separates by more


def test_ng_russell_lp_on_toys_with_known_answers() -> None:
    pytest.importorskip("scipy")
    mu_e = np.zeros(2)
    # max p(w1) + p(w2) on the box: w = (1, 1).
    w, t = ng_russell_step(mu_e, -np.eye(2))
    np.testing.assert_allclose(w, np.array([1.0, 1.0]) / math.sqrt(2), atol=1e-9)
    assert t == pytest.approx(1 / math.sqrt(2))
    # One policy, d = (1, -2): max p(w1 - 2 w2) at w = (1, -1), margin 3/√2.
    w, t = ng_russell_step(mu_e, np.array([[-1.0, 2.0]]))
    np.testing.assert_allclose(w, np.array([1.0, -1.0]) / math.sqrt(2), atol=1e-9)
    assert t == pytest.approx(3 / math.sqrt(2))


def test_spearman_by_hand() -> None:
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0])) == pytest.approx(0.5)
    # Ties share their mean rank: ranks (1.5, 1.5, 3) and (1, 2, 3) -> r = √3/2.
    rho = spearman(np.array([0.0, 0.0, 1.0]), np.array([1.0, 2.0, 3.0]))
    assert rho == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman(np.zeros(3), np.arange(3.0)))


# ---------------------------------------------------------------------------- features and rewards


def test_feature_maps_check_their_inputs_and_outputs(lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        NgramCounts(lm, "good")
    with pytest.raises(ValueError, match="gamma"):
        NgramCounts(lm, VOCAB, gamma=0.0)
    bad = FunctionFeatures(lambda p, c: np.ones((len(c), 3)), names=["a", "b"])
    with pytest.raises(ValueError, match=r"shape \(2, 3\), expected \(2, 2\)"):
        bad(["x", "y"], ["a", "b"])
    own = FunctionFeatures(lambda p, c: [[len(x.split()), 1.0] for x in c], names=["words", "one"])
    np.testing.assert_allclose(own(["x", "y"], ["a b", "c"]), [[2, 1], [1, 1]])


def test_hidden_features_mean_pool_the_completion_states(lm: LanguageModel) -> None:
    phi = HiddenFeatures(lm)
    out = phi(["the movie was", "a dog"], ["good good", "runs in the park"])  # (2, H)
    assert out.shape == (2, 32)
    ids = lm.tokenizer("a dog runs in the park")["input_ids"]  # one row, no padding
    with torch.no_grad():
        h = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1]
    np.testing.assert_allclose(out[1], h[0, 2:].mean(0).double().numpy(), rtol=1e-4, atol=1e-5)


def test_linear_reward_is_w_dot_phi_and_made_by_name(lm: LanguageModel) -> None:
    phi = NgramCounts(lm, VOCAB)
    r = make("linear", features=phi, weights={"good": 2.0, "bad": -1.0}, scale=0.5)
    assert isinstance(r, LinearReward)
    np.testing.assert_allclose(r(["p", "p"], ["good bad good", "movie"]), [0.5 * (4 - 1), 0.0])
    with pytest.raises(ValueError, match="unknown features"):
        LinearReward(phi, {"great": 1.0})
    with pytest.raises(ValueError, match="4 finite numbers"):
        LinearReward(phi, [1.0, 2.0])


# ---------------------------------------------------------------------------- the agent


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown weight_step 'lp'"):
        IRLConfig(weight_step="lp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown agent"):
        IRLConfig(agent="dpo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"n_rl_updates must be in \[1, inf\)"):
        IRLConfig(n_rl_updates=0)
    with pytest.raises(TypeError, match="n_eval_rounds must be an int"):
        IRLConfig(n_eval_rounds=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reward_scale"):
        IRLConfig(reward_scale=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        IRLConfig(epsilon=-1.0)
    with pytest.raises(TypeError, match="reinforce must be"):
        IRLConfig(reinforce=PPOConfig())  # type: ignore[arg-type]


def test_score_stage_pays_w_dot_phi_and_rows_report_margins(lm: LanguageModel) -> None:
    phi = NgramCounts(lm, VOCAB, gamma=0.9)
    agent = IRL(lm, make_env(lm), DEMOS, phi, config=small_config(reward_scale=2.0),
                progress_bar=False)  # fmt: skip
    np.testing.assert_allclose(
        agent.mu_expert, feature_expectations(phi, *zip(*DEMOS, strict=True))
    )
    rows = agent.learn(2)
    assert len(rows) == 2
    assert len(agent.mus) == len(agent.weights) == 3
    assert [r["margin"] for r in rows] == agent.margins[1:]
    assert rows[0]["distance"] == pytest.approx(np.linalg.norm(agent.mu_expert - agent.mus[1]))
    np.testing.assert_allclose([rows[1][f"w/{n}"] for n in VOCAB], agent.weights[1])
    # Dense rewards on the sampled tokens sum to c·ŵᵀΦ of the texts (the exported reward).
    raw = collect(lm, agent.env, generator=torch.Generator().manual_seed(3), seed=3)
    scored, stats = agent.relabel(raw)
    expected = 2.0 * phi(raw.prompts, raw.texts) @ agent.w
    assert_close(scored.token_rewards.sum(1).double(), torch.as_tensor(expected), atol=1e-5, rtol=0)
    assert stats["irl_return"] == pytest.approx(expected.mean(), abs=1e-5)
    assert torch.equal(scored.rewards, raw.rewards)  # the env's reward is kept for logging
    one = agent.reward(iteration=1)
    np.testing.assert_allclose(one.weights, agent.weights[0])
    np.testing.assert_allclose(agent.reward().weights, np.mean(agent.weights[:2], 0))


def test_sequence_features_pay_on_the_last_step(lm: LanguageModel) -> None:
    phi = FunctionFeatures(lambda p, c: [[float(len(x.split()))] for x in c], names=["words"])
    agent = IRL(lm, make_env(lm), DEMOS, phi, config=small_config(), progress_bar=False)
    agent.learn(1)
    raw = collect(lm, agent.env, generator=torch.Generator().manual_seed(4), seed=4)
    scored, _ = agent.relabel(raw)
    last = raw.lengths - 1
    words = torch.tensor([float(len(t.split())) for t in raw.texts])
    assert_close(scored.token_rewards[torch.arange(4), last], words * float(agent.w[0]))
    assert (
        scored.token_rewards.abs().sum() == scored.token_rewards[torch.arange(4), last].abs().sum()
    )


def test_ppo_inner_agent_with_the_max_margin_step(lm: LanguageModel) -> None:
    ppo = PPOConfig(n_minibatches=2, n_epochs=1, lr=1e-3, beta=0.0)
    config = IRLConfig(weight_step="max_margin", agent="ppo", ppo=ppo, n_rl_updates=1,
                       n_eval_rounds=1)  # fmt: skip
    agent = IRL(lm, make_env(lm), DEMOS, NgramCounts(lm, VOCAB), config=config, progress_bar=False)
    assert type(agent.inner).__name__ == "PPO"
    rows = agent.learn(2)
    d = agent.mu_expert[None] - np.stack(agent.mus)  # (3, K)
    assert rows[-1]["margin"] == pytest.approx((d @ agent.w).min())  # t = min_j ŵᵀ(μ_E - μ_j)
    assert [r["update"] for r in agent.inner.history] == [0.0, 1.0]


def test_demonstrations_as_tokens_give_the_same_expectations(lm: LanguageModel) -> None:
    phi = NgramCounts(lm, VOCAB)
    from_texts = IRL(lm, make_env(lm), DEMOS, phi, config=small_config(), progress_bar=False)
    demos = Demonstrations.from_pairs(lm, DEMOS)
    from_ids = IRL(lm, make_env(lm), demos, phi, config=small_config(), progress_bar=False)
    np.testing.assert_allclose(from_ids.mu_expert, from_texts.mu_expert)


def test_exported_reward_trains_a_fresh_policy_in_gym_make(lm: LanguageModel) -> None:
    agent = IRL(lm, make_env(lm), DEMOS, NgramCounts(lm, VOCAB), config=small_config(),
                progress_bar=False)  # fmt: skip
    with pytest.raises(ValueError, match="call learn"):
        agent.reward()
    agent.learn(1)
    reward = agent.reward()
    env = gym.make("TextGen-v0", model=lm, task=Task.from_list(PROMPTS), reward=reward,
                   max_new_tokens=3)  # fmt: skip
    env.reset(seed=0)
    good = lm.tokenizer.convert_tokens_to_ids("good")
    env.step(good)
    env.step(good)
    _, r, terminated, truncated, _ = env.step(good)
    assert truncated
    assert not terminated
    assert r == pytest.approx(float(reward(["x"], ["good good good"])[0]), abs=1e-6)
    assert r == pytest.approx(3 * reward.weights[0], abs=1e-6)


def test_save_load_resumes_exactly(lm: LanguageModel, tmp_path: Any) -> None:
    phi = NgramCounts(lm, VOCAB)
    twin = LanguageModel(copy.deepcopy(lm.model), lm.tokenizer)

    def build(policy: LanguageModel) -> IRL:
        return IRL(policy, make_env(policy), DEMOS, phi, config=small_config(), progress_bar=False)

    whole = build(lm)
    whole.learn(2)
    part = build(twin)
    part.learn(1)
    part.save(tmp_path / "irl")
    resumed = IRL.load(tmp_path / "irl", make_env(twin), phi, device="cpu", progress_bar=False)
    resumed.learn(1)
    for a, b in zip(whole.mus, resumed.mus, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(whole.weights, resumed.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert whole.margins == resumed.margins
    drop = {"time"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in whole.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in resumed.history
    ]
    for p, q in zip(
        whole.policy.model.parameters(), resumed.policy.model.parameters(), strict=True
    ):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="feature map"):
        IRL.load(tmp_path / "irl", make_env(twin), NgramCounts(lm, ["bad", "good", "movie", "the"]),
                 device="cpu")  # fmt: skip


def test_gail_exported_reward_equals_its_relabelled_rewards(lm: LanguageModel) -> None:
    prompts = ["red blue green", "one two", "four five six seven", "the dog runs"]
    refs = [" green blue red", " two one", " seven six five four", " runs dog the"]
    task = Task.from_list(prompts, refs, expert=ReferenceExpert())
    env = gym.make_vec("TextGen-v0", num_envs=8, model=lm, task=task, reward="exact_match",
                       max_new_tokens=6, fixed_horizon=True, action_mask=word_ids(lm))  # fmt: skip
    config = GAILConfig(ppo=PPOConfig(lr=1e-3, n_epochs=1, n_minibatches=2, beta=0.0),
                        disc_epochs=1, disc_batch_size=2)  # fmt: skip
    agent = GAIL(lm, env, list(zip(prompts, refs, strict=True)), config=config, progress_bar=False)
    raw = collect(lm, env, generator=torch.Generator().manual_seed(1), seed=1,
                  value_fn=agent.ppo._value_fn())  # fmt: skip
    raw.completion_ids[0, 2] = lm.eos_token_id  # one episode ends before T (its text too)
    raw.texts[0] = lm.decode(raw.completion_ids[:1, :2])[0]
    out, _ = agent.relabel(raw)  # trains D_w, then pays r(D_w) on this rollout
    reward = agent.reward()
    assert reward.name == "gail_airl"
    assert_close(torch.as_tensor(reward(raw.prompts, raw.texts)), out.token_rewards.sum(1),
                 atol=1e-4, rtol=1e-4)  # fmt: skip
    agent.learn(1)  # the exported reward is a snapshot: training on does not change it
    assert_close(torch.as_tensor(reward(raw.prompts, raw.texts)), out.token_rewards.sum(1),
                 atol=1e-4, rtol=1e-4)  # fmt: skip


# ---------------------------------------------------------------------------- slow: recovery

POSITIVE = [" great", " beautiful", " wonderful", " superb", " favorite", " loved"]
NEGATIVE = [" terrible", " boring", " awful", " worst", " lazy"]
DISTRACTORS = [" and", " of"]


def best_of_n(lm: LanguageModel, reward: Any, n: int, rounds: int, **kw: Any) -> list[Any]:
    """Demonstrations: the best of ``n`` samples of ``lm`` by ``reward``, 64 // n prompts a
    round."""
    env = gym.make_vec("TextGen-v0", num_envs=64, model=lm, reward=reward, **kw)
    generator, rng = torch.Generator().manual_seed(123), np.random.default_rng(0)
    demos = []
    for r in range(rounds):
        index = np.repeat(rng.integers(len(env.unwrapped.task), size=64 // n), n)
        out = collect(lm, env, generator=generator, seed=100 if r == 0 else None,
                      options={"prompt_index": index})  # fmt: skip
        for j, b in enumerate(out.rewards.view(-1, n).argmax(1).tolist()):
            demos.append((out.prompts[j * n + b], out.texts[j * n + b]))
    return demos


@pytest.mark.slow
def test_irl_recovers_a_word_count_reward_on_reviews() -> None:
    """True R = Σ ±1·count(word) over 11 sentiment words; IRL sees them and 2 distractors."""
    torch.set_num_threads(1)
    gym.register_envs(textgym)
    lm = LanguageModel.from_pretrained(device="cpu")
    kw = {"task": "reviews", "max_new_tokens": 16}
    w_true = {**dict.fromkeys(POSITIVE, 1.0), **dict.fromkeys(NEGATIVE, -1.0)}
    true = LinearReward(NgramCounts(lm, POSITIVE + NEGATIVE), w_true, name="true")
    demos = best_of_n(lm, true, n=8, rounds=16, **kw)  # 128 best-of-8 completions
    held_env = gym.make_vec("TextGen-v0", num_envs=256, model=lm, reward=true, split="validation",
                            **kw)  # fmt: skip
    held = collect(lm, held_env, generator=torch.Generator().manual_seed(7), seed=7)

    policy = LanguageModel(copy.deepcopy(lm.model), lm.tokenizer)
    env = gym.make_vec("TextGen-v0", num_envs=32, model=policy, reward=true, **kw)
    features = NgramCounts(lm, POSITIVE + NEGATIVE + DISTRACTORS)
    agent = IRL(policy, env, demos, features, config=IRLConfig(n_eval_rounds=4),
                progress_bar=False)  # fmt: skip
    rows = agent.learn(3)
    assert rows[-1]["margin"] < agent.margins[0]  # the policies close in on μ_E
    assert rows[-1]["reward"] > rows[0]["reward"]  # and the true reward rises on the way

    result = recovery_check(agent.reward(), true, lm, list(zip(held.prompts, held.texts,
                            strict=True)), env_kwargs=kw, n_updates=15)  # fmt: skip
    # Measured (seed 0): spearman 0.63, true return 0.09 -> 0.66 on the recovered reward and
    # 5.97 on the true one (which it games by repeating " great"): return ratio 0.11.
    assert result["spearman"] >= 0.3, result
    assert result["return_recovered"] > result["return_start"] + 0.2, result
