"""Listwise DPO: learning from rankings under Plackett-Luce (Rafailov et al. 2023, arXiv:2305.18290,
Appendix A.3).

Plackett-Luce gives a ranking τ of K completions y_1..y_K of x (τ(1) the best) the probability
p(τ | y_1..y_K, x) = Π_k exp r(x, y_τ(k)) / Σ_{j≥k} exp r(x, y_τ(j)). DPO's reparameterisation
r(x, y) = β·log π_θ(y|x)/π_ref(y|x) + β·log Z(x), where log Z(x) cancels in each ratio, turns it
into a loss on the policy alone (Appendix A.3)::

    L(π_θ; π_ref) = -E_{τ, y_1..y_K, x ~ D} log Π_{k=1}^{K}
                        exp(β·h_τ(k)) / Σ_{j=k}^{K} exp(β·h_τ(j)),
    h_y = log π_θ(y|x) - log π_ref(y|x)   (summed over the completion's tokens)

For K = 2 it is DPO's Eq. 7. The loss is ``agents/feedback_losses.listwise_dpo_loss``; the implicit
reward r̂(x, y) = β·h_y; "accuracy" is the fraction of ordered pairs of a ranking (better, worse)
with r̂ in that order, "margin" the mean of r̂(best) - r̂(worst).

Symbols -> code: β -> config.beta | τ -> the completions best first (``feedback.ranking_order``) |
h -> ``logratios`` (b, K) | log π_θ, log π_ref -> ``logp_theta``, ``logp_ref`` | D -> ``data``.

Engineering choices are DPO's (``agents/dpo.py``): log π_ref of every row is computed once and
cached; all K·B rows of an update go through π_θ in one (packed) forward, item-major (for K = 2:
the chosen rows, then the rejected, so that the agent reproduces DPO); the policy stays in eval
mode (no dropout) so that π_θ = π_ref at the start; the data order of epoch e is a permutation
drawn from (seed, e) alone, so the step count restores it on resume. Rankings must hold no tie
(Plackett-Luce has none: break it, or train DPO on ``feedback.ranking_to_pairs``); rankings of
different lengths are padded (the padding is masked out of the loss). Not done: data parallelism.

Shapes: N rankings, B of them an update, K completions a ranking, R token rows, L length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from textgym.agents._common import check_finite
from textgym.agents.dpo import DPO
from textgym.agents.feedback_losses import listwise_dpo_loss
from torch import Tensor

from textgym.config import check_fields, check_range
from textgym.feedback import FeedbackBatch, Ranking, ranking_order
from textgym.lm import LanguageModel
from textgym.packing import packed_logprobs
from textgym.preference import PreferencePair, tokenize_pairs
from textgym.training import progress

__all__ = ["ListwiseDPO", "ListwiseDPOConfig", "ranking_metrics", "tokenize_rankings"]


@dataclass(frozen=True)
class ListwiseDPOConfig:
    """Hyperparameters of listwise DPO (defaults: DPO's, which work on the embedded model)."""

    beta: float = 0.1
    """β: tie of π_θ to π_ref; DPO paper 0.1."""
    lr: float = 1e-4
    """AdamW learning rate; a 1M-parameter model needs far more than the paper's 1e-6."""
    batch_size: int = 8
    """B, rankings per update (K·B rows per forward)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up, in updates."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    max_length: int | None = None
    """Most tokens per prompt+completion row; None: the model's context window."""
    eval_every: int = 0
    """Evaluate on the held-out rankings every this many updates (0: only when asked)."""
    seed: int = 0
    """Seed of the data order."""
    packing: bool = True
    """Score the rows packed, padding-free (``textgym.packing``); False: one padded batch."""

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("beta", "lr"):
            check_range(self, name, low=0, low_open=True)
        for name in ("warmup_steps", "eval_every", "max_grad_norm"):
            check_range(self, name, low=0)
        check_range(self, "batch_size", low=1)
        check_range(self, "max_length", low=2)  # None passes: the context window
        check_range(self, "seed", low=0, high=2**32 - 1)


def tokenize_rankings(
    lm: LanguageModel, rankings: Sequence[Ranking], *, max_length: int | None = None
) -> FeedbackBatch:
    """N rankings as token rows, each ranking's completions best first (``items`` (N, K)).

    Rows are tokenised exactly as DPO's (``textgym.preference.tokenize_pairs``: the prompt through
    ``lm.encode``, the completion with EOS appended, cut to ``max_length``), so a ranking of two
    is scored as DPO scores the pair. (Each row is tokenised as both sides of a pair with itself,
    so the warning about rows cut to ``max_length`` counts each of them twice.)

    Raises:
        ValueError: no rankings, or a ranking with a tie (naming it).
        TypeError: a record that is not a ``Ranking``.
    """
    if len(rankings) == 0:
        raise ValueError("listwise DPO needs at least one ranking (data=...)")
    orders: list[list[str]] = []
    for i, r in enumerate(rankings):
        if not isinstance(r, Ranking):
            raise TypeError(
                f"listwise DPO data must be textgym.feedback.Ranking records; record {i} is a "
                f"{type(r).__name__} (a pair p: Ranking(p.prompt, (p.chosen, p.rejected), (0, 1)))"
            )
        try:
            orders.append(ranking_order(r))
        except ValueError as err:
            raise ValueError(f"ranking {i}: {err}") from err
    flat = [PreferencePair(r.prompt, y, y) for r, order in zip(rankings, orders, strict=True)
            for y in order]  # fmt: skip
    # Each row as the chosen side of a pair with itself: DPO's tokenisation, from its one home.
    both = tokenize_pairs(lm, flat, max_length=max_length)
    n_rows = len(flat)
    items = torch.full((len(orders), max(len(o) for o in orders)), -1, dtype=torch.long)  # (N, K)
    start = 0
    for i, order in enumerate(orders):
        items[i, : len(order)] = torch.arange(start, start + len(order))
        start += len(order)
    rows = (both.input_ids[:n_rows], both.attention_mask[:n_rows], both.completion_mask[:n_rows])
    return FeedbackBatch(*rows, items, torch.zeros(len(orders)))


def ranking_metrics(logratios: Tensor, valid: Tensor, beta: float) -> dict[str, Tensor]:
    """Accuracy and margin of the implicit rewards r̂ = β·h of rankings, best first (0-dim)."""
    r_hat = beta * logratios  # (b, K)
    diff = r_hat[:, :, None] - r_hat[:, None, :]  # (b, K, K)
    k = r_hat.shape[1]
    upper = torch.ones(k, k, dtype=torch.bool, device=r_hat.device).triu(1)
    ordered = upper & valid[:, :, None] & valid[:, None, :]  # (b, K, K) j better than k
    last = valid.sum(1) - 1  # (b,) the worst item's position
    worst = r_hat.gather(1, last[:, None]).squeeze(1)  # (b,)
    return {
        "accuracy": (diff[ordered] > 0).float().mean(),
        "margin": (r_hat[:, 0] - worst).mean(),
        "reward_best": r_hat[:, 0].mean(),
        "reward_worst": worst.mean(),
    }


def _row_logps(lm: LanguageModel, rows: tuple[Tensor, Tensor, Tensor], packing: bool) -> Tensor:
    """log π(y|x) of each row, summed over its completion tokens (DPO's ``completion_logps``)."""
    ids, mask, completion = rows
    if packing:
        return packed_logprobs(lm, ids, mask, completion).sum(-1)  # (R,)
    logp = lm.logprobs(ids, mask)  # (R, L)
    return torch.where(completion, logp, torch.zeros_like(logp)).sum(-1)  # (R,)


class ListwiseDPO(DPO):
    """Listwise DPO of ``policy`` on fixed rankings (Plackett-Luce on β·log π_θ/π_ref).

    DPO's machinery (``agents/dpo.py``) with rankings for pairs: the constructor, the data order
    and the checkpoint files are DPO's; the rows, π_ref's cache, the loss and its metrics are
    listwise. ``ListwiseDPO.load(dir, device="auto", **runtime)`` resumes a saved run bit for bit.

    Args:
        policy: π_θ, trained in place (kept in eval mode: no dropout).
        ref: π_ref; None freezes a copy of ``policy`` as it is now.
        data: ``Ranking`` records without ties, or the batch of :func:`tokenize_rankings`.
        eval_data: optional held-out rankings, for ``evaluate()`` and ``config.eval_every``.
        config: hyperparameters.
        ref_logps: cached log π_ref of ``data``'s rows (R,), when already known (checkpoints).
        eval_ref_logps: the same for ``eval_data``.
        device: where to train: "auto" (CUDA when available), "cpu", "cuda:0"...
        log_dir: folder for progress.csv (one row per update); None: no file.
        tensorboard: also write TensorBoard scalars to ``log_dir``.
        progress_bar: show a tqdm bar during learn().
    """

    config_class = ListwiseDPOConfig  # type: ignore[assignment]  # listwise DPO's own fields
    data: FeedbackBatch  # type: ignore[assignment]  # rankings' rows, not pairs'
    eval_data: FeedbackBatch | None  # type: ignore[assignment]

    def __init__(
        self,
        policy: LanguageModel,
        ref: LanguageModel | None = None,
        data: Sequence[Ranking] | FeedbackBatch = (),
        eval_data: Sequence[Ranking] | FeedbackBatch | None = None,
        config: ListwiseDPOConfig = ListwiseDPOConfig(),
        *,
        ref_logps: Tensor | None = None,
        eval_ref_logps: Tensor | None = None,
        device: str = "auto",
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
    ) -> None:
        if config.eval_every and eval_data is None:
            raise ValueError(f"ListwiseDPOConfig.eval_every={config.eval_every} needs eval_data")
        super().__init__(
            policy, ref, data, eval_data, config,  # type: ignore[arg-type]  # DPO's fields, same names
            ref_logps=ref_logps, eval_ref_logps=eval_ref_logps, device=device, log_dir=log_dir,
            tensorboard=tensorboard, progress_bar=progress_bar,
        )  # fmt: skip

    def _tokenize(  # type: ignore[override]  # rankings, not pairs
        self, data: Sequence[Ranking] | FeedbackBatch
    ) -> FeedbackBatch:
        if isinstance(data, FeedbackBatch):
            return data
        return tokenize_rankings(self.policy, data, max_length=self.config.max_length)

    @torch.no_grad()
    def _ref_logps(  # type: ignore[override]  # rankings' rows
        self, data: FeedbackBatch, batch_size: int = 32
    ) -> Tensor:
        """log π_ref of every row of ``data`` (R,), on the CPU, ``batch_size`` rankings a pass."""
        out = torch.zeros(data.input_ids.shape[0])  # (R,)
        for start in range(0, len(data), batch_size):
            index = torch.arange(start, min(start + batch_size, len(data)))
            ids, mask, completion, valid = data.rows(index)
            rows = (
                ids.to(self.ref.device),
                mask.to(self.ref.device),
                completion.to(self.ref.device),
            )
            logp = _row_logps(self.ref, rows, self.config.packing)
            items = data.items[index].T.flatten()  # (K·b,) the rows, item-major as scored
            keep = valid.T.flatten()
            out[items[keep]] = logp[keep.to(logp.device)].float().cpu()
        return out

    def _logratios(
        self, data: FeedbackBatch, ref: Tensor, index: Tensor, grad: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """h (b, K), the valid mask (b, K) and log π_θ (b, K) of rankings ``index``."""
        ids, mask, completion, valid = data.rows(index)
        device = self.policy.device
        rows = (ids.to(device), mask.to(device), completion.to(device))
        with torch.set_grad_enabled(grad):
            logp = _row_logps(self.policy, rows, self.config.packing)
        b, k = valid.shape
        logp_theta = logp.view(k, b).T  # (b, K)
        items = data.items[index]  # (b, K)
        logp_ref = ref[items.clamp(min=0)].to(logp.device)  # (b, K) pads read row 0, masked
        valid = valid.to(logp.device)
        return (logp_theta - logp_ref).masked_fill(~valid, 0.0), valid, logp_theta

    def _terms(self, h: Tensor, valid: Tensor, logp_theta: Tensor) -> dict[str, Tensor]:
        beta = self.config.beta
        metrics = ranking_metrics(h.detach(), valid, beta)
        logp = logp_theta.detach()[valid].mean()
        return {"loss": listwise_dpo_loss(h, beta, valid), **metrics, "logp": logp}

    def learn(self, n_updates: int) -> list[dict[str, float]]:
        """Run ``n_updates`` AdamW updates of the listwise loss; return their history rows.

        Each row holds the update index, loss, implicit-reward accuracy and margin, the mean
        implicit rewards of the best and the worst completions, the mean log π_θ, grad norm and
        learning rate (and "eval_*" keys every ``config.eval_every`` updates).
        """
        rows: list[dict[str, float]] = []
        for _ in progress(range(n_updates), desc="listwise DPO", disable=not self.progress_bar):
            h, valid, logp_theta = self._logratios(
                self.data, self.ref_logps, self._indices(self.step)
            )
            terms = self._terms(h, valid, logp_theta)
            check_finite(self.step, {k: terms[k] for k in ("loss", "margin", "logp")})
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
    def evaluate(  # type: ignore[override]  # rankings, not pairs
        self, data: Sequence[Ranking] | None = None, batch_size: int = 32
    ) -> dict[str, float]:
        """Loss, implicit-reward accuracy and margin, mean log π_θ on held-out rankings.

        Args:
            data: rankings to score; None uses ``eval_data`` (whose π_ref log-probs are cached).
            batch_size: rankings per forward.
        """
        if data is None:
            if self.eval_data is None or self.eval_ref_logps is None:
                raise ValueError("evaluate() needs data=... or eval_data given to the constructor")
            batch, ref = self.eval_data, self.eval_ref_logps
        else:
            batch = self._tokenize(data)
            ref = self._ref_logps(batch, batch_size)
        parts = [
            self._logratios(batch, ref, torch.arange(i, min(i + batch_size, len(batch))), False)
            for i in range(0, len(batch), batch_size)
        ]
        h, valid, logp = (torch.cat([p[j] for p in parts]) for j in range(3))
        return {k: float(v) for k, v in self._terms(h, valid, logp).items()}

    @classmethod
    def _restore(  # type: ignore[override]  # listwise DPO's config and batches, no accelerator
        cls,
        path: Path,
        config: ListwiseDPOConfig,
        state: dict[str, Any],
        *,
        device: str = "auto",
        **runtime: Any,
    ) -> ListwiseDPO:
        where = cls._device(device, None)
        policy = LanguageModel.from_pretrained(path / "policy", device=where)
        ref = LanguageModel.from_pretrained(path / "reference", device=where)
        saved_eval = state["eval_data"]
        agent = cls(
            policy,
            ref,
            FeedbackBatch(**state["data"]),
            None if saved_eval is None else FeedbackBatch(**saved_eval),
            config,
            ref_logps=state["ref_logps"],
            eval_ref_logps=state["eval_ref_logps"],
            device=device,
            **runtime,
        )
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.scheduler.load_state_dict(state["scheduler"])
        agent.step, agent.history = state["step"], state["history"]
        return agent
