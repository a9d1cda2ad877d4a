"""LanguageModel: attributes, padding rules, KV-cache stepping, log-probs against HF's loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForCausalLM, AutoTokenizer

import textgym
from textgym.lm import LanguageModel

PROMPTS = ["the movie was great", "a dog", "i loved it and the cat runs on the red ball", "bad"]
TOL = 1e-5  # float32 sums of a few dozen terms: rtol and atol both


@pytest.fixture(params=["gpt2", "llama"])
def lm(request: pytest.FixtureRequest) -> LanguageModel:
    """Each test runs on both tiny architectures (learned vs rotary positions)."""
    return request.getfixturevalue(f"tiny_{request.param}_lm")


def _real(ids: torch.Tensor, mask: torch.Tensor, row: int) -> torch.Tensor:
    """Row ``row`` without its padding, as a (1, n) batch."""
    return ids[row][mask[row].bool()].unsqueeze(0)


# ------------------------------------------------------------------ construction


def test_attributes_come_from_model_and_tokenizer(lm: LanguageModel) -> None:
    assert lm.vocab_size == 64  # the LM head's size ...
    assert len(lm.tokenizer) < lm.vocab_size  # ... which exceeds the tokenizer's
    assert lm.eos_token_id == 0
    assert lm.pad_token_id == 1
    assert lm.max_length == 64
    assert lm.device == torch.device("cpu")
    assert not lm.model.training


def test_missing_pad_token_raises_with_fix_and_leaves_tokenizer_alone(tiny_gpt2_dir: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    tokenizer.pad_token = None
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    with pytest.raises(ValueError, match=r"tokenizer\.pad_token = tokenizer\.eos_token"):
        LanguageModel(model, tokenizer)
    assert tokenizer.pad_token is None


def test_from_pretrained_pad_token_sets_it_on_its_own_tokenizer(tiny_gpt2_dir: str) -> None:
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu", pad_token="<unk>")
    assert lm.pad_token_id == lm.tokenizer.convert_tokens_to_ids("<unk>")


def test_tokenizer_larger_than_head_raises(tiny_gpt2_dir: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    tokenizer.add_tokens([f"extra{i}" for i in range(40)])
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    with pytest.raises(ValueError, match="resize_token_embeddings"):
        LanguageModel(model, tokenizer)


def test_from_pretrained_never_trusts_remote_code_unless_asked(
    tiny_gpt2_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    for auto in (AutoModelForCausalLM, AutoTokenizer):
        original = auto.from_pretrained

        def spy(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            seen.append(kwargs.get("trust_remote_code"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", spy)
    LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu", trust_remote_code=True)
    assert seen == [False, False, True, True]


def test_from_pretrained_dtype(tiny_gpt2_dir: str) -> None:
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu", dtype=torch.bfloat16)
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    ids, mask = lm.encode(PROMPTS)
    logits, _ = lm.step(ids, mask)
    assert logits.dtype == torch.float32  # sampling and log-probs always in float32
    assert lm.logprobs(ids, mask).dtype == torch.float32


def test_save_pretrained_round_trip(lm: LanguageModel, tmp_path: Path) -> None:
    lm.save_pretrained(tmp_path)
    again = LanguageModel.from_pretrained(tmp_path, device="cpu")
    ids, mask = lm.encode(PROMPTS)
    assert_close(again.logprobs(ids, mask), lm.logprobs(ids, mask), rtol=0, atol=0)


# ------------------------------------------------------------------ encode / decode


def test_encode_left_pads_and_decode_round_trips(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    lengths = [len(lm.tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert ids.shape == mask.shape == (len(PROMPTS), max(lengths))
    assert mask.sum(-1).tolist() == lengths
    assert (mask[:, -1] == 1).all()  # valid tokens last
    assert ((mask[:, 1:] - mask[:, :-1]) >= 0).all()  # 0...0 1...1
    assert (ids[mask == 0] == lm.pad_token_id).all()
    assert lm.decode(ids) == PROMPTS  # pads are special tokens: skipped


def test_encode_does_not_touch_tokenizer_padding_side(lm: LanguageModel) -> None:
    side = lm.tokenizer.padding_side
    lm.encode(PROMPTS)
    assert lm.tokenizer.padding_side == side


def test_encode_errors(lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match="texts is empty"):
        lm.encode([])
    with pytest.raises(ValueError, match="no tokens"):
        lm.encode(["the", ""])
    long = " ".join(["the"] * 70)
    with pytest.raises(ValueError, match=r"70 tokens, more than max_length=64.*truncation='left'"):
        lm.encode(long)
    with pytest.raises(ValueError, match="truncation must be"):
        lm.encode("the", truncation="right")  # type: ignore[arg-type]  # checking the runtime error


def test_encode_truncation_left_keeps_the_end(lm: LanguageModel) -> None:
    ids, mask = lm.encode(["the movie was great", "a dog"], max_length=2, truncation="left")
    assert ids.shape == (2, 2)
    assert mask.all()
    assert lm.decode(ids) == ["was great", "a dog"]


# ------------------------------------------------------------------ step / forward


def test_step_with_cache_equals_full_forward_on_left_padded_batch(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    logits, cache = lm.step(ids, mask)
    assert logits.shape == (len(PROMPTS), lm.vocab_size)
    seq, seq_mask = ids, mask
    for _ in range(4):
        token = logits.argmax(-1, keepdim=True)  # (B, 1)
        seq = torch.cat([seq, token], dim=1)
        seq_mask = torch.cat([seq_mask, torch.ones_like(token)], dim=1)
        logits, cache = lm.step(token, seq_mask, cache)
    assert cache.get_seq_length() == seq.shape[1]
    with torch.no_grad():
        full = lm.forward(seq, seq_mask)
    assert_close(logits, full[:, -1].float(), rtol=TOL, atol=TOL)


def test_left_padding_does_not_shift_positions(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    with torch.no_grad():
        batched, _ = lm.step(ids, mask)
        for row in range(len(PROMPTS)):
            alone, _ = lm.step(_real(ids, mask, row), torch.ones_like(_real(ids, mask, row)))
            assert_close(batched[row], alone[0], rtol=TOL, atol=TOL)


def test_step_errors(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    with pytest.raises(ValueError, match=r"token id 64 is out of range.*\[0, 63\]"):
        lm.step(torch.full_like(ids, 64), mask)
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        lm.step(torch.full_like(ids, -1), mask)
    _, cache = lm.step(ids, mask)
    with pytest.raises(ValueError, match="attention_mask must cover"):
        lm.step(ids[:, :1], mask, cache)  # mask not grown by the new token
    too_long = torch.full((1, 65), 3)
    with pytest.raises(ValueError, match="context window of 64"):
        lm.step(too_long, torch.ones_like(too_long))


def test_forward_hidden_states_are_the_last_layer(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    with torch.no_grad():
        logits, hidden = lm.forward_with_hidden(ids, mask)
        assert logits.shape == (*ids.shape, lm.vocab_size)
        assert hidden.shape == (*ids.shape, lm.model.config.hidden_size)
        # the LM head applied to the hidden state gives the logits: it is the final-norm output
        assert_close(lm.model.get_output_embeddings()(hidden), logits, rtol=TOL, atol=TOL)


# ------------------------------------------------------------------ log-probs


def test_logprobs_match_hf_loss(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    with torch.no_grad():
        logp = lm.logprobs(ids, mask)
        for row in range(len(PROMPTS)):
            alone = _real(ids, mask, row)
            if alone.shape[1] < 2:
                continue
            loss = lm.model(alone, labels=alone).loss
            n = alone.shape[1] - 1
            assert_close(-logp[row].sum() / n, loss, rtol=TOL, atol=TOL)


def test_logprobs_zero_at_start_and_padding(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    logp = lm.logprobs(ids, mask)
    assert logp.shape == ids.shape
    assert (logp[:, 0] == 0).all()
    assert (logp[mask == 0] == 0).all()
    first = (mask.cumsum(-1) == 1) & (mask == 1)  # first real token of each row: no context
    assert (logp[first] == 0).all()
    predicted = (mask == 1) & ~first
    assert (logp[predicted] < 0).all()


def test_logprobs_right_padding_equals_left_padding(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    n = mask.sum(-1)
    right_ids = torch.full_like(ids, lm.pad_token_id)
    right_mask = torch.zeros_like(mask)
    for row in range(len(PROMPTS)):
        right_ids[row, : n[row]] = _real(ids, mask, row)[0]
        right_mask[row, : n[row]] = 1
    with torch.no_grad():
        left = lm.logprobs(ids, mask).sum(-1)
        right = lm.logprobs(right_ids, right_mask).sum(-1)
    assert_close(left, right, rtol=TOL, atol=TOL)


def test_logprobs_backward_is_finite_with_padding(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    lm.model.zero_grad()
    lm.logprobs(ids, mask).sum().backward()
    grads = [p.grad for p in lm.model.parameters() if p.grad is not None]
    assert grads
    assert all(torch.isfinite(g).all() for g in grads)
    lm.model.zero_grad(set_to_none=True)


def test_sequence_logprob_sums_completion_tokens_only(lm: LanguageModel) -> None:
    prompt_ids, prompt_mask = lm.encode(["the movie was", "a dog", "i loved it"])
    completion = [["great", "!"], ["runs", "in", "the", "park"], ["."]]
    width = max(len(c) for c in completion)
    vocab = lm.tokenizer.get_vocab()
    completion_ids = torch.full((3, width), lm.pad_token_id)
    completion_mask = torch.zeros((3, width), dtype=torch.long)
    for row, words in enumerate(completion):
        completion_ids[row, : len(words)] = torch.tensor([vocab[w] for w in words])
        completion_mask[row, : len(words)] = 1
    with torch.no_grad():
        got = lm.sequence_logprob(prompt_ids, prompt_mask, completion_ids, completion_mask)
        for row in range(3):
            full = torch.cat(
                [
                    _real(prompt_ids, prompt_mask, row)[0],
                    completion_ids[row][completion_mask[row].bool()],
                ]
            )
            logits = lm.model(full.unsqueeze(0)).logits[0].float()  # (L, V)
            logp = torch.log_softmax(logits[:-1], -1).gather(-1, full[1:, None]).squeeze(-1)
            expected = logp[-int(completion_mask[row].sum()) :].sum()
            assert_close(got[row], expected, rtol=TOL, atol=TOL)


def test_sequence_logprob_shape_errors(lm: LanguageModel) -> None:
    ids, mask = lm.encode(PROMPTS)
    with pytest.raises(ValueError, match="ids and masks must match"):
        lm.sequence_logprob(ids, mask, ids, mask[:, :2])
    with pytest.raises(ValueError, match="batch"):
        lm.sequence_logprob(ids, mask, ids[:2], mask[:2])


# ------------------------------------------------------------------ the embedded model


def test_embedded_model_wraps(embedded_lm: LanguageModel) -> None:
    lm = embedded_lm
    assert lm.eos_token_id == 0
    assert lm.pad_token_id == 1
    assert lm.vocab_size >= len(lm.tokenizer)
    assert lm.max_length is not None
    ids, mask = lm.encode(["The movie was", "A"])
    with torch.no_grad():
        logp = lm.logprobs(ids, mask)
        alone = _real(ids, mask, 0)
        loss = lm.model(alone, labels=alone).loss
    assert_close(-logp[0].sum() / (alone.shape[1] - 1), loss, rtol=TOL, atol=TOL)


def test_default_model_path_is_textgym_default() -> None:
    import inspect

    default = inspect.signature(LanguageModel.from_pretrained).parameters["name_or_path"].default
    assert default == textgym.DEFAULT_MODEL


def test_peft_wrapped_model_keeps_positions_and_cache(tiny_gpt2_dir: str) -> None:
    """peft's forward(**kwargs) hides the base model's arguments; they must still get through."""
    peft = pytest.importorskip("peft")
    base = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    config = peft.LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True)
    wrapped = LanguageModel(peft.get_peft_model(model, config), base.tokenizer)
    assert wrapped._cache_arg == "cache"
    assert wrapped._takes_position_ids
    ids, mask = base.encode(PROMPTS)
    with torch.no_grad():
        # LoRA starts as the identity: same logits, with left padding and through the cache
        expected, _ = base.step(ids, mask)
        got, cache = wrapped.step(ids, mask)
        assert_close(got, expected, rtol=TOL, atol=TOL)
        assert cache.get_seq_length() == ids.shape[1]


@pytest.mark.parametrize("fixture", ["tiny_gpt2_lm", "tiny_llama_lm"])
def test_step_with_hidden_equals_step_and_forward(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    lm: LanguageModel = request.getfixturevalue(fixture)
    ids, mask = lm.encode(["the movie was great", "a dog"])  # left-padded (2, P)
    logits, cache = lm.step(ids, mask)
    logits_h, hidden, cache_h = lm.step_with_hidden(ids, mask)
    assert_close(logits_h, logits, rtol=0, atol=0)
    _, full_hidden = lm.forward_with_hidden(ids, mask)
    assert_close(hidden, full_hidden[:, -1], rtol=1e-5, atol=1e-6)
    new = logits.argmax(-1, keepdim=True)  # (B, 1)
    mask = torch.cat([mask, torch.ones_like(new)], dim=1)
    assert_close(lm.step_with_hidden(new, mask, cache_h)[0], lm.step(new, mask, cache)[0])
