"""Checkpoints of every agent: no pickle anywhere, nothing executed on load, and every missing or
corrupt part an error that names the file (never a substitute)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from textgym.agents import (
    BC,
    DPO,
    GAIL,
    GRPO,
    KTO,
    PPO,
    REINFORCE,
    BCConfig,
    DAgger,
    DAggerConfig,
    DPOConfig,
    GAILConfig,
    GRPOConfig,
    IterativeDPO,
    IterativeDPOConfig,
    KTOConfig,
    ListwiseDPO,
    ListwiseDPOConfig,
    PPOConfig,
    REINFORCEConfig,
    RewardModelConfig,
    RewardModelTrainer,
)
from textgym.rewards.reward_model import RewardModel
from toy import make_env

import textgym
from textgym import LanguageModel
from textgym.checkpoint import CheckpointError, encode
from textgym.feedback import Ranking, Rating, Thumb
from textgym.preference import PreferencePair
from textgym.rollout import Sampling
from textgym.tasks import ReferenceExpert, Task

PROMPTS = ["red blue green", "one two", "four five six seven", "the dog runs"]
REFS = [" green blue red", " two one", " seven six five four", " runs dog the"]
PAIRS = [
    PreferencePair("the movie was", "great and i loved it", "bad"),
    PreferencePair("the plot", "is very good", "is awful and bad"),
    PreferencePair("a dog", "plays in the park", "sits"),
    PreferencePair("this film", "was great", "was not good but bad"),
]


def expert_env(lm: LanguageModel, fixed_horizon: bool = False) -> Any:
    task = Task.from_list(PROMPTS, REFS, expert=ReferenceExpert())
    return gym.make_vec(
        "TextGen-v0", num_envs=4, model=lm, task=task, reward="exact_match",
        max_new_tokens=6, fixed_horizon=fixed_horizon,
    )  # fmt: skip


def n_words(prompts: Any, completions: Any, refs: Any = None) -> np.ndarray:
    return np.array([len(c.split()) for c in completions], dtype=np.float32)


# Each entry: build a tiny agent -> (agent, load(dir) -> agent). The configs exercise every piece of
# state a resume needs: adaptive KL and top-k sampling (PPO), value head, moving average and RLOO
# prompt draws (REINFORCE), early stopping (BC), the env's RNG (DAgger), D_w (GAIL), warm-up and
# epochs that straddle a save (DPO), rounds and the best policy (iterative DPO).
Built = tuple[Any, Callable[[Path], Any]]


def build_ppo(lm: LanguageModel) -> Built:
    config = PPOConfig(n_minibatches=2, n_epochs=2, lr=1e-3, kl_target=1.0, beta=0.1,
                       sampling=Sampling(temperature=0.9, top_k=20))  # fmt: skip
    agent = PPO(lm, make_env(lm, num_envs=4), config=config, progress_bar=False)
    return agent, lambda d: PPO.load(d, make_env(lm, num_envs=4), device="cpu", progress_bar=False)


def on_policy(cls: Any, config: Any, num_envs: int = 4) -> Callable[[LanguageModel], Built]:
    def build(lm: LanguageModel) -> Built:
        agent = cls(lm, make_env(lm, num_envs=num_envs), config=config, progress_bar=False)
        env = make_env(lm, num_envs=num_envs)
        return agent, lambda d: cls.load(d, env, device="cpu", progress_bar=False)

    return build


def build_bc(lm: LanguageModel) -> Built:
    config = BCConfig(lr=3e-3, batch_size=2, eval_every=2, patience=None, val_fraction=0.25)
    agent = BC(lm, list(zip(PROMPTS, REFS, strict=True)) * 2, config, progress_bar=False)
    return agent, lambda d: BC.load(d, device="cpu", progress_bar=False)


def build_dagger(lm: LanguageModel) -> Built:
    config = DAggerConfig(episodes_per_iteration=4, steps_per_iteration=3, greedy=False,
                          bc=BCConfig(val_fraction=0.0, batch_size=2, lr=3e-3))  # fmt: skip
    agent = DAgger(lm, expert_env(lm), config, progress_bar=False)
    return agent, lambda d: DAgger.load(d, expert_env(lm), device="cpu", progress_bar=False)


def build_gail(lm: LanguageModel) -> Built:
    config = GAILConfig(ppo=PPOConfig(lr=1e-3, n_epochs=1, n_minibatches=2), disc_epochs=1,
                        disc_batch_size=2)  # fmt: skip
    demos = list(zip(PROMPTS, REFS, strict=True))
    agent = GAIL(lm, expert_env(lm, True), demos, config=config, progress_bar=False)
    return agent, lambda d: GAIL.load(d, expert_env(lm, True), device="cpu", progress_bar=False)


def build_dpo(lm: LanguageModel) -> Built:
    config = DPOConfig(batch_size=3, warmup_steps=3, lr=1e-3, loss="dpop")  # 4 pairs: 3 + 1
    agent = DPO(lm, data=PAIRS, config=config, progress_bar=False)
    return agent, lambda d: DPO.load(d, device="cpu", progress_bar=False)


def build_kto(lm: LanguageModel) -> Built:
    thumbs = [
        Thumb(p.prompt, c, bool(up))
        for p in PAIRS
        for c, up in ((p.chosen, True), (p.rejected, False))
    ]
    config = KTOConfig(batch_size=3, warmup_steps=2, lr=1e-3, undesirable_weight=1.2)
    agent = KTO(lm, data=thumbs, eval_data=thumbs[:4], config=config, progress_bar=False)
    return agent, lambda d: KTO.load(d, device="cpu", progress_bar=False)


def build_iterative_dpo(lm: LanguageModel) -> Built:
    config = IterativeDPOConfig(
        rounds=2, k=4, updates_per_round=2, max_new_tokens=6, min_margin=-1.0,
        prompts_per_round=4, dpo=DPOConfig(batch_size=2, lr=1e-3),
    )  # fmt: skip
    prompts = ["the movie was", "the plot", "a dog", "this film is", "i loved the", "the cat"]
    agent = IterativeDPO(lm, prompts, reward=n_words, config=config, progress_bar=False)
    return agent, lambda d: IterativeDPO.load(d, reward=n_words, progress_bar=False)


def build_reward_model(lm: LanguageModel) -> Built:
    torch.manual_seed(0)  # the head's init, then dropout's masks (the trunk trains in train mode)
    rm = RewardModel.from_backbone(lm, device="cpu")
    config = RewardModelConfig(lr=1e-3, batch_size=3, epochs=1)  # 4 pairs: 3 + 1
    agent = RewardModelTrainer(rm, PAIRS, PAIRS[:2], config, device="cpu", progress_bar=False)
    return agent, lambda d: RewardModelTrainer.load(d, device="cpu", progress_bar=False)


RANKINGS = [Ranking(p.prompt, (p.chosen, p.rejected, "it"), (0, 2, 1)) for p in PAIRS[:3]] + [
    Ranking(PAIRS[3].prompt, (PAIRS[3].chosen, PAIRS[3].rejected), (0, 1))  # K = 2: padded
]
RATINGS = [Rating(p.prompt, y, r) for p in PAIRS for y, r in ((p.chosen, 5), (p.rejected, 2))]


def build_listwise_dpo(lm: LanguageModel) -> Built:
    config = ListwiseDPOConfig(batch_size=3, warmup_steps=3, lr=1e-3)  # 4 rankings: 3 + 1
    agent = ListwiseDPO(lm, data=RANKINGS, eval_data=RANKINGS[:2], config=config,
                        progress_bar=False)  # fmt: skip
    return agent, lambda d: ListwiseDPO.load(d, device="cpu", progress_bar=False)


def reward_model_on(loss: str, data: list[Any]) -> Callable[[LanguageModel], Built]:
    """A reward-model trainer of another feedback form (rankings padded, ordinal thresholds θ)."""

    def build(lm: LanguageModel) -> Built:
        torch.manual_seed(0)
        rm = RewardModel.from_backbone(lm, device="cpu")
        config = RewardModelConfig(lr=1e-3, batch_size=3, epochs=1, loss=loss)  # type: ignore[arg-type]
        agent = RewardModelTrainer(rm, data, data[:2], config, device="cpu", progress_bar=False)
        return agent, lambda d: RewardModelTrainer.load(d, device="cpu", progress_bar=False)

    return build


BUILDERS = {
    "PPO": build_ppo,
    "REINFORCE": on_policy(REINFORCE, REINFORCEConfig(baseline="value", beta=0.1, lr=1e-3)),
    "REINFORCE-ma": on_policy(
        REINFORCE, REINFORCEConfig(baseline="moving_average", beta=0.05, lr=1e-3)
    ),
    "REINFORCE-rloo": on_policy(REINFORCE, REINFORCEConfig(baseline="rloo", rloo_k=4, lr=1e-3), 8),
    "GRPO": on_policy(GRPO, GRPOConfig(beta=0.1, lr=1e-3, n_epochs=2, n_minibatches=2), 8),
    "GRPO-dapo": on_policy(
        GRPO, GRPOConfig.preset("dapo", lr=1e-3, group_size=2, n_minibatches=2), 8
    ),
    "BC": build_bc,
    "DAgger": build_dagger,
    "GAIL": build_gail,
    "DPO": build_dpo,
    "KTO": build_kto,
    "IterativeDPO": build_iterative_dpo,
    "RewardModelTrainer": build_reward_model,
    "ListwiseDPO": build_listwise_dpo,
    "RewardModelTrainer-ranking": reward_model_on("plackett_luce", RANKINGS),
    "RewardModelTrainer-ordinal": reward_model_on("ordinal", RATINGS),
}
UPDATES = {  # learn(n) before and after the save (2)
    "IterativeDPO": 1,
    "RewardModelTrainer": 3,
    "RewardModelTrainer-ranking": 3,
    "RewardModelTrainer-ordinal": 3,
}


def snapshot(agent: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Everything a checkpoint of ``agent`` (and of its sub-agent) holds, timings left out."""
    tensors: dict[str, torch.Tensor] = {}
    states = [agent._state()] + [
        getattr(agent, a)._state() for a in ("ppo", "bc") if hasattr(agent, a)
    ]
    data = encode(states, tensors)
    return strip_times(data), tensors


