"""TRL's RL trainers timed the way the speed benches compare textgym against them.

``trl_completions_per_s`` trains ``trl.RLOOTrainer`` or ``trl.GRPOTrainer`` for warm-up plus timed
steps on a local model and the given prompts and reward, and returns the completions per second
between step ends after the warm-up (generation, reward, reference pass and update together).
TRL is an optional extra: without it (or ``datasets``) the function returns None.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

__all__ = ["trl_completions_per_s"]


def trl_completions_per_s(
    trainer: Literal["rloo", "grpo"],
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    reward: Callable[[list[str], list[str]], Sequence[float]],
    *,
    batch_size: int,
    num_generations: int,
    max_new_tokens: int,
    beta: float,
    warmup: int,
    steps: int,
    seed: int = 0,
    bf16: bool = False,
    **config: Any,
) -> float | None:
    """Completions/s of ``steps`` timed TRL steps after ``warmup`` ones; None without TRL.

    Args:
        trainer: ``"rloo"`` (``RLOOTrainer``) or ``"grpo"`` (``GRPOTrainer``).
        model: the HF causal LM to train (trained in place: pass a fresh one).
        tokenizer: its tokenizer.
        prompts: the training prompts.
        reward: ``(prompts, completions) -> scores``.
        batch_size: completions per step (``per_device_train_batch_size``).
        num_generations: completions per prompt (the group size).
        max_new_tokens: ``max_completion_length``.
        beta: KL coefficient.
        warmup, steps: untimed and timed steps (with ``warmup=0`` the first step is untimed).
        seed: TRL's seed.
        bf16: TRL's bf16 (TRL 1.16 defaults to True even on a CPU; False is float32).
        **config: more fields of the trainer's config (e.g. ``loss_type``).
    """
    try:
        import datasets
        import trl
        from transformers import TrainerCallback
    except ImportError:
        return None

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.stamps.append(time.perf_counter())

    def reward_fn(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return [float(x) for x in reward(prompts, completions)]

    config_class, trainer_class = {
        "rloo": (trl.RLOOConfig, trl.RLOOTrainer),
        "grpo": (trl.GRPOConfig, trl.GRPOTrainer),
    }[trainer]
    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        args = config_class(
            output_dir=out,
            per_device_train_batch_size=batch_size,
            num_generations=num_generations,
            max_completion_length=max_new_tokens,
            beta=beta,
            max_steps=warmup + steps,
            learning_rate=1e-5,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_steps=10_000,
            disable_tqdm=True,
            seed=seed,
            dataloader_num_workers=0,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            bf16=bf16,
            **config,
        )
        trainer_class(
            model=model,
            reward_funcs=reward_fn,
            args=args,
            train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]),
            processing_class=tokenizer,
            callbacks=[clock],
        ).train()
    timed = clock.stamps[max(warmup, 1) - 1 :]  # from the end of the last untimed step
    return (len(timed) - 1) * batch_size / (timed[-1] - timed[0])
