"""Probe textgym with bad input as a new user would, and classify what each input gets.

Each case feeds one bad value (or a damaged file) to a public entry point and names a *needle*,
the part of the input a good error must show (the value, the field or the file). Outcomes:

    clear       an exception whose message names the needle (or, where a normal return is the
                right outcome, that outcome)
    unclear     an exception that does not name it (a KeyError deep inside, a message about
                something else), or a crash type a caller cannot act on
    accepted    no exception: the input was taken, or a wrong result came back without a word
    ran code    the input executed code the user did not ask for (a marker file appeared)

The cases use only entry points that both textgym 0.1 and the current tree have, so the same
script measures before and after (run it from each checkout, in its own environment):

    python experiments/probe_bad_input.py                 # prints a table and the counts
    python experiments/probe_bad_input.py --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import textgym
from textgym import LanguageModel, decoding
from textgym.tasks import Task

Case = tuple[str, str, Callable[[Path], Any]]  # (name, needle, run(tmp) -> result)
CASES: list[Case] = []


def case(name: str, needle: str) -> Callable[[Callable[[Path], Any]], Callable[[Path], Any]]:
    def add(fn: Callable[[Path], Any]) -> Callable[[Path], Any]:
        CASES.append((name, needle, fn))
        return fn

    return add


class WrongResult(Exception):
    """Raised by a case when the call returned, but with a wrong result."""


class Handled(Exception):
    """Raised by a case whose right outcome is a normal return, when it got it."""


_LM: LanguageModel | None = None


def lm() -> LanguageModel:
    global _LM
    if _LM is None:
        _LM = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    return _LM


def vec(**kw: Any) -> Any:
    return gym.make_vec("TextGen-v0", num_envs=2, max_new_tokens=4, **kw)


# ---------------------------------------------------------------------------- code execution


def remote_code_dir(tmp: Path) -> Path:
    d = tmp / "custom_model"
    shutil.copytree(textgym.DEFAULT_MODEL, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "textgym_probe_custom"
    cfg["auto_map"] = {"AutoConfig": "custom.ProbeConfig", "AutoModelForCausalLM": "custom.M"}
    (d / "config.json").write_text(json.dumps(cfg))
    marker = tmp / "RAN"
    (d / "custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n"
        "from transformers import GPT2Config\n"
        "class ProbeConfig(GPT2Config):\n    model_type = 'textgym_probe_custom'\n"
    )
    return d


def with_yes_on_stdin(fn: Callable[[], Any]) -> Any:
    old = sys.stdin
    sys.stdin = io.StringIO("y\n" * 10)
    try:
        return fn()
    finally:
        sys.stdin = old


@case("env model= folder with auto_map, 'y' on stdin", "custom")
def _(tmp: Path) -> Any:
    return with_yes_on_stdin(lambda: gym.make("TextGen-v0", model=str(remote_code_dir(tmp))))


@case("LanguageModel folder with auto_map, 'y' on stdin", "custom")
def _(tmp: Path) -> Any:
    return with_yes_on_stdin(lambda: LanguageModel.from_pretrained(str(remote_code_dir(tmp))))


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "x"))


def ppo_checkpoint(tmp: Path) -> tuple[Path, Any]:
    from textgym.agents import PPO, PPOConfig

    policy = LanguageModel(lm().model, lm().tokenizer)
    env = vec(model=policy, reward="length")
    agent = PPO(policy, env, config=PPOConfig(n_minibatches=2, n_epochs=1), progress_bar=False)
    agent.learn(1)
    agent.save(tmp / "ckpt")
    return tmp / "ckpt", env


@case("PPO.load of a checkpoint with a crafted trainer_state.pt", "trainer_state")
def _(tmp: Path) -> Any:
    from textgym.agents import PPO

    path, env = ppo_checkpoint(tmp)
    for f in ("trainer_state.json", "trainer_state.pt"):
        (path / f).unlink(missing_ok=True)
    (path / "trainer_state.pt").write_bytes(pickle.dumps({"step": _Exploit(tmp / "RAN")}))
    return PPO.load(path, env, device="cpu", progress_bar=False)


# ---------------------------------------------------------------------------- checkpoints


def damaged(what: str) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        from textgym.agents import PPO

        path, env = ppo_checkpoint(tmp)
        state = next(p for p in ("trainer_state.json", "trainer_state.pt") if (path / p).exists())
        target = {"state": path / state, "weights": path / "policy" / "model.safetensors"}
        if what == "reference":
            shutil.rmtree(path / "reference")
            agent = PPO.load(path, env, device="cpu", progress_bar=False)
            kl = [p.data.ne(q.data).any() for p, q in zip(agent.policy.model.parameters(),
                  agent.ref.model.parameters(), strict=True)]  # fmt: skip
            if not any(kl):
                raise WrongResult("π_ref became a copy of the trained policy (KL 0)")
            return agent
        f = target[what.split()[1]]
        f.write_bytes(b"" if what.startswith("empty") else f.read_bytes()[: f.stat().st_size // 2])
        return PPO.load(path, env, device="cpu", progress_bar=False)

    return run


case("PPO.load without reference/", "reference")(damaged("reference"))
case("PPO.load with an empty trainer state", "trainer_state")(damaged("empty state"))
case("PPO.load with a truncated trainer state", "trainer_state")(damaged("truncate state"))
case("PPO.load with a truncated model.safetensors", "ckpt")(damaged("truncate weights"))


@case("REINFORCE.load of a PPO checkpoint", "PPO.load")
def _(tmp: Path) -> Any:
    from textgym.agents import REINFORCE

    path, _ = ppo_checkpoint(tmp)
    return REINFORCE.load(path, vec(model=lm(), reward="length"), device="cpu", progress_bar=False)


@case("PPO.load into an env of another num_envs", "num_envs")
def _(tmp: Path) -> Any:
    from textgym.agents import PPO

    path, _ = ppo_checkpoint(tmp)
    env = gym.make_vec("TextGen-v0", num_envs=4, max_new_tokens=4, model=lm(), reward="length")
    return PPO.load(path, env, device="cpu", progress_bar=False)


# ---------------------------------------------------------------------------- wrong results


@case("sampling from NaN logits", "finite")
def _(tmp: Path) -> Any:
    tok = decoding.sample(torch.tensor([[0.0, float("nan"), 1.0]]))
    if not 0 <= int(tok) < 3:
        raise WrongResult(f"drew token {int(tok)} outside the vocabulary")
    return tok


@case("greedy generation from a NaN model", "finite")
def _(tmp: Path) -> Any:
    m = LanguageModel.from_pretrained(textgym.DEFAULT_MODEL, device="cpu")
    with torch.no_grad():
        next(m.model.parameters()).fill_(float("nan"))
    out = decoding.generate(m, ["Review: a"], max_new_tokens=3)
    raise WrongResult(f"generated {out.completion_ids.tolist()} from NaN logits")


@case("an env step whose reward raises once, then a step", "reward")
def _(tmp: Path) -> Any:
    calls = {"n": 0}

    def flaky(prompt: str, completion: str) -> float:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("reward service unavailable")
        return 0.0

    env = gym.make("TextGen-v0", reward=flaky, max_new_tokens=2)
    obs, _ = env.reset(seed=0)
    prompt_len = int(obs["attention_mask"].sum())
    env.step(5)
    with contextlib.suppress(ValueError):
        env.step(6)
    out = env.step(6)  # the retry: the same last step again
    length = int(out[0]["attention_mask"].sum()) - prompt_len
    if not (out[2] or out[3]) or length != 2:
        raise WrongResult(f"the retry scored a completion of {length} tokens (max_new_tokens=2)")
    raise Handled("the failed step left the env as it was; the retry ended the episode")


@case("DPO on pairs with chosen == rejected", "chosen")
def _(tmp: Path) -> Any:
    from textgym.agents import DPO, DPOConfig

    from textgym.preference import PreferencePair

    pairs = [PreferencePair("Review: a", " good film", " good film")] * 4
    agent = DPO(LanguageModel(lm().model, lm().tokenizer), data=pairs,
                config=DPOConfig(batch_size=2))  # fmt: skip
    agent.learn(1)
    raise WrongResult("trained at loss log 2 on pairs that carry no preference")


# ---------------------------------------------------------------------------- model folders


@case("model= a folder that does not exist", "does not exist")
def _(tmp: Path) -> Any:
    return LanguageModel.from_pretrained(str(tmp / "no_such_model"))


@case("model= an empty folder", "config.json")
def _(tmp: Path) -> Any:
    (tmp / "empty").mkdir()
    return LanguageModel.from_pretrained(str(tmp / "empty"))


@case("env model= a folder without tokenizer files", "tokenizer")
def _(tmp: Path) -> Any:
    d = tmp / "notok"
    d.mkdir()
    shutil.copy(Path(textgym.DEFAULT_MODEL) / "config.json", d / "config.json")
    return gym.make("TextGen-v0", model=str(d))


# ---------------------------------------------------------------------------- agent / env pairing


@case("PPO on a single env", "vector")
def _(tmp: Path) -> Any:
    from textgym.agents import PPO

    return PPO(lm(), gym.make("TextGen-v0", model=lm()), progress_bar=False)


@case("REINFORCE with a policy of another vocabulary size", "vocab")
def _(tmp: Path) -> Any:
    from textgym.agents import REINFORCE
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=2048, n_layer=1, n_head=2, n_embd=16, bos_token_id=0,
                        eos_token_id=0)  # fmt: skip
    other = GPT2LMHeadModel(config)
    policy = LanguageModel(other, lm().tokenizer)
    return REINFORCE(policy, vec(model=lm()), progress_bar=False)


# ---------------------------------------------------------------------------- configs


def config_case(cls_name: str, field: str, value: Any) -> None:
    needle = field

    @case(f"{cls_name}({field}={value!r})", needle)
    def _(tmp: Path) -> Any:
        import textgym.agents as A

        return getattr(A, cls_name)(**{field: value})


for cls_name, field, value in [
    ("PPOConfig", "lr", math.inf),
    ("PPOConfig", "lr", "3e-4"),
    ("PPOConfig", "beta", math.nan),
    ("PPOConfig", "vf_coef", math.nan),
    ("PPOConfig", "max_grad_norm", math.nan),
    ("PPOConfig", "n_epochs", 1.5),
    ("PPOConfig", "n_epochs", True),
    ("PPOConfig", "gamma", 1.5),
    ("REINFORCEConfig", "lr", math.nan),
    ("REINFORCEConfig", "baseline", "mean"),
    ("REINFORCEConfig", "rloo_k", 2.5),
    ("DPOConfig", "batch_size", 2.5),
    ("DPOConfig", "beta", math.inf),
    ("DPOConfig", "loss", "hinge"),
    ("BCConfig", "lr", math.nan),
    ("BCConfig", "batch_size", "32"),
    ("DAggerConfig", "beta0", math.nan),
    ("DAggerConfig", "episodes_per_iteration", 1.5),
    ("GAILConfig", "disc_lr", math.inf),
    ("GAILConfig", "disc_epochs", 0.5),
    ("IterativeDPOConfig", "k", 2.5),
    ("IterativeDPOConfig", "top_p", math.nan),
]:
    config_case(cls_name, field, value)


# ---------------------------------------------------------------------------- files and envs


def jsonl_case(name: str, needle: str, data: bytes) -> None:
    @case(f"Task.from_jsonl: {name}", needle)
    def _(tmp: Path) -> Any:
        f = tmp / "task.jsonl"
        f.write_bytes(data)
        return Task.from_jsonl(f)


jsonl_case("non-UTF-8 line", ":2", b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n')
jsonl_case('"references": 3', "references", b'{"prompt": "a", "references": 3}\n')
jsonl_case(
    "a reference that is not a string", "references", b'{"prompt": "a", "references": [1]}\n'
)
jsonl_case("no prompt", "prompt", b'{"text": "a"}\n')
jsonl_case("a prompt that is a number", "prompt", b'{"prompt": 5}\n')
jsonl_case("an empty file", "task.jsonl", b"")


@case("preference load_jsonl: non-UTF-8", ":1")
def _(tmp: Path) -> Any:
    from textgym.preference import load_jsonl

    f = tmp / "prefs.jsonl"
    f.write_bytes(b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}\n')
    return load_jsonl(f)


@case("preference load_jsonl: chosen is a number", "chosen")
def _(tmp: Path) -> Any:
    from textgym.preference import load_jsonl

    f = tmp / "prefs.jsonl"
    f.write_text('{"prompt": "x", "chosen": 3, "rejected": "b"}\n')
    return load_jsonl(f)


@case("task=None", "task")
def _(tmp: Path) -> Any:
    return gym.make("TextGen-v0", task=None)


for seed in ("42", 1.5, True):

    @case(f"vector env reset(seed={seed!r})", repr(seed))
    def _(tmp: Path, seed: Any = seed) -> Any:
        return vec().reset(seed=seed)

    @case(f"single env reset(seed={seed!r})", repr(seed))
    def _(tmp: Path, seed: Any = seed) -> Any:
        return gym.make("TextGen-v0", max_new_tokens=4).reset(seed=seed)


@case("vector env reset(options={'prompt_index': [10**9, 0]})", "1000000000")
def _(tmp: Path) -> Any:
    return vec().reset(seed=0, options={"prompt_index": np.array([10**9, 0])})


@case("step(-1)", "-1")
def _(tmp: Path) -> Any:
    env = gym.make("TextGen-v0", max_new_tokens=4)
    env.reset(seed=0)
    return env.step(-1)


for spec in ("bleu_score", {"bleu": math.nan}, {}, 3):

    @case(f"rewards.make({spec!r})", "nan" if isinstance(spec, dict) and spec else repr(spec))
    def _(tmp: Path, spec: Any = spec) -> Any:
        import textgym.rewards as R

        return R.make(spec)


# ---------------------------------------------------------------------------- the run


def classify(name: str, needle: str, fn: Callable[[Path], Any]) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                fn(tmp)
            outcome, detail = "accepted", "returned normally"
        except WrongResult as err:
            outcome, detail = "accepted", f"wrong result: {err}"
        except Handled as ok:
            outcome, detail = "clear", f"right result: {ok}"
        except Exception as err:
            msg = f"{type(err).__name__}: {err}"
            outcome = "clear" if needle.lower() in str(err).lower() else "unclear"
            detail = msg.splitlines()[0][:160]
        if (tmp / "RAN").exists():
            outcome = "ran code"
    return outcome, detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the outcomes to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, needle, fn in CASES:
        outcome, detail = classify(name, needle, fn)
        rows.append({"case": name, "outcome": outcome, "detail": detail})
        print(f"{outcome:9} | {name} | {detail}", flush=True)
    counts = {
        k: sum(r["outcome"] == k for r in rows)
        for k in ("clear", "unclear", "accepted", "ran code")
    }
    print(f"\ninputs tried: {len(rows)}; " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "counts": counts}, indent=1) + "\n")


if __name__ == "__main__":
    main()
