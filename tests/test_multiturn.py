"""Multi-turn episodes: the responder protocol, the envs, the built-in tasks, the rollout.

On the embedded model (byte-level BPE, EOS id 0, pad id 1, 128 positions), shared and never
modified: every env here reads only its tokenizer.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import textgym
from textgym import LanguageModel
from textgym.envs import TextGenEnv, TextGenVectorEnv
from textgym.estimators import gae, kl_shaped_rewards
from textgym.multiturn import (
    MultiTurnTask,
    Reply,
    Transcript,
    calculator_plan,
    guessing_plan,
    load,
)
from textgym.registration import MULTI_TURN_IDS
from textgym.rollout import collect, evaluate, evaluate_logits
from textgym.tasks import Task

EOS, PAD = 0, 1
PROMPTS = ["Hello:", "A story:", "Q: one\n", "Say it:", "Go:"]


class Echo:
    """Replies with the number of characters of the turn (and pays -0.25) until a turn holds
    '!' or 3 turns were answered; any reply is also seen by ``calls``."""

    def __init__(self) -> None:
        self.calls: list[Transcript] = []

    def __call__(self, transcript: Transcript) -> Reply:
        self.calls.append(transcript)
        if "!" in transcript.last or len(transcript.env_turns) >= 3:
            return Reply(None, reward=0.5)
        return Reply(f" [{len(transcript.last)}]\n", reward=-0.25)


def length_reward(prompt: str, completion: str) -> float:
    return len(completion) / 100


@pytest.fixture
def make_env(embedded_lm: LanguageModel) -> Any:
    def build(num_envs: int | None = None, **kw: Any) -> Any:
        kw.setdefault("task", PROMPTS)
        kw.setdefault("reward", length_reward)
        kw.setdefault("max_new_tokens", 40)
        kw.setdefault("responder", Echo())
        if num_envs is None:
            return TextGenEnv(model=embedded_lm, **kw)
        return TextGenVectorEnv(num_envs, model=embedded_lm, **kw)

    return build


def random_actions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Token ids with EOS about one time in six (so turns end often) and '!' now and then."""
    a = rng.integers(2, 300, size=n)
    a[rng.random(n) < 0.17] = EOS
    a[rng.random(n) < 0.03] = 3  # '!'
    return a


def valid(obs: dict[str, np.ndarray]) -> np.ndarray:
    return obs["input_ids"][obs["attention_mask"] == 1]


# --- the env ------------------------------------------------------------------------------------


def test_no_responder_is_single_turn_exactly(make_env: Any) -> None:
    plain = make_env(responder=None)
    as_task = make_env(responder=None, task=MultiTurnTask.from_task(Task.from_list(PROMPTS)))
    rng = np.random.default_rng(0)
    for env in (plain, as_task):
        assert not env.config.multi_turn
    for a in random_actions(rng, 60):
        outs = []
        for env in (plain, as_task):
            if getattr(env, "_needs_reset", True):
                env.reset(seed=3)
            obs, r, te, tr, info = env.step(int(a))
            assert not {"env_tokens", "env_token_mask", "turn", "transcript"} & set(info)
            outs.append((obs["input_ids"].tolist(), r, te, tr, info.get("text")))
        assert outs[0] == outs[1]
        assert te == (a == EOS)  # the first turn end is the episode's end


@pytest.mark.parametrize("env_id", sorted(MULTI_TURN_IDS))
def test_gymnasium_and_sb3_check_env(env_id: str) -> None:
    gym.register_envs(textgym)
    env = gym.make(env_id)
    assert env.unwrapped.config.multi_turn
    check_env(env.unwrapped, skip_render_check=True)
    sb3 = pytest.importorskip("stable_baselines3.common.env_checker")
    sb3.check_env(env.unwrapped)


