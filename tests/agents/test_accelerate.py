"""Data parallelism through ``accelerate``: 2 CPU processes (gloo) make the same PPO and REINFORCE
updates, and log the same losses, as one process on the whole batch.

The file is also the worker: ``torchrun --standalone --nproc_per_node 2 test_accelerate.py AGENT
MODEL OUT`` runs ``main``, where each process updates on its half of one fixed rollout and rank 0
saves the parameters before and after and the logged stats. Run directly it is the
single-process reference on the full batch (``distributed.py`` says why not ``accelerate launch``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from distributed import assert_same_updates, run_one_and_two

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


def main(agent_name: str, model_dir: str, out: str) -> None:
    import gymnasium as gym
    from accelerate import Accelerator
    from textgym.agents import PPO, REINFORCE, PPOConfig, REINFORCEConfig

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
    if agent_name == "ppo":
        cfg = PPOConfig(n_epochs=3, n_minibatches=1, lr=1e-2, beta=0.2, ent_coef=0.01, seed=0)
        agent = PPO(lm, env, config=cfg, accelerator=accelerator, progress_bar=False)
    else:
        rcfg = REINFORCEConfig(baseline="value", lr=1e-2, beta=0.2, seed=0)
        agent = REINFORCE(lm, env, config=rcfg, accelerator=accelerator, progress_bar=False)

    def params() -> dict[str, torch.Tensor]:
        module = accelerator.unwrap_model(agent.trainable)
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    start = params()
    stats = agent._update(shard)
    if accelerator.is_main_process:
        torch.save({"start": start, "params": params(), "stats": stats, "world": world}, out)
    accelerator.wait_for_everyone()


STATS = {
    "ppo": ("kl", "beta", "loss", "policy_loss", "value_loss", "entropy", "clip_fraction"),
    "reinforce": ("kl", "return", "baseline", "loss", "policy_loss", "value_loss", "grad_norm"),
}


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["ppo", "reinforce"])
def test_two_processes_make_the_same_update_as_one(
    agent: str, tiny_gpt2_dir: str, tmp_path: Path
) -> None:
    pytest.importorskip("accelerate")
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    run_one_and_two(__file__, [agent, tiny_gpt2_dir, str(one)], [agent, tiny_gpt2_dir, str(two)])
    a, b = torch.load(one), torch.load(two)
    assert (a["world"], b["world"]) == (1, 2)  # the launch really made two processes
    for key in STATS[agent]:
        assert b["stats"][key] == pytest.approx(a["stats"][key], rel=1e-4, abs=1e-6), key
    hidden = int(a["params"]["model.transformer.wte.weight"].shape[1])
    moved = assert_same_updates(a["start"], a["params"], b["params"], hidden)
    assert moved > 1e-3  # the update did something, so the equality above is not trivial


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
