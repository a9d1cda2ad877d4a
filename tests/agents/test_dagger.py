"""DAgger: β schedules, the mixture rollout, labels of visited states, budget, resume, learning."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from textgym.agents import BCConfig, DAgger, DAggerConfig, LMExpert
from textgym.agents.dagger import (
    beta_constant,
    beta_exponential,
    beta_linear,
    collect_labelled,
)
from toy import reverse_exact_match

import textgym
from textgym import LanguageModel
from textgym.tasks import Expert, FunctionExpert, ReferenceExpert, Task, load

PROMPTS = ["red blue green", "one two", "four five six seven", "the dog runs"]
REFS = [" green blue red", " two one", " seven six five four", " runs dog the"]
EOS = 0  # the tiny tokenizer's <|endoftext|>


def prefix_expert(i: int, ids: list[int]) -> int:
    """A label that depends on the prompt and on every token written so far."""
    return EOS if len(ids) >= 3 else 3 + (7 * i + sum(ids) + len(ids)) % 40


def make_env(lm: LanguageModel, expert: Expert, num_envs: int = 4, **kwargs: Any) -> Any:
    task = Task.from_list(PROMPTS, REFS, expert=expert)
    return gym.make_vec(
        "TextGen-v0",
        num_envs=num_envs,
        model=lm,
        task=task,
        reward=lambda p, c: 0.0,
        max_new_tokens=5,
        **kwargs,
    )


@pytest.fixture
def lm(tiny_gpt2_dir: str) -> LanguageModel:
    return LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")


def test_beta_schedules() -> None:
    assert [beta_constant(i, 0.3, 0.5) for i in range(3)] == [0.3, 0.3, 0.3]
    assert [beta_linear(i, 1.0, 0.25) for i in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert [beta_exponential(i, 1.0, 0.5) for i in range(4)] == [1.0, 0.5, 0.25, 0.125]
    assert [beta_exponential(i, 1.0, 0.0) for i in range(3)] == [1.0, 0.0, 0.0]  # pure DAgger
    cfg = DAggerConfig(beta_schedule="linear", beta0=0.8, beta_decay=0.2)
    assert DAgger.beta.__get__(type("A", (), {"config": cfg})())(2) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="beta_schedule"):
        DAggerConfig(beta_schedule="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta0"):
        DAggerConfig(beta0=1.5)


def prompt_index(lm: LanguageModel, prompt_ids: torch.Tensor) -> int:
    return PROMPTS.index(lm.tokenizer.decode(prompt_ids.tolist(), skip_special_tokens=True))


def test_data_grows_by_exactly_the_labelled_learner_states(lm: LanguageModel) -> None:
    env = make_env(lm, FunctionExpert(prefix_expert))
    cfg = DAggerConfig(
        beta_schedule="constant",
        beta0=0.0,
        episodes_per_iteration=8,
        steps_per_iteration=0,
        greedy=False,
    )
    agent = DAgger(lm, env, cfg, progress_bar=False)
    sizes = []
    for _ in range(2):
        before = None if agent.data is None else agent.data[torch.arange(len(agent.data))]
        row = agent.learn(1)[0]
        d = agent.data
        assert d is not None
        sizes.append(d.n_labels)
        if before is not None:  # D ← D + D_i: the old rows are kept as they were
            assert torch.equal(d.labels[: len(before), : before.labels.shape[1]], before.labels)
        new = d[torch.arange(len(d) - 8, len(d))]
        assert row["new_labels"] == new.n_labels
        for r in range(len(new)):
            n = int(new.mask[r].sum())
            executed = new.completion_ids[r, :n].tolist()
            i = prompt_index(lm, new.prompt_ids[r])
            # Every visited state s_t = prompt ⊕ executed[:t] is labelled with π*(s_t), once.
            assert new.labels[r, :n].tolist() == [prefix_expert(i, executed[:t]) for t in range(n)]
            # ... and the episode really ended there: EOS, or the horizon.
            assert executed[-1] == EOS or n == 5
            assert EOS not in executed[:-1]
    assert sizes[1] > sizes[0]


def test_beta_one_executes_the_expert_and_zero_the_learner(lm: LanguageModel) -> None:
    env = make_env(lm, ReferenceExpert(), num_envs=8)
    g = torch.Generator().manual_seed(0)
    expert = collect_labelled(lm, env, 1.0, generator=g, seed=0)
    m = expert.data.mask > 0
    assert torch.equal(expert.data.completion_ids[m], expert.data.labels[m])
    assert expert.from_expert[m].all()
    learner = collect_labelled(lm, env, 0.0, generator=g, seed=0, greedy=True)
    m = learner.data.mask > 0
    assert torch.equal(learner.data.completion_ids[m], learner.learner_actions[m])
    assert not learner.from_expert.any()


def test_label_budget_is_exact(lm: LanguageModel) -> None:
    env = make_env(lm, ReferenceExpert())
    cfg = DAggerConfig(
        episodes_per_iteration=4,
        steps_per_iteration=1,
        label_budget=10,
        bc=BCConfig(val_fraction=0.0, batch_size=2),
    )
    agent = DAgger(lm, env, cfg, progress_bar=False)
    rows = agent.learn(4)
    assert agent.n_labels == 10
    assert [r["labels"] for r in rows][-1] == 10
    assert rows[-1]["new_labels"] == 0


def test_lm_expert_labels_the_teacher_argmax(
    lm: LanguageModel, tiny_llama_lm: LanguageModel
) -> None:
    env = make_env(lm, LMExpert(tiny_llama_lm))
    obs, _ = env.reset(seed=3)
    for _ in range(2):
        obs, *_ = env.step(np.array([5, 9, 12, 20]))
    labels = env.expert_actions()
    for b in range(4):
        n = int(obs["attention_mask"][b].sum())
        ids = torch.as_tensor(obs["input_ids"][b, :n])[None]
        with torch.no_grad():
            logits = tiny_llama_lm.model(input_ids=ids).logits[0, -1]
        assert labels[b] == int(logits[: len(lm.tokenizer)].argmax())


@pytest.mark.parametrize("warm_start", [False, True])
def test_each_fit_starts_from_the_initial_weights_unless_warm_start(
    lm: LanguageModel, warm_start: bool
) -> None:
    env = make_env(lm, ReferenceExpert())
    cfg = DAggerConfig(
        episodes_per_iteration=4,
        steps_per_iteration=3,
        warm_start=warm_start,
        bc=BCConfig(val_fraction=0.0, batch_size=2, lr=3e-3),
    )
    agent = DAgger(lm, env, cfg, progress_bar=False)
    initial = [p.detach().clone() for p in lm.model.parameters()]
    starts: list[tuple[bool, int]] = []  # per fit: starts at the initial weights, optimizer steps
    fit = agent.bc.learn

    def recorded(n: int) -> list[dict[str, float]]:
        same = all(torch.equal(a, b) for a, b in zip(lm.model.parameters(), initial, strict=True))
        steps = [s.get("step", 0) for s in agent.bc.optimizer.state.values()]
        starts.append((same, int(max(steps, default=0))))
        return fit(n)

    agent.bc.learn = recorded  # type: ignore[method-assign]  # records each fit's start
    agent.learn(3)
    if warm_start:  # π̂_{i+1} continues from π̂_i, with its Adam moments
        assert starts == [(True, 0), (False, 3), (False, 6)]
    else:  # every fit is BC on D from π̂_1 with a fresh optimizer
        assert starts == [(True, 0)] * 3


# ---------------------------------------------------------------------------- learning


def exact_match(lm: LanguageModel) -> float:
    return reverse_exact_match(lm, 300)


@pytest.mark.slow
def test_dagger_learns_the_reverse_task_from_its_own_states() -> None:
    # Seed 0 of experiments/repro_drift.py's DAgger row at 3000 labels, the same settings. The
    # issue's stronger claim, DAgger above BC at the same budget, does NOT hold on this task: over
    # seeds 0-2 DAgger reaches 0.62 ± 0.23 exact match and BC 0.69 ± 0.11 (drift.md), so it is not
    # asserted here. What is: DAgger, spending exactly its label budget, learns the task.
    gym.register_envs(textgym)
    budget, seed = 3000, 0
    val = load("reverse", split="validation").demonstrations()[:100]
    lm = LanguageModel.from_pretrained(device="cpu")
    untrained = exact_match(lm)
    env = gym.make_vec("textgym/Reverse-v0", num_envs=32, model=lm, max_new_tokens=8)
    cfg = DAggerConfig(
        beta_schedule="exponential",
        beta0=1.0,
        beta_decay=0.5,
        episodes_per_iteration=109,  # 600 labels / 5.5 a demonstration
        steps_per_iteration=800,
        label_budget=budget,
        bc=BCConfig(lr=1e-3, batch_size=32, eval_every=5, patience=8, seed=seed),
        seed=seed,
    )
    dagger = DAgger(lm, env, cfg, val_data=val, progress_bar=False)
    dagger.learn(5)
    if dagger.n_labels < budget:
        dagger.learn(1)
    assert dagger.n_labels == budget
    # Measured (seed 0, one torch thread, CPU): untrained 0.023, DAgger 0.81; worst seed 0.37.
    assert exact_match(lm) > untrained + 0.25, untrained
