"""Behaviour cloning: supervised next-token learning on an expert's states (Pomerleau 1989; the
reduction analysed by Ross & Bagnell 2010 and Ross, Gordon & Bagnell 2011, arXiv:1011.0686, §2).

π̂ = argmin_{π ∈ Π} 𝔼_{s ~ d_{π*}} [l(s, π)],   l(s, π) = -log π(a*|s)   (cross-entropy, a* = π*(s))

estimated on a data set D = {(s, a*)} of states visited by the expert π* and its actions. For a
text, s_t = x ⊕ y_<t and a*_t = y_t: the loss is the token cross-entropy of the completion given
the prompt (teacher forcing), averaged over the labelled tokens (EOS included), never the prompt.
Errors compound: a learner with per-step error ε on d_{π*} can be off by O(T²ε) over T steps,
because after one mistake it sees prefixes it never trained on (the "drift" DAgger fixes).

Symbols -> code: π̂ (= π_θ) -> policy | D -> :class:`Demonstrations` (one row per trajectory) |
s_t -> prompt_ids ⊕ completion_ids[:, :t] | a*_t -> labels[:, t] | l -> :func:`bc_loss`.

Engineering choices: a row holds a trajectory, so its T labelled states cost one forward pass; the
tokens the states are made of (``completion_ids``) may differ from the labels, which is how DAgger
reuses this learner for learner-visited states. Multi-turn trajectories (``docs/multiturn.md``)
hold the environment's tokens between the policy's turns (``Demonstrations.env_mask``): they are
attended, never labelled, so the loss covers the policy's turns only. Early stopping on a
validation loss (patience, the best weights restored). The policy stays in eval mode (no
dropout), as in the other agents.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from textgym.agents._common import check_finite
from textgym.agents.base import Agent
from torch import Tensor

from textgym.config import check_fields, check_range
from textgym.lm import LanguageModel
from textgym.multiturn import MultiTurnTask
from textgym.tasks import Task
from textgym.training import progress


@dataclass(frozen=True)
class BCConfig:
    """Hyperparameters of behaviour cloning (defaults work on ``textgym.DEFAULT_MODEL``)."""

    lr: float = 1e-3
    """AdamW step size (a 1M-parameter model takes large steps)."""
    batch_size: int = 32
    """Trajectories (rows of D) per gradient step."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm (0 disables)."""
    eval_every: int = 25
    """Steps between validation losses (and history rows)."""
    patience: int | None = 4
    """Early stopping: stop after this many evaluations without improvement; None never stops."""
    restore_best: bool = True
    """Keep the weights of the best validation loss; load them at an early stop."""
    val_fraction: float = 0.1
    """Share of the data held out for validation when no ``val_data`` is given (0: none)."""
    seed: int = 0
    """Seeds the validation split and the data order."""

    def __post_init__(self) -> None:
        check_fields(self)
        check_range(self, "lr", low=0, low_open=True)
        for name in ("batch_size", "eval_every"):
            check_range(self, name, low=1)
        for name in ("weight_decay", "max_grad_norm"):
            check_range(self, name, low=0)
        check_range(self, "patience", low=1)  # None passes: never stop early
        check_range(self, "val_fraction", low=0, high=1, high_open=True)
        check_range(self, "seed", low=0, high=2**32 - 1)


