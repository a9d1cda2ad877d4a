"""Plumbing shared by every agent: RNG states, logging, progress, value head, LoRA.

Nothing here knows an algorithm. Checkpoint files are :mod:`textgym.checkpoint`'s (no pickle).
Resuming is bit-exact on CPU when an agent saves every source of randomness: the torch generator it
samples with, its numpy generator, and the env's ``np_random`` (which picks prompts); the
``rng_state``/``set_rng_state`` pair below gathers all three as plain data and tensors.
"""

from __future__ import annotations

import copy
import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm  # type: ignore[import-untyped]  # tqdm ships no type hints

from textgym.hf import resolve_device
from textgym.lm import LanguageModel

__all__ = [
    "CSVLogger",
    "ValueHead",
    "adamw",
    "check_policy_env",
    "checkpoint_activations",
    "env_rng_state",
    "frozen_copy",
    "is_peft",
    "peft_language_model",
    "progress",
    "resolve_device",
    "rng_state",
    "set_env_rng_state",
    "set_rng_state",
    "sync_weights",
    "with_lora",
]


class ValueHead(nn.Module):
    """V(s): one linear layer on the policy trunk's last hidden state (Ziegler et al. 2019, §2).

    Sharing the trunk makes the value a cheap extra output of the policy's own forward pass instead
    of a second LM. Initialised at zero so that V starts at 0 and the first advantages are the
    returns themselves, not noise from a random projection.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: Tensor) -> Tensor:  # (B, L, H) -> (B, L)
        return self.proj(hidden.float()).squeeze(-1)


def check_policy_env(agent: str, policy: LanguageModel, env: Any, *, vector: bool = True) -> None:
    """Raise when ``policy`` cannot act in ``env``: a single env where a vector env is needed, or
    a vocabulary size, pad or EOS id that differs between the policy and the env's model.

    Args:
        agent: the agent's name, for the message.
        policy: the policy LM.
        env: the env the agent was given.
        vector: whether the agent needs a vector env (``gym.make_vec``).
    """
    if vector and not hasattr(env, "num_envs"):
        raise TypeError(
            f"{agent} needs a vector env, got a single {type(env).__name__}: build it with "
            "gym.make_vec('TextGen-v0', num_envs=B, ...)"
        )
    config = getattr(getattr(env, "unwrapped", env), "config", None)
    if config is None:
        return  # not a textgym env: nothing to compare
    for name, env_value, policy_value in (
        ("vocabulary size (logits)", config.vocab_size, policy.vocab_size),
        ("pad token id", config.pad_token_id, policy.pad_token_id),
        ("EOS token id", config.eos_token_id, policy.eos_token_id),
    ):
        if env_value != policy_value:
            raise ValueError(
                f"{agent}: the policy's {name} is {policy_value} but the env's is {env_value}; "
                "build the env from the policy's model (model=policy) or its tokenizer"
            )


def frozen_copy(policy: LanguageModel) -> LanguageModel:
    """A frozen deep copy of the policy as it is now (eval mode, no gradients): π_ref, or the
    behaviour copy that samples rollouts (:func:`sync_weights` refreshes it).

    With a ``compute_dtype`` the copy holds its floating-point weights in it: a copy is never
    trained, so it needs no float32 master weights, and its passes then skip autocast's cast of
    every weight matrix on every call (at batch 16 those casts cost more than the bf16 matmuls
    save). It still runs under the policy's autocast, so the ops autocast keeps in float32 stay
    there; its log-probs differ from the float32-master policy's by bf16 rounding of the weights.
    """
    model = copy.deepcopy(policy.model).eval()
    if policy.compute_dtype is not None:
        model.to(policy.compute_dtype)
    ref = policy.wrap(model)
    ref.model.requires_grad_(False)
    return ref


@torch.no_grad()
def sync_weights(target: LanguageModel, source: LanguageModel) -> None:
    """Copy ``source``'s parameters and buffers into ``target`` in place, casting to ``target``'s
    dtypes (both must be the same architecture, e.g. ``target = frozen_copy(source)``)."""
    dst = {**dict(target.model.named_parameters()), **dict(target.model.named_buffers())}
    for name, value in [*source.model.named_parameters(), *source.model.named_buffers()]:
        dst[name].copy_(value)  # tied weights are listed once


def checkpoint_activations(lm: LanguageModel, enabled: bool = True) -> None:
    """Recompute each transformer block's activations in the backward pass instead of keeping them.

    Trades about one more forward pass per training step for memory: a block keeps only its input
    for backward, not its attention and MLP activations (at 124M parameters and 16 x 256 tokens,
    4 GiB of a DPO step's 7.5 GiB). Passes without gradients (rollouts, π_ref) are unchanged.

    How: ``transformers``' own per-block checkpointing (blocks that are a
    ``GradientCheckpointingLayer``), switched on for the blocks only.
    ``model.gradient_checkpointing_enable`` would also need the model in train mode, i.e. dropout
    on; here every block is marked training by a forward pre-hook while the rest of the model (its
    dropout) stays in eval mode, so a
    checkpointed pass computes exactly what an unchecked one does (agents keep their policies in
    eval mode: recomputed log-probs must equal the behaviour log-probs).

    Raises:
        ValueError: the model has no such blocks (e.g. remote code with its own layer classes).
    """
    from functools import partial

    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    model = lm.model
    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no transformers GradientCheckpointingLayer blocks: "
            "activation checkpointing is not available for it"
        )
    handle = getattr(model, "_textgym_checkpointing", None)
    if handle is not None:
        handle.remove()
        model._textgym_checkpointing = None
    for block in blocks:
        block.gradient_checkpointing = enabled
        block._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
        block.training = model.training  # as train()/eval() left it; the hook below overrides

    def mark(module: nn.Module, args: Any) -> None:  # the blocks, not their dropout children
        for block in blocks:
            block.training = True

    if enabled:
        model._textgym_checkpointing = model.register_forward_pre_hook(mark)


def adamw(params: Iterable[Tensor], *, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where it has one (CPU and CUDA, floating-point parameters).

    The fused step is one kernel over all parameters instead of a dozen elementwise passes per
    tensor: 4x faster on this project's 2-core CPU at 92M parameters, where the default
    implementation took 30% of a bf16 PPO update. It computes the same update up to float
    rounding order.
    """
    params = list(params)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def with_lora(
    lm: LanguageModel,
    r: int = 8,
    alpha: int = 16,
    target_modules: list[str] | str | None = None,
) -> LanguageModel:
    """Wrap the policy in LoRA adapters (Hu et al. 2021, arXiv:2106.09685) with ``peft``.

    The base weights stay frozen; an agent sees a peft model and uses the base model with adapters
    disabled as its reference, so no second copy of the LM is kept.

    Args:
        lm: the model to adapt (its weights are not copied: the peft model wraps them).
        r, alpha: LoRA rank and scaling numerator (no dropout: agents keep the policy in eval
            mode so that recomputed log-probs equal the behaviour log-probs).
        target_modules: module names to adapt; None lets peft pick for known architectures.

    Returns:
        A new ``LanguageModel`` around the peft model and the same tokenizer.
    """
    try:
        import peft
    except ImportError as err:  # optional extra
        raise ImportError("LoRA needs the optional package `peft`: pip install peft") from err
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
        fan_in_fan_out=type(lm.model).__name__.startswith("GPT2"),
    )
    return peft_language_model(lm, peft.get_peft_model(lm.model, config))


