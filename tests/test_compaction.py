"""Compaction: rows that ended leave the LM batch, and nothing the loops return changes a bit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from textgym import LanguageModel
from textgym.decoding import generate, greedy, sample
from textgym.kv_cache import MIN_ROWS, DecodeRows, select_rows
from textgym.rollout import Rollout, Sampling, collect
from textgym.tasks import Task
from textgym.training import ValueHead

B = 48  # > MIN_ROWS: compacted 48 -> 36 -> 27 -> 20 -> 16 as rows end
PROMPTS = [
    "the movie was",
    "i loved the",
    "a dog runs in the park",
    "the plot",
    "one two three four five",
    "it is not",
    "the red ball and the blue",
    "cat",
]


@contextmanager
def lm_rows(lm: LanguageModel) -> Iterator[list[int]]:
    """The batch size of every forward pass of ``lm`` while inside (the prompt pass first)."""
    seen: list[int] = []
    forward = lm.model.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(int(kwargs["input_ids"].shape[0]))
        return forward(*args, **kwargs)

    lm.model.forward = counting
    try:
        yield seen
    finally:
        del lm.model.forward  # the class's forward again


def assert_same_rollout(a: Rollout, b: Rollout) -> None:
    for name in (
        "completion_ids",
        "completion_mask",
        "logprobs",
        "rewards",
        "token_rewards",
        "terminated",
        "truncated",
        "prompt_ids",
        "prompt_mask",
        "ref_logprobs",
        "values",
        "bootstrap_values",
        "action_masks",
    ):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        assert x is None or torch.equal(x, y), name
    assert a.texts == b.texts
    assert a.prompts == b.prompts


def assert_compacted(compact: list[int], full: list[int]) -> None:
    """The compacted loop ran the same steps on fewer rows, never fewer than MIN_ROWS."""
    assert len(compact) == len(full)
    assert set(full) == {B}
    assert sum(compact) < sum(full)
    assert MIN_ROWS <= min(compact) < B


# ---------------------------------------------------------------------------- collect


@pytest.fixture(scope="module")
def eos_lm(tiny_gpt2_dir: str) -> LanguageModel:
    """The tiny GPT-2 with the final norm's bias pushed toward EOS: p(EOS) of about 0.1-0.3 that
    differs from state to state, so episodes end at EOS at many different steps."""
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    with torch.no_grad():
        head = lm.model.lm_head.weight[lm.eos_token_id]
        lm.model.transformer.ln_f.bias.add_(head / head.norm() ** 2 * 3.0)
    return lm


def make_env(lm: LanguageModel, action_mask: list[int] | None = None) -> gym.vector.VectorEnv:
    return gym.make_vec(
        "TextGen-v0",
        num_envs=B,
        model=lm,
        task=Task.from_list(PROMPTS),
        reward=lambda prompt, completion: float(len(completion.split())),
        max_new_tokens=12,
        action_mask=action_mask,
    )


@pytest.mark.parametrize("case", ["plain", "value_and_ref", "top_k_top_p", "env_mask"])
def test_collect_compacted_equals_uncompacted(eos_lm: LanguageModel, case: str) -> None:
    torch.manual_seed(0)
    head = ValueHead(eos_lm.model.config.n_embd)
    torch.nn.init.normal_(head.proj.weight)  # a real (nonzero) linear head
    kwargs: dict[str, Any] = {
        "plain": {},
        "value_and_ref": {"value_fn": head, "ref": eos_lm},
        "top_k_top_p": {"sampling": Sampling(temperature=0.8, top_k=20, top_p=0.9)},
        "env_mask": {"value_fn": head},
    }[case]
    env = make_env(eos_lm, list(range(40)) if case == "env_mask" else None)
    runs = {}
    for compact in (True, False):
        with lm_rows(eos_lm) as rows:
            out = collect(
                eos_lm,
                env,
                generator=torch.Generator().manual_seed(7),
                seed=3,
                compact=compact,
                **kwargs,
            )
        runs[compact] = out, rows
    (a, rows_a), (b, rows_b) = runs[True], runs[False]
    # Episodes really end at EOS at different steps (else there is nothing to compact).
    lengths = a.lengths[a.terminated]
    assert a.terminated.sum() > B // 2
    assert len(set(lengths.tolist())) >= 5
    assert_same_rollout(a, b)
    assert_compacted(rows_a, rows_b)
    if "value_fn" in kwargs:  # V(s_T) too, from the extra pass after a row's last action
        with torch.no_grad():
            _, hidden = eos_lm.forward_with_hidden(a.input_ids, a.attention_mask)
        last = (a.prompt_ids.shape[1] - 1 + a.lengths)[:, None]  # (B, 1) s_T's position
        expected = head(hidden).gather(1, last).squeeze(1)  # (B,)
        assert_close(a.bootstrap_values, expected, rtol=1e-4, atol=1e-4)


def test_collect_without_compaction_feeds_every_row_to_the_end(eos_lm: LanguageModel) -> None:
    env = make_env(eos_lm)
    with lm_rows(eos_lm) as rows:
        out = collect(eos_lm, env, generator=torch.Generator().manual_seed(7), compact=False)
    assert rows == [B] * out.completion_ids.shape[1]  # the prompt pass, then T - 1 steps
    with pytest.raises(ValueError, match="compact"):
        collect(eos_lm, env, generator=torch.Generator(), compact=1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- generate


def random_prompts(lm: LanguageModel) -> tuple[Tensor, Tensor]:
    """``B`` left-padded prompts of 2..8 random word ids."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 40, (B, 8), generator=g)  # (B, P) real words of the tiny vocabulary
    lengths = torch.randint(2, 9, (B,), generator=g)  # (B,)
    mask = (torch.arange(8)[None, :] >= 8 - lengths[:, None]).long()  # (B, P) left-padded
    return ids.masked_fill(mask == 0, lm.pad_token_id), mask


