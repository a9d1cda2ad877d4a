"""Feedback losses by hand: Plackett-Luce (and its K = 2 Bradley-Terry case), listwise DPO (and
its K = 2 DPO case), regression and ordinal ratings, thumbs, KTO (and TRL's KTO loss)."""

from __future__ import annotations

import math
import types
import warnings

import pytest
import torch
from textgym.agents.dpo import dpo_loss
from textgym.agents.feedback_losses import (
    kto_loss,
    kto_reference_point,
    listwise_dpo_loss,
    ordinal_loss,
    plackett_luce_loss,
    rating_targets,
    regression_loss,
    thumbs_loss,
)
from textgym.agents.reward_modeling import bradley_terry_loss
from torch.testing import assert_close


def pl_by_hand(scores: list[float]) -> float:
    """-log Π_k exp(s_k) / Σ_{j>=k} exp(s_j) for one list, best first."""
    return -sum(s - math.log(sum(math.exp(t) for t in scores[k:])) for k, s in enumerate(scores))


def test_plackett_luce_equals_a_hand_computation_with_padding() -> None:
    scores = torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.1, 1.2, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    want = (pl_by_hand([2.0, 0.5, -1.0, 0.3]) + pl_by_hand([0.1, 1.2])) / 2
    scores.requires_grad_(True)
    loss = plackett_luce_loss(scores, mask)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    loss.backward()
    assert torch.isfinite(scores.grad).all()  # type: ignore[arg-type]
    assert scores.grad[1, 2:].eq(0).all()  # type: ignore[index]  # padding gets no gradient


def test_plackett_luce_with_two_items_is_bradley_terry() -> None:
    g = torch.Generator().manual_seed(0)
    r_w, r_l = torch.randn(16, generator=g), torch.randn(16, generator=g)
    assert_close(plackett_luce_loss(torch.stack([r_w, r_l], 1)), bradley_terry_loss(r_w, r_l))


def test_listwise_dpo_with_two_completions_is_dpo() -> None:
    g = torch.Generator().manual_seed(1)
    tw, tl, rw, rl = (torch.randn(8, generator=g) for _ in range(4))
    h = torch.stack([tw - rw, tl - rl], 1)
    assert_close(listwise_dpo_loss(h, beta=0.1), dpo_loss(tw, tl, rw, rl, beta=0.1))


def test_plackett_luce_errors() -> None:
    with pytest.raises(ValueError, match="K >= 2"):
        plackett_luce_loss(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="at least two items"):
        plackett_luce_loss(torch.zeros(1, 3), torch.tensor([[1, 0, 0]]))


def test_rating_losses_by_hand() -> None:
    targets = rating_targets(torch.tensor([1.0, 3.0, 5.0]), 1, 5)
    assert targets.tolist() == [-1.0, 0.0, 1.0]
    scores = torch.tensor([0.5, 0.0, 0.0])
    assert regression_loss(scores, targets).item() == pytest.approx((1.5**2 + 0 + 1) / 3)
    with pytest.raises(ValueError, match=r"outside their scale \[1, 5\]"):
        rating_targets(torch.tensor([6.0]), 1, 5)
    theta = torch.tensor([-1.0, 0.0, 1.0])  # 4 classes
    r = torch.tensor([0.2, -0.3, 2.0])
    c = torch.tensor([0, 2, 3])

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    want = (
        -(
            math.log(sig(-1 - 0.2))
            + math.log(sig(1 + 0.3) - sig(0 + 0.3))
            + math.log(1 - sig(1 - 2))
        )
        / 3
    )
    assert ordinal_loss(r, c, theta).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match=r"classes must lie in 0..3"):
        ordinal_loss(r, torch.tensor([0, 4, 1]), theta)


def test_thumbs_loss_by_hand() -> None:
    r, up = torch.tensor([1.0, -2.0]), torch.tensor([1, 0])
    want = -(math.log(1 / (1 + math.exp(-1.0))) + math.log(1 / (1 + math.exp(-2.0)))) / 2
    assert thumbs_loss(r, up).item() == pytest.approx(want, rel=1e-6)


def kto_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(2)
    policy = -torch.rand(6, generator=g) * 10
    ref = policy + 0.5 * torch.randn(6, generator=g)
    kl_policy = -torch.rand(6, generator=g) * 10
    kl_ref = kl_policy - 0.4 * torch.rand(6, generator=g)  # mean log ratio > 0
    labels = torch.tensor([True, False, True, True, False, False])
    return policy, ref, kl_policy, kl_ref, labels


@pytest.mark.parametrize(("w_d", "w_u"), [(1.0, 1.0), (1.0, 1.33)])
def test_kto_loss_by_hand(w_d: float, w_u: float) -> None:
    policy, ref, kl_policy, kl_ref, labels = kto_inputs()
    z0 = kto_reference_point(kl_policy - kl_ref)
    assert z0.item() == pytest.approx(max(0.0, float((kl_policy - kl_ref).mean())))
    h = (policy - ref).tolist()

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    want = sum(
        w_d * (1 - sig(0.1 * (x - z0.item()))) if d else w_u * (1 - sig(0.1 * (z0.item() - x)))
        for x, d in zip(h, labels.tolist(), strict=True)
    ) / len(h)
    got = kto_loss(policy - ref, labels, z0, beta=0.1, desirable_weight=w_d, undesirable_weight=w_u)
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert kto_reference_point(torch.tensor([-1.0, -2.0])).item() == 0.0  # clamped at 0


@pytest.mark.parametrize(("w_d", "w_u"), [(1.0, 1.0), (1.0, 1.33)])
def test_kto_loss_equals_trl(w_d: float, w_u: float) -> None:
    pytest.importorskip("trl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl import KTOTrainer
    policy, ref, kl_policy, kl_ref, labels = kto_inputs()
    n, t = len(policy), 3
    # TRL sums its per-token log-probs: put each sequence's log-prob on one token.
    per_token = torch.zeros(n, t)
    per_token[:, 0] = policy
    outputs = types.SimpleNamespace(
        log_probs=per_token, entropy=torch.zeros(n, t), mean_logits=torch.zeros(n, t)
    )
    accelerator = types.SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x)

    class Lists(dict):  # type: ignore[type-arg]
        def __missing__(self, key: str) -> list[float]:
            self[key] = []
            return self[key]

    fake = types.SimpleNamespace(
        model=types.SimpleNamespace(training=True), accelerator=accelerator,
        _compute_kl_logps=lambda model, batch: kl_policy, aux_loss_enabled=False,
        precompute_ref_logps=True, calculate_KL=True, loss_type="kto", beta=0.1,
        desirable_weight=w_d, undesirable_weight=w_u, _metrics={"train": Lists(), "eval": Lists()},
        _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    batch = {
        "input_ids": torch.zeros(n, t + 1, dtype=torch.long),
        "attention_mask": torch.ones(n, t + 1, dtype=torch.long),
        "completion_mask": torch.ones(n, t + 1, dtype=torch.long),
        "label": labels,
        "ref_logps": ref,
        "ref_KL_logps": kl_ref,
    }
    want = KTOTrainer._compute_loss(fake, lambda **kw: outputs, batch, return_outputs=False)
    z0 = kto_reference_point(kl_policy - kl_ref)
    got = kto_loss(policy - ref, labels, z0, beta=0.1, desirable_weight=w_d, undesirable_weight=w_u)
    assert_close(got, want, rtol=1e-5, atol=1e-6)