def test_calculator_expert_dialogue_and_info_masks(embedded_lm: LanguageModel) -> None:
    task = load("calculator", split="validation")
    env = TextGenEnv(model=embedded_lm, task=task, max_new_tokens=64)
    tok = env.tokenizer
    i = next(
        k for k, p in enumerate(task.prompts) if p.count("+") + p.count("-") + p.count("*") == 2
    )
    obs, info = env.reset(options={"prompt_index": i})
    assert (info["turn"], info["env_tokens"]) == (0, 0)
    total, steps, replies = 0.0, 0, []
    while True:
        before = int(obs["attention_mask"].sum())
        obs, r, te, tr, info = env.step(env.expert_action())
        total, steps = total + r, steps + 1
        k = info["env_tokens"]
        assert int(obs["attention_mask"].sum()) == before + 1 + k  # the action, then the reply
        if k:
            replies.append(tok.decode(obs["input_ids"][before + 1 : before + 1 + k]))
        if te or tr:
            break
    assert te
    assert not tr
    assert total == 1.0
    prompt, turns = task.dialogues()[i]
    assert replies == list(turns[1::2]) == [" = " + str(v) + "\n" for v in _values(prompt)]
    assert info["transcript"] == Transcript(prompt, turns, i, task.references[i])
    assert info["turn"] == 3
    # env_token_mask marks exactly the replies' tokens; turn_start_mask every turn's first token
    m = info["env_token_mask"]
    assert tok.decode(obs["input_ids"][m]) == "".join(turns[1::2])
    p = len(tok(prompt)["input_ids"])
    starts = np.flatnonzero(info["turn_start_mask"])
    lengths = [
        len(tok(t, add_special_tokens=False)["input_ids"]) + (k % 2 == 0)
        for k, t in enumerate(turns)
    ]
    assert starts.tolist() == (p + np.cumsum([0, *lengths[:-1]])).tolist()
    assert steps == int((~m & (obs["attention_mask"] == 1)).sum()) - p  # one step per policy token


def _values(prompt: str) -> list[int]:
    expr = prompt[3:].strip()
    out, acc, op, num = [], None, None, ""
    for ch in expr + "+":
        if ch.isdigit():
            num += ch
            continue
        x = int(num)
        acc = x if acc is None else acc + x if op == "+" else acc - x if op == "-" else acc * x
        if op is not None:
            out.append(acc)
        op, num = ch, ""
    return out


def test_guessing_expert_binary_search_with_per_turn_rewards(embedded_lm: LanguageModel) -> None:
    env = TextGenEnv(model=embedded_lm, task="guessing", max_new_tokens=48)
    for secret in (1, 8, 11, 16):
        env.reset(options={"prompt_index": secret - 1})
        rewards, info = [], {}
        while True:
            _, r, te, tr, info = env.step(env.expert_action())
            rewards.append(r)
            if te or tr:
                break
        guesses = [int(t) for t in info["transcript"].policy_turns]
        assert te
        assert guesses[-1] == secret
        assert len(guesses) <= 5
        # -0.1 on each wrong guess's last token (its newline), 1.0 on the last step only
        paid = [r for r in rewards if r != 0]
        assert paid == pytest.approx([-0.1] * (len(guesses) - 1) + [1.0])
    assert guessing_plan(Transcript("", (" 3", " lower\n"))) == " 1\n"  # from a bad first guess


def test_truncation_reasons_never_silent(make_env: Any) -> None:
    # max_turns: the 2nd turn ends, the responder still answers -> truncated, reply not written
    env = make_env(max_turns=2)
    env.reset(seed=0)
    obs, *_ = env.step(5)
    obs, _, te, tr, info = env.step(EOS)
    assert info["env_tokens"] > 0
    env.step(7)
    n = int(obs["attention_mask"].sum()) + 1
    obs, _, te, tr, info = env.step(EOS)
    assert (te, tr, info["truncated_by"], info["env_tokens"]) == (False, True, "max_turns", 0)
    assert int(obs["attention_mask"].sum()) == n + 1
    assert len(info["transcript"].turns) == 3  # the last policy turn, no reply
    # context: a reply that does not fit with room for one more policy token
    env = make_env(responder=lambda tr: " a very long reply that cannot fit\n", max_new_tokens=12)
    env.reset(seed=0)
    for a in (5, 6):
        env.step(a)
    _, _, te, tr, info = env.step(EOS)
    assert (te, tr, info["truncated_by"]) == (False, True, "context")
    # the token budget mid-turn
    env = make_env(max_new_tokens=6)
    env.reset(seed=0)
    for _ in range(5):
        assert not any(env.step(5)[2:4])
    _, _, te, tr, info = env.step(5)
    assert (te, tr, info["truncated_by"]) == (False, True, "max_new_tokens")
    assert info["text"] == info["transcript"].turns[-1]


