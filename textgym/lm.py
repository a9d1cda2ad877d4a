"""LanguageModel: any Hugging Face causal LM and its tokenizer, as the policy of the token MDP.

What this module decides for the rest of textgym:

- Prompts are **left-padded** (valid tokens last), so the next-token logits of every row sit at the
  last column and one new token per row can be appended in lock-step.
- Position ids always come from the attention mask (``cumsum - 1``, clamped at 0), so left padding
  never shifts positions: a padded row sees the same positions as the same row alone. This is what
  ``transformers``' ``generate`` does, which is why greedy decoding here reproduces it token for
  token.
- The KV cache (a ``transformers`` ``DynamicCache``) lives across :meth:`LanguageModel.step` calls:
  the prompt is fed once, then one token per step.
- ``vocab_size`` is the LM head's logits size (the action space); it may exceed ``len(tokenizer)``.
- Log-probs are computed in float32 with gather + logsumexp (no second ``(B, L, V)`` tensor kept).
- transformers 5 renamed the cache argument and output field ``past_key_values`` -> ``cache``; the
  wrapper reads the model's ``forward`` signature and uses whichever name it takes (remote-code
  models may still use the old one).

Shapes: B batch, P prompt length, T completion length, L sequence length, V vocab, H hidden size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from textgym.assets import DEFAULT_MODEL
from textgym.hf import (
    TOKENIZER_FILES,
    as_compute_dtype,
    check_model_dir,
    check_trust_remote_code,
    context_window,
    eos_token_id,
    forward_parameters,
    head_size,
    load_tokenizer,
    resolve_device,
)
from textgym.token_logprobs import last_logprobs

__all__ = [
    "TOKENIZER_FILES",
    "LanguageModel",
    "check_model_dir",
    "check_trust_remote_code",
    "load_tokenizer",
    "resolve_device",
]  # the loading checks and resolve_device live in textgym.hf; importable from here too


class LanguageModel:
    """A causal LM + tokenizer with batched encoding, KV-cache stepping and per-token log-probs.

    Args:
        model: any ``transformers`` causal LM (``AutoModelForCausalLM``-style: takes ``input_ids``,
            ``attention_mask`` and a cache, returns ``logits``).
        tokenizer: its tokenizer; it must define a pad token (never set here on your tokenizer).
        device: where to put the model; ``None`` keeps it where it is, ``"auto"`` picks CUDA when
            available.

    Attributes:
        model, tokenizer, device: as given (the model moved to ``device``).
        vocab_size: size of the LM head's logits (the action space), ``>= len(tokenizer)``.
        eos_token_id: the tokenizer's EOS id (else the model config's), or None.
        pad_token_id: the tokenizer's pad id.
        max_length: the context window from the model config, or None when unknown.

    Raises:
        ValueError: the tokenizer has no pad token, or more tokens than the LM head has logits.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        device: str | torch.device | None = None,
        *,
        compute_dtype: torch.dtype | str | None = None,
    ) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token, and batches of prompts need one. One-line fix "
                "on your tokenizer before wrapping it: `tokenizer.pad_token = "
                "tokenizer.eos_token` (or pass pad_token=... to LanguageModel.from_pretrained)"
            )
        if device is not None:
            model = model.to(resolve_device(device))
        self.model = model
        self.tokenizer = tokenizer
        self.device: torch.device = next(model.parameters()).device
        self.compute_dtype: torch.dtype | None = as_compute_dtype(compute_dtype)
        self.logprob_chunk: int | None = None
        """Positions per LM-head chunk in :meth:`logprobs` (None: all at once); see
        :mod:`textgym.token_logprobs`."""
        self.vocab_size: int = head_size(model)
        if len(tokenizer) > self.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the LM head only {self.vocab_size} "
                "logits; fix: model.resize_token_embeddings(len(tokenizer))"
            )
        self.pad_token_id: int = int(tokenizer.pad_token_id)
        self.eos_token_id: int | None = eos_token_id(
            tokenizer, getattr(model, "generation_config", None), model.config
        )
        self.max_length: int | None = context_window(model.config)
        # transformers 5 names the cache argument `cache` (older and remote-code models:
        # `past_key_values`); generate() likewise passes position ids only where forward takes them.
        params = forward_parameters(model)
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._takes_position_ids = "position_ids" in params
        self._takes_logits_to_keep = "logits_to_keep" in params

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        device: str | torch.device = "auto",
        dtype: torch.dtype | str | None = None,
        compute_dtype: torch.dtype | str | None = None,
        trust_remote_code: bool = False,
        pad_token: str | None = None,
        **kwargs: Any,
    ) -> LanguageModel:
        """Load a causal LM and its tokenizer with ``transformers`` and wrap them.

        Args:
            name_or_path: a local directory or a hub name, passed to ``transformers`` unchanged
                (a local directory is checked first, see :func:`check_model_dir`); defaults to
                the embedded model ``textgym.DEFAULT_MODEL``.
            device: ``"auto"`` (CUDA when available, else CPU), or any torch device.
            dtype: weights dtype (``torch.float32``, ``"bfloat16"``, ``"auto"``...); None keeps
                ``transformers``' default (float32).
            compute_dtype: mixed precision: ``"bfloat16"`` (or ``"float16"``) runs every forward
                pass under ``torch.autocast`` while the weights, gradients and optimizer state
                stay in ``dtype`` (see :func:`as_compute_dtype`); None computes in ``dtype``.
            trust_remote_code: allow code shipped in the model repository to run. Off by default:
                only architectures built into ``transformers`` load.
            pad_token: set this pad token on the freshly loaded tokenizer, for models that ship
                without one (e.g. ``pad_token="<|endoftext|>"`` for GPT-2).
            **kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` (``revision``,
                ``attn_implementation``...).

        Returns:
            The wrapped model, in eval mode.
        """
        path = os.fspath(name_or_path)
        if path == DEFAULT_MODEL and not (Path(path) / "config.json").exists():
            raise FileNotFoundError(
                f"the embedded model is missing at {path}: build it with "
                "`python -m textgym.assets.build`"
            )
        check_model_dir(name_or_path)
        check_trust_remote_code(trust_remote_code)
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        if pad_token is not None:
            tokenizer.pad_token = pad_token  # our own freshly loaded copy, at the caller's request
        if dtype is not None:
            kwargs["dtype"] = dtype
        model = AutoModelForCausalLM.from_pretrained(
            path, trust_remote_code=trust_remote_code, **kwargs
        )
        return cls(
            model.eval(), tokenizer, device=resolve_device(device), compute_dtype=compute_dtype
        )

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Save model and tokenizer; :meth:`from_pretrained` (or ``transformers``) reloads them."""
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def __repr__(self) -> str:
        return (
            f"LanguageModel({type(self.model).__name__}, vocab_size={self.vocab_size}, "
            f"max_length={self.max_length}, device={self.device})"
        )

    # ------------------------------------------------------------------ text <-> ids

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        max_length: int | None = None,
        truncation: Literal["error", "left"] = "error",
    ) -> tuple[Tensor, Tensor]:
        """Tokenize texts into a left-padded batch on ``self.device``.

        Special tokens are added as the tokenizer does by default (BOS for Llama, none for GPT-2).

        Args:
            texts: one string or a non-empty sequence of strings.
            max_length: the most tokens a prompt may have; defaults to the context window.
            truncation: ``"error"`` raises on a longer prompt; ``"left"`` keeps its last tokens.

        Returns:
            ``(input_ids, attention_mask)``, both ``(B, P)`` int64, padding on the left.

        Raises:
            ValueError: empty input, a text with no tokens, or a prompt too long under ``"error"``.
        """
        if truncation not in ("error", "left"):
            raise ValueError(f"truncation must be 'error' or 'left', got {truncation!r}")
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            raise ValueError("texts is empty: pass at least one string")
        limit = self.max_length if max_length is None else max_length
        if limit is not None and limit < 1:
            raise ValueError(f"max_length must be >= 1, got {limit}")
        rows: list[list[int]] = self.tokenizer(batch)["input_ids"]
        for i, row in enumerate(rows):
            if not row:
                raise ValueError(
                    f"text {i} ({batch[i]!r}) encodes to no tokens; a causal LM needs at least one "
                    "(start it with a token, e.g. tokenizer.bos_token)"
                )
            if limit is not None and len(row) > limit:
                if truncation == "error":
                    raise ValueError(
                        f"text {i} has {len(row)} tokens, more than max_length={limit} (the "
                        "context window unless given): shorten it or pass truncation='left'"
                    )
                rows[i] = row[-limit:]
        width = max(len(row) for row in rows)
        ids = [[self.pad_token_id] * (width - len(row)) + row for row in rows]
        mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)  # (B, P)
        attention_mask = torch.tensor(mask, dtype=torch.long, device=self.device)  # (B, P)
        return input_ids, attention_mask

    def decode(self, ids: Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Decode rows of token ids (B, T) to strings, skipping special tokens (pad, EOS, BOS)."""
        if isinstance(ids, Tensor) and ids.ndim != 2:
            raise ValueError(
                f"ids must be (B, T), got shape {tuple(ids.shape)}; for one row: ids[None]"
            )
        rows = ids.tolist() if isinstance(ids, Tensor) else [list(row) for row in ids]
        return list(self.tokenizer.batch_decode(rows, skip_special_tokens=True))

    # ------------------------------------------------------------------ checks

    def _check_batch(self, input_ids: Tensor, attention_mask: Tensor, past: int = 0) -> None:
        """Validate shapes, id range and context length of a model input (raises ValueError)."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids has no tokens (shape (B, 0))")
        expected = (input_ids.shape[0], past + input_ids.shape[1])
        if tuple(attention_mask.shape) != expected:
            raise ValueError(
                f"attention_mask must cover the cached and the new tokens, shape {expected} "
                f"(cache holds {past}), got {tuple(attention_mask.shape)}"
            )
        low, high = (int(v) for v in torch.aminmax(input_ids))
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"token id {bad} is out of range: ids must be in [0, {self.vocab_size - 1}]"
            )
        if self.max_length is not None:
            longest = int(attention_mask.sum(-1).max())
            if longest > self.max_length:
                raise ValueError(
                    f"a sequence has {longest} tokens, more than the context window of "
                    f"{self.max_length}: shorten the prompt (encode(..., truncation='left')) or "
                    "ask for fewer new tokens"
                )

    # ------------------------------------------------------------------ model calls

    def _call(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        cache: Any,
        *,
        use_cache: bool,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool = False,
    ) -> Any:
        """One forward pass; returns the model's output object (logits, cache, hidden states)."""
        kwargs: dict[str, Any] = {"use_cache": use_cache}
        if cache is not None:
            kwargs[self._cache_arg] = cache
        if self._takes_position_ids:
            if position_ids is None and attention_mask is not None:
                # Left padding must not shift positions: count only the real tokens before each one.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, past + L)
                position_ids = position_ids[:, -input_ids.shape[1] :]  # (B, L)
            kwargs["position_ids"] = position_ids
        if self._takes_logits_to_keep and logits_to_keep > 0:
            # Skip the LM head where no logits are needed. Positions as a tensor, not an int: the
            # int slices hidden[:, -k:], a strided view, and torch 2.13's bf16 linear on a strided
            # 3-D input copies the weight once per row (1.8 s instead of 6 ms for B=16, V=8192);
            # indexing with a tensor gathers a contiguous copy of the kept rows instead.
            L = input_ids.shape[1]
            kwargs["logits_to_keep"] = (
                logits_to_keep
                if logits_to_keep >= L
                else torch.arange(L - logits_to_keep, L, device=input_ids.device)
            )
        if output_hidden_states:
            kwargs["output_hidden_states"] = True
        with self.autocast():
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def autocast(self) -> torch.autocast:
        """The mixed-precision context of this model's passes (disabled without compute_dtype)."""
        return torch.autocast(
            self.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype is not None
        )

    def wrap(
        self, model: PreTrainedModel | None = None, device: str | torch.device | None = None
    ) -> LanguageModel:
        """A ``LanguageModel`` of ``model`` (this one's when None) with this one's tokenizer and
        compute dtype, on ``device`` (where the model is when None): frozen copies, re-placed
        policies and references keep the precision the caller chose."""
        return LanguageModel(
            self.model if model is None else model,
            self.tokenizer,
            device,
            compute_dtype=self.compute_dtype,
        )

    def _out_cache(self, out: Any) -> Any:
        cache = getattr(out, "cache", None)
        return cache if cache is not None else getattr(out, "past_key_values", None)

    def step_unchecked(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        cache: Any = None,
        position_ids: Tensor | None = None,
    ) -> tuple[Tensor, Any]:
        """:meth:`step` without validation, for loops that feed only ids they produced or checked.

        ``attention_mask=None`` (no padding anywhere) lets attention take its unmasked causal path,
        as ``generate`` does; ``position_ids`` may then be given by the caller.
        """
        out = self._call(
            input_ids,
            attention_mask,
            cache,
            use_cache=True,
            position_ids=position_ids,
            logits_to_keep=1,
        )
        # float32 whatever the weights' dtype: sampling and log-probs in float32, as in generate
        logits = out.logits[:, -1].float()  # (B, V)
        return logits, self._out_cache(out)

    def step_with_hidden(
        self, input_ids: Tensor, attention_mask: Tensor | None, cache: Any = None
    ) -> tuple[Tensor, Tensor, Any]:
        """:meth:`step_unchecked` that also returns the last layer's hidden state.

        The hidden state comes out of the same cached forward pass as the logits, so a value head
        V(s_t) costs no second pass over the sequence.

        Returns:
            ``(logits, hidden, cache)``: float32 logits ``(B, V)`` and the hidden state ``(B, H)``
            (after the final norm) of the last position, and the updated cache.
        """
        out = self._call(
            input_ids,
            attention_mask,
            cache,
            use_cache=True,
            output_hidden_states=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float(), out.hidden_states[-1][:, -1], self._out_cache(out)

    def step(
        self, input_ids: Tensor, attention_mask: Tensor, cache: Any = None
    ) -> tuple[Tensor, Any]:
        """Next-token logits, feeding only the tokens the cache has not seen.

        Call it first with the whole left-padded prompt and ``cache=None``, then with one new token
        per row and the grown mask, passing back the returned cache.

        Args:
            input_ids: ``(B, P)`` the prompt on the first call, ``(B, 1)`` afterwards.
            attention_mask: ``(B, past + L)``, the mask of the whole sequence so far (1 = real).
            cache: None on the first call, then the cache returned by the previous call.

        Returns:
            ``(logits, cache)``: float32 logits ``(B, V)`` of the last position, and the cache (a
            ``transformers`` ``DynamicCache``, updated in place) to pass to the next call.

        Raises:
            ValueError: bad shapes, token ids outside ``[0, vocab_size)``, or a sequence longer
                than the context window.
        """
        past = 0 if cache is None else int(cache.get_seq_length())
        self._check_batch(input_ids, attention_mask, past)
        return self.step_unchecked(input_ids, attention_mask, cache)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, cache: Any = None) -> Tensor:
        """Logits at every position ``(B, L, V)``, with gradients unless the caller disables them.

        Args:
            input_ids: ``(B, L)`` token ids, padded on either side.
            attention_mask: ``(B, past + L)``, 1 = real token.
            cache: optional cache holding ``past`` earlier tokens; it is updated in place.

        Returns:
            logits in the model's dtype (the compute dtype under mixed precision).
        """
        return self.forward_with_hidden(input_ids, attention_mask, cache, hidden=False)[0]

    def forward_with_hidden(
        self, input_ids: Tensor, attention_mask: Tensor, cache: Any = None, *, hidden: bool = True
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` and the last layer's hidden state ``(B, L, H)`` (after the final norm),
        e.g. for a value head, from the same pass (an empty tensor when ``hidden`` is False)."""
        past = 0 if cache is None else int(cache.get_seq_length())
        self._check_batch(input_ids, attention_mask, past)
        out = self._call(
            input_ids,
            attention_mask,
            cache,
            use_cache=cache is not None,
            output_hidden_states=hidden,
        )
        return out.logits, out.hidden_states[-1] if hidden else out.logits.new_empty(0)

    def last_hidden(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The last layer's hidden states ``(B, L, H)`` (after the final norm) and the logits of
        the last position only ``(B, 1, V)``: for passes that run the LM head themselves, in
        chunks (see :mod:`textgym.token_logprobs`)."""
        out = self._call(
            input_ids,
            attention_mask,
            None,
            use_cache=False,
            logits_to_keep=1,
            output_hidden_states=True,
        )
        return out.hidden_states[-1], out.logits[:, -1:]

    # ------------------------------------------------------------------ log-probs

    def logprobs(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Per-token log-probs of a batch under the model.

        Args:
            input_ids: ``(B, L)`` token ids, padded on either side.
            attention_mask: ``(B, L)``, 1 = real token.

        Returns:
            ``(B, L)`` float32: ``out[:, t] = log p(x_t | x_<t)``; 0 at ``t = 0``, at the first real
            token of a left-padded row (nothing precedes it) and at padded positions.
        """
        self._check_batch(input_ids, attention_mask)
        B, L = input_ids.shape
        if L == 1:
            return torch.zeros(B, 1, device=input_ids.device)  # (B, 1): nothing is predicted
        logp = last_logprobs(self, input_ids, attention_mask, L - 1)  # (B, L - 1)
        return torch.nn.functional.pad(logp, (1, 0))  # (B, L)

    def sequence_logprob(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        completion_ids: Tensor,
        completion_mask: Tensor,
    ) -> Tensor:
        """log p(completion | prompt), summed over completion tokens, in one forward pass.

        Args:
            prompt_ids: ``(B, P)`` left-padded prompts.
            prompt_mask: ``(B, P)``.
            completion_ids: ``(B, T)`` right-padded completions.
            completion_mask: ``(B, T)``, 1 = a completion token to score.

        Returns:
            ``(B,)`` float32 log-probs (differentiable when gradients are on).
        """
        if prompt_ids.shape != prompt_mask.shape or completion_ids.shape != completion_mask.shape:
            raise ValueError(
                f"ids and masks must match: prompt {tuple(prompt_ids.shape)} vs "
                f"{tuple(prompt_mask.shape)}, completion {tuple(completion_ids.shape)} vs "
                f"{tuple(completion_mask.shape)}"
            )
        if prompt_ids.shape[0] != completion_ids.shape[0]:
            raise ValueError(
                f"prompt batch {prompt_ids.shape[0]} != completion batch {completion_ids.shape[0]}"
            )
        if prompt_ids.shape[1] == 0:
            raise ValueError(
                "prompt_ids has no tokens (shape (B, 0)): completions need a prompt to follow"
            )
        if completion_ids.shape[1] == 0:
            return torch.zeros(prompt_ids.shape[0], device=prompt_ids.device)  # (B,)
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (B, P + T)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # (B, P + T)
        self._check_batch(input_ids, attention_mask)
        logp = last_logprobs(self, input_ids, attention_mask, completion_ids.shape[1])  # (B, T)
        return logp.sum(-1)  # (B,)