@pytest.mark.parametrize("model", ["gpt2", "llama"])
@pytest.mark.parametrize("case", ["sample", "greedy", "filters"])
def test_generate_compacted_equals_uncompacted(
    request: pytest.FixtureRequest, model: str, case: str
) -> None:
    lm: LanguageModel = request.getfixturevalue(f"tiny_{model}_lm")
    ids, mask = random_prompts(lm)
    eos = list(range(3, 40, 4))  # ten frequent word ids end a row: lengths spread out
    kwargs: dict[str, Any] = {
        "sample": {"do_sample": True},
        "greedy": {"do_sample": False},
        "filters": {
            "do_sample": True,
            "temperature": 0.7,
            "top_k": 30,
            "top_p": 0.9,
            "mask": torch.rand(B, lm.vocab_size, generator=torch.Generator().manual_seed(1)) > 0.2,
            "min_new_tokens": 2,
        },
    }[case]
    runs = {}
    for compact in (True, False):
        with lm_rows(lm) as rows:
            out = generate(
                lm,
                ids,
                attention_mask=mask,
                max_new_tokens=24,
                generator=torch.Generator().manual_seed(5),
                eos_token_id=eos,
                compact=compact,
                **kwargs,
            )
        runs[compact] = out, rows
    (a, rows_a), (b, rows_b) = runs[True], runs[False]
    assert len(set(a.completion_mask.sum(1)[a.terminated].tolist())) >= 5
    for name in ("sequences", "attention_mask", "completion_ids", "completion_mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.logprobs, b.logprobs)
    assert torch.equal(a.terminated, b.terminated)
    assert a.texts == b.texts
    assert_compacted(rows_a, rows_b)


def test_compacted_greedy_equals_hf_generate(tiny_llama_lm: LanguageModel) -> None:
    lm = tiny_llama_lm
    ids, mask = random_prompts(lm)
    eos = list(range(3, 40, 4))
    with lm_rows(lm) as rows:
        out = greedy(lm, ids, attention_mask=mask, max_new_tokens=16, eos_token_id=eos)
    assert MIN_ROWS <= min(rows) < B  # compacted
    with torch.no_grad():
        hf = lm.model.generate(
            ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=16,
            eos_token_id=eos,
            pad_token_id=lm.pad_token_id,
        )
    # generate pads a finished row with the pad id, as ours does; it stops at the same step
    assert torch.equal(out.sequences, hf)


def test_batches_of_at_most_min_rows_are_never_compacted(tiny_gpt2_lm: LanguageModel) -> None:
    ids, mask = random_prompts(tiny_gpt2_lm)
    with lm_rows(tiny_gpt2_lm) as rows:
        generate(
            tiny_gpt2_lm,
            ids[:MIN_ROWS],
            attention_mask=mask[:MIN_ROWS],
            max_new_tokens=24,
            do_sample=True,
            generator=torch.Generator().manual_seed(5),
            eos_token_id=list(range(3, 40, 4)),
        )
    assert set(rows) == {MIN_ROWS}
    with pytest.raises(ValueError, match="compact"):
        generate(tiny_gpt2_lm, "a dog", max_new_tokens=2, compact="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the pieces


def test_sample_of_some_rows_draws_what_the_full_batch_draws() -> None:
    logits = torch.randn(20, 50, generator=torch.Generator().manual_seed(0))
    rows = torch.tensor([1, 4, 5, 13, 19])
    g_full, g_part = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(5):
        full = sample(logits, generator=g_full)
        part = sample(logits[rows], generator=g_part, rows=rows, batch_size=20)
        assert torch.equal(part, full[rows])
    assert torch.equal(g_full.get_state(), g_part.get_state())
    with pytest.raises(ValueError, match="together"):
        sample(logits, rows=rows)
    with pytest.raises(ValueError, match="rows"):
        sample(logits[rows], rows=rows[:2], batch_size=20)


def test_select_rows_of_caches(tiny_gpt2_lm: LanguageModel) -> None:
    ids, mask = tiny_gpt2_lm.encode(PROMPTS)
    with torch.no_grad():
        _, cache = tiny_gpt2_lm.step(ids, mask)
        keys = cache.layers[0].keys.clone()  # (B, heads, P, D)
        index = torch.tensor([0, 2, 5])
        assert select_rows(cache, index) is cache
        assert torch.equal(cache.layers[0].keys, keys[index])
    legacy = tuple((torch.randn(4, 2, 3, 5), torch.randn(4, 2, 3, 5)) for _ in range(2))
    cut = select_rows(legacy, torch.tensor([3, 1]))
    assert cut is not None
    assert torch.equal(cut[1][0], legacy[1][0][[3, 1]])
    assert select_rows(object(), index) is None  # unknown: left alone
    assert select_rows(((torch.randn(4, 2),),), index) is None  # not (B, heads, S, D)


def test_a_cache_that_cannot_be_cut_turns_compaction_off() -> None:
    rows = DecodeRows(40, enabled=True)
    assert rows.pays(30)
    assert not rows.pays(31)
    needed = torch.arange(40) < 5
    local, cache = rows.compact(needed, "opaque")
    assert local is None
    assert cache == "opaque"
    assert not rows.enabled
    assert rows.size == 40
    ok = DecodeRows(40, enabled=True)
    legacy = ((torch.randn(40, 1, 2, 3), torch.randn(40, 1, 2, 3)),)
    local, _ = ok.compact(needed, legacy)
    assert local is not None
    assert ok.size == MIN_ROWS  # the 5 needed rows, filled up with finished ones
    assert ok.rows is not None
    assert needed[ok.rows].sum() == 5
    assert torch.equal(ok.scatter(torch.ones(MIN_ROWS), 0.0)[needed], torch.ones(5))