def test_stop_sequence_never_spans_environment_tokens(embedded_lm: LanguageModel) -> None:
    tok = embedded_lm.tokenizer
    stop = tok(" lower", add_special_tokens=False)["input_ids"]
    assert len(stop) == 3
    reply = tok.decode(stop[:2])  # " low": the stop sequence's first two tokens
    assert tok(reply, add_special_tokens=False)["input_ids"] == stop[:2]
    task = MultiTurnTask.from_task(
        Task.from_list(PROMPTS, stop_sequences=[" lower"]), responder=lambda tr: reply
    )
    env = TextGenEnv(model=embedded_lm, task=task, reward=length_reward, max_new_tokens=40)
    env.reset(seed=0)
    env.step(EOS)  # turn 0 ends: the reply " low" is appended
    _, _, te, tr, info = env.step(stop[2])  # "er": the transcript ends with " lower" ...
    assert (te, tr, info["turn"]) == (False, False, 1)  # ... but the turn has one token
    for a in stop:
        _, _, te, tr, info = env.step(a)
    assert info["turn"] == 2
    assert info["env_tokens"] == 2


class Flaky:
    """Raises on its first call, then answers."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, transcript: Transcript) -> str:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("service down")
        return " ok\n"


def test_responder_errors_name_it_and_leave_the_episode_as_it_was(make_env: Any) -> None:
    env = make_env(responder=lambda tr: 42)
    env.reset(seed=0)
    env.step(5)
    with pytest.raises(TypeError, match="returned int 42"):
        env.step(EOS)
    env = make_env(responder=Flaky())
    env.reset(seed=0)
    before, _, _, _, _ = env.step(5)
    with pytest.raises(RuntimeError, match="service down"):
        env.step(EOS)
    assert np.array_equal(env._ep.input_ids[0], before["input_ids"])
    assert np.array_equal(env._ep.attention_mask[0], before["attention_mask"])
    assert (int(env._ep.n[0]), int(env._ep.t[0])) == (1, 1)
    _, _, te, tr, info = env.step(EOS)  # the retry goes through
    assert info["env_tokens"] == len(env.tokenizer(" ok\n", add_special_tokens=False)["input_ids"])
    assert not te
    assert not tr
    assert info["turn"] == 1
    with pytest.raises(ValueError, match="max_turns=2 needs a responder"):
        make_env(responder=None, max_turns=2)
    with pytest.raises(ValueError, match="fixed_horizon=True is for single-turn"):
        make_env(fixed_horizon=True)
    with pytest.raises(TypeError, match="responder must be a callable"):
        make_env(responder="calculator")


def test_same_seed_same_episodes(make_env: Any) -> None:
    def trace() -> list[Any]:
        env = make_env()
        obs, _ = env.reset(seed=11)
        out: list[Any] = []
        for a in random_actions(np.random.default_rng(1), 80):
            obs, r, te, tr, info = env.step(int(a))
            out.append((valid(obs).tolist(), r, te, tr, info["env_token_mask"].tolist()))
            if te or tr:
                obs, _ = env.reset()
        return out

    first = trace()
    assert first == trace()
    assert sum(any(x[4]) for x in first) > 10  # environment tokens were written


def test_vector_env_equals_single_envs(make_env: Any) -> None:
    B, steps, seed = 3, 70, 5
    actions = np.stack([random_actions(np.random.default_rng(i), steps) for i in range(B)], 1)
    venv = make_env(B)
    venv.reset(seed=seed)
    keys = ("env_tokens", "turn", "env_token_mask", "turn_start_mask")
    vec: list[list[Any]] = [[] for _ in range(B)]
    for a in actions:
        obs, r, te, tr, info = venv.step(a)
        for i in range(B):
            ended = info.get("_transcript", np.zeros(B, bool))[i]
            vec[i].append(
                (
                    obs["input_ids"][i].tolist(),
                    float(r[i]),
                    bool(te[i]),
                    bool(tr[i]),
                    *(np.asarray(info[k][i]).tolist() for k in keys),
                    info["transcript"][i] if ended else None,
                )
            )
    for i in range(B):
        env = make_env()
        env.reset(seed=seed + i)
        single, pending = [], False
        for a in actions[:, i]:
            if pending:
                obs, info = env.reset()
                r, te, tr, pending = 0.0, False, False, False
            else:
                obs, r, te, tr, info = env.step(int(a))
                pending = te or tr
            single.append(
                (
                    obs["input_ids"].tolist(),
                    r,
                    te,
                    tr,
                    *(np.asarray(info[k]).tolist() for k in keys),
                    info.get("transcript") if (te or tr) else None,
                )
            )
        assert vec[i] == single, i
        assert any(x[4] for x in single)  # some steps appended environment tokens


def test_chat_template_renders_the_conversation(embedded_lm: LanguageModel) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(textgym.DEFAULT_MODEL)  # a local copy, never the shared one
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    env = TextGenEnv(
        model=embedded_lm, tokenizer=tok, task=["Hi there"], reward=length_reward,
        max_new_tokens=60, chat_template=True, responder=lambda tr: "How are you?",
    )  # fmt: skip
    obs, _ = env.reset(seed=0)
    conv = [{"role": "user", "content": "Hi there"}]
    assert tok.decode(valid(obs)) == tok.apply_chat_template(
        conv, tokenize=False, add_generation_prompt=True
    )
    for a in tok("Hello", add_special_tokens=False)["input_ids"]:
        env.step(a)
    obs, _, _, _, info = env.step(EOS)
    conv += [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "How are you?"}]
    rendered = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert tok.decode(valid(obs)) == rendered
    assert info["env_tokens"] == len(
        tok(rendered.split("Hello<|endoftext|>")[1], add_special_tokens=False)["input_ids"]
    )
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        TextGenEnv(model=embedded_lm, task=["Hi"], reward=length_reward, chat_template=True)


# --- estimators ---------------------------------------------------------------------------------


def test_gae_skips_environment_columns_hand_computed() -> None:
    # one row: policy steps at columns 0, 1, 4 (columns 2, 3 are environment tokens), a per-turn
    # reward -0.1 on column 1 (the turn's last action) and 1.0 at the end (column 4, terminated)
    mask = torch.tensor([[1.0, 1, 0, 0, 1, 0]])
    rewards = torch.tensor([[0.0, -0.1, 0, 0, 1.0, 0]])
    values = torch.tensor([[0.5, 0.4, 9.0, 9.0, 0.2, 0.0]])  # 9: ignored environment columns
    g, lam = 0.9, 0.8
    d4 = 1.0 + g * 0.0 - 0.2
    d1 = -0.1 + g * 0.2 - 0.4  # s after the turn's last action is column 4's state
    d0 = 0.0 + g * 0.4 - 0.5
    a4, a1 = d4, d1 + g * lam * d4
    a0 = d0 + g * lam * a1
    adv, ret = gae(rewards, values, mask, g, lam, torch.tensor([7.0]), torch.tensor([True]))
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, 0, 0, a4, 0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.5, a1 + 0.4, 0, 0, a4 + 0.2, 0]]))
    # the same steps packed to a prefix give the same numbers
    packed = gae(
        rewards[:, [0, 1, 4, 2, 3, 5]],
        values[:, [0, 1, 4, 2, 3, 5]],
        mask[:, [0, 1, 4, 2, 3, 5]],
        g,
        lam,
    )
    torch.testing.assert_close(packed[0][:, :3], adv[:, [0, 1, 4]])
    # a sequence score goes on the last policy step, not at column (number of steps - 1)
    shaped, _ = kl_shaped_rewards(
        torch.tensor([2.0]), torch.zeros(1, 6), torch.zeros(1, 6), mask, 0.1
    )
    assert shaped.tolist() == [[0.0, 0.0, 0.0, 0.0, 2.0, 0.0]]


# --- the rollout --------------------------------------------------------------------------------


def _head(hidden: torch.Tensor) -> torch.Tensor:
    """A fixed linear value head on the embedded model's hidden states."""
    w = torch.linspace(-1, 1, hidden.shape[-1], dtype=hidden.dtype)
    return hidden @ w