def strip_times(data: Any) -> Any:
    if isinstance(data, dict):
        timed = lambda k: k.startswith("time") or k == "seconds"  # noqa: E731
        return {k: strip_times(v) for k, v in data.items() if not timed(k)}
    if isinstance(data, list):
        return [strip_times(v) for v in data]
    return data


@pytest.mark.parametrize("name", list(BUILDERS))
def test_resume_equals_uninterrupted_run(name: str, tiny_gpt2_dir: str, tmp_path: Path) -> None:
    def fresh() -> Built:
        return BUILDERS[name](LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu"))

    n = UPDATES.get(name, 2)
    straight, _ = fresh()
    straight.learn(2 * n)
    first, load = fresh()
    first.learn(n)
    first.save(tmp_path / "ckpt")
    del first
    resumed = load(tmp_path / "ckpt")
    resumed.learn(n)

    (data_a, tensors_a), (data_b, tensors_b) = snapshot(straight), snapshot(resumed)
    assert data_a == data_b  # counters, RNG states, history (NaN compares as its JSON tag)
    assert tensors_a.keys() == tensors_b.keys()
    for key in tensors_a:
        assert torch.equal(tensors_a[key], tensors_b[key]), key  # optimizer moments, heads, D_w
    for (p, a), b in zip(
        trained(straight).named_parameters(), trained(resumed).parameters(), strict=True
    ):
        assert torch.equal(a, b), p


def trained(agent: Any) -> torch.nn.Module:
    """What the agent trains: its policy LM, or the reward model r_φ."""
    return agent.model if isinstance(agent, RewardModelTrainer) else agent.policy.model


def is_pickle(data: bytes) -> bool:
    """A raw pickle (protocol 2+ starts with 0x80) or torch.save's zip of pickles."""
    return data[:1] == b"\x80" or data[:2] == b"PK"


@pytest.mark.parametrize("name", list(BUILDERS))
def test_checkpoint_of_every_agent_holds_no_pickle(
    name: str, tiny_gpt2_dir: str, tmp_path: Path
) -> None:
    agent, load = BUILDERS[name](LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu"))
    agent.learn(1)
    agent.save(tmp_path / "ckpt")
    files = [f for f in (tmp_path / "ckpt").rglob("*") if f.is_file()]
    assert files
    for f in files:
        assert f.suffix in {".json", ".safetensors", ".txt"}, f
        assert not is_pickle(f.read_bytes()), f
    state = json.loads((tmp_path / "ckpt" / "trainer_state.json").read_text())
    assert state["format"] == "textgym-checkpoint/1"
    assert state["agent"] == name.split("-")[0]
    again = load(tmp_path / "ckpt")
    assert type(again) is type(agent)
    assert again.config == agent.config


class _Exploit:
    """Unpickling this creates ``marker``: what a crafted trainer_state.pt would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.fixture
def ppo_checkpoint(tiny_gpt2_dir: str, tmp_path: Path) -> Path:
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    agent, _ = build_ppo(lm)
    agent.learn(1)
    agent.save(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def load_ppo(path: Path, tiny_gpt2_dir: str, num_envs: int = 4) -> PPO:
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    env = make_env(lm, num_envs=num_envs)
    out: PPO = PPO.load(path, env, device="cpu", progress_bar=False)
    return out


def test_a_crafted_pickle_is_never_unpickled(
    ppo_checkpoint: Path, tiny_gpt2_dir: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"step": _Exploit(marker)})
    (ppo_checkpoint / "trainer_state.pt").write_bytes(payload)
    load_ppo(ppo_checkpoint, tiny_gpt2_dir)  # the JSON state is read; the pickle beside it is not
    assert not marker.exists()
    (ppo_checkpoint / "trainer_state.json").unlink()  # an old-style checkpoint: refused
    with pytest.raises(CheckpointError, match=r"trainer_state\.pt.*pickle"):
        load_ppo(ppo_checkpoint, tiny_gpt2_dir)
    assert not marker.exists()


def test_package_never_loads_pickles() -> None:
    root = Path(textgym.__file__).parent.parent
    for folder in ("textgym", "rewards", "agents"):
        for source in (root / folder).rglob("*.py"):
            text = source.read_text()
            assert "weights_only=False" not in text, source
            assert "import pickle" not in text, source


def test_a_missing_reference_is_an_error_not_a_copy_of_the_policy(
    ppo_checkpoint: Path, tiny_gpt2_dir: str
) -> None:
    for f in (ppo_checkpoint / "reference").iterdir():
        f.unlink()
    (ppo_checkpoint / "reference").rmdir()
    with pytest.raises(FileNotFoundError, match=r"ckpt/reference"):
        load_ppo(ppo_checkpoint, tiny_gpt2_dir)


@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        ("delete trainer_state.safetensors", FileNotFoundError, r"trainer_state\.safetensors"),
        ("empty trainer_state.safetensors", CheckpointError, r"trainer_state\.safetensors"),
        ("truncate trainer_state.safetensors", CheckpointError, r"trainer_state\.safetensors"),
        ("empty trainer_state.json", CheckpointError, r"trainer_state\.json \(0 bytes\)"),
        ("delete trainer_state.json", FileNotFoundError, r"trainer_state\.json"),
        ("empty config.json", CheckpointError, r"config\.json"),
        ("truncate policy/model.safetensors", CheckpointError, r"ckpt"),
        ("delete policy/config.json", FileNotFoundError, r"policy.*config\.json"),
    ],
)
def test_a_damaged_file_is_named(
    ppo_checkpoint: Path, tiny_gpt2_dir: str, damage: str, error: type, match: str
) -> None:
    how, name = damage.split(" ")
    f = ppo_checkpoint / name
    if how == "delete":
        f.unlink()
    elif how == "empty":
        f.write_bytes(b"")
    else:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(error, match=match):
        load_ppo(ppo_checkpoint, tiny_gpt2_dir)


@pytest.mark.parametrize("entry", ["optimizer", "rng", "value_head", "step"])
def test_a_missing_state_entry_is_named(
    ppo_checkpoint: Path, tiny_gpt2_dir: str, entry: str
) -> None:
    path = ppo_checkpoint / "trainer_state.json"
    body = json.loads(path.read_text())
    del body["state"][entry]
    path.write_text(json.dumps(body))
    with pytest.raises(CheckpointError, match=rf"trainer_state\.json.*{entry}"):
        load_ppo(ppo_checkpoint, tiny_gpt2_dir)


def test_a_missing_tensor_is_named(ppo_checkpoint: Path, tiny_gpt2_dir: str) -> None:
    path = ppo_checkpoint / "trainer_state.json"
    body = json.loads(path.read_text())
    body["state"]["value_head"]["proj.weight"]["key"] = "t999"
    path.write_text(json.dumps(body))
    with pytest.raises(CheckpointError, match=r"trainer_state\.json.*t999"):
        load_ppo(ppo_checkpoint, tiny_gpt2_dir)


def test_another_agents_checkpoint_says_which_agent(
    ppo_checkpoint: Path, tiny_gpt2_dir: str
) -> None:
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    with pytest.raises(CheckpointError, match=r"holds a PPO checkpoint; load it with PPO\.load"):
        REINFORCE.load(ppo_checkpoint, make_env(lm, num_envs=4), progress_bar=False)


def test_an_env_of_another_size_is_refused(ppo_checkpoint: Path, tiny_gpt2_dir: str) -> None:
    with pytest.raises(ValueError, match=r"num_envs=4.*num_envs=2"):
        load_ppo(ppo_checkpoint, tiny_gpt2_dir, num_envs=2)