def peft_language_model(base: LanguageModel, peft_model: Any) -> LanguageModel:
    """Wrap a peft model of ``base.model`` as a ``LanguageModel`` that calls it like ``base``.

    PeftModel.forward takes ``**kwargs``, which hides ``position_ids`` / the cache argument /
    ``logits_to_keep`` from LanguageModel's signature check; without position ids, left-padded
    rows would see shifted positions. The wrapped model takes exactly what the base model takes.
    """
    wrapped = base.wrap(peft_model)
    for flag in ("_cache_arg", "_takes_position_ids", "_takes_logits_to_keep"):
        setattr(wrapped, flag, getattr(base, flag))
    return wrapped


def is_peft(lm: LanguageModel) -> bool:
    """Whether the policy is a peft model (its reference is then the base with adapters off)."""
    return hasattr(lm.model, "disable_adapter") and hasattr(lm.model, "peft_config")


# ---------------------------------------------------------------------------- RNG states


_ENV_RNG_ATTRS = ("_np_random", "_rngs")
"""Where gymnasium envs keep their generators: ``_np_random`` (behind the ``np_random``
property) and, in ``TextGenVectorEnv``, ``_rngs`` (one stream per sub-env)."""


def _rng_holders(env: Any) -> list[Any]:
    return [getattr(e, "unwrapped", e) for e in [env, *getattr(env, "envs", [])]]


