"""On-policy distillation: GKD, Agarwal et al. 2024, arXiv:2306.13649, Alg. 1 and Eq. 1-4; and
"on-policy distillation" (Lu & Thinking Machines Lab 2025). DAgger's form for language models: a
teacher LM p_T is the expert, and it labels every state with its whole next-token distribution.

Each update draws u ~ U(0, 1) (GKD Alg. 1):
    u < λ:  y ~ q_θ(·|x) for the env's prompts x            (on-policy: the student's own samples)
    else:   (x, y) from D_off                               (off-policy: given completions, or
                                                             y ~ p_T(·|x) when no D_off is given)
    L(θ) = Σ_{(x,y)} Σ_{t<|y|} D(p_T ‖ q_θ)(·|x, y_<t) / Σ_{(x,y)} |y|     (a mean over completion
                                                             tokens; no gradient through sampling)
D compares the two distributions over the full vocabulary, both at temperature τ
(p_T = softmax(z_T/τ), q_θ = softmax(z_θ/τ), log-softmax in float32):
    "forward_kl"  D = KL(p_T ‖ q_θ) = Σ_v p_T(v)·log(p_T(v)/q_θ(v))    (mean-seeking; on teacher
                  samples it is BC/SFT on the teacher's soft labels)
    "reverse_kl"  D = KL(q_θ ‖ p_T) = Σ_v q_θ(v)·log(q_θ(v)/p_T(v))    (mode-seeking; with λ = 1
                  the Thinking Machines recipe)
    "jsd"         D = JSD(β) = β·KL(p_T ‖ M) + (1-β)·KL(q_θ ‖ M),  M = β·p_T + (1-β)·q_θ
                  (GKD Eq. 1)
β's ends, as the GKD paper and TRL's ``GKDTrainer.generalized_jsd_loss``: JSD(0) := KL(p_T ‖ q_θ)
(forward) and JSD(1) := KL(q_θ ‖ p_T) (reverse), the limits of JSD(β)/β as β → 0 and of
JSD(β)/(1-β) as β → 1. JSD(β) itself tends to 0 at both ends, so its scale jumps there: near an end
β mostly scales the loss (and the step size); the direction of its gradient is the limit's.

Symbols -> code: p_T -> teacher | q_θ -> student | λ -> cfg.lmbda | β -> cfg.beta | τ ->
cfg.temperature | D -> cfg.divergence, one of :func:`forward_kl`, :func:`reverse_kl`, :func:`jsd`
(log-probs ``(..., V)`` -> ``(...)``) | L -> :func:`distill_loss` | D_off -> ``data``.

Decisions: no τ² factor (GKD and TRL have none; Hinton et al. 2015 scale by τ²). The logged
``forward_kl`` / ``reverse_kl`` are at τ = 1 (the models' own distributions), ``loss`` at τ.
The teacher is not saved in a checkpoint: ``Distill.load(dir, teacher, env)`` takes it again, and
a fingerprint of its weights (count, Σ|w|, Σw²) refuses another teacher.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from textgym.agents._common import check_finite
from textgym.agents.base import Agent
from textgym.agents.bc import Demonstrations, as_demonstrations, state_logits
from torch import Tensor

from textgym.checkpoint import require_part
from textgym.config import check_fields, check_range
from textgym.estimators import masked_mean
from textgym.hf import compute_dtype_name
from textgym.lm import LanguageModel
from textgym.rollout import Rollout, Sampling, collect
from textgym.tasks import Task
from textgym.training import (
    adamw,
    check_policy_env,
    env_rng_state,
    progress,
    set_env_rng_state,
)

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
Data = Task | Sequence[tuple[str, str]] | Demonstrations


@dataclass(frozen=True)
class DistillConfig:
    """Hyperparameters of on-policy distillation (defaults work on ``textgym.DEFAULT_MODEL``)."""

    divergence: Divergence = "jsd"
    """D: "forward_kl", "reverse_kl" or "jsd" (GKD's generalised JSD(β))."""
    beta: float = 0.5
    """β of JSD(β): 0 is forward KL, 1 reverse KL (GKD sweeps {0.1, 0.5, 0.9}; TRL: 0.5)."""
    lmbda: float = 0.5
    """λ: the probability that a batch is the student's own samples (GKD: 0.5 or 1; TRL: 0.5)."""
    temperature: float = 1.0
    """τ: both distributions of the loss are softmax(logits / τ)."""
    sampling: Sampling = field(default_factory=Sampling)
    """Temperature / top-k / top-p of the sampled completions (the student's and the teacher's)."""
    lr: float = 1e-3
    """AdamW step size (a 1M-parameter model takes large steps)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm (0 disables)."""
    batch_size: int = 32
    """Rows of ``data`` per off-policy batch (a sampled batch is one round of the env)."""
    seed: int = 0
    """Seeds the samples, the on/off-policy coin, the data order and the env's first reset."""

    def __post_init__(self) -> None:
        check_fields(self)  # also: an unknown divergence name is a ValueError
        for name in ("beta", "lmbda"):
            check_range(self, name, low=0, high=1)
        for name in ("temperature", "lr"):
            check_range(self, name, low=0, low_open=True)
        for name in ("weight_decay", "max_grad_norm"):
            check_range(self, name, low=0)
        check_range(self, "batch_size", low=1)
        check_range(self, "seed", low=0, high=2**32 - 1)


def _kl(logp: Tensor, logq: Tensor) -> Tensor:  # (..., V) -> (...)
    """KL(p ‖ q) = Σ_v p(v)·(log p(v) - log q(v)); a term with p(v) = 0 is 0 (0·log 0 = 0)."""
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), 0.0).sum(-1)


