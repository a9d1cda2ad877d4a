"""Classifier rewards (VADER sentiment, HF sequence classifiers, toxicity) and the batching of
every neural reward (``_Encoder``, ``length_buckets``); sentence similarity is in ``similarity.py``.

Model-based rewards score the completion alone unless ``include_prompt=True`` (then the text is
``prompt + completion``, joined as given). Neural rewards run batched on a chosen ``device``, under
``torch.inference_mode``: each distinct text of a call once, all tokenised in one fast-tokenizer
call, then run in ``length_buckets`` (sorted by token count; at most ``batch_size`` rows and
``batch_tokens`` padded tokens per forward), right-padded, and scattered back to the caller's
order. A text scores the same alone and in any batch (to ~1e-6). Measured on the benchmark's 4,096
pairs: token-count buckets pad 0.2-1.3 % of the tokens where 64-row batches sorted by characters
padded 15-30 %.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from textgym.rewards.base import BaseReward

if TYPE_CHECKING:
    import torch


def _texts(prompts: Sequence[str], completions: Sequence[str], include_prompt: bool) -> list[str]:
    if include_prompt:
        return [p + c for p, c in zip(prompts, completions, strict=True)]
    return list(completions)


class VaderSentiment(BaseReward):
    """VADER sentiment of the completion (Hutto & Gilbert 2014, the ``vaderSentiment`` package).

    VADER's compound score c lies in [-1, 1] (-1 most negative, +1 most positive).
    ``scale="unit"`` (default) returns (c + 1) / 2 in [0, 1], so neutral text scores 0.5;
    ``scale="signed"`` returns c itself. ``target="negative"`` flips the sign of c first, to reward
    negative text.

    Args:
        scale: ``"unit"`` or ``"signed"``.
        target: ``"positive"`` or ``"negative"``.
        include_prompt: score prompt + completion instead of the completion.
    """

    name = "sentiment"

    def __init__(
        self,
        scale: Literal["unit", "signed"] = "unit",
        target: Literal["positive", "negative"] = "positive",
        include_prompt: bool = False,
    ) -> None:
        if scale not in ("unit", "signed"):
            raise ValueError(f"scale must be 'unit' or 'signed', got {scale!r}")
        if target not in ("positive", "negative"):
            raise ValueError(f"target must be 'positive' or 'negative', got {target!r}")
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.scale = scale
        self.target = target
        self.include_prompt = include_prompt
        self.analyzer = SentimentIntensityAnalyzer()

    def compound(self, texts: Sequence[str]) -> np.ndarray:  # (B,)
        """VADER's compound score of each text, in [-1, 1] (each distinct text scored once)."""
        memo = {t: self.analyzer.polarity_scores(t)["compound"] for t in dict.fromkeys(texts)}
        return np.array([memo[t] for t in texts], dtype=np.float64)

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        c = self.compound(_texts(prompts, completions, self.include_prompt))
        if self.target == "negative":
            c = -c
        return (c + 1.0) / 2.0 if self.scale == "unit" else c


def fuse_gelu_(model: torch.nn.Module) -> int:
    """Swap each ``NewGELUActivation`` in ``model`` for PyTorch's fused tanh-GELU, in place.

    GPT-2's ``gelu_new`` (the embedded model's activation) is written in ``transformers`` as seven
    element-wise ops; ``F.gelu(x, approximate="tanh")`` is the same function in one kernel (outputs
    agree to ~1e-7). On the embedded model it makes a batched forward about 20 % faster on the
    CPU. Only for a model the caller does not hold (a reward's own copy): it changes modules.

    Returns:
        How many activations were swapped.
    """
    from torch import nn

    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child).__name__ == "NewGELUActivation":
                setattr(module, name, nn.GELU(approximate="tanh"))  # a torch class: pickles
                swapped += 1
    return swapped


