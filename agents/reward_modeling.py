"""Reward modelling: fit r_φ(x, y) to preference pairs with the Bradley-Terry loss.

Bradley & Terry 1952 model a comparison of two items as a logistic function of the difference of
their scores. RLHF fits a reward model to comparisons of completions of one prompt this way
(Christiano et al. 2017, arXiv:1706.03741, §2.2.3, Eq. 1; Ziegler et al. 2019, arXiv:1909.08593,
§2.2; Ouyang et al. 2022, arXiv:2203.02155, §3.5, Eq. 1)::

    p(y_w ≻ y_l | x) = σ( r_φ(x, y_w) - r_φ(x, y_l) )
    L(φ) = -E_{(x, y_w, y_l) ~ D} log σ( r_φ(x, y_w) - r_φ(x, y_l) )

Symbols -> code: x -> the pairs' prompts | y_w, y_l -> chosen / rejected completions |
r_φ(x, y) -> :class:`~textgym.rewards.reward_model.RewardModel` (``r_w``, ``r_l`` in
:func:`bradley_terry_loss`) | σ -> ``F.logsigmoid`` (log σ in one op) | D -> ``train_pairs`` |
φ -> the backbone's and the head's parameters.

Engineering choices: each update scores the chosen and the rejected rows of ``batch_size`` pairs in
one forward pass; every pair is one term of the mean (Ouyang et al. batch all K(K-1)/2 comparisons
of a prompt together; pass all of them as pairs for the same sum). The pair order of epoch e is the
e-th permutation of a generator seeded with ``config.seed``. The model trains in train mode, so a
backbone with dropout draws its masks from torch's global RNG, seeded by the caller (a checkpoint
saves that RNG and ``load`` restores it). After each epoch the held-out pairs give the validation
loss and pairwise accuracy.

The model itself, its tokenisation, scoring and files live in ``textgym.rewards.reward_model``; the
data recipe (samples of a policy labelled by a gold reward) is
:func:`textgym.pair_sampling.synthetic_preferences`.

Shapes: N pairs (2N rows, chosen first), L sequence length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from textgym.agents.base import Agent
from textgym.rewards.reward_model import RewardModel
from torch import Tensor, nn

from textgym.config import check_fields, check_range
from textgym.preference import PreferenceBatch, PreferencePair
from textgym.training import adamw, progress, resolve_device

__all__ = [
    "RewardModelConfig",
    "RewardModelTrainer",
    "bradley_terry_loss",
    "pairwise_accuracy",
]


@dataclass(frozen=True)
class RewardModelConfig:
    """Hyperparameters of :class:`RewardModelTrainer` (defaults work on the embedded trunk)."""

    lr: float = 5e-4
    """AdamW learning rate; Ouyang et al. use 9e-6 for a 6B model, small trunks need more."""
    epochs: int = 2
    """Passes over the pairs that ``learn()`` runs; Ouyang et al. train 1 epoch (more overfits)."""
    batch_size: int = 32
    """Pairs per update (2x rows per forward pass)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient's global norm to this; None: no clipping."""
    seed: int = 0
    """Seed of the pair order (the head's init is the caller's, at construction)."""
    eval_batch_size: int = 128
    """Rows per forward pass in validation."""

    def __post_init__(self) -> None:
        check_fields(self)  # also: lr finite
        if not self.lr > 0:
            raise ValueError(f"RewardModelConfig.lr must be > 0, got {self.lr}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"RewardModelConfig.{name} must be >= 1, got {getattr(self, name)}"
                )
        check_range(self, "weight_decay", low=0)
        check_range(self, "max_grad_norm", low=0, low_open=True)  # None passes: no clipping
        check_range(self, "seed", low=0, high=2**32 - 1)


def bradley_terry_loss(
    r_w: Tensor,  # (N,) r_φ(x, y_w)
    r_l: Tensor,  # (N,) r_φ(x, y_l)
) -> Tensor:  # ()
    """L(φ) = -mean log σ(r_φ(x, y_w) - r_φ(x, y_l)) (Ouyang et al. 2022, Eq. 1); log 2 at a tie."""
    if r_w.shape != r_l.shape:
        raise ValueError(
            f"r_w and r_l must have one shape, got {tuple(r_w.shape)} and {tuple(r_l.shape)}"
        )
    return -F.logsigmoid(r_w - r_l).mean()  # log σ in one op: no underflow at large margins


