"""Reward modelling: fit r_φ(x, y) to human feedback, pairs by default, or any other form.

Bradley & Terry 1952 model a comparison of two items as a logistic function of the difference of
their scores. RLHF fits a reward model to comparisons of completions of one prompt this way
(Christiano et al. 2017, arXiv:1706.03741, §2.2.3, Eq. 1; Ziegler et al. 2019, arXiv:1909.08593,
§2.2; Ouyang et al. 2022, arXiv:2203.02155, §3.5, Eq. 1)::

    p(y_w ≻ y_l | x) = σ( r_φ(x, y_w) - r_φ(x, y_l) )
    L(φ) = -E_{(x, y_w, y_l) ~ D} log σ( r_φ(x, y_w) - r_φ(x, y_l) )

The other forms of feedback (``textgym.feedback``) train the same r_φ with their own loss, picked
by ``RewardModelConfig.loss`` (the losses are ``agents/feedback_losses.py``'s, written there with
their papers' symbols)::

    loss             data                      L(φ), r = r_φ(x, y)
    "bradley_terry"  PreferencePair (x,y_w,y_l) -mean log σ(r_w - r_l)
    "plackett_luce"  Ranking of K, no ties      -mean Σ_k log(exp r_k / Σ_{j≥k} exp r_j), best first
                                                (K = 2: Bradley-Terry)
    "regression"     Rating on [low, high]      mean (r - ŷ)²,  ŷ = the rating mapped to [-1, 1]
    "ordinal"        Rating, integer scale      cumulative logit: P(y ≤ c) = σ(θ_c - r), with
                                                C - 1 learnt thresholds θ_1 < ... < θ_{C-1}
    "logistic"       Thumb (up / down)          -mean [u log σ(r) + (1 - u) log σ(-r)]

A correction trains r_φ as the pair corrected ≻ original (``feedback.correction_to_pair``). Every
form gives the same kind of model, saved by ``RewardModel.save`` and used as any reward through
``textgym.rewards.make("reward_model", model=path)``.

Symbols -> code: x -> the prompts | y_w, y_l -> chosen / rejected completions |
r_φ(x, y) -> :class:`~textgym.rewards.reward_model.RewardModel` (``r_w``, ``r_l`` in
:func:`bradley_terry_loss`; ``r`` (b, K) in the losses of ``LOSSES``) | σ -> ``F.logsigmoid``
(log σ in one op) | D -> ``train_data`` | θ -> :meth:`RewardModelTrainer.thresholds` (kept
increasing: θ_1 free, each gap a softplus) | φ -> the backbone's and the head's parameters.

Engineering choices: the data become one :class:`FeedbackBatch`, token rows and, per example, the
rows of its K items (a pair: chosen then rejected; a ranking: best first; a rating or a thumb: one
row); each update scores all rows of ``batch_size`` examples in one forward pass, item-major (for
pairs: the chosen rows, then the rejected, as before the other forms existed). A ranking shorter
than the longest one is padded by scoring its first item again, masked out of the loss. The example
order of epoch e is the e-th permutation of a generator seeded with ``config.seed``. The model
trains in train mode, so a backbone with dropout draws its masks from torch's global RNG, seeded by
the caller (a checkpoint saves that RNG and ``load`` restores it). After each epoch the held-out
examples give the validation loss and accuracy (pairs and rankings: the fraction of ordered pairs
within an example that r_φ orders right; ratings: of the pairs of differently rated examples;
thumbs: of examples with sign(r_φ) = the thumb; ties count 1/2).

The model itself, its tokenisation, scoring and files live in ``textgym.rewards.reward_model``; the
data recipe (samples of a policy labelled by a gold reward) is
:func:`textgym.pair_sampling.synthetic_preferences`.

Shapes: N examples, K items an example (2 for pairs), R token rows, L sequence length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from textgym.agents.base import Agent
from textgym.agents.feedback_losses import (
    ordinal_loss,
    plackett_luce_loss,
    rating_targets,
    regression_loss,
    thumbs_loss,
)
from textgym.rewards.reward_model import RewardModel
from torch import Tensor, nn

from textgym.config import check_fields, check_range
from textgym.feedback import FeedbackBatch, Ranking, Rating, Thumb, ranking_order
from textgym.preference import PreferenceBatch, PreferencePair
from textgym.training import adamw, progress, resolve_device

__all__ = [
    "LOSSES",
    "RewardModelConfig",
    "RewardModelTrainer",
    "bradley_terry_loss",
    "pairwise_accuracy",
    "tokenize_feedback",
]

RMLoss = Literal["bradley_terry", "plackett_luce", "regression", "ordinal", "logistic"]
RECORD_OF_LOSS: dict[str, type] = {
    "bradley_terry": PreferencePair,
    "plackett_luce": Ranking,
    "regression": Rating,
    "ordinal": Rating,
    "logistic": Thumb,
}
"""The feedback record each loss trains on."""


@dataclass(frozen=True)
class RewardModelConfig:
    """Hyperparameters of :class:`RewardModelTrainer` (defaults work on the embedded trunk)."""

    lr: float = 5e-4
    """AdamW learning rate; Ouyang et al. use 9e-6 for a 6B model, small trunks need more."""
    epochs: int = 2
    """Passes over the examples that ``learn()`` runs; Ouyang et al. train 1 (more overfits)."""
    batch_size: int = 32
    """Examples per update (pairs: 2x rows per forward pass; rankings of K: Kx)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (not applied to the ordinal thresholds θ)."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient's global norm to this; None: no clipping."""
    seed: int = 0
    """Seed of the example order (the head's init is the caller's, at construction)."""
    eval_batch_size: int = 128
    """Rows per forward pass in validation."""
    loss: RMLoss = "bradley_terry"
    """The feedback form and its loss (see the module docstring): "bradley_terry" (pairs),
    "plackett_luce" (rankings), "regression" or "ordinal" (ratings), "logistic" (thumbs)."""

    def __post_init__(self) -> None:
        check_fields(self)  # also: lr finite, an unknown loss name
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


