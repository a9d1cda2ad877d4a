"""Data parallelism through ``accelerate``: 2 CPU processes (gloo) make the same PPO update as one
process on the whole batch.

The file is also the worker:
``accelerate launch --cpu --num_processes 2 test_accelerate.py MODEL OUT``
runs ``main``, where each process updates on its half of one fixed rollout and rank 0 saves the
parameters. Run without ``accelerate launch`` it is the single-process reference on the full batch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

B, P, T = 8, 3, 5


def fixed_rollout(lm: object, seed: int = 0) -> object:
    """A rollout built from a seed alone (same on every process): varied lengths, padding, EOS."""
    from textgym.rollout import Rollout, evaluate

    g = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(3, 40, (B, P), generator=g)
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_mask[::3, 0] = 0  # some left padding
    prompt_ids = prompt_ids.masked_fill(prompt_mask == 0, 1)
    completion_ids = torch.randint(3, 40, (B, T), generator=g)
    lengths = torch.tensor([5, 3, 5, 1, 4, 5, 2, 5])
    completion_mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    completion_ids = completion_ids.masked_fill(completion_mask == 0, 1)
    terminated = lengths < T
    token_rewards = torch.zeros(B, T)
    token_rewards[torch.arange(B), lengths - 1] = torch.randn(B, generator=g)
    rollout = Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        logprobs=torch.zeros(B, T),
        rewards=token_rewards.sum(1),
        token_rewards=token_rewards,
        terminated=terminated,
        truncated=~terminated,
        texts=[""] * B,
        prompts=[""] * B,
        prompt_indices=torch.arange(B).numpy(),
    )
    with torch.no_grad():
        rollout.logprobs = evaluate(lm, rollout)[0]  # type: ignore[arg-type]
    rollout.ref_logprobs = rollout.logprobs - 0.1 * torch.rand(B, T, generator=g) * completion_mask
    rollout.values = 0.3 * torch.randn(B, T, generator=g) * completion_mask
    rollout.bootstrap_values = torch.randn(B, generator=g)
    return rollout


def main(model_dir: str, out: str) -> None:
    import gymnasium as gym
    from accelerate import Accelerator
    from textgym.agents import PPO, PPOConfig

    from textgym import LanguageModel
    from textgym.tasks import Task

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    lm = LanguageModel.from_pretrained(model_dir, device="cpu")
    rollout = fixed_rollout(lm)
    shard = rollout[slice(rank * B // world, (rank + 1) * B // world)]  # type: ignore[index]
    env = gym.make_vec(
        "TextGen-v0",
        num_envs=B // world,
        model=lm,
        task=Task.from_list(["the"]),
        reward=lambda p, c: 0.0,
        max_new_tokens=T,
    )
    cfg = PPOConfig(n_epochs=3, n_minibatches=1, lr=1e-2, beta=0.2, ent_coef=0.01, seed=0)
    agent = PPO(lm, env, config=cfg, accelerator=accelerator, progress_bar=False)
    stats = agent._update(shard)
    if accelerator.is_main_process:
        params = {
            k: v.detach().clone()
            for k, v in accelerator.unwrap_model(agent.trainable).state_dict().items()
        }
        torch.save({"params": params, "stats": stats}, out)
    accelerator.wait_for_everyone()


@pytest.mark.slow
def test_two_processes_make_the_same_update_as_one(tiny_gpt2_dir: str, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which(
        "accelerate"
    )
    if launcher is None:
        pytest.skip("the accelerate launcher is not on PATH")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    script = str(Path(__file__).resolve())
    subprocess.run(
        [sys.executable, script, tiny_gpt2_dir, str(tmp_path / "one.pt")],
        check=True,
        env=env,
        timeout=300,
    )
    subprocess.run(
        [
            launcher,
            "launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            script,
            tiny_gpt2_dir,
            str(tmp_path / "two.pt"),
        ],
        check=True,
        env=env,
        timeout=300,
    )
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for name, value in one["params"].items():
        torch.testing.assert_close(two["params"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    for key in ("kl", "beta", "loss", "value_loss"):
        assert two["stats"][key] == pytest.approx(one["stats"][key], rel=1e-4, abs=1e-6), key
    from textgym import LanguageModel

    start = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu").model.state_dict()
    moved = max(float((one["params"]["model." + k] - v).abs().max()) for k, v in start.items())
    assert moved > 1e-3  # the update did something, so equality above is not trivial


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
