"""Packed (padding-free) log-probs equal the padded ones: values, gradients, and a DPO step."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from textgym.agents.dpo import DPO, DPOConfig
from torch.testing import assert_close
from toy import PAIRS as TOY_PAIRS
from transformers import GPT2LMHeadModel

from textgym import LanguageModel
from textgym.packing import check_isolation, pack, pack_rows, packed_logprobs

LENGTHS = [1, 17, 3, 30, 2, 9]  # very different lengths, a length-1 row among them


def padded_batch(lm: LanguageModel, lengths: list[int] = LENGTHS) -> tuple[torch.Tensor, ...]:
    """Rows of random tokens; even rows right-padded, odd rows left-padded."""
    g = torch.Generator().manual_seed(0)
    width = max(lengths)
    ids = torch.full((len(lengths), width), lm.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        cols = slice(0, n) if i % 2 == 0 else slice(width - n, width)
        ids[i, cols] = torch.randint(3, len(lm.tokenizer), (n,), generator=g)
        mask[i, cols] = 1
    return ids, mask


def test_pack_layout_restarts_positions_and_keeps_order() -> None:
    ids = torch.tensor([[5, 6, 7, 0], [0, 0, 8, 9], [4, 0, 0, 0]])
    mask = (ids != 0).long()
    one = pack(ids, mask, rows=1)
    assert one.input_ids.tolist() == [[5, 6, 7, 8, 9, 4]]
    assert one.position_ids.tolist() == [[0, 1, 2, 0, 1, 0]]
    two = pack(ids, mask, rows=2, filler=3)  # longest first onto the emptiest row
    assert two.input_ids.tolist() == [[5, 6, 7], [8, 9, 4]]
    assert two.position_ids.tolist() == [[0, 1, 2], [0, 1, 0]]
    three = pack(
        ids, mask, rows=3, filler=3
    )  # the short rows end with filler, a sequence of its own
    assert three.input_ids.tolist() == [[5, 6, 7], [8, 9, 3], [4, 3, 3]]
    assert three.position_ids.tolist() == [[0, 1, 2], [0, 1, 0], [0, 0, 1]]
    # src/dst map each real token between the layouts
    assert_close(three.input_ids.flatten()[three.dst], ids.flatten()[three.src])


def test_pack_refuses_a_mask_with_a_gap() -> None:
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="row 1 of attention_mask has a gap"):
        pack(ids, torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]]))


def test_pack_rows_cost_model() -> None:
    assert pack_rows([64] * 16, hidden=384) == 16  # equal lengths: the padded layout itself
    assert pack_rows([64, 60, 4, 2], hidden=384) == 2  # short rows share the long rows' rows
    assert pack_rows([5, 3, 1], hidden=384) == 1  # tiny rows: one row costs least


@pytest.mark.parametrize("name", ["embedded_lm", "tiny_gpt2_lm", "tiny_llama_lm"])
@pytest.mark.parametrize(("rows", "chunk"), [(1, None), (None, None), (3, 4)])
def test_packed_logprobs_and_grads_equal_padded(
    name: str, rows: int | None, chunk: int | None, request: pytest.FixtureRequest
) -> None:
    shared: LanguageModel = request.getfixturevalue(name)
    # A copy: agents tested earlier may have frozen the shared fixture (as a teacher or π_ref).
    lm = shared.wrap(copy.deepcopy(shared.model).requires_grad_(True))
    ids, mask = padded_batch(lm)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    weights = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1))  # every token

    def run(packed: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        lm.model.zero_grad(set_to_none=True)
        logp = packed_logprobs(lm, ids, mask, rows=rows) if packed else lm.logprobs(ids, mask)
        (logp * weights).sum().backward()
        return logp.detach(), [torch.zeros_like(p) if p.grad is None else p.grad for p in params]

    lm.logprob_chunk = chunk
    try:
        padded, grads_padded = run(packed=False)
        packed, grads_packed = run(packed=True)
    finally:
        lm.logprob_chunk = None
        lm.model.zero_grad(set_to_none=True)  # a shared fixture: leave no gradients behind
    assert_close(packed, padded, rtol=1e-5, atol=1e-5)
    assert (packed[0] == 0).all()  # the length-1 row predicts nothing
    for a, b in zip(grads_packed, grads_padded, strict=True):
        assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_score_mask_runs_the_head_on_the_scored_positions_only(tiny_gpt2_lm: LanguageModel) -> None:
    ids, mask = padded_batch(tiny_gpt2_lm)
    score = torch.rand(ids.shape, generator=torch.Generator().manual_seed(2)) > 0.5
    with torch.no_grad():
        padded = tiny_gpt2_lm.logprobs(ids, mask)
        packed = packed_logprobs(tiny_gpt2_lm, ids, mask, score)
    assert_close(packed, torch.where(score, padded, 0.0), rtol=1e-5, atol=1e-5)


class _Leaky(GPT2LMHeadModel):
    """A GPT-2 whose forward attends across packed sequences (it passes a mask of ones)."""

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None, **kwargs: Any
    ) -> Any:
        kwargs["attention_mask"] = torch.ones_like(input_ids)
        return super().forward(input_ids=input_ids, position_ids=position_ids, **kwargs)


def test_a_model_that_attends_across_sequences_is_refused(tiny_gpt2_dir: str) -> None:
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    leaky = lm.wrap(_Leaky(lm.model.config).eval())
    leaky.model.load_state_dict(lm.model.state_dict())
    with pytest.raises(ValueError, match=r"does not keep packed sequences apart.*packing=False"):
        check_isolation(leaky)
    check_isolation(lm)  # the plain GPT-2 passes


def test_a_scaled_head_is_refused(tiny_gpt2_dir: str) -> None:
    lm = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
    head = lm.model.get_output_embeddings()
    ids, mask = padded_batch(lm)
    hook = head.register_forward_hook(lambda module, args, out: out * 2.0)
    try:
        with pytest.raises(ValueError, match=r"not lm_head\(last hidden state\).*packing=False"):
            packed_logprobs(lm, ids, mask)
    finally:
        hook.remove()


PAIRS = TOY_PAIRS[:6]


def test_dpo_with_packing_trains_like_padded(tiny_gpt2_dir: str) -> None:
    def train(packing: bool) -> tuple[DPO, list[dict[str, float]]]:
        policy = LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")
        torch.manual_seed(1)  # a reference different from the policy: the margin is not 0
        ref = policy.wrap(GPT2LMHeadModel(policy.model.config).eval())
        cfg = DPOConfig(batch_size=4, lr=1e-2, packing=packing)
        agent = DPO(policy, ref, PAIRS, PAIRS[:3], cfg, device="cpu", progress_bar=False)
        return agent, agent.learn(3)

    packed, rows_packed = train(packing=True)
    padded, rows_padded = train(packing=False)
    assert_close(packed.ref_logps, padded.ref_logps, rtol=1e-5, atol=1e-5)
    for a, b in zip(rows_packed, rows_padded, strict=True):
        for key in ("loss", "margin", "logp_chosen", "logp_rejected", "grad_norm"):
            assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    assert_close(packed.evaluate()["loss"], padded.evaluate()["loss"], rtol=1e-4, atol=1e-5)