# ---------------------------------------------------------------------------- each form's loss
# One sibling per RewardModelConfig.loss, all of one signature:
# (r (b, K) scores, valid (b, K) bool, targets (b,), θ (C-1,) or None) -> () loss.

LossFn = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def _bt(r: Tensor, valid: Tensor, targets: Tensor, theta: Tensor | None) -> Tensor:
    return bradley_terry_loss(r[:, 0], r[:, 1])


def _pl(r: Tensor, valid: Tensor, targets: Tensor, theta: Tensor | None) -> Tensor:
    return plackett_luce_loss(r, valid)


def _regression(r: Tensor, valid: Tensor, targets: Tensor, theta: Tensor | None) -> Tensor:
    return regression_loss(r[:, 0], targets)


def _ordinal(r: Tensor, valid: Tensor, targets: Tensor, theta: Tensor | None) -> Tensor:
    assert theta is not None  # the trainer makes θ for this loss
    return ordinal_loss(r[:, 0], targets.long(), theta)


def _logistic(r: Tensor, valid: Tensor, targets: Tensor, theta: Tensor | None) -> Tensor:
    return thumbs_loss(r[:, 0], targets)


LOSSES: dict[str, LossFn] = {
    "bradley_terry": _bt,
    "plackett_luce": _pl,
    "regression": _regression,
    "ordinal": _ordinal,
    "logistic": _logistic,
}


def _order_hits(r: Tensor, valid: Tensor, targets: Tensor) -> tuple[float, float]:
    """Ordered pairs (j < k, j better) within each example that r orders right; ties 1/2."""
    diff = r[:, :, None] - r[:, None, :]  # (b, K, K) r_j - r_k
    k = r.shape[1]
    upper = torch.ones(k, k, dtype=torch.bool, device=r.device).triu(1)  # j < k
    pair = upper & valid[:, :, None] & valid[:, None, :]  # (b, K, K)
    hits = (diff > 0).float() + 0.5 * (diff == 0).float()
    return float(hits[pair].sum()), float(pair.sum())


def _rating_hits(r: Tensor, valid: Tensor, targets: Tensor) -> tuple[float, float]:
    """Pairs of differently rated examples that r orders as the ratings do; ties in r 1/2."""
    s, t = r[:, 0], targets.float()
    ds, dt = s[:, None] - s[None, :], t[:, None] - t[None, :]  # (b, b)
    pair = dt > 0  # each differently rated pair once, the higher rating first
    hits = (ds > 0).float() + 0.5 * (ds == 0).float()
    return float(hits[pair].sum()), float(pair.sum())


def _thumb_hits(r: Tensor, valid: Tensor, targets: Tensor) -> tuple[float, float]:
    """Examples with r > 0 for a thumb up, r < 0 for a thumb down; r = 0 counts 1/2."""
    s, up = r[:, 0], targets > 0.5
    hits = torch.where(up, (s > 0).float(), (s < 0).float()) + 0.5 * (s == 0).float()
    return float(hits.sum()), float(len(s))


