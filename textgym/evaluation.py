"""The evaluation every study uses: one policy, one task split, every metric.

``evaluate_policy_on_task`` samples one completion per test prompt with the policy (through the
vector env and ``textgym.rollout.collect``, so the episode semantics are the env's), and
``score_texts`` scores any list of completions, so decoding experiments (beam search, greedy)
can reuse the same metrics on texts they made themselves.

Metrics (higher is better unless noted):

    reward        the task's own reward (``textgym.tasks.load(task).reward``), mean per episode
    bleu, chrf    sacrebleu corpus BLEU / chrF, 0-100 (tasks with references)
    rougeL        mean sentence ROUGE-L F, 0-1
    meteor        mean sentence METEOR (nltk), 0-1
    cider         corpus CIDEr-D (COCO style, document frequencies from these references)
    sentiment     VADER compound c of the completion as (c + 1) / 2 in [0, 1] (0.5 neutral)
    toxicity      p(offensive) from alt-profanity-check (lower is better; absent when the
                  optional extra is not installed)
    ppl_ref       perplexity of the completions under π_ref, conditioned on the prompt
                  (exp of minus the mean per-token log π_ref)
    kl            mean over completions of Σ_t log π_θ(a_t|s_t) - log π_ref(a_t|s_t) (sequence-level
                  k1 estimate of KL(π_θ‖π_ref) on the sampled completions)
    distinct1/2   unique / total word n-grams over all completions
    length        mean completion length in tokens
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from textgym.lm import LanguageModel
from textgym.rollout import Sampling, collect
from textgym.tasks import Task, load

DEFAULT_SAMPLING = Sampling()
"""Temperature 1, no top-k/top-p: the policy's own distribution."""

REFERENCE_METRICS = ("bleu", "chrf", "rougeL", "meteor", "cider")
ALL_METRICS = (
    "reward",
    *REFERENCE_METRICS,
    "sentiment",
    "toxicity",
    "ppl_ref",
    "kl",
    "distinct1",
    "distinct2",
    "length",
)


def task_env(
    policy: LanguageModel,
    task: str | Task,
    *,
    num_envs: int,
    max_new_tokens: int,
    split: str = "train",
    reward: Any = None,
) -> Any:
    """A vector env of ``task``'s ``split`` for ``policy`` (the task's own reward unless given)."""
    extra = {} if reward is None else {"reward": reward}
    return gym.make_vec(
        "TextGen-v0",
        num_envs=num_envs,
        model=policy,
        task=task,
        split=split,
        max_new_tokens=max_new_tokens,
        **extra,
    )


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over ``texts`` (Li et al. 2016); 0 when none."""
    grams = [
        tuple(words[i : i + n])
        for words in (t.split() for t in texts)
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


_TOXICITY: Any = None


def _toxicity() -> Any:
    """The toxicity reward, or None when the optional extra is missing (checked once)."""
    global _TOXICITY
    if _TOXICITY is None:
        from textgym.rewards import make

        try:
            _TOXICITY = make("toxicity")
        except ImportError:
            _TOXICITY = False
    return _TOXICITY or None


def toxicity_available() -> bool:
    """Whether ``alt-profanity-check`` (the ``textgym[toxicity]`` extra) is installed."""
    return _toxicity() is not None


def score_texts(
    task: Task,
    prompts: Sequence[str],
    completions: Sequence[str],
    references: Sequence[Sequence[str]] | None,
) -> dict[str, float]:
    """Text-only metrics of ``completions`` (everything but reward, ppl_ref, kl and length)."""
    from textgym.rewards import (
        corpus_bleu,
        corpus_chrf,
        corpus_cider_d,
        corpus_meteor,
        corpus_rouge,
        make,
    )

    prompts, completions = list(prompts), list(completions)
    out: dict[str, float] = {}
    if references is not None:
        refs = [list(r) for r in references]
        out["bleu"] = corpus_bleu(completions, refs)
        out["chrf"] = corpus_chrf(completions, refs)
        out["rougeL"] = corpus_rouge(completions, refs, rouge_types=("rougeL",))["rougeL"]
        out["meteor"] = corpus_meteor(completions, refs)
        out["cider"] = float(corpus_cider_d(completions, refs)[0])
    out["sentiment"] = float(np.mean(make("sentiment")(prompts, completions)))
    tox = _toxicity()
    if tox is not None:
        out["toxicity"] = float(np.mean(tox(prompts, completions)))
    out["distinct1"] = distinct_n(completions, 1)
    out["distinct2"] = distinct_n(completions, 2)
    return out


def task_reward(
    task: Task,
    prompts: Sequence[str],
    completions: Sequence[str],
    references: Sequence[Sequence[str]] | None,
) -> float:
    """Mean of the task's default reward over the completions."""
    reward = default_reward(task)
    return float(np.mean(reward(list(prompts), list(completions), references)))


