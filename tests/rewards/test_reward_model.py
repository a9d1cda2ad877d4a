"""The learned reward model r_φ: last-token read-out, scoring, files, reward adapter.

Tests use the tiny random GPT-2 / Llama of ``tests/conftest.py`` and the embedded model. Training
(the Bradley-Terry loss) is tested in ``tests/agents/test_reward_modeling.py``, the synthetic
preference data in ``tests/test_preference.py``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from textgym.rewards import make
from textgym.rewards.reward_model import RewardModel, RewardModelReward
from torch.testing import assert_close

import textgym
from textgym.pair_sampling import sample_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    ("the movie was", "great and i loved it"),
    ("a", "bad plot"),
    ("this film", "is not good but the acting is very good !"),
]


@pytest.fixture(params=["tiny_gpt2_lm", "tiny_llama_lm"])
def tiny_rm(request: pytest.FixtureRequest) -> RewardModel:
    """A fresh reward model on a copy of a tiny random LM's trunk (absolute or rotary positions)."""
    torch.manual_seed(0)
    return RewardModel.from_backbone(request.getfixturevalue(request.param), device="cpu").eval()


# ---------------------------------------------------------------------------- the read-out


def _pad(row: torch.Tensor, left: int, right: int, pad_id: int) -> tuple[torch.Tensor, ...]:
    ids = torch.cat([torch.full((left,), pad_id), row, torch.full((right,), pad_id)])
    mask = torch.cat([torch.zeros(left), torch.ones(len(row)), torch.zeros(right)]).long()
    return ids, mask


def test_reward_is_read_at_last_non_pad_token_whatever_the_padding(tiny_rm: RewardModel) -> None:
    ids, mask, _ = tiny_rm.tokenize([p for p, _ in TEXTS], [c for _, c in TEXTS])
    rows = [ids[i, mask[i].bool()] for i in range(len(TEXTS))]
    with torch.no_grad():
        alone = torch.stack([tiny_rm(r[None], torch.ones_like(r)[None])[0] for r in rows])  # (B,)
        width = max(len(r) for r in rows) + 3
        # Right, left, and extra padding on both sides; pad ids of 5 (a real word) must not leak.
        layouts = [
            [(0, width - len(r)) for r in rows],
            [(width - len(r), 0) for r in rows],
            [(2, width - len(r) - 2) for r in rows],
        ]
        for layout in layouts:
            padded = [_pad(r, a, b, pad_id=5) for r, (a, b) in zip(rows, layout, strict=True)]
            batch_ids = torch.stack([p[0] for p in padded])
            batch_mask = torch.stack([p[1] for p in padded])
            assert_close(tiny_rm(batch_ids, batch_mask), alone, rtol=1e-5, atol=1e-5)


def test_reward_is_the_head_on_the_last_hidden_state(tiny_gpt2_lm: Any) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu").eval()
    ids, mask, _ = rm.tokenize(["the movie"], ["was great"])
    with torch.no_grad():
        hidden = rm.backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # (1, L, H)
        expected = rm.head(hidden[:, -1]).squeeze(-1)
        assert_close(rm(ids, mask), expected)


def test_tokenize_right_pads_and_marks_the_completion(tiny_gpt2_lm: Any) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
    ids, mask, comp = rm.tokenize(["the movie was", "a"], ["great", "bad plot"])
    assert ids.shape == mask.shape == comp.shape == (2, 4)
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert comp.tolist() == [[False, False, False, True], [False, True, True, False]]
    assert ids[1, 3] == tiny_gpt2_lm.pad_token_id


def test_tokenize_keeps_the_last_tokens_of_a_long_text(tiny_gpt2_lm: Any) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu", max_length=4)
    with pytest.warns(UserWarning, match="1 of 1 texts"):
        ids, _, _ = rm.tokenize(["the movie was very"], ["good"])
    assert tiny_gpt2_lm.decode(ids) == ["movie was very good"]


def test_forward_on_text_names_the_fix(tiny_gpt2_lm: Any) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
    with pytest.raises(TypeError, match="RewardModelReward"):
        rm("the movie", "was great")  # type: ignore[arg-type]  # the mistake under test


def test_backbone_is_a_copy_of_the_policy_trunk(tiny_gpt2_lm: Any) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
    policy = {p.data_ptr() for p in tiny_gpt2_lm.model.parameters()}
    assert not policy & {p.data_ptr() for p in rm.parameters()}