HITS: dict[str, Callable[[Tensor, Tensor, Tensor], tuple[float, float]]] = {
    "bradley_terry": _order_hits,
    "plackett_luce": _order_hits,
    "regression": _rating_hits,
    "ordinal": _rating_hits,
    "logistic": _thumb_hits,
}
"""(right, counted) of each loss's accuracy: the history's ``train_acc`` and ``val_acc``."""


# ---------------------------------------------------------------------------- the data


def _one_scale(ratings: Sequence[Rating]) -> tuple[float, float]:
    scales = sorted({(r.low, r.high) for r in ratings})
    if len(scales) > 1:
        raise ValueError(
            f"the ratings use {len(scales)} scales {scales[:4]}: a rating reward model needs one "
            "(map them to a common scale first)"
        )
    return scales[0]


def tokenize_feedback(
    rm: RewardModel,
    data: Sequence[Any] | PreferenceBatch | FeedbackBatch,
    loss: RMLoss = "bradley_terry",
) -> FeedbackBatch:
    """Feedback records as the token rows ``loss`` trains on (see the module docstring's table).

    Args:
        rm: the reward model (its ``tokenize``: one tokenisation for training and scoring).
        data: records of the form ``loss`` needs (``RECORD_OF_LOSS``), a ``PreferenceBatch`` from
            ``rm.tokenize_pairs`` (Bradley-Terry), or a ``FeedbackBatch`` (returned as it is).
        loss: the config's loss.

    Raises:
        TypeError: records of another form than ``loss`` trains on.
        ValueError: no records; a ranking with a tie (Plackett-Luce has none); ratings on several
            scales; for "ordinal", a rating or scale that is not whole steps.
    """
    if isinstance(data, FeedbackBatch):
        return data
    if isinstance(data, PreferenceBatch):
        if loss != "bradley_terry":
            raise TypeError(
                f"a PreferenceBatch holds pairs: it trains loss='bradley_terry', not {loss!r}"
            )
        n = len(data)
        items = torch.stack([torch.arange(n), torch.arange(n, 2 * n)], 1)  # (N, 2)
        rows = (data.input_ids, data.attention_mask, data.completion_mask)
        return FeedbackBatch(*rows, items, torch.zeros(n))
    if len(data) == 0:
        raise ValueError(f"no feedback records to train loss={loss!r} on")
    want = RECORD_OF_LOSS[loss]
    bad = next((i for i, d in enumerate(data) if not isinstance(d, want)), None)
    if bad is not None:
        raise TypeError(
            f"RewardModelConfig.loss={loss!r} trains on {want.__name__} records, but record {bad} "
            f"is a {type(data[bad]).__name__}; pick the loss of your form: "
            + ", ".join(f"{t.__name__} -> {k!r}" for k, t in RECORD_OF_LOSS.items())
        )
    if loss == "bradley_terry":
        return tokenize_feedback(rm, rm.tokenize_pairs(data), loss)
    if loss == "plackett_luce":
        orders = []
        for i, ranking in enumerate(data):
            try:
                orders.append(ranking_order(ranking))
            except ValueError as err:
                raise ValueError(f"ranking {i}: {err}") from err
        width = max(len(o) for o in orders)
        items = torch.full((len(orders), width), -1, dtype=torch.long)  # (N, K)
        prompts: list[str] = []
        completions: list[str] = []
        for i, (ranking, order) in enumerate(zip(data, orders, strict=True)):
            items[i, : len(order)] = torch.arange(len(prompts), len(prompts) + len(order))
            prompts += [ranking.prompt] * len(order)
            completions += order
        return FeedbackBatch(*rm.tokenize(prompts, completions), items, torch.zeros(len(orders)))
    prompts = [d.prompt for d in data]
    rows = rm.tokenize(prompts, [d.completion for d in data])
    items = torch.arange(len(data))[:, None]  # (N, 1)
    if loss == "logistic":
        return FeedbackBatch(*rows, items, torch.tensor([float(d.up) for d in data]))
    low, high = _one_scale(data)
    ratings = torch.tensor([float(d.rating) for d in data], dtype=torch.float64)  # (N,)
    if loss == "regression":
        return FeedbackBatch(*rows, items, rating_targets(ratings, low, high).float())
    steps = ratings - low
    if (steps != steps.round()).any() or high - low != round(high - low):
        raise ValueError(
            f"ordinal ratings must be whole steps on a whole scale [{low}, {high}], got "
            f"{sorted(set(ratings.tolist()))[:8]}: use loss='regression' for a continuous score"
        )
    return FeedbackBatch(*rows, items, steps.float(), classes=round(high - low) + 1)


# ---------------------------------------------------------------------------- scoring


