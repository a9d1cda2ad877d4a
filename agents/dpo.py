"""DPO and its variants: Rafailov et al. 2023 (arXiv:2305.18290), Eq. 7, and siblings.

With h = log π_θ(y_w|x)/π_ref(y_w|x) - log π_θ(y_l|x)/π_ref(y_l|x) (each log π summed over the
completion's tokens only):

    sigmoid (DPO, Eq. 7):            L = -E log σ(β·h)
    dpop (DPO-Positive, Pal et al. 2024, arXiv:2402.13228, Eq. 3):
                                     L = -E log σ(β·(h - λ·max(0, log π_ref(y_w|x)/π_θ(y_w|x))))
    ipo (Azar et al. 2023, arXiv:2310.12036, Eq. 17):
                                     L = E (h̄ - 1/(2τ))², h̄ = h with each log-ratio divided by the
                                     completion's length (TRL's form, checked with the authors)
    cdpo (conservative DPO, Mitchell 2023, labels flipped with probability ε):
                                     L = -E [(1-ε)·log σ(β·h) + ε·log σ(-β·h)]

Implicit reward r̂(x, y) = β·log π_θ(y|x)/π_ref(y|x); "accuracy" is the fraction of pairs with
r̂(x, y_w) > r̂(x, y_l), "margin" the mean of r̂(x, y_w) - r̂(x, y_l).

Symbols -> code: β (τ for IPO) -> config.beta | λ -> config.lam | ε -> config.eps |
log π_θ(y_w|x), log π_θ(y_l|x) -> logp_theta_w, logp_theta_l |
log π_ref(y_w|x), log π_ref(y_l|x) -> logp_ref_w, logp_ref_l.

Engineering choices: log π_ref is computed once per dataset and cached (the reference never
changes); chosen and rejected rows go through π_θ in one concatenated forward; dropout stays off
(the policy is kept in eval mode, like TRL's ``disable_dropout``) so that π_θ = π_ref before the
first update and the loss is log 2 there. With ``packing`` (the default) the π_θ and π_ref passes
run on the real tokens only, packed with restarting positions (``textgym.packing``: the same
log-probs without the padding's matrix products, equal to float rounding; as a row's sums depend
on where it sits in a pack, π_θ = π_ref holds to ~1e-6 there, not bit for bit). The data order of
epoch e is a permutation drawn from (seed, e) alone, so the step count restores it on resume and
nothing else is random.

Data parallelism (``accelerator=``, from ``accelerate``): every process draws the same global batch
of B pairs and takes its contiguous share of B_r pairs (rank order); the policy goes through
``accelerator.prepare`` (DDP averages the W processes' gradients) and each process backpropagates
its mean loss times W·B_r/B, so the average is the gradient of the mean over all B pairs, shards of
unequal size included. Logged metrics are global means (one all-reduce per update). Every process
caches log π_ref of all pairs and evaluates all held-out pairs; only the main process writes files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from textgym.agents._common import check_finite
from textgym.agents.base import Agent
from torch import Tensor, nn

from textgym.config import check_fields, check_range
from textgym.lm import LanguageModel
from textgym.packing import CompletionLogps, completion_logps_cached
from textgym.preference import PreferenceBatch, PreferencePair, tokenize_pairs, without_ties
from textgym.training import adamw, frozen_copy, progress, resolve_device

LossType = Literal["sigmoid", "dpop", "ipo", "cdpo"]


@dataclass(frozen=True)
class DPOConfig:
    """Hyperparameters of DPO and its variants (defaults work on ``textgym.DEFAULT_MODEL``)."""

    loss: LossType = "sigmoid"
    """Objective: "sigmoid" (DPO), "dpop" (DPO-Positive), "ipo" (IPO) or "cdpo" (conservative)."""
    beta: float = 0.1
    """β (τ in IPO): tie of π_θ to π_ref; DPO paper 0.1, Smaug (DPOP) 0.3."""
    lam: float = 50.0
    """λ: DPO-Positive's weight on max(0, log π_ref(y_w)/π_θ(y_w)); Smaug paper 50."""
    eps: float = 0.1
    """ε: label-flip probability of conservative DPO (loss="cdpo"); Mitchell 2023 uses 0.1."""
    lr: float = 1e-4
    """Learning rate of AdamW; DPO paper 1e-6 (7B models); a 1M-parameter model needs far more."""
    batch_size: int = 8
    """B, pairs per update (2B rows per forward); DPO paper 64."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up, in updates; DPO paper 150."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables); TRL default 1.0."""
    max_length: int | None = None
    """Most tokens per prompt+completion row; None: the model's context window."""
    eval_every: int = 0
    """Evaluate on the held-out pairs every this many updates (0: only when asked)."""
    seed: int = 0
    """Seed of the data order."""
    packing: bool = True
    """Score the rows packed, padding-free (``textgym.packing``); False: as one padded batch."""

    def __post_init__(self) -> None:
        check_fields(self)  # also: an unknown loss name is a ValueError
        for name in ("beta", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DPOConfig.{name} must be > 0, got {getattr(self, name)}")
        check_range(self, "lam", low=0)
        check_range(self, "eps", low=0, high=0.5, high_open=True)
        for name in ("warmup_steps", "eval_every", "max_grad_norm"):
            check_range(self, name, low=0)
        check_range(self, "batch_size", low=1)
        check_range(self, "max_length", low=2)  # None passes: the context window
        check_range(self, "seed", low=0, high=2**32 - 1)


def dpo_loss(
    logp_theta_w: Tensor,  # (B,) log π_θ(y_w|x)
    logp_theta_l: Tensor,  # (B,) log π_θ(y_l|x)
    logp_ref_w: Tensor,  # (B,) log π_ref(y_w|x)
    logp_ref_l: Tensor,  # (B,) log π_ref(y_l|x)
    beta: float,
) -> Tensor:  # ()
    """DPO, Eq. 7: -mean log σ(β·h)."""
    h = (logp_theta_w - logp_ref_w) - (logp_theta_l - logp_ref_l)  # (B,)
    return -F.logsigmoid(beta * h).mean()  # log σ in one op: no underflow at large margins


def dpop_loss(
    logp_theta_w: Tensor,  # (B,)
    logp_theta_l: Tensor,  # (B,)
    logp_ref_w: Tensor,  # (B,)
    logp_ref_l: Tensor,  # (B,)
    beta: float,
    lam: float,
) -> Tensor:  # ()
    """DPO-Positive, Eq. 3: the penalty acts only while π_θ(y_w|x) < π_ref(y_w|x)."""
    h = (logp_theta_w - logp_ref_w) - (logp_theta_l - logp_ref_l)  # (B,)
    penalty = torch.clamp(logp_ref_w - logp_theta_w, min=0.0)  # (B,) max(0, log π_ref/π_θ)
    return -F.logsigmoid(beta * (h - lam * penalty)).mean()


def ipo_loss(
    logp_theta_w: Tensor,  # (B,)
    logp_theta_l: Tensor,  # (B,)
    logp_ref_w: Tensor,  # (B,)
    logp_ref_l: Tensor,  # (B,)
    len_w: Tensor,  # (B,) |y_w| in tokens
    len_l: Tensor,  # (B,) |y_l| in tokens
    tau: float,
) -> Tensor:  # ()
    """IPO, Eq. 17, on per-token mean log-ratios: mean (h̄ - 1/(2τ))²."""
    h_bar = (logp_theta_w - logp_ref_w) / len_w - (logp_theta_l - logp_ref_l) / len_l  # (B,)
    return ((h_bar - 1.0 / (2.0 * tau)) ** 2).mean()


def cdpo_loss(
    logp_theta_w: Tensor,  # (B,)
    logp_theta_l: Tensor,  # (B,)
    logp_ref_w: Tensor,  # (B,)
    logp_ref_l: Tensor,  # (B,)
    beta: float,
    eps: float,
) -> Tensor:  # ()
    """Conservative (label-smoothed) DPO: the label is wrong with probability ε."""
    h = (logp_theta_w - logp_ref_w) - (logp_theta_l - logp_ref_l)  # (B,)
    return -((1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)).mean()


@dataclass
class PairLogps:
    """Sequence log-probs of B pairs under π_θ and π_ref, and the completion lengths."""

    theta_w: Tensor  # (B,)
    theta_l: Tensor  # (B,)
    ref_w: Tensor  # (B,)
    ref_l: Tensor  # (B,)
    len_w: Tensor  # (B,) float
    len_l: Tensor  # (B,) float


LOSSES: dict[str, Callable[[PairLogps, DPOConfig], Tensor]] = {
    "sigmoid": lambda p, c: dpo_loss(p.theta_w, p.theta_l, p.ref_w, p.ref_l, c.beta),
    "dpop": lambda p, c: dpop_loss(p.theta_w, p.theta_l, p.ref_w, p.ref_l, c.beta, c.lam),
    "ipo": lambda p, c: ipo_loss(p.theta_w, p.theta_l, p.ref_w, p.ref_l, p.len_w, p.len_l, c.beta),
    "cdpo": lambda p, c: cdpo_loss(p.theta_w, p.theta_l, p.ref_w, p.ref_l, c.beta, c.eps),
}


def pair_means(p: PairLogps, beta: float) -> dict[str, Tensor]:
    """Implicit-reward accuracy and margin, r̂ = β·log π_θ/π_ref, and the mean log-probs (0-dim)."""
    r_w, r_l = beta * (p.theta_w - p.ref_w), beta * (p.theta_l - p.ref_l)  # (B,) each
    return {
        "accuracy": (r_w > r_l).float().mean(),
        "margin": (r_w - r_l).mean(),
        "reward_chosen": r_w.mean(),
        "reward_rejected": r_l.mean(),
        "logp_chosen": p.theta_w.mean(),
        "logp_rejected": p.theta_l.mean(),
        "logratio_chosen": (p.theta_w - p.ref_w).mean(),  # < 0: π_θ(y_w) fell below π_ref
    }


def pair_metrics(p: PairLogps, beta: float) -> dict[str, float]:
    """``pair_means`` as floats."""
    return {k: v.item() for k, v in pair_means(p, beta).items()}


class DPO(Agent):
    """Direct preference optimisation of ``policy`` on fixed (x, y_w, y_l) pairs.

    ``DPO.load(dir, device="auto", **runtime)`` resumes a saved run bit for bit.

    Args:
        policy: π_θ, trained in place (kept in eval mode: no dropout).
        ref: π_ref; None freezes a copy of ``policy`` as it is now.
        data: training pairs, as ``PreferencePair`` s or an already tokenized ``PreferenceBatch``.
        eval_data: optional held-out pairs, for ``evaluate()`` and ``config.eval_every``.
        config: hyperparameters.
        ref_logps: cached log π_ref of ``data``'s rows (2N,), when already known (checkpoints).
        eval_ref_logps: the same for ``eval_data``.
        device: where to train: "auto" (CUDA when available), "cpu", "cuda:0"...
        log_dir: folder for progress.csv (one row per update); None: no file.
        tensorboard: also write TensorBoard scalars to ``log_dir``.
        progress_bar: show a tqdm bar during learn().
        accelerator: an ``accelerate.Accelerator`` for data parallelism (see the module
            docstring); its device replaces ``device`` ("auto" or the same device type).
    """

    config_class = DPOConfig

    def __init__(
        self,
        policy: LanguageModel,
        ref: LanguageModel | None = None,
        data: Sequence[PreferencePair] | PreferenceBatch = (),
        eval_data: Sequence[PreferencePair] | PreferenceBatch | None = None,
        config: DPOConfig = DPOConfig(),
        *,
        ref_logps: Tensor | None = None,
        eval_ref_logps: Tensor | None = None,
        device: str = "auto",
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
        accelerator: Any = None,
    ) -> None:
        if config.eval_every and eval_data is None:
            raise ValueError(f"DPOConfig.eval_every={config.eval_every} needs eval_data=...")
        self.config = config
        self._setup_runtime(
            log_dir=log_dir,
            tensorboard=tensorboard,
            progress_bar=progress_bar,
            accelerator=accelerator,
        )
        where = self._device(device, accelerator)
        self.policy = policy if policy.device == where else policy.wrap(device=where)
        self.policy.model.eval()
        if ref is None:
            ref = frozen_copy(self.policy)
        elif ref.vocab_size != policy.vocab_size:
            raise ValueError(
                f"the reference has {ref.vocab_size} logits but the policy {policy.vocab_size}: "
                "π_ref must share the policy's vocabulary"
            )
        self.ref = ref if ref.device == where else ref.wrap(device=where)
        self.ref.model.eval().requires_grad_(False)
        self.data = self._tokenize(data)
        self.eval_data = None if eval_data is None else self._tokenize(eval_data)
        self.ref_logps = self._ref_logps(self.data) if ref_logps is None else ref_logps.cpu()
        self.eval_ref_logps = eval_ref_logps
        if self.eval_data is not None and eval_ref_logps is None:
            self.eval_ref_logps = self._ref_logps(self.eval_data)
        n_rows = self.data.input_ids.shape[0]  # 2N for pairs (subclasses may store other rows)
        if self.ref_logps.shape != (n_rows,):
            raise ValueError(f"ref_logps must be ({n_rows},), got {tuple(self.ref_logps.shape)}")
        self._check_shards()
        params = [q for q in self.policy.model.parameters() if q.requires_grad]
        self.optimizer = adamw(params, lr=config.lr, weight_decay=0.01)  # torch AdamW's default
        warmup = config.warmup_steps
        # Built on the plain optimizer and never prepared: accelerate's scheduler wrapper would
        # step W times per update.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
        )
        # A module, so that DDP wraps the forward it syncs; this one (no DDP) is for evaluate().
        self.policy_logps: nn.Module = CompletionLogps(self.policy, packing=config.packing)
        self.trainable: nn.Module = self.policy_logps
        if accelerator is not None:
            self.trainable, self.optimizer = accelerator.prepare(self.trainable, self.optimizer)

    @staticmethod
    def _device(name: str, accelerator: Any) -> torch.device:
        if accelerator is None:
            return resolve_device(name)
        device = torch.device(accelerator.device)
        if name != "auto" and resolve_device(name).type != device.type:
            raise ValueError(
                f"device={name!r} but the accelerator runs on {device}: "
                'use device="auto" (each process trains on its accelerator.device)'
            )
        return device

    def _check_shards(self) -> None:
        """Every batch must give each process at least one pair (DDP needs a backward on each)."""
        n, b = len(self.data), self.config.batch_size
        smallest = n % b or b  # the last batch of an epoch holds n mod b pairs (all n when n < b)
        if smallest < self.world:
            raise ValueError(
                f"{self.world} processes need at least {self.world} pairs in every batch, but "
                f"batch_size={b} with {n} pairs makes a batch of {smallest}: use batch_size >= "
                f"{self.world} and a number of pairs whose remainder modulo batch_size is 0 or "
                f">= {self.world}"
            )

    def _tokenize(self, data: Sequence[PreferencePair] | PreferenceBatch) -> PreferenceBatch:
        if not isinstance(data, PreferenceBatch):
            if len(data) == 0:
                raise ValueError("DPO needs at least one preference pair (data=...)")
            data = tokenize_pairs(self.policy, data, max_length=self.config.max_length)
        return without_ties(data)

    def _ref_logps(self, data: PreferenceBatch, batch_size: int = 32) -> Tensor:
        """log π_ref of all 2N rows of ``data`` (chosen first), on the CPU."""
        return completion_logps_cached(self.ref, data, batch_size, packing=self.config.packing)

    def _pair_logps(
        self, data: PreferenceBatch, ref: Tensor, index: Tensor, logps: nn.Module
    ) -> PairLogps:
        """π_θ log-probs of pairs ``index`` (one forward of ``logps``) and their cached π_ref."""
        batch = data.select(index).to(self.policy.device)
        logp = logps(batch.input_ids, batch.attention_mask, batch.completion_mask)  # (2B,)
        theta_w, theta_l = logp.chunk(2)  # (B,), (B,)
        len_w, len_l = batch.completion_mask.sum(-1).float().chunk(2)  # (B,), (B,)
        ref_w, ref_l = (ref[i].to(theta_w.device) for i in (index, index + len(data)))  # (B,) each
        return PairLogps(theta_w, theta_l, ref_w, ref_l, len_w, len_l)

    def _indices(self, step: int) -> Tensor:
        """Pairs of update ``step``: epoch e walks a permutation drawn from (seed, e) alone."""
        n, b = len(self.data), self.config.batch_size
        per_epoch = math.ceil(n / b)
        epoch, j = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=g)[j * b : (j + 1) * b]

    def learn(self, n_updates: int) -> list[dict[str, float]]:
        """Run ``n_updates`` optimizer updates of the chosen loss; return their history rows.

        Each history row holds the update index, loss, implicit-reward accuracy and margin,
        chosen/rejected rewards and log-probs, grad norm and learning rate (and "eval_*" keys
        every ``config.eval_every`` updates when ``eval_data`` was given). ``self.history`` keeps
        the rows of every call.
        """
        rows: list[dict[str, float]] = []
        loss_fn = LOSSES[self.config.loss]
        for _ in progress(
            range(n_updates), desc=f"DPO[{self.config.loss}]", disable=not self.progress_bar
        ):
            index = self._indices(self.step)  # the global batch, the same on every process
            shard = self.dp.shard(index)
            p = self._pair_logps(self.data, self.ref_logps, shard, self.trainable)
            loss = loss_fn(p, self.config)
            terms = {"loss": loss, **pair_means(p, self.config.beta)}
            terms |= {"logp_ref_w": p.ref_w.mean(), "logp_ref_l": p.ref_l.mean()}
            means = self.dp.weighted_sums(terms, len(shard) / len(index))
            check_finite(  # on global means: every process raises together, none hangs in DDP
                self.step,
                {
                    f"{self.config.loss}_loss": means["loss"],
                    "logp_theta_w": means["logp_chosen"],
                    "logp_theta_l": means["logp_rejected"],
                    "logp_ref_w": means["logp_ref_w"],
                    "logp_ref_l": means["logp_ref_l"],
                },
            )
            self.optimizer.zero_grad(set_to_none=True)
            (loss * self.dp.loss_scale(len(shard), len(index))).backward()
            clip = self.config.max_grad_norm or float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.model.parameters(), clip)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            row = {"update": float(self.step), **{k: means[k].item() for k in _EVAL_KEYS}}
            row |= {"grad_norm": grad_norm.item(), "lr": float(lr)}
            if self.eval_data is not None and self.config.eval_every:
                due = self.step % self.config.eval_every == 0
                evals = self.evaluate() if due else dict.fromkeys(_EVAL_KEYS, math.nan)
                row |= {f"eval_{k}": v for k, v in evals.items()}
            rows.append(row)
            self._record(row)
        return rows

    @torch.no_grad()
    def evaluate(
        self, data: Sequence[PreferencePair] | None = None, batch_size: int = 32
    ) -> dict[str, float]:
        """Loss, implicit-reward accuracy and margin, log-probs on held-out pairs.

        Args:
            data: pairs to score; None uses ``eval_data`` (whose π_ref log-probs are cached).
            batch_size: pairs per forward.

        Returns:
            The mean of each metric over the pairs (keys as in ``pair_metrics`` plus "loss").
        """
        if data is None:
            if self.eval_data is None or self.eval_ref_logps is None:
                raise ValueError("evaluate() needs data=... or eval_data given to the constructor")
            batch, ref = self.eval_data, self.eval_ref_logps
        else:
            batch = self._tokenize(data)
            ref = self._ref_logps(batch, batch_size)
        parts = [  # every process scores all pairs with the unwrapped policy: no collectives
            self._pair_logps(
                batch, ref, torch.arange(i, min(i + batch_size, len(batch))), self.policy_logps
            )
            for i in range(0, len(batch), batch_size)
        ]
        p = PairLogps(
            *(torch.cat([getattr(q, f) for q in parts]) for f in PairLogps.__dataclass_fields__)
        )
        return {
            "loss": LOSSES[self.config.loss](p, self.config).item(),
            **pair_metrics(p, self.config.beta),
        }

    def _write_parts(self, path: Path) -> list[str]:
        self.policy.save_pretrained(path / "policy")
        self.ref.save_pretrained(path / "reference")
        return ["policy", "reference"]

    def _state(self) -> dict[str, Any]:
        # No RNG state to save: the data order is a function of (config.seed, step) and dropout
        # is off, so step and seed are the whole random state.
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "data": self.data.state_dict(),
            "ref_logps": self.ref_logps,
            "eval_data": None if self.eval_data is None else self.eval_data.state_dict(),
            "eval_ref_logps": self.eval_ref_logps,
        }

    @classmethod
    def _restore(
        cls,
        path: Path,
        config: DPOConfig,
        state: dict[str, Any],
        *,
        device: str = "auto",
        accelerator: Any = None,
        **runtime: Any,
    ) -> DPO:
        where = cls._device(device, accelerator)
        policy = LanguageModel.from_pretrained(path / "policy", device=where)
        ref = LanguageModel.from_pretrained(path / "reference", device=where)
        saved_eval = state["eval_data"]
        agent = cls(
            policy,
            ref,
            PreferenceBatch(**state["data"]),
            None if saved_eval is None else PreferenceBatch(**saved_eval),
            config,
            ref_logps=state["ref_logps"],
            eval_ref_logps=state["eval_ref_logps"],
            device=device,
            accelerator=accelerator,
            **runtime,
        )
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.scheduler.load_state_dict(state["scheduler"])
        agent.step, agent.history = state["step"], state["history"]
        return agent


_EVAL_KEYS = (
    "loss",
    "accuracy",
    "margin",
    "reward_chosen",
    "reward_rejected",
    "logp_chosen",
    "logp_rejected",
    "logratio_chosen",
)
