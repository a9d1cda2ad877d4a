"""The main demo: ``python -m textgym`` (about a minute and a half on 2 CPU cores).

On the embedded default model and the built-in review task it shows, in order:
1. decoding: greedy, top-p and beam completions of a few review prompts, with their sentiment;
2. the MDP: one episode of ``gym.make("TextGen-v0")`` stepped token by token;
3. RL: native KL-regularised PPO raising the sentiment reward, printed as a curve and saved as a
   PNG (``textgym_demo.png`` by default; reward and KL per PPO update) whose absolute path is
   printed.

``python -m textgym demo`` and ``textgym demo`` run the same; ``python -m textgym <command>`` is the
``textgym`` command line (``train``, ``eval``, ``bench``: textgym/cli.py).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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


def train_ppo(
    lm: LanguageModel, updates: int, num_envs: int, seconds: float
) -> list[dict[str, float]]:
    """Run PPO for at most ``updates`` updates or ``seconds``; return one history row per update."""
    from textgym.agents import PPO, PPOConfig

    print(f"\n== 3. Native PPO on review sentiment ({num_envs} episodes a round) ==")
    env = gym.make_vec("TextGen-v0", num_envs=num_envs, model=lm, max_new_tokens=24)
    agent = PPO(lm, env, config=PPOConfig(lr=3e-4, beta=0.05, n_epochs=2), progress_bar=False)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for update in range(updates):
        (row,) = agent.learn(1)
        history.append(row)
        print(
            f"  update {update:2d}  reward {row['reward']:+.3f}  kl {row.get('kl', 0.0):.3f}  "
            f"{_bar(row['reward'], 0.0, 1.0)}"
        )
        if time.perf_counter() - start > seconds:
            break
    rewards = [row["reward"] for row in history]
    first, last = np.mean(rewards[:3]), np.mean(rewards[-3:])
    print(f"mean reward, first 3 updates {first:+.3f} -> last 3 updates {last:+.3f}")
    print(f"PPO took {time.perf_counter() - start:.0f} s")
    return history


def save_plot(history: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """Write the learning curve as a PNG: mean reward per PPO update, and the KL when logged.

    Args:
        history: one row per PPO update with a ``"reward"`` and, optionally, a ``"kl"`` (the
            KL to the reference summed over an episode's tokens, on a second y axis).
        path: where to write the PNG.

    Returns:
        The absolute path of the PNG.
    """
    if not history:
        raise ValueError("save_plot needs at least one PPO update in history, got none")
    out = Path(path).resolve()
    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg: renders to a file, needs no display
    ax = fig.add_subplot()
    x = range(len(history))
    rewards = [row["reward"] for row in history]
    lines = ax.plot(x, rewards, "o-", color="tab:blue", label="mean sentiment reward")
    ax.set_xlabel("PPO update")
    ax.set_ylabel("mean sentiment reward", color="tab:blue")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if any("kl" in row for row in history):
        ax_kl = ax.twinx()
        kl = [row.get("kl", math.nan) for row in history]
        lines += ax_kl.plot(x, kl, "s--", color="tab:orange", label="KL to the reference")
        ax_kl.set_ylabel("KL to the reference (nats per episode)", color="tab:orange")
    # Below the axes: inside, it would hide points of one of the two curves.
    fig.legend(handles=lines, loc="outside lower center", ncol=2)
    ax.set_title("PPO on the embedded model: review sentiment")
    fig.savefig(out)
    return out


def main(argv: Sequence[str] | None = None, prog: str = "python -m textgym") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=textgym.DEFAULT_MODEL, help="HF name or path")
    parser.add_argument("--updates", type=int, default=40, help="PPO updates (at most)")
    parser.add_argument("--num-envs", type=int, default=32, help="episodes per PPO round")
    parser.add_argument("--seconds", type=float, default=60.0, help="PPO time budget")
    parser.add_argument("--plot", default="textgym_demo.png", help="where to save the PNG curve")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny model: one thread beats two when anything else runs
    lm = LanguageModel.from_pretrained(args.model)
    n_params = sum(p.numel() for p in lm.model.parameters())
    print(f"model: {args.model} ({n_params / 1e6:.2f}M parameters, {lm.vocab_size} tokens)\n")
    show_decoding(lm)
    show_episode(lm)
    history = train_ppo(lm, args.updates, args.num_envs, args.seconds)
    print(f"learning curve saved to {save_plot(history, args.plot)}")


if __name__ == "__main__":
    # With no arguments (or the demo's own options) this is the demo, as before the commands;
    # `python -m textgym train|eval|bench|demo ...` is the `textgym` command (textgym/cli.py).
    from textgym.cli import main as cli

    raise SystemExit(cli(prog="python -m textgym", default="demo"))