def _scores(rm: RewardModel, batch: FeedbackBatch, index: Tensor) -> tuple[Tensor, Tensor]:
    """r_φ of examples ``index``: (b, K) scores (one forward pass) and the (b, K) valid mask."""
    ids, mask, _, valid = batch.rows(index)
    r = rm(ids.to(rm.device), mask.to(rm.device))  # (K·b,)
    return r.view(valid.shape[1], -1).T, valid.to(r.device)  # (b, K), (b, K)


@torch.no_grad()
def _evaluate(
    rm: RewardModel,
    batch: FeedbackBatch,
    batch_size: int,
    loss: RMLoss = "bradley_terry",
    theta: Tensor | None = None,
) -> tuple[float, float]:
    """The loss (a mean over examples, chunk by chunk) and the accuracy (``HITS``, over all
    examples at once) of ``batch``."""
    n, k = len(batch), batch.width
    step = max(1, batch_size // k)  # an example is K rows
    loss_fn, total, scores, masks = LOSSES[loss], 0.0, [], []
    was_training = rm.training
    rm.eval()
    try:
        for start in range(0, n, step):
            index = torch.arange(start, min(n, start + step))
            r, valid = _scores(rm, batch, index)  # (b, K) each
            total += float(loss_fn(r, valid, batch.targets[index].to(r.device), theta)) * len(index)
            scores.append(r)
            masks.append(valid)
    finally:
        rm.train(was_training)
    r_all = torch.cat(scores)  # (N, K)
    right, counted = HITS[loss](r_all, torch.cat(masks), batch.targets.to(r_all.device))
    return total / n, right / counted if counted else math.nan


def pairwise_accuracy(
    rm: RewardModel, pairs: Sequence[PreferencePair] | PreferenceBatch, batch_size: int = 128
) -> float:
    """Fraction of pairs with r_φ(x, y_w) > r_φ(x, y_l) (ties count 1/2).

    The one yardstick for a reward model of any form: held-out pairs labelled by the gold
    preference.

    Args:
        rm: the model.
        pairs: pairs, or a ``PreferenceBatch`` made by ``rm.tokenize_pairs``.
        batch_size: rows per forward pass.

    Returns:
        The accuracy in [0, 1].
    """
    return _evaluate(rm, tokenize_feedback(rm, pairs), batch_size)[1]


def _fresh_running() -> dict[str, float]:
    """An epoch's running sums: loss x examples, accuracy hits and counts, examples seen."""
    return {"loss_sum": 0.0, "correct": 0.0, "counted": 0.0, "seen": 0}


_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")
"""Every key a history row may have (the first row, before training, has no train_*)."""


class RewardModelTrainer(Agent):
    """Fit a reward model r_φ to feedback by minimising ``config.loss`` with AdamW.

    ``RewardModelTrainer.load(dir, device="auto", trust_remote_code=False, **runtime)`` resumes a
    saved run bit for bit on the CPU. The model is saved in ``dir/reward_model`` (a
    :meth:`RewardModel.save` folder, which ``textgym.rewards.make("reward_model", model=...)``
    loads); dropout draws from torch's global RNG, whose state the checkpoint holds and ``load``
    restores; the ordinal thresholds θ are in the checkpoint's state.

    Args:
        model: r_φ, trained in place (e.g. ``RewardModel.from_backbone(lm)``).
        train_data: training records of ``config.loss``'s form (``PreferencePair``, ``Ranking``,
            ``Rating`` or ``Thumb``), or a batch from :func:`tokenize_feedback` (for pairs also
            ``model.tokenize_pairs``).
        val_data: held-out records (or batch) of the same form, for a validation row per epoch;
            None: none.
        config: hyperparameters (``loss`` picks the form).
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
        train_data: Sequence[Any] | PreferenceBatch | FeedbackBatch,
        val_data: Sequence[Any] | PreferenceBatch | FeedbackBatch | None = None,
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
        self.train_data = tokenize_feedback(model, train_data, config.loss)
        self.val_data = (
            None if val_data is None else tokenize_feedback(model, val_data, config.loss)
        )
        self.optimizer = adamw(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.theta_raw: nn.Parameter | None = None
        if config.loss == "ordinal":
            c = self.train_data.classes
            if c < 2 or (self.val_data is not None and self.val_data.classes != c):
                raise ValueError(
                    f"ordinal training needs one scale of >= 2 classes, got {c} (train) and "
                    f"{None if self.val_data is None else self.val_data.classes} (validation)"
                )
            # θ evenly spread over ±2 at the start (r_φ starts near 0): θ_1, then softplus gaps.
            theta = torch.linspace(-2.0, 2.0, c - 1) if c > 2 else torch.zeros(1)
            gaps = torch.log(torch.expm1(theta.diff()))
            raw = torch.cat([theta[:1], gaps]).to(self.model.device)
            self.theta_raw = nn.Parameter(raw)
            self.optimizer.add_param_group({"params": [self.theta_raw], "weight_decay": 0.0})
        self.generator = torch.Generator().manual_seed(config.seed)  # the example order, on CPU
        self.updates_per_epoch = math.ceil(len(self.train_data) / config.batch_size)
        self.order: Tensor | None = None  # (N,) this epoch's order, drawn at its first update
        self.running = _fresh_running()  # this epoch's updates so far

    def thresholds(self) -> Tensor | None:
        """θ_1 < ... < θ_{C-1} of the ordinal model (None for another loss): the rating classes
        are read off r_φ as P(y ≤ c) = σ(θ_c - r)."""
        if self.theta_raw is None:
            return None
        raw = self.theta_raw
        return torch.cat([raw[:1], raw[:1] + F.softplus(raw[1:]).cumsum(0)])  # (C-1,)

    def _update(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One AdamW step on the loss of examples ``index``; returns the loss and the detached
        (b, K) scores and valid mask."""
        r, valid = _scores(self.model, self.train_data, index)
        targets = self.train_data.targets[index].to(r.device)
        loss = LOSSES[self.config.loss](r, valid, targets, self.thresholds())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite {self.config.loss} loss {loss.item()} at update {self.step}; r_φ in "
                f"[{r.min().item():.3g}, {r.max().item():.3g}]: lower the learning rate"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        return loss.detach(), r.detach(), valid

    def _row(self, epoch: int, start: float, **train_stats: float) -> dict[str, float]:
        row: dict[str, float] = {"epoch": float(epoch), **train_stats}
        if self.val_data is not None:
            row["val_loss"], row["val_acc"] = self.evaluate()
        row["seconds"] = time.perf_counter() - start
        self._record(row)
        return row

    @torch.no_grad()
    def evaluate(self, data: Sequence[Any] | None = None) -> tuple[float, float]:
        """(loss, accuracy) on held-out records of the trained form; None: ``val_data``."""
        batch = (
            self.val_data if data is None else tokenize_feedback(self.model, data, self.config.loss)
        )
        if batch is None:
            raise ValueError("evaluate() needs data=... or val_data given to the constructor")
        theta = self.thresholds()
        return _evaluate(self.model, batch, self.config.eval_batch_size, self.config.loss, theta)

    def _record(self, row: dict[str, float]) -> None:
        # The first logged row fixes the CSV's columns: log them all (NaN where a row has none).
        self.history.append(row)
        if self.logger is not None:
            self.logger.log({"update": self.step, **{k: row.get(k, math.nan) for k in _COLUMNS}})

    def learn(self, n_updates: int | None = None) -> list[dict[str, float]]:
        """Run ``n_updates`` AdamW updates on the loss; return the history rows they made.

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
                self.running = _fresh_running()
            assert self.order is not None  # drawn at the epoch's first update
            index = self.order[i * cfg.batch_size : (i + 1) * cfg.batch_size]  # (b,)
            loss, r, valid = self._update(index)
            right, counted = HITS[cfg.loss](r, valid, self.train_data.targets[index].to(r.device))
            self.running["loss_sum"] += loss.item() * len(index)
            self.running["correct"] += right
            self.running["seen"] += len(index)
            self.running["counted"] += counted
            self.step += 1
            if i == per_epoch - 1:
                seen, counted_all = self.running["seen"], self.running["counted"]
                loss_mean = self.running["loss_sum"] / seen
                acc = self.running["correct"] / counted_all if counted_all else math.nan
                rows.append(self._row(epoch + 1, start, train_loss=loss_mean, train_acc=acc))
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
            "theta_raw": None if self.theta_raw is None else self.theta_raw.detach().cpu(),
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
            FeedbackBatch(**state["train_data"]),
            None if val is None else FeedbackBatch(**val),
            config,
            device=device,
            **runtime,
        )
        if agent.theta_raw is not None:
            with torch.no_grad():
                agent.theta_raw.copy_(state["theta_raw"])
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.generator.set_state(state["generator"])
        torch.set_rng_state(state["global_rng"]["cpu"])
        if "cuda" in state["global_rng"] and agent.model.device.type == "cuda":
            torch.cuda.set_rng_state(state["global_rng"]["cuda"], agent.model.device)
        agent.step, agent.history = state["step"], state["history"]
        agent.order, agent.running = state["order"], dict(state["running"])
        return agent