def default_reward(task: Task) -> Any:
    """The task's own reward (``Task.reward``), built by ``textgym.rewards.make``.

    Raises:
        ValueError: the task names no reward (pass one to the env instead).
    """
    if task.reward is None:
        raise ValueError(f"task {task.name!r} has no default reward: give the env a reward=")
    from textgym.rewards import make

    return make(task.reward)


@torch.no_grad()
def evaluate_policy_on_task(
    policy: LanguageModel,
    task: str | Task,
    *,
    ref: LanguageModel,
    split: str = "test",
    n_prompts: int = 64,
    max_new_tokens: int = 24,
    seed: int = 0,
    sampling: Sampling = DEFAULT_SAMPLING,
    batch_size: int = 64,
    reward: Any = None,
) -> dict[str, float]:
    """Sample one completion per prompt for the first ``n_prompts`` prompts of ``split``; score all.

    The prompts are pinned (``options={"prompt_index": ...}``) and the sampler is seeded with
    ``seed``, so two policies are compared on the same prompts with the same random stream.

    Args:
        task: a built-in task name (``split`` picks its prompts) or a ``Task`` (used as given:
            it is the split).
        reward: the spec of the "reward" metric (``textgym.rewards.make``); None: the task's own.

    Returns:
        metric name -> value (see the module docstring).
    """
    spec = task if isinstance(task, Task) else load(task, split)
    n = min(n_prompts, len(spec))
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    texts: list[str] = []
    prompts: list[str] = []
    rewards, kls, ref_lp, n_tok = [], [], 0.0, 0.0
    lengths = []
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        env = task_env(
            policy,
            task,
            num_envs=len(idx),
            max_new_tokens=max_new_tokens,
            split=split,
            reward=reward,
        )
        out = collect(
            policy,
            env,
            sampling=sampling,
            generator=generator,
            ref=ref,
            seed=seed,
            options={"prompt_index": idx},
        )
        env.close()
        mask = out.completion_mask
        assert out.ref_logprobs is not None  # ref was given
        texts += out.texts
        prompts += out.prompts
        rewards.append(out.rewards.cpu())
        kls.append(out.sequence_kl().cpu())
        ref_lp += float((out.ref_logprobs * mask).sum())
        n_tok += float(mask.sum())
        lengths.append(mask.sum(-1).cpu())
    refs = None if spec.references is None else [spec.references[i] for i in range(n)]
    result = {"reward": float(torch.cat(rewards).mean())}
    result.update(score_texts(spec, prompts, texts, refs))
    result["ppl_ref"] = math.exp(-ref_lp / max(n_tok, 1.0))
    result["kl"] = float(torch.cat(kls).mean())
    result["length"] = float(torch.cat(lengths).float().mean())
    return result


def samples(
    policy: LanguageModel, task: str, n: int = 3, max_new_tokens: int = 24, seed: int = 0
) -> list[tuple[str, str]]:
    """A few (prompt, completion) pairs of the policy on the test split, for the results page."""
    env = task_env(policy, task, num_envs=n, max_new_tokens=max_new_tokens, split="test")
    g = torch.Generator(device=policy.device).manual_seed(seed)
    out = collect(policy, env, generator=g, seed=seed, options={"prompt_index": np.arange(n)})
    env.close()
    return list(zip(out.prompts, out.texts, strict=True))


@torch.no_grad()
def sample_with_kl(
    policy: LanguageModel,
    ref: LanguageModel,
    *,
    reward: Any,
    n_prompts: int,
    max_new_tokens: int,
    seed: int,
    task: str = "reviews",
    split: str = "validation",
) -> tuple[Any, np.ndarray]:
    """One sampled completion for each of the first ``n_prompts`` prompts of ``task``/``split``.

    The reward-vs-KL experiments measure every checkpoint on the same prompts with the same
    sampler seed. Returns ``collect``'s rollout (rewards by ``reward``, log-probs under π_θ and
    π_ref) and the per-sequence KL estimate Σ_t log π_θ(a_t|s_t) - log π_ref(a_t|s_t), shape (B,).
    """
    env = task_env(
        policy, task, num_envs=n_prompts, max_new_tokens=max_new_tokens, split=split, reward=reward
    )
    g = torch.Generator(device=policy.device).manual_seed(seed)
    out = collect(
        policy, env, generator=g, ref=ref, seed=seed, options={"prompt_index": np.arange(n_prompts)}
    )
    env.close()
    return out, out.sequence_kl().cpu().numpy()