def forward_kl(logq_theta: Tensor, logp_teacher: Tensor, beta: float = 0.0) -> Tensor:
    """KL(p_T ‖ q_θ) per token, from log-probs ``(..., V)`` (``beta`` unused)."""
    return _kl(logp_teacher, logq_theta)


def reverse_kl(logq_theta: Tensor, logp_teacher: Tensor, beta: float = 1.0) -> Tensor:
    """KL(q_θ ‖ p_T) per token, from log-probs ``(..., V)`` (``beta`` unused)."""
    return _kl(logq_theta, logp_teacher)


def jsd(logq_theta: Tensor, logp_teacher: Tensor, beta: float = 0.5) -> Tensor:
    """JSD(β) = β·KL(p_T ‖ M) + (1-β)·KL(q_θ ‖ M), M = β·p_T + (1-β)·q_θ, per token; forward KL at
    β = 0 and reverse KL at β = 1 (see the module docstring)."""
    if beta == 0:
        return forward_kl(logq_theta, logp_teacher)
    if beta == 1:
        return reverse_kl(logq_theta, logp_teacher)
    # log M in one op, never exp then log: no underflow where both probabilities are tiny
    log_m = torch.logaddexp(logp_teacher + math.log(beta), logq_theta + math.log1p(-beta))
    return beta * _kl(logp_teacher, log_m) + (1 - beta) * _kl(logq_theta, log_m)


DIVERGENCES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": jsd,
}


