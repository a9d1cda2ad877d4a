"""A learned preference reward model r_φ(x, y) and its adapter to the textgym reward protocol.

r_φ scores completion y of prompt x; two completions compare as Bradley & Terry 1952 do, as in RLHF
(Ziegler et al. 2019, arXiv:1909.08593, §2.2; Ouyang et al. 2022, arXiv:2203.02155, §3.5)::

    p(y_w ≻ y_l | x) = σ( r_φ(x, y_w) - r_φ(x, y_l) )      (RewardModel.preference)

r_φ is any Hugging Face backbone (a causal LM's trunk, such as the embedded model's, or an encoder)
and a linear head, N(0, 1/(H + 1)) at init (Stiennon et al. 2020, arXiv:2009.01325, App. C.3), on
the hidden state of the **last non-pad token** of x ⊕ y, found from the attention mask: any padding
gives the same reward, and a causal backbone takes its position ids from the mask (``cumsum - 1``).
Text becomes tokens in one place, ``RewardModel.tokenize`` (the tokenizer's pair encoding of
(x, y), right-padded by hand; a row over ``max_length`` keeps its last tokens), for training and
scoring alike. ``normalize_`` folds mean 0 / std 1 on reference samples into the head (Ziegler et
al. 2019, §2.2). The decisions are argued in ``docs/reward_model.md``.

Training (the Bradley-Terry loss) is ``textgym.agents.RewardModelTrainer``; pairs labelled by a
gold reward come from ``textgym.pair_sampling.synthetic_preferences``. ``RewardModelReward`` makes a
model a textgym reward (``rewards.make("reward_model", model=path)``); its ``preference`` method is
the ``preference=`` callable of ``IterativeDPO``. Shapes: B rows, N pairs, L length, H hidden size.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from textgym.rewards.base import BaseReward
from textgym.rewards.model import default_batch_tokens, fuse_gelu_, length_buckets
from torch import Tensor, nn

from textgym.hf import context_window, hidden_size
from textgym.preference import PreferenceBatch, PreferencePair, pad_right

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from textgym.lm import LanguageModel

__all__ = ["RewardModel", "RewardModelReward"]

FORMAT_VERSION = 1
"""Version of the ``reward_model.json`` layout written by ``RewardModel.save``."""
META_FILE = "reward_model.json"
HEAD_FILE = "head.safetensors"
BACKBONE_DIR = "backbone"


def _is_causal(config: Any) -> bool:
    """Whether a config describes a decoder-only LM (its saved architectures say so)."""
    if getattr(config, "is_encoder_decoder", False):
        return False
    archs = getattr(config, "architectures", None) or []
    return bool(getattr(config, "is_decoder", False)) or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs
    )


def _load_trunk(path: str | Path, trust_remote_code: bool, **kwargs: Any) -> tuple[Any, Any]:
    """A folder's ``AutoModel`` (a causal LM's trunk, or an encoder), GELU fused, and tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    trunk = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    fuse_gelu_(trunk)  # our own copy: the fused kernel computes the same function, faster
    return trunk, tokenizer


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
        hidden = hidden_size(backbone.config)
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
        self.max_length = context_window(backbone.config) if max_length is None else max_length
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
            trunk.requires_grad_(True)  # a frozen source (a teacher, a π_ref) gives a trainable r_φ
            fuse_gelu_(trunk)  # our own copy: the fused kernel computes the same function, faster
            tokenizer = source.tokenizer
            is_causal = True if causal is None else causal
            target = source.device if device is None else resolve_device(device)
        else:
            from textgym.hf import check_model_dir, load_config

            path = check_model_dir(source)
            config = load_config(path, trust_remote_code=trust_remote_code)
            kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
            trunk, tokenizer = _load_trunk(path, trust_remote_code, **kwargs)
            is_causal = _is_causal(config) if causal is None else causal
            target = None if device is None else resolve_device(device)
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
        return pad_right(rows, sides, self.pad_token_id)  # (B, L) each

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
        backbone, tokenizer = _load_trunk(path / BACKBONE_DIR, trust_remote_code)
        head = nn.Linear(int(meta["hidden_size"]), 1)
        head.load_state_dict(load_file(str(path / HEAD_FILE)))
        causal, max_length = bool(meta["causal"]), meta["max_length"]
        model = cls(backbone, tokenizer, causal=causal, max_length=max_length, head=head)
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