def test_backbone_of_a_frozen_model_is_trainable(tiny_gpt2_dir: str) -> None:
    frozen = textgym.LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    frozen.model.requires_grad_(False)  # e.g. a distillation teacher or a π_ref
    rm = RewardModel.from_backbone(frozen, device="cpu")
    assert all(p.requires_grad for p in rm.parameters())
    assert not any(p.requires_grad for p in frozen.model.parameters())  # the source is untouched


def test_score_is_batched_in_input_order_and_keeps_the_mode(tiny_rm: RewardModel) -> None:
    prompts, completions = [p for p, _ in TEXTS], [c for _, c in TEXTS]
    tiny_rm.train()
    together = tiny_rm.score(prompts, completions, batch_size=2)
    assert tiny_rm.training
    one_by_one = np.concatenate([tiny_rm.score([p], [c]) for p, c in TEXTS])
    assert together.dtype == np.float32
    assert together.shape == (3,)
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-5)


def test_score_in_length_buckets_equals_one_row_at_a_time_in_order(tiny_rm: RewardModel) -> None:
    words = ["the", "movie", "was", "very", "good", "but", "the", "plot", "is", "not"]
    lengths = [9, 1, 14, 2, 6, 0, 11, 3, 8]  # shuffled: buckets reorder the rows
    prompts = ["a" if n % 2 else "this film" for n in lengths]
    completions = [" ".join(words[k % len(words)] for k in range(n)) for n in lengths]
    pairs = zip(prompts, completions, strict=True)
    one_by_one = np.concatenate([tiny_rm.score([p], [c]) for p, c in pairs])
    # 3 rows and 16 tokens at most per forward: several buckets, the longest rows alone.
    small = tiny_rm.score(prompts, completions, batch_size=3, batch_tokens=16)
    np.testing.assert_allclose(small, one_by_one, rtol=1e-5, atol=1e-5)
    reward = RewardModelReward(tiny_rm, batch_size=3, batch_tokens=16)
    np.testing.assert_allclose(reward(prompts, completions), one_by_one, rtol=1e-5, atol=1e-5)
    assert len(set(np.round(one_by_one, 5))) == len(lengths)  # distinct: order is checked
    with pytest.raises(ValueError, match="batch_tokens must be >= 1 or None, got 0"):
        RewardModelReward(tiny_rm, batch_tokens=0)


def test_fused_gelu_trunk_computes_the_policy_trunk_function(tiny_gpt2_lm: Any) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu").eval()
    assert not any(type(m).__name__ == "NewGELUActivation" for m in rm.modules())
    assert any(type(m).__name__ == "NewGELUActivation" for m in tiny_gpt2_lm.model.modules())
    ids, mask, _ = rm.tokenize(["the movie"], ["was great"])
    with torch.no_grad():
        hidden = tiny_gpt2_lm.model.base_model(input_ids=ids, attention_mask=mask)[0]  # (1, L, H)
        assert_close(rm(ids, mask), rm.head(hidden[:, -1]).squeeze(-1), rtol=1e-5, atol=1e-6)


def test_reward_adapter_survives_pickling(tiny_gpt2_dir: str) -> None:
    # A freshly loaded backbone: once a model has run with output_hidden_states, transformers
    # leaves a local-function hook on it that pickle refuses (known, left open), and the shared
    # fixture model may have run so in earlier tests.
    backbone = textgym.LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    reward = RewardModelReward(RewardModel.from_backbone(backbone, device="cpu").eval())
    clone = pickle.loads(pickle.dumps(reward))
    prompts, completions = [p for p, _ in TEXTS], [c for _, c in TEXTS]
    np.testing.assert_array_equal(clone(prompts, completions), reward(prompts, completions))


def test_normalize_folds_mean_and_std_into_the_head(tiny_gpt2_lm: Any) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
    prompts, completions = [p for p, _ in TEXTS], [c for _, c in TEXTS]
    before = rm.score(prompts, completions)
    mu, s = rm.normalize_(prompts, completions)
    after = rm.score(prompts, completions)
    np.testing.assert_allclose(after, (before - mu) / s, rtol=1e-4, atol=1e-5)
    assert abs(after.mean()) < 1e-5
    assert abs(after.std() - 1) < 1e-4


