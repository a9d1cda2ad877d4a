"""Iterative DPO: Rosset et al. 2024, Direct Nash Optimization, DNO-Prct (arXiv:2404.03715, Alg. 2).

For t = 1..T:
    1. sample K completions y_1..y_K ~ π_t(·|x) for each training prompt x (optionally add the gold
       completion y_gold as a candidate);
    2. rank them with a preference function P: a reward r(x, y) (a gold metric or a learned r_φ),
       or a pairwise P(y ≻ y'|x), each candidate scored by its mean win rate against the others;
    3. keep (y_w, y_l) = (best, worst) when score(y_w) - score(y_l) > the margin threshold;
    4. π_{t+1} = argmin_θ L_DPO(π_θ; π_ref) on those pairs (see agents/dpo.py), with
       π_ref = π_t (DNO-Prct; ``reference="previous"``) or π_ref = π_1 (``reference="original"``);
then return the best of π_1..π_{T+1} on validation prompts (Alg. 2's last line; ``best_policy()``,
and with ``select_best_round`` the policy itself ends with those weights).

Symbols -> code: T -> config.rounds | K -> config.k | P / r -> ``preference`` / ``reward`` |
π_t -> ``self.policy`` at the start of round t | π_1 -> ``self.ref`` (a frozen copy of the starting
policy, π_0 or π_SFT in other papers) | β -> config.dpo.beta | β_sel -> config.select_kl_coef.

Against reward hacking (the policy drifting round after round, each round's KL measured only from
the previous policy):

- KL anchor (``reference="original"``): every round's DPO is against π_1, so the implicit reward
  β·log π_θ/π_ref is measured from the start and the loss of round t stops pushing pairs the earlier
  rounds already separated. Online iterative DPO as Xiong et al. 2024 (GSHF, arXiv:2312.11456,
  Alg. 1) and Dong et al. 2024 (RLHF Workflow, arXiv:2405.07863) run it: the target is the
  KL-regularised objective max_π E r(x, y) - η·KL(π‖π_0) with the initial π_0 in every iteration.
- Best round on validation (DNO-Prct, Alg. 2, last line): keep the π_t that scores best on the
  validation prompts. The score is the mean reward of one sampled completion per validation
  prompt (with a reward), or the mean P(y ≻ y_1) against π_1's completions (with a pairwise
  preference), minus β_sel·KL(π_t‖π_1):

      score(π_t) = mean_x [ r(x, y) - β_sel·Σ_j (log π_t(y_j|x, y_<j) - log π_1(y_j|x, y_<j)) ]

  i.e. the KL-regularised RLHF objective (Ziegler et al. 2019, arXiv:1909.08593; the objective
  DPO's Eq. 3 solves) of π_t relative to π_1, estimated on the same samples (k1 per sequence,
  ``textgym.estimators.kl_k1``, with π_t and π_1 at temperature 1). With β_sel = 0 (the default)
  the score is the mean reward alone, DNO-Prct's rule; a reward the policy can hack then picks
  the most hacked round, so β_sel > 0 is what makes the selection guard against hacking. β_sel is
  in the reward's units per nat: the KL coefficient an RL agent would pay for the same reward.

Every validation draws from the same seed, so rounds are compared on common random numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from textgym.agents.base import Agent
from textgym.agents.dpo import DPO, DPOConfig
from torch import Tensor

from textgym.config import check_fields, check_range
from textgym.decoding import GenerationOutput, generate
from textgym.estimators import kl_k1
from textgym.lm import LanguageModel
from textgym.pair_sampling import sample_pairs
from textgym.preference import PreferenceFn, RewardFn
from textgym.training import frozen_copy, progress, resolve_device


@dataclass(frozen=True)
class IterativeDPOConfig:
    """Hyperparameters of iterative DPO (defaults work on ``textgym.DEFAULT_MODEL``)."""

    rounds: int = 3
    """T, rounds of sample -> rank -> DPO; DNO-Prct runs 6 (3 per prompt batch)."""
    k: int = 4
    """K, completions sampled per prompt; DNO-Prct samples 5."""
    updates_per_round: int = 60
    """DPO updates per round (each on dpo.batch_size pairs)."""
    prompts_per_round: int | None = None
    """Training prompts drawn (without replacement) each round; None: all of them."""
    min_margin: float = 0.0
    """Keep a pair when score(y_w) - score(y_l) exceeds this; DNO-Prct keeps large-margin pairs."""
    include_reference: bool = False
    """Add the gold completion (first reference) as a candidate, as DNO-Prct does."""
    max_new_tokens: int = 24
    """Longest sampled completion, in tokens."""
    temperature: float = 1.0
    """Sampling temperature of the candidates (and of the validation samples)."""
    top_p: float = 1.0
    """Nucleus mass of the candidates (and of the validation samples)."""
    seed: int = 0
    """Seed of sampling and prompt selection."""
    dpo: DPOConfig = field(default_factory=DPOConfig)
    """The DPO update run each round against π_ref (its seed is offset by the round)."""
    reference: Literal["previous", "original"] = "previous"
    """π_ref of round t's DPO: "previous" π_t (DNO-Prct), "original" π_1 (Xiong et al. 2024)."""
    select_best_round: bool = False
    """After the last round, load the best validation round's weights into the policy (Alg. 2)."""
    select_kl_coef: float = 0.0
    """β_sel: validation score = mean reward - β_sel·KL(π_t‖π_1); 0: the reward alone (DNO)."""

    def __post_init__(self) -> None:
        check_fields(self)  # also: min_margin finite
        for name in ("rounds", "updates_per_round", "max_new_tokens"):
            check_range(self, name, low=1)
        if self.k < (1 if self.include_reference else 2):
            raise ValueError(
                f"IterativeDPOConfig.k must be >= 2 (1 with the gold reference), got {self.k}"
            )
        check_range(self, "prompts_per_round", low=1)  # None passes: all prompts
        check_range(self, "top_p", low=0, high=1, low_open=True)
        check_range(self, "temperature", low=0, low_open=True)
        check_range(self, "seed", low=0, high=2**32 - 1)
        check_range(self, "select_kl_coef", low=0)


