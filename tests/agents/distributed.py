"""Shared by the data-parallel tests: launch a worker script as 1 and as 2 processes, compare.

Why torchrun and not ``accelerate launch --cpu --num_processes 2``: with ``--cpu``, accelerate 1.x
starts several processes only through ``mpirun`` and a hostfile; otherwise it runs one process.
``python -m torch.distributed.run`` (what ``accelerate launch --multi_gpu`` calls) sets the
variables under which ``Accelerator(cpu=True)`` forms a gloo group, and ``--standalone`` picks a
free port, so parallel test runs do not collide.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def run_one_and_two(script: str | Path, one: list[str], two: list[str]) -> None:
    """Run ``python script *one`` (the single-process reference), then ``script *two`` as 2."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, str(script), *one], check=True, env=env, timeout=300)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    subprocess.run([*launch, "2", str(script), *two], check=True, env=env, timeout=300)


def assert_same_updates(
    start: dict[str, torch.Tensor],
    one: dict[str, torch.Tensor],
    two: dict[str, torch.Tensor],
    hidden: int,
    tol: float = 1e-3,
) -> float:
    """Every tensor moved the same way from ``start`` (relative error < ``tol``); returns the
    largest single-process move, so a caller can check the update was not trivially zero.

    GPT-2's attention key bias k_b adds q·k_b to every logit of a row, which softmax cancels: its
    gradient is rounding noise that Adam (m/√v) turns into lr-sized steps depending on the
    summation order, so only its query and value parts (``hidden`` each) are compared.
    """
    assert one.keys() == two.keys() == start.keys()
    moved = 0.0
    for name, s in start.items():
        delta_a, delta_b = one[name] - s, two[name] - s
        if name.endswith("attn.c_attn.bias"):
            delta_a = torch.cat([delta_a[:hidden], delta_a[2 * hidden :]])
            delta_b = torch.cat([delta_b[:hidden], delta_b[2 * hidden :]])
        error = float((delta_b - delta_a).norm() / delta_a.norm().clamp(min=1e-12))
        assert error < tol, f"{name}: relative update error {error:.2e}"
        moved = max(moved, float(delta_a.abs().max()))
    return moved