# ---------------------------------------------------------------------------- files


def test_save_load_round_trip_gives_identical_scores(tiny_rm: RewardModel, tmp_path: Path) -> None:
    prompts, completions = [p for p, _ in TEXTS], [c for _, c in TEXTS]
    with torch.no_grad():
        tiny_rm.head.bias.fill_(0.25)  # a trained-looking head, not the fresh init
    tiny_rm.save(tmp_path / "rm")
    loaded = RewardModel.load(tmp_path / "rm", device="cpu")
    assert loaded.causal
    assert loaded.max_length == tiny_rm.max_length
    np.testing.assert_array_equal(
        loaded.score(prompts, completions), tiny_rm.score(prompts, completions)
    )


def test_from_backbone_path_loads_the_trunk_and_detects_a_causal_lm(tiny_gpt2_dir: str) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_dir, device="cpu")
    assert rm.causal
    assert type(rm.backbone).__name__ == "GPT2Model"
    assert rm.score(["the movie"], ["was great"]).shape == (1,)


def test_load_of_a_folder_without_a_model_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"reward_model\.json"):
        RewardModel.load(tmp_path)


# ---------------------------------------------------------------------------- as a reward


def test_reward_adapter_keeps_the_protocol(tiny_gpt2_lm: Any, tmp_path: Path) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
    reward = RewardModelReward(rm, batch_size=2)
    assert reward.name == "reward_model"
    assert reward.token_level is False
    assert reward.needs_references is False
    prompts, completions = [p for p, _ in TEXTS], [c for _, c in TEXTS]
    out = reward(prompts, completions)
    assert out.dtype == np.float32
    assert out.shape == (3,)
    np.testing.assert_array_equal(out, rm.score(prompts, completions))
    assert make(reward) is reward  # a BaseReward passes through make unchanged
    assert reward(prompts, completions, [("ref",)] * 3).shape == (3,)  # references are ignored
    assert reward([], []).shape == (0,)


def test_registry_loads_a_saved_model_by_name(tiny_gpt2_lm: Any, tmp_path: Path) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
    rm.save(tmp_path / "rm")
    reward = make("reward_model", model=tmp_path / "rm", device="cpu")
    np.testing.assert_array_equal(reward(["a"], ["bad plot"]), rm.score(["a"], ["bad plot"]))


def test_preference_is_the_bradley_terry_probability(tiny_gpt2_lm: Any) -> None:
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
    reward = rm.as_reward()
    x, a, b = ["the movie", "a"], ["was great", "bad plot"], ["was awful", "good plot"]
    r_a, r_b = rm.score(x, a).astype(np.float64), rm.score(x, b).astype(np.float64)
    p = reward.preference(x, a, b)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(r_a - r_b))), rtol=1e-6)
    np.testing.assert_allclose(reward.preference(x, a, a), [0.5, 0.5])


def test_reward_model_pays_the_env_reward(embedded_lm: Any) -> None:
    rm = RewardModel.from_backbone(embedded_lm, device="cpu")
    reward = RewardModelReward(rm)
    env = gym.make("TextGen-v0", reward=reward, max_new_tokens=4)
    env.reset(seed=0)
    total, done, info = 0.0, False, {}
    while not done:
        _, r, terminated, truncated, info = env.step(int(env.action_space.sample()))
        total += float(r)
        done = terminated or truncated
    assert total == pytest.approx(float(reward([info["prompt"]], [info["text"]])[0]), abs=1e-6)


def test_fits_iterative_dpo_ranking_as_reward_and_as_preference(tiny_gpt2_lm: Any) -> None:
    # IterativeDPO ranks candidates with sample_pairs(reward=...) or sample_pairs(preference=...).
    rm = RewardModel.from_backbone(tiny_gpt2_lm, device="cpu")
    reward = rm.as_reward()
    prompts = ["the movie", "a"]
    for kw in ({"reward": reward}, {"preference": reward.preference}):
        g = torch.Generator().manual_seed(0)
        out = sample_pairs(tiny_gpt2_lm, prompts, k=3, max_new_tokens=4, generator=g, **kw)
        assert out.scores.shape == (2, 3)
        if "reward" in kw:
            texts = [y for row in out.texts for y in row]
            expected = rm.score([p for p in prompts for _ in range(3)], texts).reshape(2, 3)
            np.testing.assert_array_equal(out.scores, expected)