CPU_BATCH_TOKENS = 2048
"""Default token budget of one forward on the CPU (rows x padded length). Measured on this
project's 2-core EPYC, one thread: samples/s of MiniLM and of the embedded GPT-2 is flat from
~500 to ~2,000 tokens per forward and falls 10-20 % beyond ~4,000 (the activations leave the
cache), for 15-token and for 86-token texts alike. Other devices get no token budget (only
``batch_size`` rows): a GPU wants the largest batch that fits."""


def default_batch_tokens(device: str | torch.device, batch_tokens: int | None) -> int | None:
    """``batch_tokens`` as given, else ``CPU_BATCH_TOKENS`` on the CPU and None elsewhere."""
    if batch_tokens is not None:
        if batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1 or None, got {batch_tokens}")
        return batch_tokens
    kind = device if isinstance(device, str) else device.type
    return CPU_BATCH_TOKENS if kind.split(":")[0] == "cpu" else None


def length_buckets(
    lengths: Sequence[int] | np.ndarray, batch_size: int, batch_tokens: int | None
) -> list[np.ndarray]:
    """Row indices in mini-batches of similar length, shortest first.

    Rows are sorted by length (stable) and cut into consecutive buckets of at most ``batch_size``
    rows and at most ``batch_tokens`` tokens once padded (rows x the longest row; a longer row
    still gets a bucket of its own). Similar lengths in one forward mean little compute spent on
    padding; callers put results back in order through the indices.

    Args:
        lengths: (B,) tokens per row.
        batch_size: most rows per bucket.
        batch_tokens: most padded tokens per bucket; None: no limit.

    Returns:
        Index arrays that together hold each of range(B) once.
    """
    lengths = np.asarray(lengths, dtype=np.int64)  # (B,)
    order = np.argsort(lengths, kind="stable")  # (B,)
    limit = batch_tokens if batch_tokens is not None else np.iinfo(np.int64).max
    buckets: list[np.ndarray] = []
    start = 0
    for i, length in enumerate(lengths[order].tolist()):
        rows = i - start + 1  # the bucket's size with row i in it; sorted, so i is its longest
        if rows > batch_size or (rows > 1 and rows * length > limit):
            buckets.append(order[start:i])
            start = i
    if start < len(order):
        buckets.append(order[start:])
    return buckets