def distill_loss(
    student_logits: Tensor,  # (B, T, V) z_θ at the completion's states
    teacher_logits: Tensor,  # (B, T, V) z_T at the same states
    mask: Tensor,  # (B, T) 1 = a completion token (its state counts)
    divergence: Divergence = "jsd",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:  # ()
    """L: the per-token divergence D(p_T ‖ q_θ) at temperature τ, averaged over masked tokens.

    Masked positions contribute nothing, whatever their logits (``where``, not a product).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    logq = torch.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, T, V) float32
    logp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (B, T, V)
    keep = mask > 0  # (B, T)
    d = torch.where(keep, DIVERGENCES[divergence](logq, logp, beta), 0.0)  # (B, T)
    return masked_mean(d, keep.float())


def token_kls(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Per-token KL(p_T ‖ q_θ) and KL(q_θ ‖ p_T) at τ = 1, averaged over masked tokens."""
    return {
        "forward_kl": distill_loss(student_logits, teacher_logits, mask, "forward_kl"),
        "reverse_kl": distill_loss(student_logits, teacher_logits, mask, "reverse_kl"),
    }


# ---------------------------------------------------------------------------- sequences


def rollout_batch(rollout: Rollout) -> Demonstrations:
    """A rollout's completions as rows of states to distil on (labels = the sampled tokens)."""
    r = rollout
    return Demonstrations(
        r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_ids, r.completion_mask
    )


def check_same_vocabulary(student: LanguageModel, teacher: LanguageModel) -> None:
    """Raise unless the teacher's logits and tokens are the student's (one vocabulary V)."""
    names = [getattr(m.model.config, "name_or_path", "") or "?" for m in (student, teacher)]
    if student.vocab_size != teacher.vocab_size:
        raise ValueError(
            f"the student ({names[0]}) has {student.vocab_size} logits (a tokenizer of "
            f"{len(student.tokenizer)} tokens) but the teacher ({names[1]}) {teacher.vocab_size} "
            f"(a tokenizer of {len(teacher.tokenizer)}): distillation compares their "
            "distributions token by token, so they must share a tokenizer and an LM head size"
        )
    if student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise ValueError(
            f"the student ({names[0]}) and the teacher ({names[1]}) have {student.vocab_size} "
            "logits each but different tokenizers: token ids would not mean the same tokens"
        )


@torch.no_grad()
def teacher_samples(
    teacher: LanguageModel,
    env: Any,
    *,
    rounds: int = 1,
    sampling: Sampling | None = None,
    seed: int = 0,
) -> Demonstrations:
    """Off-policy data generated once: ``rounds`` rounds of the teacher's completions for the
    env's prompts (pass it as ``Distill(..., data=...)``; sequence-level KD, Kim & Rush 2016).
    ``sampling`` defaults to plain sampling at temperature 1."""
    sampling = sampling or Sampling()
    generator = torch.Generator(device=teacher.device).manual_seed(seed)
    parts = [
        rollout_batch(
            collect(
                teacher, env, sampling=sampling, generator=generator, seed=seed if i == 0 else None
            )
        )
        for i in range(rounds)
    ]
    return Demonstrations.cat(parts, teacher.pad_token_id)


@torch.no_grad()
def evaluate_distillation(
    student: LanguageModel,
    teacher: LanguageModel,
    env: Any,
    *,
    on: Literal["student", "teacher"] = "student",
    sampling: Sampling | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Per-token KLs (τ = 1) between teacher and student on one round of completions for the env's
    prompts, sampled with a fixed seed by the student (``on="student"``: the on-policy distance,
    the Thinking Machines metric is its ``reverse_kl``) or by the teacher; ``sampling`` defaults
    to plain sampling at temperature 1.

    Returns:
        ``{"forward_kl", "reverse_kl", "length"}``: token means, and the mean completion length.
    """
    sampler, sampling = (student if on == "student" else teacher), sampling or Sampling()
    generator = torch.Generator(device=sampler.device).manual_seed(seed)
    batch = rollout_batch(collect(sampler, env, sampling=sampling, generator=generator, seed=seed))
    kls = token_kls(state_logits(student, batch), state_logits(teacher, batch), batch.mask)
    return {**{k: float(v) for k, v in kls.items()}, "length": float(batch.mask.sum(-1).mean())}


def _fingerprint(lm: LanguageModel) -> list[float]:
    """(number of weights, Σ|w|, Σw²), accumulated in float64: a cheap check that a teacher is the
    saved one (positive sums: no cancellation, so a relative tolerance absorbs device rounding)."""
    params = [p.detach() for p in lm.model.parameters()]
    return [
        float(sum(p.numel() for p in params)),
        float(sum(p.abs().sum(dtype=torch.float64) for p in params)),
        float(sum(torch.linalg.vector_norm(p, dtype=torch.float64) ** 2 for p in params)),
    ]


class Distill(Agent):
    """GKD / on-policy distillation of a student LM towards a teacher LM (same vocabulary).

    ``Distill.load(dir, teacher, env=None, device="auto", **runtime)`` resumes a saved run bit for
    bit on CPU; the teacher is not in the checkpoint (it is checked against a fingerprint).

    Args:
        student: q_θ, trained in place.
        teacher: p_T, frozen (eval mode, no gradients); on the student's device.
        env: a NEXT_STEP-autoreset vector env built from the student (``gym.make_vec(
            "TextGen-v0", num_envs=B, model=student, ...)``): its prompts are sampled by the
            student for on-policy batches, and by the teacher for off-policy ones when no ``data``
            is given. Needed when λ > 0.
        data: fixed off-policy completions: a ``Task`` (its demonstrations), (prompt, completion)
            texts, or :class:`~textgym.agents.bc.Demonstrations` (e.g. :func:`teacher_samples`).
        config: :class:`DistillConfig`.
        log_dir, tensorboard: one CSV row (and TensorBoard scalars) per update.
        progress_bar: show a tqdm bar in ``learn``.
    """

    config_class = DistillConfig

    def __init__(
        self,
        student: LanguageModel,
        teacher: LanguageModel,
        env: Any = None,
        *,
        data: Data | None = None,
        config: DistillConfig = DistillConfig(),
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
    ) -> None:
        self._check_inputs(student, teacher, env, data, config)
        self.student, self.teacher, self.env, self.config = student, teacher, env, config
        self.device = student.device
        student.model.eval()  # no dropout: the student's distribution is the one distilled
        teacher.model.eval()  # its passes run under no_grad: its parameters stay as they were
        params = [p for p in student.model.parameters() if p.requires_grad]
        self.optimizer = adamw(params, lr=config.lr, weight_decay=config.weight_decay)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.np_rng = np.random.default_rng(config.seed)
        self.data = None if data is None else as_demonstrations(student, data)
        self.order = np.zeros(0, dtype=np.int64)  # the data's row order in this epoch
        self.cursor, self.epoch = 0, 0
        self.rounds = 0  # env rounds collected (the first one seeds the env)
        self.n_on_policy = 0
        self._setup_runtime(log_dir=log_dir, tensorboard=tensorboard, progress_bar=progress_bar)

    @staticmethod
    def _check_inputs(
        student: LanguageModel, teacher: LanguageModel, env: Any, data: Any, config: DistillConfig
    ) -> None:
        if teacher.model is student.model:
            raise ValueError("the teacher is the student itself: pass a separate teacher model")
        check_same_vocabulary(student, teacher)
        if teacher.device != student.device:
            raise ValueError(
                f"the student is on {student.device} but the teacher on {teacher.device}: "
                "put both on one device"
            )
        if env is None and data is None:
            raise ValueError("Distill needs an env (prompts to sample) or data (completions)")
        if env is None and config.lmbda > 0:
            raise ValueError(
                f"lmbda={config.lmbda} asks for on-policy batches, which sample the student on "
                "an env's prompts: pass env=gym.make_vec('TextGen-v0', num_envs=B, "
                "model=student, ...), or set lmbda=0 to learn from data only"
            )
        if env is not None:
            check_policy_env("Distill", student, env)
        if data is not None and config.lmbda == 1:
            warnings.warn("lmbda=1: every batch is on-policy, so data is never used", stacklevel=3)

    @property
    def policy(self) -> LanguageModel:
        """The trained model (the student), under the name every agent uses."""
        return self.student

    # ------------------------------------------------------------------ batches

    def _sample(self, model: LanguageModel) -> Demonstrations:
        """One round of ``model``'s completions for the env's prompts."""
        seed = self.config.seed if self.rounds == 0 else None
        rollout = collect(
            model, self.env, sampling=self.config.sampling, generator=self.generator, seed=seed
        )
        self.rounds += 1
        return rollout_batch(rollout)

    def _next_rows(self) -> Demonstrations:
        """The next ``batch_size`` rows of the data; a new permutation every epoch."""
        assert self.data is not None
        if self.cursor >= len(self.order):
            self.epoch += 1 if len(self.order) else 0  # the first permutation starts epoch 0
            self.order, self.cursor = self.np_rng.permutation(len(self.data)), 0
        rows = self.order[self.cursor : self.cursor + self.config.batch_size]
        self.cursor += len(rows)
        return self.data[torch.as_tensor(rows, device=self.device)]

    def _off_policy(self) -> Demonstrations:
        return self._next_rows() if self.data is not None else self._sample(self.teacher)

    # ------------------------------------------------------------------ the loop

    def _update(self, batch: Demonstrations) -> dict[str, float]:
        """One gradient step of L on ``batch``; returns the loss and both KLs at τ = 1."""
        cfg = self.config
        student_logits = state_logits(self.student, batch)  # (B, T, V), with gradients
        with torch.no_grad():
            teacher_logits = state_logits(self.teacher, batch)  # (B, T, V)
            kls = token_kls(student_logits.detach(), teacher_logits, batch.mask)
        loss = distill_loss(
            student_logits, teacher_logits, batch.mask, cfg.divergence, cfg.beta, cfg.temperature
        )
        check_finite(self.step, {"loss": loss.detach(), **kls})
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.student.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        return {"loss": float(loss.detach()), **{k: float(v) for k, v in kls.items()}}

    def learn(self, n_updates: int) -> list[dict[str, float]]:
        """Run ``n_updates`` of coin -> sample or read -> divergence -> step; one row each.

        Each row: ``loss`` (D at τ), ``forward_kl`` / ``reverse_kl`` (τ = 1, this batch, before
        the step), ``on_policy`` (1 when the batch was the student's samples),
        ``on_policy_fraction`` (of all updates so far), ``length`` (mean completion tokens), and
        ``time_sample`` / ``time_update`` in seconds.
        """
        rows: list[dict[str, float]] = []
        for _ in progress(range(n_updates), "Distill", disable=not self.progress_bar):
            start = time.perf_counter()
            on_policy = bool(self.np_rng.random() < self.config.lmbda)  # u < λ (GKD Alg. 1)
            batch = self._sample(self.student) if on_policy else self._off_policy()
            sampled = time.perf_counter()
            stats = self._update(batch)
            self.n_on_policy += on_policy
            row = {
                "update": float(self.step),
                **stats,
                "on_policy": float(on_policy),
                "on_policy_fraction": self.n_on_policy / (self.step + 1),
                "length": float(batch.mask.sum(-1).mean()),
                "time_sample": sampled - start,
                "time_update": time.perf_counter() - sampled,
            }
            self.step += 1
            rows.append(row)
            self._record(row)
        return rows

    # ------------------------------------------------------------------ checkpoints

    def _write_parts(self, path: Path) -> list[str]:
        self.student.save_pretrained(path / "student")  # a plain HF dir
        return ["student"]

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "history": self.history,
            "compute_dtype": compute_dtype_name(self.student.compute_dtype),
            "optimizer": self.optimizer.state_dict(),
            "rng": {
                "torch": self.generator.get_state(),
                "numpy": self.np_rng.bit_generator.state,
                "env": None if self.env is None else env_rng_state(self.env),
            },
            "data": None if self.data is None else self.data.state_dict(),
            "order": self.order,
            **{f: getattr(self, f) for f in ("cursor", "epoch", "rounds", "n_on_policy")},
            "teacher": _fingerprint(self.teacher),
        }

    @classmethod
    def _restore(
        cls, path: Path, config: DistillConfig, state: dict[str, Any], teacher: LanguageModel,
        env: Any = None, *, device: str = "auto", **runtime: Any,
    ) -> Distill:  # fmt: skip
        saved, now = state["teacher"], _fingerprint(teacher)
        if not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(saved, now, strict=True)):
            raise ValueError(
                f"this teacher is not the one {path} was trained with (weights: count, sum, sum "
                f"of squares {now} vs {saved}): pass the same teacher"
            )
        if (state["rng"]["env"] is None) != (env is None):
            had = "without" if state["rng"]["env"] is None else "with"
            raise ValueError(f"{path} was saved {had} an env: resume it the same way")
        student = LanguageModel.from_pretrained(
            require_part(path, "student"), device=device, compute_dtype=state["compute_dtype"]
        )
        data = None if state["data"] is None else Demonstrations(**state["data"])
        agent = cls(student, teacher, env, data=data, config=config, **runtime)
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.generator.set_state(state["rng"]["torch"])
        agent.np_rng.bit_generator.state = state["rng"]["numpy"]
        if env is not None:
            set_env_rng_state(env, state["rng"]["env"])
        for f in ("step", "history", "order", "cursor", "epoch", "rounds", "n_on_policy"):
            setattr(agent, f, state[f])
        return agent