def test_collect_feeds_env_tokens_and_records_fresh_forward_logprobs(
    embedded_lm: LanguageModel, make_env: Any
) -> None:
    B = 24  # rows enough for compaction (at most 3/4 of them still running, never below 16)
    venv = make_env(B, max_new_tokens=20)
    out, full = (
        collect(
            embedded_lm,
            venv,
            generator=torch.Generator().manual_seed(0),
            seed=0,
            ref=embedded_lm if compact else None,
            value_fn=_head,
            compact=compact,
        )
        for compact in (True, False)
    )
    # compaction changes nothing, bit for bit, with environment tokens in the blocks
    for name in ("completion_ids", "completion_mask", "env_mask", "logprobs", "values"):
        assert torch.equal(getattr(out, name), getattr(full, name)), name
    assert out.env_mask is not None
    assert out.env_mask.sum() > 20
    policy, env = out.completion_mask > 0, out.env_mask > 0
    assert not (policy & env).any()
    # the transcript is the env's: a single env replaying a row's actions writes the same tokens
    single = make_env(max_new_tokens=20)
    for b in range(0, B, 5):
        obs, _ = single.reset(options={"prompt_index": int(out.prompt_indices[b])})
        for a in out.completion_ids[b][policy[b]].tolist():
            obs, _, _, _, info = single.step(a)
        seq = torch.cat(
            [out.prompt_ids[b][out.prompt_mask[b] > 0], out.completion_ids[b][policy[b] | env[b]]]
        )
        assert seq.tolist() == valid(obs).tolist(), b
        p = int(out.prompt_mask[b].sum())
        assert env[b][policy[b] | env[b]].tolist() == info["env_token_mask"][p : len(seq)].tolist()
        assert out.texts[b] == info["text"]
    # recorded behaviour log-probs and values = one fresh forward over the whole transcript
    logp, ent, values = evaluate(embedded_lm, out, value_head=_head)
    torch.testing.assert_close(logp, out.logprobs, atol=2e-5, rtol=0)
    assert out.values is not None
    assert values is not None
    torch.testing.assert_close(values, out.values, atol=2e-5, rtol=1e-5)
    assert out.ref_logprobs is not None
    torch.testing.assert_close(out.ref_logprobs, out.logprobs, atol=2e-5, rtol=0)
    # environment tokens carry nothing: no log-prob, value, entropy, reward, KL
    for x in (out.logprobs, out.ref_logprobs, out.values, ent, out.token_rewards):
        assert (x[env] == 0).all()
    # per-turn rewards (-0.25) sit on the action that ended each answered turn, the rest at the end
    ends = (out.completion_ids == EOS) & policy
    assert torch.allclose(out.token_rewards[ends & (out.token_rewards < 0)], torch.tensor(-0.25))
    assert out.rewards.tolist() == pytest.approx(out.token_rewards.sum(1).tolist())


