"""A learned preference reward model r_φ(x, y), trained on pairs with the Bradley-Terry loss.

Bradley & Terry 1952 model a comparison between two items as a logistic function of the
difference of their scores. RLHF uses it for completions of one prompt (Ziegler et al. 2019,
arXiv:1909.08593, §2.2; Ouyang et al. 2022, arXiv:2203.02155, §3.5, Eq. 1)::

    p(y_w ≻ y_l | x) = σ( r_φ(x, y_w) - r_φ(x, y_l) )
    L(φ) = -E_{(x, y_w, y_l) ~ D} log σ( r_φ(x, y_w) - r_φ(x, y_l) )

Symbols -> code: x -> ``prompts`` | y_w, y_l -> chosen / rejected completions | r_φ(x, y) ->
``RewardModel.forward`` (``r_w``, ``r_l`` in the loss) | σ -> ``torch.sigmoid`` | D -> the
pairs given to ``train_reward_model`` | φ -> the backbone's and the head's parameters.

r_φ is any Hugging Face backbone (the trunk of a causal LM, such as the embedded model's, or an
encoder) and a linear head on the hidden state of the **last non-pad token** of x ⊕ y, the one
token that has seen the whole text under causal attention. The position of that token is read
from the attention mask, so left, right or extra padding give the same reward; for a causal
backbone the position ids come from the mask too (``cumsum - 1``), so left padding never shifts
positions.

Decisions:

- Text -> tokens happens in one place, ``RewardModel.tokenize``: the tokenizer's own pair
  encoding of (x, y) (special tokens as the backbone expects them; GPT-2 style tokenizers just
  concatenate), right-padded by hand so a caller's tokenizer is never changed. Training and
  scoring both go through it, so the model is scored on exactly the tokens it was trained on.
  Completions are decoded text without EOS, as the env's ``info["text"]`` is.
- A row longer than ``max_length`` (default: the backbone's context window) keeps its **last**
  tokens, where the reward is read, and a warning gives the count.
- BT is invariant to adding a constant to r_φ; ``RewardModel.normalize_`` folds a mean/std
  normalisation over reference samples into the head (Ziegler et al. 2019, §2.2: mean 0 and
  variance 1 before RL), so a saved model carries it.
- The head starts from N(0, 1/(H + 1)) (Stiennon et al. 2020, arXiv:2009.01325, App. C.3).

``RewardModelReward`` wraps a model as a textgym reward (``gym.make("TextGen-v0",
reward=RewardModelReward(rm))``, ``rewards.make("reward_model", model=path)``); its
``preference`` method is the BT probability, the ``preference=`` callable of
``IterativeDPO``. ``synthetic_review_preferences`` builds the DPO paper's IMDb-like set-up on
the built-in review task: samples of the embedded model ranked by a hidden gold reward (VADER).

Shapes: B batch (rows), N pairs, L sequence length, H hidden size.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from textgym.rewards.base import BaseReward
from textgym.rewards.model import default_batch_tokens, fuse_gelu_, length_buckets
from torch import Tensor, nn

from textgym.config import check_fields, check_range
from textgym.preference import PreferenceBatch, PreferencePair

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from textgym.lm import LanguageModel

__all__ = [
    "RewardModel",
    "RewardModelConfig",
    "RewardModelReward",
    "bradley_terry_loss",
    "pairwise_accuracy",
    "synthetic_review_preferences",
    "train_reward_model",
]

FORMAT_VERSION = 1
"""Version of the ``reward_model.json`` layout written by ``RewardModel.save``."""
META_FILE = "reward_model.json"
HEAD_FILE = "head.safetensors"
BACKBONE_DIR = "backbone"


def bradley_terry_loss(r_w: Tensor, r_l: Tensor) -> Tensor:
    """L(φ) = -mean log σ(r_φ(x, y_w) - r_φ(x, y_l)) (Ouyang et al. 2022, Eq. 1).

    Args:
        r_w: (N,) rewards of the preferred completions.
        r_l: (N,) rewards of the dispreferred completions.

    Returns:
        The scalar loss; log 2 when r_w = r_l.
    """
    if r_w.shape != r_l.shape:
        raise ValueError(
            f"r_w and r_l must have one shape, got {tuple(r_w.shape)} and {tuple(r_l.shape)}"
        )
    return -F.logsigmoid(r_w - r_l).mean()  # log σ in one op: no underflow at large margins


def _is_causal(config: Any) -> bool:
    """Whether a config describes a decoder-only LM (its saved architectures say so)."""
    if getattr(config, "is_encoder_decoder", False):
        return False
    archs = getattr(config, "architectures", None) or []
    return bool(getattr(config, "is_decoder", False)) or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs
    )


def _hidden_size(config: Any) -> int:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("hidden_size", "n_embd", "d_model", "dim"):
        value = getattr(text_config, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find the hidden size in config {type(config).__name__}")


def _context_window(config: Any) -> int | None:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(text_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class RewardModel(nn.Module):
    """r_φ(x, y): a Hugging Face backbone and a scalar head on the last non-pad hidden state.

    Build one with :meth:`from_backbone` (fresh head) or :meth:`load` (a saved model).

    Args:
        backbone: a model whose output has ``last_hidden_state`` (B, L, H): ``AutoModel`` of a
            causal LM or of an encoder. It is trained, so pass a copy of a policy's trunk.
        tokenizer: its tokenizer (never modified here).
        causal: the backbone is decoder-only; position ids are then passed from the mask.
        max_length: most tokens per row; None: the backbone's context window (or no limit).
        head: the scalar head; None: a fresh ``nn.Linear(H, 1)`` with N(0, 1/(H + 1)) weights.

    Attributes:
        backbone, head, tokenizer, causal, max_length: as given.
        pad_token_id: the id padding is written with (the tokenizer's pad, else EOS); masked out.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        causal: bool,
        max_length: int | None = None,
        head: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        hidden = _hidden_size(backbone.config)
        if head is None:
            head = nn.Linear(hidden, 1)
            nn.init.normal_(head.weight, std=1.0 / math.sqrt(hidden + 1))
            nn.init.zeros_(head.bias)
        if head.in_features != hidden or head.out_features != 1:
            raise ValueError(
                f"head must map H={hidden} -> 1, got {head.in_features} -> {head.out_features}"
            )
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        if pad is None:
            raise ValueError(
                "the tokenizer has neither a pad nor an EOS token to pad with; one-line fix on "
                "your tokenizer: `tokenizer.pad_token = tokenizer.unk_token` (any token: masked)"
            )
        self.backbone = backbone
        self.head = head.float()  # scores in float32 whatever the backbone's dtype
        self.tokenizer = tokenizer
        self.causal = causal
        self.max_length = _context_window(backbone.config) if max_length is None else max_length
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        self.pad_token_id = int(pad)
        params = inspect.signature(backbone.forward).parameters
        self._takes_position_ids = "position_ids" in params
        self._takes_use_cache = "use_cache" in params

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(
        cls,
        source: str | os.PathLike[str] | LanguageModel,
        *,
        device: str | torch.device | None = "auto",
        dtype: torch.dtype | str | None = None,
        causal: bool | None = None,
        max_length: int | None = None,
        trust_remote_code: bool = False,
    ) -> RewardModel:
        """A reward model with a fresh head on a backbone.

        Args:
            source: a ``LanguageModel`` (its trunk is **copied**, so the policy is untouched), or a
                Hugging Face path / hub name (loaded with ``AutoModel``: a causal LM's checkpoint
                gives its trunk without the LM head; an encoder gives the encoder).
            device: ``"auto"`` (CUDA when available), any torch device, or None (where loaded; a
                ``LanguageModel``'s device).
            dtype: backbone weights dtype for a path; None keeps ``transformers``' default.
            causal: override the decoder-only detection (a ``LanguageModel`` is causal; a path is
                causal when its config's architectures name a causal LM).
            max_length: most tokens per row; None: the backbone's context window.
            trust_remote_code: allow code shipped with a model repository to run.

        Returns:
            The model, in train mode.
        """
        from textgym.lm import LanguageModel, resolve_device

        target: torch.device | None
        if isinstance(source, LanguageModel):
            trunk = copy.deepcopy(source.model.base_model)
            tokenizer = source.tokenizer
            is_causal = True if causal is None else causal
            target = source.device if device is None else resolve_device(device)
        else:
            from transformers import AutoConfig, AutoModel, AutoTokenizer

            from textgym.lm import check_model_dir, check_trust_remote_code

            path = check_model_dir(source)
            check_trust_remote_code(trust_remote_code)
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
            kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
            trunk = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            is_causal = _is_causal(config) if causal is None else causal
            target = None if device is None else resolve_device(device)
        fuse_gelu_(trunk)  # our own copy: the fused kernel computes the same function, faster
        model = cls(trunk, tokenizer, causal=is_causal, max_length=max_length)
        return model.to(target) if target is not None else model

    @property
    def device(self) -> torch.device:
        """Where the head (and the backbone) live."""
        return self.head.weight.device

    # ------------------------------------------------------------------ r_φ

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """r_φ(x, y) of each row, read at its last non-pad token.

        Args:
            input_ids: (B, L) token ids of x ⊕ y (from :meth:`tokenize`), padded on either side.
            attention_mask: (B, L), 1 = real token; every row needs at least one.

        Returns:
            (B,) float32 rewards.
        """
        if not isinstance(input_ids, Tensor) or not isinstance(attention_mask, Tensor):
            raise TypeError(
                "RewardModel.forward takes token tensors (input_ids, attention_mask); to score "
                "text use rm.score(prompts, completions), or RewardModelReward(rm) as a reward"
            )
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be (B, L), got {tuple(input_ids.shape)} "
                f"and {tuple(attention_mask.shape)}"
            )
        mask = attention_mask.long()  # (B, L)
        if not bool(mask.any(-1).all()):
            raise ValueError("a row of attention_mask has no real token: nothing to score")
        kwargs: dict[str, Any] = {}
        if self._takes_use_cache:
            kwargs["use_cache"] = False  # one pass, no decoding: a cache would only cost memory
        if self.causal and self._takes_position_ids:
            # Positions count real tokens only, so a left-padded row equals the same row unpadded.
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L)
        hidden = self.backbone(input_ids=input_ids, attention_mask=mask, **kwargs).last_hidden_state
        length = mask.shape[1]
        # Index of the last 1 in each row: the first 1 of the flipped row, counted from the end.
        last = length - 1 - mask.flip(-1).argmax(-1)  # (B,)
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
        return self.head(h.float()).squeeze(-1)  # (B,)

    # ------------------------------------------------------------------ text

    def tokenize(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Encode (x, y) pairs into a right-padded batch on the CPU (see the module docstring).

        Args:
            prompts: B prompts x.
            completions: B completions y (text after the prompt).

        Returns:
            ``(input_ids, attention_mask, completion_mask)``: (B, L) int64, (B, L) int64, and
            (B, L) bool, True on the completion's tokens.
        """
        if isinstance(prompts, str) or isinstance(completions, str):
            raise TypeError("tokenize is batched: pass lists of prompts and completions")
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        if not prompts:
            raise ValueError("tokenize: no texts")
        enc = self.tokenizer(list(prompts), list(completions))
        rows: list[list[int]] = enc["input_ids"]
        sides: list[list[bool]] = []
        for i, row in enumerate(rows):
            if not row:
                raise ValueError(f"text {i} (prompt {prompts[i]!r:.80}) encodes to no tokens")
            seq = enc.sequence_ids(i) if enc.is_fast else [None] * len(row)
            sides.append([s == 1 for s in seq])
        limit, cut = self.max_length, 0
        if limit is not None:
            for i, row in enumerate(rows):
                if len(row) > limit:
                    rows[i], sides[i], cut = row[-limit:], sides[i][-limit:], cut + 1
        if cut:
            warnings.warn(
                f"{cut} of {len(rows)} texts were longer than max_length={limit} tokens and lost "
                "their first tokens",
                stacklevel=2,
            )
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, L)
        completion_mask = torch.zeros((len(rows), width), dtype=torch.bool)  # (B, L)
        for i, (row, side) in enumerate(zip(rows, sides, strict=True)):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = 1
            completion_mask[i, : len(row)] = torch.tensor(side, dtype=torch.bool)
        return input_ids, attention_mask, completion_mask

    def tokenize_pairs(self, pairs: Sequence[PreferencePair]) -> PreferenceBatch:
        """N pairs as one ``PreferenceBatch`` of 2N rows, chosen first (row i: x_i ⊕ y_w,i; row
        N + i: x_i ⊕ y_l,i), right-padded, on the CPU. Pairs are scored from their text.
        """
        if not pairs:
            raise ValueError("tokenize_pairs: no pairs")
        prompts = [p.prompt for p in pairs] * 2
        completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        return PreferenceBatch(*self.tokenize(prompts, completions))

    def score(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        batch_size: int = 64,
        batch_tokens: int | None = None,
    ) -> np.ndarray:  # (B,)
        """r_φ(x, y) of texts, batched, in eval mode (the module's mode is restored after).

        Rows are tokenised in one call and run in ``length_buckets`` (sorted by length, right
        padding trimmed per bucket), so little compute goes to padding; a row scores as it does
        alone (the read-out and the causal positions follow the mask).

        Args:
            prompts: B prompts.
            completions: B completions.
            batch_size: most rows per forward pass.
            batch_tokens: most padded tokens per forward pass; None: 2,048 on the CPU
                (``textgym.rewards.model.CPU_BATCH_TOKENS``, measured), no limit elsewhere.

        Returns:
            (B,) float32 rewards, in the input order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        budget = default_batch_tokens(self.device, batch_tokens)
        out = torch.zeros(len(completions))  # (B,)
        if len(completions) == 0:
            return out.numpy()
        ids, mask, _ = self.tokenize(prompts, completions)  # (B, L), right-padded
        lengths = mask.sum(-1)  # (B,)
        was_training = self.training
        if was_training:  # a recursive train()/eval() costs ~20 % of a one-row call: only if needed
            self.eval()
        try:
            with torch.inference_mode():
                for bucket in length_buckets(lengths.numpy(), batch_size, budget):
                    rows = torch.from_numpy(bucket)  # (b,)
                    width = int(lengths[rows].max())  # right padding: trim the empty tail
                    r = self(ids[rows, :width].to(self.device), mask[rows, :width].to(self.device))
                    out[rows] = r.float().cpu()
        finally:
            if was_training:
                self.train()
        return out.numpy()

    def preference(
        self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str], batch_size: int = 64
    ) -> np.ndarray:  # (B,)
        """p(a ≻ b | x) = σ(r_φ(x, a) - r_φ(x, b)), the Bradley-Terry probability.

        Args:
            prompts: B prompts.
            a: B completions.
            b: B completions.
            batch_size: rows per forward pass.

        Returns:
            (B,) float64 probabilities in [0, 1].
        """
        if not len(prompts) == len(a) == len(b):
            raise ValueError(f"got {len(prompts)} prompts, {len(a)} and {len(b)} completions")
        r = self.score([*prompts, *prompts], [*a, *b], batch_size).astype(np.float64)  # (2B,)
        return 1.0 / (1.0 + np.exp(-(r[: len(a)] - r[len(a) :])))

    @torch.no_grad()
    def normalize_(
        self, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 64
    ) -> tuple[float, float]:
        """Make r_φ mean 0, std 1 on these samples by folding (r - μ)/s into the head, in place.

        Ziegler et al. 2019 (§2.2) normalise the reward model this way on samples of the initial
        policy before RL, so that rewards have a known scale. BT probabilities scale with 1/s.

        Args:
            prompts: prompts x ~ D.
            completions: completions y ~ π_ref(·|x), at least two.
            batch_size: rows per forward pass.

        Returns:
            (μ, s), the mean and std of r_φ on the samples before normalising.
        """
        if len(completions) < 2:
            raise ValueError(f"normalize_ needs at least 2 samples, got {len(completions)}")
        r = self.score(prompts, completions, batch_size).astype(np.float64)
        mu, s = float(r.mean()), float(r.std())
        if not s > 0:
            raise ValueError(f"r_φ is constant ({mu}) on these samples: cannot scale it to std 1")
        self.head.weight.div_(s)
        self.head.bias.sub_(mu).div_(s)
        return mu, s

    # ------------------------------------------------------------------ files

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``backbone/`` (a Hugging Face dir with the tokenizer), the head, and a JSON.

        Args:
            directory: created if missing; :meth:`load` reads it back.
        """
        from safetensors.torch import save_file

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path / BACKBONE_DIR)
        self.tokenizer.save_pretrained(path / BACKBONE_DIR)
        head = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(head, str(path / HEAD_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "causal": self.causal,
            "max_length": self.max_length,
            "hidden_size": self.head.in_features,
            "backbone_class": type(self.backbone).__name__,
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        device: str | torch.device = "auto",
        trust_remote_code: bool = False,
    ) -> RewardModel:
        """Read a model written by :meth:`save`.

        Args:
            directory: the folder.
            device: ``"auto"`` (CUDA when available) or any torch device.
            trust_remote_code: allow code shipped with the backbone to run.

        Returns:
            The model, in eval mode.
        """
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        from textgym.lm import check_trust_remote_code, resolve_device

        check_trust_remote_code(trust_remote_code)
        path = Path(directory)
        if not (path / META_FILE).exists():
            raise FileNotFoundError(f"no {META_FILE} in {path}: not a saved RewardModel")
        meta = json.loads((path / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path / META_FILE} has format_version {meta.get('format_version')}, this "
                f"textgym reads {FORMAT_VERSION}"
            )
        backbone = AutoModel.from_pretrained(
            path / BACKBONE_DIR, trust_remote_code=trust_remote_code
        )
        tokenizer = AutoTokenizer.from_pretrained(
            path / BACKBONE_DIR, trust_remote_code=trust_remote_code
        )
        fuse_gelu_(backbone)
        head = nn.Linear(int(meta["hidden_size"]), 1)
        head.load_state_dict(load_file(str(path / HEAD_FILE)))
        model = cls(
            backbone,
            tokenizer,
            causal=bool(meta["causal"]),
            max_length=meta["max_length"],
            head=head,
        )
        return model.to(resolve_device(device)).eval()

    def as_reward(self, batch_size: int = 64, batch_tokens: int | None = None) -> RewardModelReward:
        """This model as a textgym reward (see :class:`RewardModelReward`)."""
        return RewardModelReward(self, batch_size=batch_size, batch_tokens=batch_tokens)


# ---------------------------------------------------------------------------- as a reward


class RewardModelReward(BaseReward):
    """r_φ(x, y) as a sequence-level textgym reward: batched, no grad, on the model's device.

    Works wherever a reward does: ``gym.make("TextGen-v0", reward=RewardModelReward(rm))``,
    ``textgym.rewards.make("reward_model", model="path/to/rm")``, ``IterativeDPO(reward=...)``;
    its :meth:`preference` is the ``preference=`` callable of ``IterativeDPO``.

    Args:
        model: a ``RewardModel``, or the folder of a saved one.
        batch_size: most rows per forward pass.
        device: where to load a saved model (ignored for a model object).
        name: the reward's name (in logs and weighted sums).
        batch_tokens: most padded tokens per forward pass; None: 2,048 on the CPU, no limit
            elsewhere (see :meth:`RewardModel.score`).
        trust_remote_code: let a saved model's backbone run its own code; default False.
    """

    token_level = False
    needs_references = False

    def __init__(
        self,
        model: RewardModel | str | os.PathLike[str],
        *,
        batch_size: int = 64,
        device: str = "auto",
        name: str = "reward_model",
        batch_tokens: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = (
            model
            if isinstance(model, RewardModel)
            else RewardModel.load(model, device=device, trust_remote_code=trust_remote_code)
        )
        self.batch_size = batch_size
        if batch_tokens is not None and batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1 or None, got {batch_tokens}")
        self.batch_tokens = batch_tokens  # None resolves per call, on the model's device then
        self.name = name

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        return self.model.score(prompts, completions, self.batch_size, self.batch_tokens)

    def preference(
        self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]
    ) -> np.ndarray:  # (B,)
        """p(a ≻ b | x) = σ(r_φ(x, a) - r_φ(x, b)); see :meth:`RewardModel.preference`."""
        return self.model.preference(prompts, a, b, self.batch_size)


# ---------------------------------------------------------------------------- training


@dataclass(frozen=True)
class RewardModelConfig:
    """Hyperparameters of ``train_reward_model`` (defaults work on the embedded model's trunk)."""

    lr: float = 5e-4
    """AdamW learning rate; Ouyang et al. use 9e-6 for a 6B model, small trunks need more."""
    epochs: int = 2
    """Passes over the pairs; Ouyang et al. train 1 epoch (more overfits large models)."""
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


def _update(
    rm: RewardModel,
    optimizer: torch.optim.Optimizer,
    sub: PreferenceBatch,
    max_grad_norm: float | None,
    update: int,
) -> tuple[Tensor, Tensor]:
    """One AdamW step on the BT loss of ``sub``; returns the detached (b,) r_w and r_l."""
    sub = sub.to(rm.device)
    r_w, r_l = rm(sub.input_ids, sub.attention_mask).chunk(2)  # (b,), (b,): one pass, both sides
    loss = bradley_terry_loss(r_w, r_l)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"non-finite Bradley-Terry loss {loss.item()} at update {update}; r_w in "
            f"[{r_w.min().item():.3g}, {r_w.max().item():.3g}], r_l in "
            f"[{r_l.min().item():.3g}, {r_l.max().item():.3g}]: lower the learning rate"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_(rm.parameters(), max_grad_norm)
    optimizer.step()
    return r_w.detach(), r_l.detach()


def train_reward_model(
    rm: RewardModel,
    train: Sequence[PreferencePair] | PreferenceBatch,
    val: Sequence[PreferencePair] | PreferenceBatch | None = None,
    config: RewardModelConfig = RewardModelConfig(),
    *,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Fit r_φ to pairs by minimising the Bradley-Terry loss with AdamW, in place.

    Each update scores the chosen and the rejected rows of ``batch_size`` pairs in one forward
    pass. After each epoch the held-out pairs give the validation loss and pairwise accuracy.

    Args:
        rm: the model to train (e.g. ``RewardModel.from_backbone(lm)``).
        train: training pairs, or a ``PreferenceBatch`` from ``rm.tokenize_pairs``.
        val: held-out pairs (or batch) for validation; None: no validation.
        config: hyperparameters.
        progress: show a tqdm bar over updates.

    Returns:
        The history: a row for epoch 0 (before training: validation only), then one per epoch
        with ``train_loss``, ``train_acc`` (running, over the epoch's updates), ``val_loss``,
        ``val_acc`` and ``seconds`` since the start.
    """
    from textgym.training import progress as progress_bar

    cfg = config
    batch = train if isinstance(train, PreferenceBatch) else rm.tokenize_pairs(train)
    val_batch = val if val is None or isinstance(val, PreferenceBatch) else rm.tokenize_pairs(val)
    n = len(batch)
    optimizer = torch.optim.AdamW(rm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    updates_per_epoch = math.ceil(n / cfg.batch_size)
    start = time.perf_counter()

    def row(epoch: int, **train_stats: float) -> dict[str, float]:
        out: dict[str, float] = {"epoch": float(epoch), **train_stats}
        if val_batch is not None:
            out["val_loss"], out["val_acc"] = _evaluate(rm, val_batch, cfg.eval_batch_size)
        out["seconds"] = time.perf_counter() - start
        return out

    history = [row(0)]
    bar = progress_bar(range(cfg.epochs * updates_per_epoch), "reward model", disable=not progress)
    rm.train()
    for update in bar:
        epoch, i = divmod(update, updates_per_epoch)
        if i == 0:
            order = torch.randperm(n, generator=generator)  # (N,)
            loss_sum, correct, seen = 0.0, 0.0, 0
        index = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]  # (b,)
        r_w, r_l = _update(rm, optimizer, batch.select(index), cfg.max_grad_norm, update)
        loss_sum += bradley_terry_loss(r_w, r_l).item() * len(index)
        correct += float((r_w > r_l).sum() + 0.5 * (r_w == r_l).sum())
        seen += len(index)
        if i == updates_per_epoch - 1:
            history.append(row(epoch + 1, train_loss=loss_sum / seen, train_acc=correct / seen))
            bar.set_postfix({k: round(v, 3) for k, v in history[-1].items() if k != "epoch"})
    bar.close()
    return history


# ---------------------------------------------------------------------------- synthetic data


def synthetic_review_preferences(
    lm: LanguageModel | None = None,
    *,
    split: Literal["train", "validation", "test"] = "train",
    n_prompts: int | None = None,
    k: int = 4,
    pairs: Literal["all", "best_worst"] = "all",
    min_margin: float = 0.1,
    max_new_tokens: int = 32,
    seed: int = 0,
    gold: Any = "sentiment",
) -> list[PreferencePair]:
    """Preference pairs on the review task, labelled by a hidden gold reward (DPO's IMDb set-up).

    For each of the first ``n_prompts`` prompts of ``textgym.tasks.load("reviews", split)``, K
    completions are sampled from ``lm`` (temperature 1) with ``textgym.preference.sample_pairs``,
    scored by the gold reward (VADER sentiment in [0, 1] by default) and paired by it; a pair is
    kept when the gold margin exceeds ``min_margin`` (Rafailov et al. 2023, arXiv:2305.18290,
    §6.1, use a sentiment classifier as the gold reward the same way). Same seed, same pairs.

    Args:
        lm: the model to sample from; None: the embedded model on the CPU.
        split: which split's prompts.
        n_prompts: how many prompts (the first ones of the split); None: all.
        k: K, completions per prompt (>= 2).
        pairs: ``"all"``: every pair of a prompt's K candidates with a large margin (up to
            K(K-1)/2, as Ouyang et al. 2022 use all comparisons of a ranking); ``"best_worst"``:
            only (best, worst), as ``sample_pairs`` and iterative DPO keep.
        min_margin: keep a pair when gold(y_w) - gold(y_l) > this.
        max_new_tokens: longest completion.
        seed: seed of the sampling generator.
        gold: the gold reward spec (``textgym.rewards.make``) or object.

    Returns:
        The pairs, prompt by prompt.
    """
    from textgym.rewards import make

    from textgym import tasks
    from textgym.lm import LanguageModel
    from textgym.preference import sample_pairs

    if pairs not in ("all", "best_worst"):
        raise ValueError(f"pairs must be 'all' or 'best_worst', got {pairs!r}")
    if n_prompts is not None and n_prompts < 1:
        raise ValueError(f"n_prompts must be >= 1 or None, got {n_prompts}")
    policy = LanguageModel.from_pretrained(device="cpu") if lm is None else lm
    prompts = list(tasks.load("reviews", split=split).prompts[:n_prompts])
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    sampled = sample_pairs(
        policy,
        prompts,
        k=k,
        reward=make(gold),
        min_margin=min_margin,
        max_new_tokens=max_new_tokens,
        generator=generator,
    )
    if pairs == "best_worst":
        return [dataclasses.replace(p, chosen_ids=None, rejected_ids=None) for p in sampled.pairs]
    out: list[PreferencePair] = []
    for prompt, texts, scores in zip(prompts, sampled.texts, sampled.scores, strict=True):
        for a in range(len(texts)):
            for b in range(a + 1, len(texts)):
                w, lo = (a, b) if scores[a] >= scores[b] else (b, a)
                margin = float(scores[w] - scores[lo])
                if margin > min_margin and texts[w] != texts[lo] and texts[w] and texts[lo]:
                    out.append(PreferencePair(prompt, texts[w], texts[lo], margin=margin))
    return out
