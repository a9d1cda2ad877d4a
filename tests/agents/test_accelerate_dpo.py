"""Data parallelism through ``accelerate`` for DPO: 2 CPU processes (gloo) make the same updates as
one process without an accelerator on the whole batch, through a save/load on the main process.

The file is also the worker:
``python -m torch.distributed.run --standalone --nproc_per_node 2 test_accelerate_dpo.py OUT 2``
runs ``main`` with ``Accelerator(cpu=True)``: 2 updates, save, load, 2 more updates; rank 0 writes
the parameters, the history and the world size. ``python test_accelerate_dpo.py OUT 1`` is the
single-process reference, with no accelerator. Batches of 3 pairs over 8 pairs (3, 3, 2 per epoch)
split 1 + 2 and 1 + 1: shards of unequal size.
(``distributed.py`` says why torchrun and not ``accelerate launch``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from distributed import assert_same_updates, run_one_and_two
from toy import PAIRS as TOY_PAIRS

import textgym

PAIRS = TOY_PAIRS
KEYS = ("loss", "accuracy", "margin", "logp_chosen", "logratio_chosen", "grad_norm", "lr")


def main(out: str, world: str) -> None:
    from textgym.agents.dpo import DPO, DPOConfig

    torch.set_num_threads(1)
    accelerator = None
    if world != "1":
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True)
    lm = textgym.LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    cfg = DPOConfig(batch_size=3, lr=1e-3, warmup_steps=2)
    agent = DPO(lm, data=PAIRS, config=cfg, accelerator=accelerator, progress_bar=False)
    agent.learn(2)
    agent.save(Path(out) / "ckpt")  # every process calls it; the main process writes
    agent = DPO.load(Path(out) / "ckpt", accelerator=accelerator, progress_bar=False)
    agent.learn(2)  # crosses into the second epoch
    if accelerator is None or accelerator.is_main_process:
        params = {k: v.detach().clone() for k, v in agent.policy.model.state_dict().items()}
        result = {"params": params, "history": agent.history, "world": agent.world}
        torch.save(result, Path(out) / "result.pt")


def test_too_few_pairs_per_process_raises_at_construction() -> None:
    from textgym.agents.dpo import DPO, DPOConfig

    lm = textgym.LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    two = SimpleNamespace(
        num_processes=2, process_index=0, is_main_process=True, device=torch.device("cpu")
    )
    cfg = DPOConfig(batch_size=3)
    with pytest.raises(ValueError, match=r"2 processes need at least 2 pairs.*makes a batch of 1"):
        DPO(lm, data=PAIRS[:7], config=cfg, accelerator=two)  # batches of 3, 3, 1
    with pytest.raises(ValueError, match=r"device='cuda' but the accelerator runs on cpu"):
        DPO(lm, data=PAIRS, config=cfg, device="cuda", accelerator=two)


@pytest.mark.slow
def test_two_processes_make_the_same_dpo_updates_as_one(tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    one, two = tmp_path / "one", tmp_path / "two"
    run_one_and_two(__file__, [str(one), "1"], [str(two), "2"])
    a, b = torch.load(one / "result.pt"), torch.load(two / "result.pt")
    assert (a["world"], b["world"]) == (1, 2)  # the launch really made two processes
    assert len(a["history"]) == len(b["history"]) == 4
    for i, (row_a, row_b) in enumerate(zip(a["history"], b["history"], strict=True)):
        for key in KEYS:  # grad_norm is taken before clipping: it sees the loss's scale
            if i == 0 and key == "accuracy":
                # At π_θ = π_ref every margin is 0 up to the rounding of packed sums (~1e-6),
                # whose sign depends on how each process's shard was packed: r_w > r_l is noise.
                continue
            # abs: float32 rounding of log-prob sums of size ~30 (seen: 1.3e-6 at π_θ = π_ref)
            assert row_b[key] == pytest.approx(row_a[key], rel=1e-5, abs=1e-5), key
    lm = textgym.LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    start = lm.model.state_dict()
    moved = assert_same_updates(start, a["params"], b["params"], lm.model.config.n_embd)
    assert moved > 1e-3  # the updates did something (relative errors seen: <= 2e-5)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