def _env_shape(env: Any) -> dict[str, Any]:
    return {"type": type(getattr(env, "unwrapped", env)).__name__,
            "num_envs": int(getattr(env, "num_envs", 1))}  # fmt: skip


def env_rng_state(env: Any) -> dict[str, Any]:
    """Copies of the random generators of a (vector) env and of its sub-envs, if it has any,
    with the env's class and ``num_envs`` (a checkpoint resumes only into an env of that shape).

    Gymnasium envs draw every random choice (here: which prompt) from their generators; saving them
    is what makes a resumed run see the same prompts as an uninterrupted one.
    """
    holders = [
        {
            attr: copy.deepcopy(getattr(holder, attr))
            for attr in _ENV_RNG_ATTRS
            if hasattr(holder, attr)
        }
        for holder in _rng_holders(env)
    ]
    return {**_env_shape(env), "holders": holders}


def set_env_rng_state(env: Any, state: Mapping[str, Any]) -> None:
    """Restore what :func:`env_rng_state` returned onto an env of the same shape.

    Raises:
        ValueError: the env's class or ``num_envs`` differs from the saved one (naming both).
    """
    saved, now = {k: state.get(k) for k in ("type", "num_envs")}, _env_shape(env)
    if saved != now:
        raise ValueError(
            f"the checkpoint was saved with a {saved['type']} of num_envs={saved['num_envs']}, "
            f"but this env is a {now['type']} of num_envs={now['num_envs']}: resume with an env "
            "built like the saved one"
        )
    holders = _rng_holders(env)
    if len(holders) != len(state["holders"]):
        raise ValueError(
            f"env has {len(holders)} RNG holders but the checkpoint {len(state['holders'])}"
        )
    for holder, saved_attrs in zip(holders, state["holders"], strict=True):
        for attr, value in saved_attrs.items():
            setattr(holder, attr, copy.deepcopy(value))


def rng_state(generator: torch.Generator, np_rng: np.random.Generator, env: Any) -> dict[str, Any]:
    """Every RNG an agent draws from: its torch generator, its numpy generator, the env's."""
    return {
        "torch": generator.get_state(),
        "numpy": np_rng.bit_generator.state,
        "env": env_rng_state(env),
    }


def set_rng_state(
    state: Mapping[str, Any], generator: torch.Generator, np_rng: np.random.Generator, env: Any
) -> None:
    """Restore :func:`rng_state` in place."""
    generator.set_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    set_env_rng_state(env, state["env"])


# ---------------------------------------------------------------------------- logging


class CSVLogger:
    """Append one row per update to ``log_dir/progress.csv`` and, optionally, TensorBoard.

    TensorBoard is used only when ``torch.utils.tensorboard`` imports (it needs the optional
    ``tensorboard`` package); asking for it without the package raises, naming the fix.

    Args:
        log_dir: folder for ``progress.csv`` (and the TensorBoard event files).
        tensorboard: also write TensorBoard scalars.
    """

    def __init__(self, log_dir: str | os.PathLike[str], tensorboard: bool = False) -> None:
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._file = (self.dir / "progress.csv").open("a", newline="")
        self._writer: csv.DictWriter[str] | None = None
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError(
                    "tensorboard logging needs the optional package: pip install tensorboard"
                ) from err
            self._tb = SummaryWriter(str(self.dir))

    def log(self, row: Mapping[str, float | int]) -> None:
        """Write one row; the first row's keys fix the CSV columns (later extras are dropped)."""
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row), extrasaction="ignore")
            if self._file.tell() == 0:
                self._writer.writeheader()
        self._writer.writerow(dict(row))
        self._file.flush()
        if self._tb is not None:
            step = int(row.get("update", 0))
            for key, value in row.items():
                self._tb.add_scalar(key, float(value), step)

    def close(self) -> None:
        """Flush and close the files."""
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def progress(iterable: Iterable[int], desc: str, disable: bool = False) -> Any:
    """A tqdm progress bar over ``iterable`` (hidden with ``disable=True``, e.g. in tests)."""
    return tqdm(iterable, desc=desc, disable=disable, dynamic_ncols=True)