class IterativeDPO(Agent):
    """On-policy rounds of DPO, each against the previous round's policy (or against π_1).

    ``IterativeDPO.load(dir, reward=... or preference=..., device="auto", **runtime)`` resumes a
    saved run at its next round (the reward or preference function is not saved: pass it again).

    Args:
        policy: π_1, trained in place; ``best_policy`` keeps the best round's weights.
        prompts: training prompts x.
        reward: r(x, y), batched ``(prompts, completions, references) -> (B,)``; or
        preference: P(y ≻ y'|x), batched ``(prompts, a, b) -> (B,)``. Exactly one of the two.
        references: gold completions, one sequence per training prompt.
        val_prompts: validation prompts for model selection (defaults to the training prompts).
        val_references: gold completions of the validation prompts, passed to the reward.
        ref: π_1, the original reference of ``reference="original"`` and of the validation KL
            (``select_kl_coef > 0``); None freezes a copy of ``policy`` as it is now, when one of
            the two needs it (otherwise no copy is kept).
        config: hyperparameters.
        device: where to train: "auto" (CUDA when available), "cpu", "cuda:0"...
        log_dir: folder for progress.csv (one row per round); None: no file.
        tensorboard: also write TensorBoard scalars to ``log_dir``.
        progress_bar: show tqdm bars (rounds, and each round's DPO updates).
    """

    config_class = IterativeDPOConfig

    def __init__(
        self,
        policy: LanguageModel,
        prompts: Sequence[str],
        *,
        reward: RewardFn | None = None,
        preference: PreferenceFn | None = None,
        references: Sequence[Sequence[str]] | None = None,
        val_prompts: Sequence[str] | None = None,
        val_references: Sequence[Sequence[str]] | None = None,
        ref: LanguageModel | None = None,
        config: IterativeDPOConfig = IterativeDPOConfig(),
        device: str = "auto",
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
    ) -> None:
        if (reward is None) == (preference is None):
            raise ValueError("IterativeDPO needs exactly one of reward= or preference=")
        if not prompts:
            raise ValueError("IterativeDPO needs training prompts")
        if config.include_reference and references is None:
            raise ValueError("include_reference=True needs references")
        self.config = config
        self._setup_runtime(log_dir=log_dir, tensorboard=tensorboard, progress_bar=progress_bar)
        self.device = resolve_device(device)
        self.policy = policy if policy.device == self.device else policy.wrap(device=self.device)
        if ref is None and (config.reference == "original" or config.select_kl_coef > 0):
            ref = frozen_copy(self.policy)
        if ref is not None and ref.vocab_size != self.policy.vocab_size:
            raise ValueError(
                f"the reference has {ref.vocab_size} logits but the policy "
                f"{self.policy.vocab_size}: π_1 must share the policy's vocabulary"
            )
        if ref is not None and ref.device != self.device:
            ref = ref.wrap(device=self.device)
        self.ref = ref
        self.prompts, self.references = (
            list(prompts),
            None if references is None else list(references),
        )
        self.val_prompts = list(val_prompts) if val_prompts is not None else self.prompts
        self.val_references = val_references if val_prompts is not None else self.references
        self.reward, self.preference = reward, preference
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.best_score = -math.inf
        self.best_round: int | None = None  # the round whose weights best_state holds
        self.best_state: dict[str, torch.Tensor] | None = None
        self._val_anchor: list[str] | None = None  # π_1's validation completions (pairwise only)

    def _sample_val(self) -> GenerationOutput:
        g = torch.Generator(device=self.policy.device).manual_seed(self.config.seed + 7919)
        return generate(
            self.policy,
            self.val_prompts,
            max_new_tokens=self.config.max_new_tokens,
            do_sample=True,
            temperature=self.config.temperature,
            top_p=self.config.top_p if self.config.top_p < 1 else None,
            generator=g,
        )

    def _sequence_kl(self, out: GenerationOutput) -> Tensor:  # (B,)
        """Σ_j log π_t(y_j|·) - log π_1(y_j|·) over each sampled completion (k1 per sequence)."""
        assert self.ref is not None  # built whenever select_kl_coef > 0
        mask = out.completion_mask  # (B, T)
        n = mask.shape[1]
        logp = self.policy.logprobs(out.sequences, out.attention_mask)[:, -n:]  # (B, T)
        logp_ref = self.ref.logprobs(out.sequences, out.attention_mask)[:, -n:]  # (B, T)
        return (kl_k1(logp, logp_ref) * mask).sum(-1)  # (B,)

    @torch.no_grad()
    def validation(self) -> dict[str, float]:
        """The current policy on the validation prompts: "val_reward" (mean reward, or win rate
        against π_1), "val_kl" (mean KL(π_t‖π_1) per sequence; NaN when select_kl_coef = 0) and
        "val_score" = val_reward - select_kl_coef·val_kl, the selection criterion."""
        out = self._sample_val()
        texts = list(out.texts)
        if self.reward is not None:
            reward = float(np.mean(self.reward(self.val_prompts, texts, self.val_references)))
        else:
            assert self.preference is not None
            if self._val_anchor is None:
                self._val_anchor = texts  # π_1 against itself: 1/2 by symmetry
            reward = float(np.mean(self.preference(self.val_prompts, texts, self._val_anchor)))
        beta_sel = self.config.select_kl_coef
        kl = float(self._sequence_kl(out).mean()) if beta_sel > 0 else math.nan
        score = reward - beta_sel * kl if beta_sel > 0 else reward
        return {"val_reward": reward, "val_kl": kl, "val_score": score}

    def validate(self) -> float:
        """The validation score of the current policy (see :meth:`validation`)."""
        return self.validation()["val_score"]

    def _keep_if_best(self, score: float) -> None:
        if score > self.best_score:
            self.best_score = score
            self.best_round = self.round
            self.best_state = {
                k: v.detach().cpu().clone() for k, v in self.policy.model.state_dict().items()
            }

    def _round_prompts(self) -> tuple[list[str], list[Sequence[str]] | None]:
        n = self.config.prompts_per_round
        if n is None or n >= len(self.prompts):
            return self.prompts, self.references
        pick = torch.randperm(
            len(self.prompts), generator=self.generator, device=self.generator.device
        )[:n]
        idx = pick.tolist()
        refs = None if self.references is None else [self.references[i] for i in idx]
        return [self.prompts[i] for i in idx], refs

    def learn(self, rounds: int | None = None) -> list[dict[str, float]]:
        """Run ``rounds`` (default: the rest of ``config.rounds``) of sample -> rank -> DPO.

        With ``config.select_best_round``, a call that ends at (or past) ``config.rounds`` loads the
        best round's weights into the policy before it returns.

        Returns:
            One row per round: pairs kept, their mean margin, the mean score of π_t's samples on the
            training prompts, the last DPO update's loss/accuracy/margin, π_{t+1}'s validation
            (:meth:`validation`'s keys) and "best_round", the round ``best_policy()`` now holds.
            Row 0 ("round" 0) holds π_1's validation.
        """
        rows: list[dict[str, float]] = []

        def record(row: dict[str, float]) -> None:
            rows.append(row)
            self._record(row)

        if self.step == 0 and not self.history:
            val = self.validation()
            self._keep_if_best(val["val_score"])
            record(dict.fromkeys(_ROW_KEYS, math.nan) | {"round": 0.0, **val, "best_round": 0.0})
        todo = self.config.rounds - self.round if rounds is None else rounds
        for _ in progress(range(todo), desc="IterativeDPO", disable=not self.progress_bar):
            prompts, refs = self._round_prompts()
            sampled = sample_pairs(
                self.policy,
                prompts,
                k=self.config.k,
                reward=self.reward,
                preference=self.preference,
                references=refs,
                include_reference=self.config.include_reference,
                min_margin=self.config.min_margin,
                max_new_tokens=self.config.max_new_tokens,
                temperature=self.config.temperature,
                top_p=self.config.top_p,
                generator=self.generator,
            )
            if not sampled.pairs:
                raise RuntimeError(
                    f"round {self.round + 1}: no pair of {len(prompts)} prompts passed min_margin="
                    f"{self.config.min_margin}; lower it or raise k"
                )
            dpo_cfg = dataclasses.replace(self.config.dpo, seed=self.config.dpo.seed + self.round)
            agent = DPO(
                self.policy,
                self._round_reference(),
                data=sampled.pairs,
                config=dpo_cfg,
                device=str(self.device),
                progress_bar=self.progress_bar,
            )
            last = agent.learn(self.config.updates_per_round)[-1]
            del agent  # frees π_t's copy before validation samples
            self.step += 1
            val = self.validation()
            self._keep_if_best(val["val_score"])
            record(
                {
                    "round": float(self.round),
                    "pairs": float(len(sampled.pairs)),
                    "margin_score": float(np.mean([p.margin or 0.0 for p in sampled.pairs])),
                    "sample_score": float(sampled.sample_scores.mean()),
                    "loss": last["loss"],
                    "accuracy": last["accuracy"],
                    "margin": last["margin"],
                    **val,
                    "best_round": math.nan if self.best_round is None else float(self.best_round),
                }
            )
        if self.config.select_best_round and self.round >= self.config.rounds:
            self.restore_best()
        return rows

    def _round_reference(self) -> LanguageModel | None:
        """π_ref of this round's DPO: π_1, or None (DPO then freezes π_t, the policy as it is)."""
        return self.ref if self.config.reference == "original" else None

    def restore_best(self) -> None:
        """Load the best validation round's weights into the policy (in place)."""
        if self.best_state is not None:
            self.policy.model.load_state_dict(self.best_state)

    @property
    def round(self) -> int:
        """Rounds done so far (the agent's step)."""
        return self.step

    def best_policy(self) -> LanguageModel:
        """A copy of the policy with the weights that scored best on validation."""
        best = LanguageModel(copy.deepcopy(self.policy.model), self.policy.tokenizer)
        if self.best_state is not None:
            best.model.load_state_dict(self.best_state)
        return best

    def _write_parts(self, path: Path) -> list[str]:
        self.policy.save_pretrained(path / "policy")
        self.best_policy().save_pretrained(path / "best")
        if self.ref is None:
            return ["policy", "best"]
        self.ref.save_pretrained(path / "reference")
        return ["policy", "best", "reference"]

    def _state(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "history": self.history,
            "best_score": self.best_score,
            "best_round": self.best_round,
            "reference": self.ref is not None,
            "generator": self.generator.get_state(),
            "prompts": list(self.prompts),
            "references": self.references,
            "val_prompts": self.val_prompts,
            "val_references": self.val_references,
            "val_anchor": self._val_anchor,
        }

    @classmethod
    def _restore(
        cls,
        path: Path,
        config: IterativeDPOConfig,
        state: dict[str, Any],
        *,
        reward: RewardFn | None = None,
        preference: PreferenceFn | None = None,
        device: str = "auto",
        **runtime: Any,
    ) -> IterativeDPO:
        policy = LanguageModel.from_pretrained(path / "policy", device=device)
        # π_1 as saved (a copy of the loaded policy would be π_t, not π_1).
        ref = None
        if state.get("reference"):  # absent in checkpoints older than the anchor
            ref = LanguageModel.from_pretrained(path / "reference", device=device)
        agent = cls(
            policy,
            state["prompts"],
            reward=reward,
            preference=preference,
            references=state["references"],
            val_prompts=state["val_prompts"],
            val_references=state["val_references"],
            ref=ref,
            config=config,
            device=device,
            **runtime,
        )
        best = LanguageModel.from_pretrained(path / "best", device="cpu")
        agent.best_state = {k: v.clone() for k, v in best.model.state_dict().items()}
        agent.step, agent.history = state["round"], state["history"]
        agent.best_score = state["best_score"]
        agent.best_round = state.get("best_round")  # None in checkpoints older than the field
        agent.generator.set_state(state["generator"])
        agent._val_anchor = state["val_anchor"]
        return agent


_ROW_KEYS = (
    "round",
    "pairs",
    "margin_score",
    "sample_score",
    "loss",
    "accuracy",
    "margin",
    "val_reward",
    "val_kl",
    "val_score",
    "best_round",
)
