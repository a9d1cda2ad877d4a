"""KTO: learning from thumbs up/down (Ethayarajh et al. 2024, arXiv:2402.01306, Eq. 7).

Each example is one completion y of a prompt x with a binary label, desirable or not; there are
no pairs. With h = log π_θ(y|x) - log π_ref(y|x) (summed over the completion's tokens)::

    z_0 = max(0, mean_batch log π_θ(y'|x)/π_ref(y'|x))  over mismatched (x, y'), no gradient
    L   = mean(λ_y - v(x, y)),  v = λ_D·σ(β(h - z_0)) if desirable else λ_U·σ(β(z_0 - h))

(``agents/feedback_losses.py``: ``kto_loss``, ``kto_reference_point``). The mismatched
completion of example i is example i+1's (the data's order, wrapping around), as TRL pairs each
prompt with another row's completion; its log-ratio estimates KL(π_θ‖π_ref) on the batch.

The agent is DPO's machinery with another loss: example i is stored as the "pair" (x_i, y_i,
y_{i+1}), so one forward scores y_i and the mismatched y' of its batch, π_ref's log-probs are
computed once and cached, the data order and checkpoints are DPO's, and resumes are bit for bit.
Symbols -> code: β -> beta | λ_D, λ_U -> desirable_weight, undesirable_weight | z_0 -> z0.
Not done: data parallelism (``accelerator``), since z_0 would need a cross-process mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from textgym.agents._common import check_finite
from textgym.agents.dpo import DPO
from textgym.agents.feedback_losses import kto_loss, kto_reference_point
from torch import Tensor

from textgym.config import check_fields, check_range
from textgym.feedback import Thumb
from textgym.lm import LanguageModel
from textgym.preference import PreferenceBatch, PreferencePair, tokenize_pairs
from textgym.training import progress

__all__ = ["KTO", "KTOConfig"]


@dataclass(frozen=True)
class KTOConfig:
    """Hyperparameters of KTO (defaults: the paper's β and weights; lr for the embedded model)."""

    beta: float = 0.1
    """β: tie of π_θ to π_ref (paper: 0.1)."""
    desirable_weight: float = 1.0
    """λ_D (paper: set λ_D·n_D / (λ_U·n_U) in [1, 4/3] when the labels are imbalanced)."""
    undesirable_weight: float = 1.0
    """λ_U."""
    lr: float = 1e-4
    """AdamW learning rate."""
    batch_size: int = 8
    """Examples per update (at least 2: z_0 needs mismatched pairs)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up, in updates."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    max_length: int | None = None
    """Most tokens per prompt+completion row; None: the model's context window."""
    eval_every: int = 0
    """Evaluate on the held-out examples every this many updates (0: only when asked)."""
    seed: int = 0
    """Seed of the data order."""
    packing: bool = True
    """Score the rows packed, padding-free (``textgym.packing``)."""

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("beta", "lr", "desirable_weight", "undesirable_weight"):
            check_range(self, name, low=0, low_open=True)
        check_range(self, "batch_size", low=2)
        for name in ("warmup_steps", "eval_every", "max_grad_norm"):
            check_range(self, name, low=0)
        check_range(self, "max_length", low=2)
        check_range(self, "seed", low=0, high=2**32 - 1)


def as_rows(thumbs: Sequence[Thumb]) -> tuple[list[PreferencePair], Tensor]:
    """(x_i, y_i, y_{i+1}) rows and the labels (N,) bool of N ≥ 2 thumbs."""
    if len(thumbs) < 2:
        raise ValueError(f"KTO needs at least 2 labelled completions, got {len(thumbs)}")
    if not all(isinstance(t, Thumb) for t in thumbs):
        raise TypeError("KTO data must be textgym.feedback.Thumb records (prompt, completion, up)")
    n = len(thumbs)
    rows = [
        PreferencePair(t.prompt, t.completion, thumbs[(i + 1) % n].completion)
        for i, t in enumerate(thumbs)
    ]
    return rows, torch.tensor([t.up for t in thumbs], dtype=torch.bool)


class KTO(DPO):
    """KTO on unpaired desirable / undesirable completions.

    Args:
        policy: π_θ, trained in place.
        ref: π_ref; None freezes a copy of ``policy`` as it is now.
        data: ``Thumb`` records (or, from a checkpoint, the tokenized rows with ``labels``).
        eval_data: optional held-out ``Thumb`` records.
        config: :class:`KTOConfig`.
        labels, eval_labels: the labels of already tokenized rows (checkpoints).
        ref_logps, eval_ref_logps, device, log_dir, tensorboard, progress_bar: as DPO's.
    """

    config_class = KTOConfig  # type: ignore[assignment]  # KTO's own hyperparameters

    def __init__(
        self,
        policy: LanguageModel,
        ref: LanguageModel | None = None,
        data: Sequence[Thumb] | PreferenceBatch = (),
        eval_data: Sequence[Thumb] | PreferenceBatch | None = None,
        config: KTOConfig = KTOConfig(),
        *,
        labels: Tensor | None = None,
        eval_labels: Tensor | None = None,
        ref_logps: Tensor | None = None,
        eval_ref_logps: Tensor | None = None,
        device: str = "auto",
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
    ) -> None:
        rows, self.labels = self._rows(data, labels)
        eval_rows: Any = None
        self.eval_labels: Tensor | None = None
        if eval_data is not None:
            eval_rows, self.eval_labels = self._rows(eval_data, eval_labels)
        super().__init__(
            policy, ref, rows, eval_rows, config,  # type: ignore[arg-type]  # DPO's fields, same names
            ref_logps=ref_logps, eval_ref_logps=eval_ref_logps, device=device, log_dir=log_dir,
            tensorboard=tensorboard, progress_bar=progress_bar,
        )  # fmt: skip

    @staticmethod
    def _rows(data: Sequence[Thumb] | PreferenceBatch, labels: Tensor | None) -> tuple[Any, Tensor]:
        if isinstance(data, PreferenceBatch):
            if labels is None or labels.shape != (len(data),):
                raise ValueError("tokenized KTO rows need their labels (N,)")
            return data, labels.bool()
        return as_rows(data)

    def _tokenize(self, data: Any) -> PreferenceBatch:
        # Unlike DPO, no row is dropped (a row's mismatched y' may equal y): labels stay aligned.
        if isinstance(data, PreferenceBatch):
            return data
        return tokenize_pairs(self.policy, data, max_length=self.config.max_length)

    def _terms(
        self, data: PreferenceBatch, ref: Tensor, labels: Tensor, index: Tensor, logps: Any
    ) -> dict[str, Tensor]:
        cfg = self.config
        p = self._pair_logps(data, ref, index, logps)
        h, kl = p.theta_w - p.ref_w, p.theta_l - p.ref_l  # (B,) each
        z0 = kto_reference_point(kl)
        up = labels[index].to(h.device)
        loss = kto_loss(h, up, z0, cfg.beta, cfg.desirable_weight, cfg.undesirable_weight)
        reward = cfg.beta * h.detach()

        def mean_where(x: Tensor, m: Tensor) -> Tensor:
            return x[m].mean() if m.any() else torch.tensor(math.nan)

        return {
            "loss": loss,
            "z0": z0,
            "reward_desirable": mean_where(reward, up),
            "reward_undesirable": mean_where(reward, ~up),
            "accuracy": ((h.detach() > z0) == up).float().mean(),
            "logp": p.theta_w.detach().mean(),
        }

    def learn(self, n_updates: int) -> list[dict[str, float]]:
        """Run ``n_updates`` optimizer updates of the KTO loss; return their history rows
        (loss, z_0, mean implicit rewards of desirable and undesirable examples, the fraction
        on the right side of z_0, grad norm, lr; "eval_*" keys every ``eval_every`` updates)."""
        rows: list[dict[str, float]] = []
        for _ in progress(range(n_updates), desc="KTO", disable=not self.progress_bar):
            index = self._indices(self.step)
            terms = self._terms(self.data, self.ref_logps, self.labels, index, self.trainable)
            check_finite(self.step, {k: v for k, v in terms.items() if k in ("loss", "z0", "logp")})
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            clip = self.config.max_grad_norm or float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.model.parameters(), clip)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            row = {"update": float(self.step), **{k: float(v.detach()) for k, v in terms.items()}}
            row |= {"grad_norm": grad_norm.item(), "lr": float(lr)}
            every = self.config.eval_every
            if self.eval_data is not None and every and self.step % every == 0:
                row |= {f"eval_{k}": v for k, v in self.evaluate().items()}
            rows.append(row)
            self._record(row)
        return rows

    @torch.no_grad()
    def evaluate(self, data: Any = None, batch_size: int = 32) -> dict[str, float]:
        """Loss and the other terms over the held-out examples (z_0 over all of them)."""
        if data is not None:
            raise ValueError("KTO.evaluate scores eval_data given to the constructor only")
        if self.eval_data is None or self.eval_ref_logps is None or self.eval_labels is None:
            raise ValueError("evaluate() needs eval_data given to the constructor")
        index = torch.arange(len(self.eval_data))
        terms = self._terms(
            self.eval_data, self.eval_ref_logps, self.eval_labels, index, self.policy_logps
        )
        return {k: float(v) for k, v in terms.items()}

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "labels": self.labels, "eval_labels": self.eval_labels}

    @classmethod
    def _restore(  # type: ignore[override]  # KTO's config and labels
        cls,
        path: Path,
        config: KTOConfig,
        state: dict[str, Any],
        *,
        device: str = "auto",
        **runtime: Any,
    ) -> KTO:
        policy = LanguageModel.from_pretrained(path / "policy", device=cls._device(device, None))
        ref = LanguageModel.from_pretrained(path / "reference", device=policy.device)
        saved_eval = state["eval_data"]
        agent = cls(
            policy, ref, PreferenceBatch(**state["data"]),
            None if saved_eval is None else PreferenceBatch(**saved_eval), config,
            labels=state["labels"], eval_labels=state["eval_labels"],
            ref_logps=state["ref_logps"], eval_ref_logps=state["eval_ref_logps"], device=device,
            **runtime,
        )  # fmt: skip
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.scheduler.load_state_dict(state["scheduler"])
        agent.step, agent.history = state["step"], state["history"]
        return agent