@torch.no_grad()
def _evaluate(rm: RewardModel, batch: PreferenceBatch, batch_size: int) -> tuple[float, float]:
    """Mean BT loss and pairwise accuracy (ties count 1/2) over all pairs of ``batch``."""
    n, step = len(batch), max(1, batch_size // 2)  # a pair is two rows
    losses, correct = 0.0, 0.0
    was_training = rm.training
    rm.eval()
    try:
        for start in range(0, n, step):
            sub = batch.select(torch.arange(start, min(n, start + step))).to(rm.device)
            r_all = rm(sub.input_ids, sub.attention_mask)  # (2b,)
            r_w, r_l = r_all.chunk(2)
            losses += float(bradley_terry_loss(r_w, r_l)) * len(r_w)
            correct += float((r_w > r_l).sum() + 0.5 * (r_w == r_l).sum())
    finally:
        rm.train(was_training)
    return losses / n, correct / n


def pairwise_accuracy(
    rm: RewardModel, pairs: Sequence[PreferencePair] | PreferenceBatch, batch_size: int = 128
) -> float:
    """Fraction of pairs with r_φ(x, y_w) > r_φ(x, y_l) (ties count 1/2).

    Args:
        rm: the model.
        pairs: pairs, or a ``PreferenceBatch`` made by ``rm.tokenize_pairs``.
        batch_size: rows per forward pass.

    Returns:
        The accuracy in [0, 1].
    """
    batch = pairs if isinstance(pairs, PreferenceBatch) else rm.tokenize_pairs(pairs)
    return _evaluate(rm, batch, batch_size)[1]


_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")
"""Every key a history row may have (the first row, before training, has no train_*)."""


class RewardModelTrainer(Agent):
    """Fit a reward model r_φ to preference pairs by minimising the Bradley-Terry loss with AdamW.

    ``RewardModelTrainer.load(dir, device="auto", trust_remote_code=False, **runtime)`` resumes a
    saved run bit for bit on the CPU. The model is saved in ``dir/reward_model`` (a
    :meth:`RewardModel.save` folder); dropout draws from torch's global RNG, whose state the
    checkpoint holds and ``load`` restores.

    Args:
        model: r_φ, trained in place (e.g. ``RewardModel.from_backbone(lm)``).
        train_pairs: training pairs, or a ``PreferenceBatch`` from ``model.tokenize_pairs``.
        val_pairs: held-out pairs (or batch) for a validation row per epoch; None: none.
        config: hyperparameters.
        device: where to train: "auto" (CUDA when available), "cpu", "cuda:0"... (the model
            moves there).
        log_dir: folder for progress.csv (one row per epoch); None: no file.
        tensorboard: also write TensorBoard scalars to ``log_dir``.
        progress_bar: show a tqdm bar over updates in ``learn``.
    """

    config_class = RewardModelConfig

    def __init__(
        self,
        model: RewardModel,
        train_pairs: Sequence[PreferencePair] | PreferenceBatch,
        val_pairs: Sequence[PreferencePair] | PreferenceBatch | None = None,
        config: RewardModelConfig = RewardModelConfig(),
        *,
        device: str | torch.device = "auto",
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
    ) -> None:
        self.config = config
        self._setup_runtime(log_dir=log_dir, tensorboard=tensorboard, progress_bar=progress_bar)
        self.model = model.to(resolve_device(device))
        self.train_data = self._tokenize(train_pairs)
        self.val_data = None if val_pairs is None else self._tokenize(val_pairs)
        self.optimizer = adamw(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.generator = torch.Generator().manual_seed(config.seed)  # the pair order, on CPU
        self.updates_per_epoch = math.ceil(len(self.train_data) / config.batch_size)
        self.order: Tensor | None = None  # (N,) this epoch's pair order, drawn at its first update
        self.running = {"loss_sum": 0.0, "correct": 0.0, "seen": 0}  # this epoch's updates so far

    def _tokenize(self, pairs: Sequence[PreferencePair] | PreferenceBatch) -> PreferenceBatch:
        return pairs if isinstance(pairs, PreferenceBatch) else self.model.tokenize_pairs(pairs)

    def _update(self, sub: PreferenceBatch) -> tuple[Tensor, Tensor]:
        """One AdamW step on the BT loss of ``sub``; returns the detached (b,) r_w and r_l."""
        sub = sub.to(self.model.device)
        r_w, r_l = self.model(sub.input_ids, sub.attention_mask).chunk(2)  # (b,), (b,): one pass
        loss = bradley_terry_loss(r_w, r_l)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite Bradley-Terry loss {loss.item()} at update {self.step}; r_w in "
                f"[{r_w.min().item():.3g}, {r_w.max().item():.3g}], r_l in "
                f"[{r_l.min().item():.3g}, {r_l.max().item():.3g}]: lower the learning rate"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        return r_w.detach(), r_l.detach()

    def _row(self, epoch: int, start: float, **train_stats: float) -> dict[str, float]:
        row: dict[str, float] = {"epoch": float(epoch), **train_stats}
        if self.val_data is not None:
            row["val_loss"], row["val_acc"] = _evaluate(
                self.model, self.val_data, self.config.eval_batch_size
            )
        row["seconds"] = time.perf_counter() - start
        self._record(row)
        return row

    def _record(self, row: dict[str, float]) -> None:
        # The first logged row fixes the CSV's columns: log them all (NaN where a row has none).
        self.history.append(row)
        if self.logger is not None:
            self.logger.log({"update": self.step, **{k: row.get(k, math.nan) for k in _COLUMNS}})

    def learn(self, n_updates: int | None = None) -> list[dict[str, float]]:
        """Run ``n_updates`` AdamW updates on the BT loss; return the history rows they made.

        Args:
            n_updates: how many updates; None: what is left of ``config.epochs`` epochs.

        Returns:
            The new rows: one for epoch 0 (before the first update: validation only), then one
            at the end of each epoch with ``train_loss``, ``train_acc`` (running, over the epoch's
            updates), ``val_loss``, ``val_acc`` and ``seconds`` since this call began.
        """
        cfg, per_epoch, n = self.config, self.updates_per_epoch, len(self.train_data)
        if n_updates is None:
            n_updates = max(0, cfg.epochs * per_epoch - self.step)
        start = time.perf_counter()
        rows = [self._row(0, start)] if self.step == 0 and not self.history else []
        bar = progress(range(n_updates), "reward model", disable=not self.progress_bar)
        self.model.train()
        for _ in bar:
            epoch, i = divmod(self.step, per_epoch)
            if i == 0:
                self.order = torch.randperm(n, generator=self.generator)  # (N,)
                self.running = {"loss_sum": 0.0, "correct": 0.0, "seen": 0}
            assert self.order is not None  # drawn at the epoch's first update
            index = self.order[i * cfg.batch_size : (i + 1) * cfg.batch_size]  # (b,)
            r_w, r_l = self._update(self.train_data.select(index))
            self.running["loss_sum"] += bradley_terry_loss(r_w, r_l).item() * len(index)
            self.running["correct"] += float((r_w > r_l).sum() + 0.5 * (r_w == r_l).sum())
            self.running["seen"] += len(index)
            self.step += 1
            if i == per_epoch - 1:
                seen = self.running["seen"]
                loss, acc = self.running["loss_sum"] / seen, self.running["correct"] / seen
                rows.append(self._row(epoch + 1, start, train_loss=loss, train_acc=acc))
                bar.set_postfix({k: round(v, 3) for k, v in rows[-1].items() if k != "epoch"})
        bar.close()
        return rows

    # ------------------------------------------------------------------ checkpoint hooks

    def _write_parts(self, path: Path) -> list[str]:
        self.model.save(path / "reward_model")
        return ["reward_model"]

    def _state(self) -> dict[str, Any]:
        rng = {"cpu": torch.get_rng_state()}  # dropout's masks come from torch's global RNG
        if self.model.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.model.device)
        return {
            "step": self.step,
            "history": self.history,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "global_rng": rng,
            "order": self.order,
            "running": self.running,
            "train_data": self.train_data.state_dict(),
            "val_data": None if self.val_data is None else self.val_data.state_dict(),
        }

    @classmethod
    def _restore(
        cls,
        path: Path,
        config: RewardModelConfig,
        state: dict[str, Any],
        *,
        device: str | torch.device = "auto",
        trust_remote_code: bool = False,
        **runtime: Any,
    ) -> RewardModelTrainer:
        model = RewardModel.load(
            path / "reward_model", device=device, trust_remote_code=trust_remote_code
        )
        val = state["val_data"]
        agent = cls(
            model,
            PreferenceBatch(**state["train_data"]),
            None if val is None else PreferenceBatch(**val),
            config,
            device=device,
            **runtime,
        )
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.generator.set_state(state["generator"])
        torch.set_rng_state(state["global_rng"]["cpu"])
        if "cuda" in state["global_rng"] and agent.model.device.type == "cuda":
            torch.cuda.set_rng_state(state["global_rng"]["cuda"], agent.model.device)
        agent.step, agent.history = state["step"], state["history"]
        agent.order, agent.running = state["order"], dict(state["running"])
        return agent