@pytest.mark.parametrize("path", ["repack every step", "unknown cache: full-batch pass"])
def test_env_token_passes_keep_fresh_forward_logprobs(
    embedded_lm: LanguageModel, make_env: Any, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    import types

    import textgym.collection as collection

    turns = Task.from_list(PROMPTS, stop_sequences=(".", ",", " the"))  # turns end often
    venv = make_env(6, max_new_tokens=24, task=MultiTurnTask.from_task(turns, responder=Echo()))
    base = collect(embedded_lm, venv, generator=torch.Generator().manual_seed(4), seed=4)
    if path.startswith("repack"):
        monkeypatch.setattr(collection, "REPACK_SLACK", 0.0)
        calls = []
        repack = collection.repack_columns
        monkeypatch.setattr(collection, "repack_columns", lambda *a: calls.append(1) or repack(*a))
    else:  # a cache whose layout the loop does not know: no repacking, the whole batch is fed
        fake = types.SimpleNamespace(DynamicCache=object, DynamicLayer=object)
        monkeypatch.setattr(collection, "_hf_cache", fake)
    out = collect(embedded_lm, venv, generator=torch.Generator().manual_seed(4), seed=4)
    assert out.env_mask is not None
    assert (out.env_mask.sum(-1) > 0).sum() >= 3  # several rows got environment tokens
    assert torch.equal(out.completion_ids, base.completion_ids)
    torch.testing.assert_close(out.logprobs, base.logprobs, atol=2e-5, rtol=0)
    torch.testing.assert_close(evaluate(embedded_lm, out)[0], out.logprobs, atol=2e-5, rtol=0)
    if path.startswith("repack"):
        assert calls  # the cache was repacked


def test_env_positions_do_not_enter_losses(embedded_lm: LanguageModel, make_env: Any) -> None:
    out = collect(embedded_lm, make_env(4), generator=torch.Generator().manual_seed(2), seed=2)
    assert out.env_mask is not None
    logits = embedded_lm.forward(out.input_ids, out.attention_mask)  # (B, L, V)
    P = out.prompt_ids.shape[1]
    # logits at the positions that predict environment tokens, scrambled
    predicts_env = torch.zeros(logits.shape[:2], dtype=torch.bool)
    predicts_env[:, P - 1 : -1] = out.env_mask > 0
    scrambled = torch.where(predicts_env[..., None], torch.randn_like(logits) * 50, logits)
    a = evaluate_logits(logits, out)
    b = evaluate_logits(scrambled, out)
    assert torch.equal(a[0], b[0])
    assert a[1] is not None
    assert b[1] is not None
    assert torch.equal(a[1], b[1])


def test_planners_recover_from_any_transcript() -> None:
    assert calculator_plan(Transcript("Q: 12*7+5\n")) == "CALC: 12*7"
    assert calculator_plan(Transcript("Q: 12*7+5\n", ("CALC: 12*7", " = 84\n"))) == "CALC: 84+5"
    assert calculator_plan(Transcript("Q: 12*7+5\n", ("x", " = 89\n"))) == "The answer is 89."
    assert calculator_plan(Transcript("Q: 12*7+5\n", ("CALC: 1+1", " = 2\n"))) == "CALC: 12*7"
    assert calculator_plan(Transcript("Q: 3-2\n", ("CALC: 3-2", " = 1\n"))) == "The answer is 1."
    task = load("calculator", split="train")
    assert len(task) == 1000
    assert len(set(task.prompts)) == 1000
    held = set(load("calculator", split="test").prompts) | set(
        load("calculator", "validation").prompts
    )
    assert not held & set(task.prompts)
    assert load("calculator").prompts == task.prompts  # deterministic
    moved = MultiTurnTask.from_task(task, prompts=task.prompts[:3], references=task.references[:3])
    assert (moved.responder, moved.max_turns, moved.planner) == (task.responder, 4, task.planner)


def test_guess_reward_scores_the_last_number_and_checks_its_batch() -> None:
    from textgym.multiturn import GuessReward

    reward = GuessReward()
    got = reward(["p", "p", "p"], [" 8\n higher\n 12", " 12\n lower\n 9", " no number"],
                 [("12",), ("12",), ("12",)])  # fmt: skip
    np.testing.assert_array_equal(got, [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"reward 'guess' needs references \(the number\)"):
        reward(["p"], [" 12"])
    with pytest.raises(TypeError, match="batched"):
        reward("p", " 12", [("12",)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="guess: 2 prompts, 1 completions"):
        reward(["p", "p"], [" 12"], [("12",)])