class _Encoder:
    """A Hugging Face tokenizer + model run over texts in length buckets.

    All texts are tokenised in one fast-tokenizer call and run in ``length_buckets`` (sorted by
    token count, at most ``batch_size`` rows and ``batch_tokens`` padded tokens per forward);
    callers scatter results back through the yielded indices. Rows are right-padded whatever the
    tokenizer's ``padding_side``: real tokens then keep the positions they have alone (GPT-2's
    absolute positions would shift under left padding), and neither causal nor masked attention
    lets them see the padding, so a row scores as it does in a batch of one.
    """

    # What tokenizer.pad writes into each column; special_tokens_mask marks pads as special.
    _PAD_VALUES = {"attention_mask": 0, "special_tokens_mask": 1}

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: torch.device,
        batch_size: int,
        max_length: int,
        batch_tokens: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if tokenizer.pad_token is None:
            # Never set pad_token on a caller's tokenizer silently (STYLE §5): padding decides
            # which position a classifier reads.
            raise ValueError(
                f"the tokenizer of {getattr(model, 'name_or_path', 'the model')!r} has no "
                "pad_token, which batching needs; fix: tokenizer.pad_token = tokenizer.eos_token "
                "(and model.config.pad_token_id = tokenizer.eos_token_id), then save it"
            )
        self.model = model.eval().to(device)
        fuse_gelu_(self.model)
        # One pass, no decoding: a decoder's KV cache (GPT-2 builds one by default) only costs.
        takes_cache = "use_cache" in inspect.signature(model.forward).parameters
        self.forward_kwargs: dict[str, Any] = {"use_cache": False} if takes_cache else {}
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.batch_tokens = default_batch_tokens(device, batch_tokens)
        self.max_length = max_length
        self.pad_values = {
            **self._PAD_VALUES,
            "input_ids": int(tokenizer.pad_token_id),
            "token_type_ids": int(getattr(tokenizer, "pad_token_type_id", 0)),
        }

    def batches(
        self, texts: Sequence[str], special_tokens_mask: bool = False
    ) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """Yield (indices into ``texts``, right-padded batch on the device), shortest first."""
        import torch

        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            return_special_tokens_mask=special_tokens_mask,
        )
        columns: dict[str, list[list[int]]] = dict(enc)
        unknown = set(columns) - set(self.pad_values)
        if unknown:
            raise ValueError(f"the tokenizer returned {sorted(unknown)}, which cannot be padded")
        for row, ids in enumerate(columns["input_ids"]):
            if not ids:
                self._fill_empty(columns, row)
        lengths = np.fromiter(map(len, columns["input_ids"]), dtype=np.int64, count=len(texts))
        for idx in length_buckets(lengths, self.batch_size, self.batch_tokens):  # (b,) ascending
            real = np.arange(lengths[idx[-1]]) < lengths[idx, None]  # (b, T) right padding
            batch: dict[str, torch.Tensor] = {}
            for key, rows in columns.items():
                padded = np.full(real.shape, self.pad_values[key], dtype=np.int64)  # (b, T)
                padded[real] = list(chain.from_iterable(rows[i] for i in idx))  # row-major
                batch[key] = torch.from_numpy(padded).to(self.device)  # no copy on the CPU
            yield torch.from_numpy(idx), batch

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        """The model's output on a batch from :meth:`batches` (call under ``inference_mode``)."""
        return self.model(**batch, **self.forward_kwargs)

    def _fill_empty(self, columns: dict[str, list[list[int]]], row: int) -> None:
        # A tokenizer that adds no special tokens (GPT-2) turns "" into zero tokens, which a model
        # cannot read; the text's start token stands in for it, as if the model saw "start, end".
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise ValueError(
                "an empty text tokenizes to no tokens and the tokenizer has no bos/eos token to "
                "stand in for it"
            )
        fill = {"input_ids": start, "attention_mask": 1, "special_tokens_mask": 1}
        for key, rows in columns.items():
            rows[row] = [fill.get(key, 0)]


def _max_length(tokenizer: Any, path: str, default: int = 512) -> int:
    """sentence-transformers' max_seq_length when the folder has one, else the tokenizer's."""
    import json
    from pathlib import Path

    cfg = Path(path) / "sentence_bert_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text())["max_seq_length"])
    model_max = getattr(tokenizer, "model_max_length", default)
    return int(min(model_max, default)) if isinstance(model_max, int) else default