def bc_loss(
    logits: Tensor,  # (B, T, V) logits of π_θ(·|s_t) at the labelled states
    labels: Tensor,  # (B, T) a*_t
    mask: Tensor,  # (B, T) 1 = a labelled state (completion tokens only)
) -> Tensor:  # ()
    """l averaged over labelled states: -Σ mask·log π_θ(a*_t|s_t) / Σ mask."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V) float32: stable at any dtype
    nll = -logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)  # (B, T)
    m = mask.to(nll.dtype)
    return (nll * m).sum() / m.sum().clamp(min=1)


@dataclass
class Demonstrations:
    """Labelled states D, one row per trajectory: s_t = prompt ⊕ completion_ids[:t], label a*_t.

    For expert demonstrations ``labels == completion_ids``; for DAgger the completion holds the
    tokens the (mixed) learner really wrote and the labels the expert's answer at each state.
    """

    prompt_ids: Tensor  # (N, P) int64, left-padded
    prompt_mask: Tensor  # (N, P) int64, 1 = prompt token
    completion_ids: Tensor  # (N, T) int64, right-padded: the tokens the states are built from
    labels: Tensor  # (N, T) int64, a*_t, the expert's action at s_t
    mask: Tensor  # (N, T) float32, 1 = a labelled state (single-turn: each row's are a prefix)
    env_mask: Tensor | None = None  # (N, T) float32, 1 = an environment token (multi-turn)

    @property
    def n_labels(self) -> int:
        """|D|: the number of labelled states (expert labels spent)."""
        return int(self.mask.sum())

    @property
    def completion_attention(self) -> Tensor:  # (N, T) int64
        """1 on the tokens of each trajectory: its labelled states' and its environment's."""
        keep = self.mask > 0 if self.env_mask is None else (self.mask > 0) | (self.env_mask > 0)
        return keep.long()

    def __len__(self) -> int:
        return int(self.prompt_ids.shape[0])

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Demonstrations:
        """The same data with ``fn`` applied to every tensor (absent fields stay None)."""
        return Demonstrations(**{k: fn(v) for k, v in self.state_dict().items()})

    def __getitem__(self, rows: Tensor | slice) -> Demonstrations:
        return self._map(lambda x: x[rows])

    def to(self, device: torch.device | str) -> Demonstrations:
        return self._map(lambda x: x.to(device))

    def state_dict(self) -> dict[str, Tensor]:
        """The tensors by field name, for a checkpoint (``Demonstrations(**d)`` rebuilds it)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_pairs(cls, lm: LanguageModel, pairs: Sequence[tuple[str, str]]) -> Demonstrations:
        """Tokenise (prompt, completion) texts; each completion ends with EOS (a labelled action).

        Prompts are tokenised as the env does (the tokenizer's special tokens), completions on
        their own without special tokens, as ``ReferenceExpert`` does.
        """
        if not pairs:
            raise ValueError("no demonstrations: pass at least one (prompt, completion) pair")
        if lm.eos_token_id is None:
            raise ValueError("behaviour cloning needs an EOS id to teach the learner to stop")
        prompt_ids, prompt_mask = lm.encode([p for p, _ in pairs])  # (N, P)
        tok = lm.tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
        rows = [[*ids, lm.eos_token_id] for ids in tok]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), lm.pad_token_id, dtype=torch.long)  # (N, T)
        mask = torch.zeros(len(rows), T)  # (N, T)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1.0
        device = prompt_ids.device
        return cls(prompt_ids, prompt_mask, ids.to(device), ids.clone().to(device), mask.to(device))

    @classmethod
    def from_dialogues(
        cls,
        lm: LanguageModel,
        dialogues: Sequence[tuple[str, Sequence[str]]],
        stop_sequences: Sequence[str] = (),
    ) -> Demonstrations:
        """Tokenise multi-turn conversations as a multi-turn env writes them: ``(prompt, turns)``
        with turns alternating policy / environment (``MultiTurnTask.dialogues()``).

        A policy turn is tokenised on its own and followed by EOS unless it ends with one of
        ``stop_sequences`` (its tokens are labelled); an environment turn is tokenised on its own
        (attended, not labelled). Prompts as :meth:`from_pairs`. For chat-template envs, pass
        the turns as the template formats them.
        """
        if not dialogues:
            raise ValueError("no demonstrations: pass at least one (prompt, turns) dialogue")
        if lm.eos_token_id is None:
            raise ValueError("behaviour cloning needs an EOS id to teach the learner to stop")
        prompt_ids, prompt_mask = lm.encode([p for p, _ in dialogues])  # (N, P)
        texts = [t for _, turns in dialogues for t in turns]
        encoded = iter(lm.tokenizer(texts, add_special_tokens=False)["input_ids"])
        rows: list[tuple[list[int], list[float], list[float]]] = []
        for _, turns in dialogues:
            ids, labelled, env = [], [], []
            for k, text in enumerate(turns):
                tok = list(next(encoded))
                policy = k % 2 == 0
                if policy and not any(text.endswith(s) for s in stop_sequences):
                    tok.append(lm.eos_token_id)
                ids += tok
                labelled += [float(policy)] * len(tok)
                env += [float(not policy)] * len(tok)
            rows.append((ids, labelled, env))
        T = max(len(r[0]) for r in rows)
        ids_t = torch.full((len(rows), T), lm.pad_token_id, dtype=torch.long)  # (N, T)
        mask, env_mask = torch.zeros(len(rows), T), torch.zeros(len(rows), T)  # (N, T)
        for i, (ids, labelled, env) in enumerate(rows):
            ids_t[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = torch.tensor(labelled)
            env_mask[i, : len(ids)] = torch.tensor(env)
        device = prompt_ids.device
        labels = ids_t.masked_fill(mask == 0, lm.pad_token_id)
        return cls(
            prompt_ids,
            prompt_mask,
            ids_t.to(device),
            labels.to(device),
            mask.to(device),
            env_mask.to(device),
        )

    @staticmethod
    def cat(parts: Sequence[Demonstrations], pad_id: int) -> Demonstrations:
        """The union of data sets: rows stacked, prompts re-padded left, completions right."""
        P = max(d.prompt_ids.shape[1] for d in parts)
        T = max(d.labels.shape[1] for d in parts)

        def pad(x: Tensor, width: int, value: float, left: bool) -> Tensor:
            extra = width - x.shape[1]
            return torch.nn.functional.pad(x, (extra, 0) if left else (0, extra), value=value)

        env = None
        if any(d.env_mask is not None for d in parts):
            env = torch.cat(
                [
                    pad(
                        torch.zeros_like(d.mask) if d.env_mask is None else d.env_mask,
                        T,
                        0.0,
                        False,
                    )
                    for d in parts
                ]
            )
        return Demonstrations(
            torch.cat([pad(d.prompt_ids, P, pad_id, True) for d in parts]),
            torch.cat([pad(d.prompt_mask, P, 0, True) for d in parts]),
            torch.cat([pad(d.completion_ids, T, pad_id, False) for d in parts]),
            torch.cat([pad(d.labels, T, pad_id, False) for d in parts]),
            torch.cat([pad(d.mask, T, 0.0, False) for d in parts]),
            env,
        )

    def within_budget(self, budget: int) -> Demonstrations:
        """The first ``budget`` labelled states in row order (a last row may keep only its
        first ones)."""
        before = self.mask.sum(-1).cumsum(0) - self.mask.sum(-1)  # (N,) labels in earlier rows
        keep = (budget - before).clamp(min=0)  # (N,) states each row may keep
        rank = self.mask.cumsum(-1)  # (N, T) 1-based index of each labelled state in its row
        mask = self.mask * (rank <= keep[:, None])  # (N, T)
        rows = mask.sum(-1) > 0
        return dataclasses.replace(self, mask=mask)[rows]


def as_demonstrations(
    lm: LanguageModel, data: Task | Sequence[tuple[str, str]] | Demonstrations
) -> Demonstrations:
    """A task's expert demonstrations, a list of (prompt, completion) texts, or D as it is."""
    if isinstance(data, Demonstrations):
        return data.to(lm.device)
    if isinstance(data, MultiTurnTask) and data.planner is not None:
        return Demonstrations.from_dialogues(lm, data.dialogues(), data.stop_sequences)
    pairs = data.demonstrations() if isinstance(data, Task) else list(data)
    return Demonstrations.from_pairs(lm, pairs)


def state_logits(policy: LanguageModel, d: Demonstrations) -> Tensor:  # (B, T, V)
    """π_θ's logits at every state s_t of every row, in one forward pass (with gradients)."""
    ids = torch.cat([d.prompt_ids, d.completion_ids], dim=1)  # (B, L)
    attention = torch.cat([d.prompt_mask, d.completion_attention], dim=1)  # (B, L)
    P, T = d.prompt_ids.shape[1], d.completion_ids.shape[1]
    return policy.forward(ids, attention)[:, P - 1 : P - 1 + T]  # position P-1+t predicts a_t


class BC(Agent):
    """Behaviour cloning of a policy LM on demonstrations.

    ``BC.load(dir, device="auto", **runtime)`` resumes a saved run bit for bit.

    Args:
        policy: π_θ, trained in place.
        data: a ``Task`` (its expert's ``demonstrations()``; a ``MultiTurnTask`` with a planner:
            its ``dialogues()``), (prompt, completion) texts, or :class:`Demonstrations`.
        config: :class:`BCConfig`.
        val_data: held-out demonstrations; None splits ``config.val_fraction`` off ``data``.
        log_dir, tensorboard: one CSV row (and TensorBoard scalars) per evaluation.
        progress_bar: show a tqdm bar in ``learn``.
    """

    config_class = BCConfig

    def __init__(
        self,
        policy: LanguageModel,
        data: Task | Sequence[tuple[str, str]] | Demonstrations,
        config: BCConfig = BCConfig(),
        *,
        val_data: Task | Sequence[tuple[str, str]] | Demonstrations | None = None,
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
    ) -> None:
        self.policy, self.config, self.device = policy, config, policy.device
        policy.model.eval()
        self.optimizer = torch.optim.AdamW(
            [p for p in policy.model.parameters() if p.requires_grad],
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
        self.generator = torch.Generator().manual_seed(config.seed)  # data order, on CPU
        train = as_demonstrations(policy, data)
        val = None if val_data is None else as_demonstrations(policy, val_data)
        if val is None and config.val_fraction > 0:
            order = torch.randperm(len(train), generator=self.generator).to(self.device)
            n_val = max(1, round(config.val_fraction * len(train)))
            if n_val >= len(train):
                raise ValueError(
                    f"{len(train)} demonstrations are too few to hold out a validation set"
                )
            train, val = train[order[n_val:]], train[order[:n_val]]
        self._setup_runtime(log_dir=log_dir, tensorboard=tensorboard, progress_bar=progress_bar)
        self.set_data(train, val)

    def set_data(self, train: Demonstrations, val: Demonstrations | None = None) -> None:
        """Train on new data from now on (DAgger's aggregated D); restarts early stopping."""
        if train.n_labels == 0:
            raise ValueError("the training data has no labelled states")
        self.train_data, self.val_data = train.to(self.device), val
        self.epoch, self.cursor = 0, 0
        self.order = self._permutation()
        self.best: float = float("inf")
        self.bad_evals = 0
        self.best_weights: dict[str, Tensor] | None = None
        self.stopped = False

    def _permutation(self) -> Tensor:
        return torch.randperm(len(self.train_data), generator=self.generator).to(self.device)

    def _next_rows(self) -> Tensor:
        """The next minibatch of rows; a new permutation every epoch."""
        if self.cursor >= len(self.order):
            self.epoch, self.cursor, self.order = self.epoch + 1, 0, self._permutation()
        rows = self.order[self.cursor : self.cursor + self.config.batch_size]
        self.cursor += len(rows)
        return rows

    @torch.no_grad()
    def loss(self, data: Demonstrations, batch_size: int = 256) -> float:
        """l on ``data``, averaged over its labelled states."""
        total, count = 0.0, 0.0
        for start in range(0, len(data), batch_size):
            d = data[start : start + batch_size]
            n = float(d.mask.sum())
            total += float(bc_loss(state_logits(self.policy, d), d.labels, d.mask)) * n
            count += n
        return total / max(count, 1.0)

    def _evaluate(self, train_loss: float, start: float) -> dict[str, float]:
        val = float("nan") if self.val_data is None else self.loss(self.val_data)
        if self.val_data is not None:
            if val < self.best:
                self.best, self.bad_evals = val, 0
                if self.config.restore_best:
                    self.best_weights = copy.deepcopy(self.policy.model.state_dict())
            else:
                self.bad_evals += 1
                patience = self.config.patience
                self.stopped = patience is not None and self.bad_evals >= patience
        row = {
            "step": float(self.step),
            "epoch": float(self.epoch),
            "train_loss": train_loss,
            "val_loss": val,
            "best_val_loss": self.best,
            "time": time.perf_counter() - start,
        }
        self._record(row)
        return row

    def learn(self, n_steps: int) -> list[dict[str, float]]:
        """Run up to ``n_steps`` gradient steps (fewer after an early stop); one row per evaluation.

        The validation loss is measured before the first step (so the best weights are never worse
        than the starting ones) and every ``eval_every`` steps. At an early stop the best weights
        are loaded; otherwise the current ones stay (so that ``learn(a)`` then ``learn(b)`` equals
        ``learn(a + b)``): call :meth:`restore_best` when done.
        """
        cfg, rows, start = self.config, [], time.perf_counter()
        if self.val_data is not None and self.best == float("inf"):
            rows.append(self._evaluate(float("nan"), start))
        losses: list[float] = []
        for _ in progress(range(n_steps), "BC", disable=not self.progress_bar or self.stopped):
            if self.stopped:
                break
            d = self.train_data[self._next_rows()]
            loss = bc_loss(state_logits(self.policy, d), d.labels, d.mask)
            check_finite(self.step, {"loss": loss.detach()})
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.policy.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.step += 1
            losses.append(float(loss.detach()))
            if self.step % cfg.eval_every == 0:
                rows.append(self._evaluate(sum(losses) / len(losses), start))
                losses = []
            if self.stopped:
                self.restore_best()
        return rows

    def restore_best(self) -> None:
        """Load the weights of the best validation loss (no-op without them)."""
        if self.best_weights is not None:
            self.policy.model.load_state_dict(self.best_weights)

    def _write_parts(self, path: Path) -> list[str]:
        self.policy.save_pretrained(path / "policy")
        return ["policy"]

    def _state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "train_data": self.train_data.state_dict(),
            "val_data": None if self.val_data is None else self.val_data.state_dict(),
            "best_weights": self.best_weights,
            **{f: getattr(self, f) for f in _RESUMED},
            "order": self.order,
        }

    @classmethod
    def _restore(
        cls, path: Path, config: BCConfig, state: dict[str, Any], *, device: str = "auto",
        **runtime: Any,
    ) -> BC:  # fmt: skip
        policy = LanguageModel.from_pretrained(path / "policy", device=device)
        val = state["val_data"]
        agent = cls(
            policy,
            Demonstrations(**state["train_data"]),
            config,
            val_data=None if val is None else Demonstrations(**val),
            **runtime,
        )
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.generator.set_state(state["generator"])
        for f in _RESUMED:
            setattr(agent, f, state[f])
        agent.order = state["order"].to(agent.device)
        agent.best_weights = state["best_weights"]
        return agent


_RESUMED = ("step", "epoch", "cursor", "best", "bad_evals", "stopped", "history")
"""BC's counters and early-stopping state, saved and restored as they are."""
