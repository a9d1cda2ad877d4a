"""The main demo: ``python -m textgym`` (about a minute and a half on 2 CPU cores).

On the embedded default model and the built-in review task it shows, in order:
1. decoding: greedy, top-p and beam completions of a few review prompts, with their sentiment;
2. the MDP: one episode of ``gym.make("TextGen-v0")`` stepped token by token;
3. RL: native KL-regularised PPO raising the sentiment reward, printed as a curve and saved as a
   plot (``textgym_demo.png``) when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch

import textgym
from textgym import decoding
from textgym.lm import LanguageModel

PROMPTS = (
    "Review: I watched this film last night and",
    "Review: The acting in this movie",
    "Review: My friends told me to",
)


def _bar(value: float, lo: float, hi: float, width: int = 40) -> str:
    filled = round(width * (value - lo) / max(hi - lo, 1e-9))
    return "#" * max(0, min(width, filled))


def show_decoding(lm: LanguageModel) -> None:
    from textgym.rewards import make

    sentiment = make("sentiment")
    print("== 1. Decoding on the embedded model ==")
    generator = torch.Generator().manual_seed(0)
    outputs = {
        "greedy": decoding.greedy(lm, list(PROMPTS), max_new_tokens=40),
        "top-p 0.9": decoding.generate(
            lm, list(PROMPTS), max_new_tokens=40, do_sample=True, top_p=0.9, generator=generator
        ),
        "beam 4": decoding.beam_search(lm, list(PROMPTS), num_beams=4, max_new_tokens=40),
    }
    for name, out in outputs.items():
        scores = sentiment(list(PROMPTS), out.texts)
        print(f"-- {name} (mean sentiment {scores.mean():.2f})")
        for prompt, text, score in zip(PROMPTS, out.texts, scores, strict=True):
            print(f"  [{score:+.2f}] {prompt}{text}")
    print(f"perplexity of the greedy texts: {textgym.perplexity(lm, outputs['greedy'].texts):.2f}")


def show_episode(lm: LanguageModel) -> None:
    print("\n== 2. One episode of gym.make('TextGen-v0'), a token per step ==")
    env = gym.make("TextGen-v0", model=lm, max_new_tokens=24)
    _, info = env.reset(seed=0)
    cache, ids, mask = None, *lm.encode([info["prompt"]])
    total, steps, done = 0.0, 0, False
    while not done:
        logits, cache = lm.step(ids, mask, cache)
        action = int(logits.argmax(-1))  # a greedy "policy"; agents sample instead
        _, reward, terminated, truncated, info = env.step(action)
        ids = torch.tensor([[action]], device=lm.device)
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        total, steps, done = total + float(reward), steps + 1, terminated or truncated
    print(f"prompt: {info['prompt']!r}")
    print(f"completion after {steps} steps: {info['text']!r}")
    print(f"terminated={terminated} truncated={truncated} sentiment reward={total:.3f}")


def train_ppo(lm: LanguageModel, updates: int, num_envs: int, seconds: float) -> Sequence[float]:
    from textgym.agents import PPO, PPOConfig

    print(f"\n== 3. Native PPO on review sentiment ({num_envs} episodes a round) ==")
    env = gym.make_vec("TextGen-v0", num_envs=num_envs, model=lm, max_new_tokens=24)
    agent = PPO(lm, env, config=PPOConfig(lr=3e-4, beta=0.05, n_epochs=2), progress_bar=False)
    rewards: list[float] = []
    start = time.perf_counter()
    for update in range(updates):
        (row,) = agent.learn(1)
        rewards.append(row["reward"])
        print(
            f"  update {update:2d}  reward {row['reward']:+.3f}  kl {row.get('kl', 0.0):.3f}  "
            f"{_bar(row['reward'], 0.0, 1.0)}"
        )
        if time.perf_counter() - start > seconds:
            break
    first, last = np.mean(rewards[:3]), np.mean(rewards[-3:])
    print(f"mean reward, first 3 updates {first:+.3f} -> last 3 updates {last:+.3f}")
    print(f"PPO took {time.perf_counter() - start:.0f} s")
    return rewards


def save_plot(rewards: Sequence[float], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(len(rewards)), rewards, marker="o")
    ax.set_xlabel("PPO update")
    ax.set_ylabel("mean sentiment reward")
    ax.set_title("PPO on the embedded model (review task)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"reward curve saved to {path}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m textgym", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=textgym.DEFAULT_MODEL, help="HF name or path")
    parser.add_argument("--updates", type=int, default=40, help="PPO updates (at most)")
    parser.add_argument("--num-envs", type=int, default=32, help="episodes per PPO round")
    parser.add_argument("--seconds", type=float, default=60.0, help="PPO time budget")
    parser.add_argument("--plot", default="textgym_demo.png", help="where to save the curve")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny model: one thread beats two when anything else runs
    lm = LanguageModel.from_pretrained(args.model)
    n_params = sum(p.numel() for p in lm.model.parameters())
    print(f"model: {args.model} ({n_params / 1e6:.2f}M parameters, {lm.vocab_size} tokens)\n")
    show_decoding(lm)
    show_episode(lm)
    rewards = train_ppo(lm, args.updates, args.num_envs, args.seconds)
    save_plot(rewards, args.plot)


if __name__ == "__main__":
    main()