class HFClassifier(BaseReward):
    """Probability of one label under any Hugging Face sequence-classification model.

    score = softmax(logits)[label]; for a single-logit head or a multi-label model
    (``problem_type="multi_label_classification"``) score = sigmoid(logits[label]). Range [0, 1].

    Args:
        path: a model folder or hub name for ``AutoModelForSequenceClassification``.
        label: the label to score, by index or by name (from the model's ``id2label``).
        device: ``"auto"`` (cuda when available), ``"cpu"``, ``"cuda:0"``...
        batch_size: most texts per forward.
        batch_tokens: most padded tokens per forward (rows x longest row); None: 2,048 on
            the CPU (``CPU_BATCH_TOKENS``, measured), no limit elsewhere.
        max_length: truncation length in tokens; default the tokenizer's (at most 512).
        include_prompt: classify prompt + completion instead of the completion.
        name: the reward's name (default ``"classifier"``; e.g. ``"toxicity"``).
        dtype: torch dtype for the weights (default float32).
        trust_remote_code: let the model folder / repository run its own code; default False.
    """

    def __init__(
        self,
        path: str,
        label: int | str = 1,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
        include_prompt: bool = False,
        name: str = "classifier",
        dtype: torch.dtype | None = None,
        batch_tokens: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        from textgym.lm import (
            check_model_dir,
            check_trust_remote_code,
            load_tokenizer,
            resolve_device,
        )

        path = check_model_dir(path)
        trust = check_trust_remote_code(trust_remote_code)
        # dtype only when asked: older transformers call the argument torch_dtype.
        extra: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
        model = AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=trust, **extra
        )
        tokenizer = load_tokenizer(path, trust_remote_code=trust)
        self.name = name
        self.path = path
        self.include_prompt = include_prompt
        if model.config.pad_token_id is None:
            # Decoder classifiers (GPT-2 & co.) find each row's last token through pad_token_id.
            raise ValueError(
                f"model {path!r} has no config.pad_token_id, which batched classification needs; "
                "fix: model.config.pad_token_id = tokenizer.pad_token_id, then save it"
            )
        self.label = self._label_index(model.config, label)
        num_labels = int(model.config.num_labels)
        self.sigmoid = num_labels == 1 or model.config.problem_type == "multi_label_classification"
        self.encoder = _Encoder(
            model,
            tokenizer,
            resolve_device(device),
            batch_size,
            max_length or _max_length(tokenizer, path),
            batch_tokens,
        )

    @staticmethod
    def _label_index(config: Any, label: int | str) -> int:
        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        num_labels = int(config.num_labels)
        if isinstance(label, str):
            matches = [i for i, name in id2label.items() if name == label]
            if not matches:
                raise ValueError(
                    f"label {label!r} is not one of the model's labels {sorted(id2label.values())}"
                )
            return matches[0]
        if not 0 <= label < num_labels:
            raise ValueError(
                f"label must be in [0, {num_labels}), got {label} (labels: {id2label})"
            )
        return int(label)

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        import torch

        texts = _texts(prompts, completions, self.include_prompt)
        unique = list(dict.fromkeys(texts))  # RL batches repeat completions: score each once
        out = torch.empty(len(unique))  # (N,)
        with torch.inference_mode():
            for idx, enc in self.encoder.batches(unique):
                logits = self.encoder.forward(enc).logits.float()  # (b, num_labels)
                if self.sigmoid:
                    out[idx] = logits[:, self.label].sigmoid().cpu()
                else:
                    out[idx] = logits.softmax(dim=-1)[:, self.label].cpu()
        if len(unique) == len(texts):
            return out.numpy()
        pos = {t: i for i, t in enumerate(unique)}
        return out.numpy()[[pos[t] for t in texts]]


class ProfanityToxicity(BaseReward):
    """Offensive-language probability from ``alt-profanity-check`` (a scikit-learn linear SVM).

    ``target="toxic"`` (default) returns p(offensive) in [0, 1]: use a negative weight to
    penalise it (``make({"toxicity": -1.0, ...})``); ``target="clean"`` returns 1 - p. For a
    neural toxicity model use ``make("classifier", path=..., label="toxic", name="toxicity")``.

    Args:
        target: ``"toxic"`` or ``"clean"``.
        include_prompt: score prompt + completion instead of the completion.
    """

    name = "toxicity"

    def __init__(
        self, target: Literal["toxic", "clean"] = "toxic", include_prompt: bool = False
    ) -> None:
        if target not in ("toxic", "clean"):
            raise ValueError(f"target must be 'toxic' or 'clean', got {target!r}")
        try:
            # import_module: the package has no type information, and it is an optional extra.
            predict_prob = importlib.import_module("profanity_check").predict_prob
        except ImportError as err:
            raise ImportError(
                "the 'toxicity' reward needs alt-profanity-check: pip install textgym[toxicity]"
            ) from err
        self._predict_prob = predict_prob
        self.target = target
        self.include_prompt = include_prompt

    def _score(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[tuple[str, ...]] | None,
    ) -> np.ndarray:  # (B,)
        p = np.asarray(self._predict_prob(_texts(prompts, completions, self.include_prompt)))
        return 1.0 - p if self.target == "clean" else p
