"""Bad input to the agents: the wrong kind of env, a policy that does not fit the env, a model that
has diverged, preference pairs that carry no preference. Each gives an error naming the value."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from textgym.agents import DPO, PPO, REINFORCE, DPOConfig, REINFORCEConfig
from toy import PROMPTS, good_count, make_env

import textgym
from textgym import LanguageModel, decoding
from textgym.preference import PreferencePair
from textgym.tasks import Task


def test_a_single_env_where_a_vector_env_is_needed(lm: LanguageModel) -> None:
    env = gym.make("TextGen-v0", model=lm, task=Task.from_list(PROMPTS), reward=good_count)
    for agent in (PPO, REINFORCE):
        with pytest.raises(TypeError, match=rf"{agent.__name__} needs a vector env.*make_vec"):
            agent(lm, env, progress_bar=False)


def test_a_policy_whose_vocabulary_differs_from_the_env(lm: LanguageModel) -> None:
    embedded = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    env = make_env(embedded, num_envs=4)  # the env's model has another tokenizer
    with pytest.raises(
        ValueError, match=rf"vocabulary size.*{lm.vocab_size}.*{embedded.vocab_size}"
    ):
        REINFORCE(lm, env, progress_bar=False)


def test_nan_logits_raise_at_the_update_that_diverged(lm: LanguageModel) -> None:
    agent = REINFORCE(lm, make_env(lm, num_envs=4), config=REINFORCEConfig(), progress_bar=False)
    agent.learn(1)
    with torch.no_grad():
        next(lm.model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"update 1: .*logits are not finite"):
        agent.learn(1)


@pytest.mark.parametrize("do_sample", [True, False])
def test_generation_from_nan_logits_raises(lm: LanguageModel, do_sample: bool) -> None:
    with torch.no_grad():
        next(lm.model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"not finite"):
        decoding.generate(lm, ["the movie was"], max_new_tokens=3, do_sample=do_sample)
    with pytest.raises(FloatingPointError, match=r"not finite"):
        decoding.beam_search(lm, ["the movie was"], num_beams=2, max_new_tokens=3)


def test_sample_refuses_nan_rather_than_drawing_token_v() -> None:
    with pytest.raises(FloatingPointError, match=r"rows \[1\]"):
        decoding.sample(torch.tensor([[0.0, 1.0], [0.0, float("nan")]]))


PAIRS = [
    PreferencePair("the movie was", "great and i loved it", "bad"),
    PreferencePair("the plot", "is very good", "is awful and bad"),
    PreferencePair("a dog", "plays", "plays"),  # no preference
]


def test_dpo_drops_pairs_with_chosen_equal_to_rejected(lm: LanguageModel) -> None:
    with pytest.warns(UserWarning, match=r"dropped 1 of 3 preference pairs"):
        agent = DPO(lm, data=PAIRS, config=DPOConfig(), progress_bar=False)
    assert len(agent.data) == 2


def test_dpo_with_only_tied_pairs_is_an_error(lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match=r"all 2 preference pairs have chosen == rejected"):
        DPO(lm, data=[PAIRS[2], PAIRS[2]], config=DPOConfig(), progress_bar=False)
