"""Behaviour cloning: the loss vs a direct cross-entropy, data, early stopping, resume, learning."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
import torch.nn.functional as F
from textgym.agents import BC, BCConfig, Demonstrations
from textgym.agents.bc import bc_loss, state_logits
from torch.testing import assert_close
from toy import reverse_exact_match

import textgym
from textgym import LanguageModel
from textgym.tasks import load

PAIRS = [
    ("red blue green", " green blue red"),
    ("one two", " two one"),
    ("the dog runs in the park", " park the in runs dog the"),
    ("four five six seven", " seven six five four"),
]


@pytest.fixture
def lm(tiny_gpt2_dir: str) -> LanguageModel:
    return LanguageModel.from_pretrained(tiny_gpt2_dir, device="cpu")


def test_bc_loss_is_cross_entropy_over_the_masked_entries() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    labels = torch.randint(0, 11, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).float()
    keep = mask.bool()
    assert_close(bc_loss(logits, labels, mask), F.cross_entropy(logits[keep], labels[keep]))


def test_bc_loss_equals_token_cross_entropy_of_each_completion(lm: LanguageModel) -> None:
    # The padded batch must score every completion token (EOS included) exactly as one unpadded
    # forward pass per pair does, and never a prompt token.
    demos = Demonstrations.from_pairs(lm, PAIRS)
    with torch.no_grad():
        loss = bc_loss(state_logits(lm, demos), demos.labels, demos.mask)
    nll, count = 0.0, 0
    for prompt, completion in PAIRS:
        p = lm.tokenizer(prompt)["input_ids"]
        c = [*lm.tokenizer(completion, add_special_tokens=False)["input_ids"], lm.eos_token_id]
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[0]  # (L, V)
        span = logits[len(p) - 1 : len(p) + len(c) - 1]  # the positions that predict c
        nll += float(F.cross_entropy(span, torch.tensor(c), reduction="sum"))
        count += len(c)
    assert_close(loss, torch.tensor(nll / count), atol=1e-5, rtol=1e-5)


def test_demonstrations_labels_and_budget(lm: LanguageModel) -> None:
    demos = Demonstrations.from_pairs(lm, PAIRS)
    lengths = [len(c.split()) + 1 for _, c in PAIRS]  # word-level tokenizer, plus EOS
    assert demos.mask.sum(-1).tolist() == lengths
    assert demos.n_labels == sum(lengths)
    assert torch.equal(demos.labels, demos.completion_ids)
    last = demos.labels[torch.arange(len(PAIRS)), torch.tensor(lengths) - 1]
    assert (last == lm.eos_token_id).all()
    cut = demos.within_budget(6)  # 4 labels of the first row, then 2 of the second
    assert cut.n_labels == 6
    assert len(cut) == 2
    assert cut.mask.sum(-1).tolist() == [4, 2]
    both = Demonstrations.cat([demos, cut], lm.pad_token_id)
    assert both.n_labels == demos.n_labels + 6
    assert len(both) == len(PAIRS) + 2


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="lr"):
        BCConfig(lr=0)
    with pytest.raises(ValueError, match="patience"):
        BCConfig(patience=0)
    with pytest.raises(ValueError, match="val_fraction"):
        BCConfig(val_fraction=1.0)


def test_early_stopping_restores_the_best_weights(lm: LanguageModel) -> None:
    # Validation demands the opposite completions: its loss rises as training fits the data.
    val = [(p, " " + " ".join(reversed(c.split()))) for p, c in PAIRS]
    cfg = BCConfig(lr=1e-2, batch_size=4, eval_every=2, patience=2, restore_best=True)
    bc = BC(lm, PAIRS, cfg, val_data=val, progress_bar=False)
    rows = bc.learn(200)
    assert bc.stopped
    assert bc.step < 200
    assert len(rows) >= 3
    assert rows[0]["step"] == 0
    assert bc.loss(bc.val_data) == pytest.approx(bc.best, rel=1e-5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- learning


def exact_match(lm: LanguageModel) -> float:
    return reverse_exact_match(lm, 150)


@pytest.mark.slow
def test_bc_learns_the_reverse_task() -> None:
    torch.set_num_threads(1)  # 2 threads beside another busy process run 3-6x slower
    gym.register_envs(textgym)
    lm = LanguageModel.from_pretrained(device="cpu")
    before = exact_match(lm)
    train = load("reverse", split="train").demonstrations()[:1000]
    val = load("reverse", split="validation").demonstrations()[:100]
    bc = BC(lm, train, BCConfig(lr=1e-3, batch_size=32), val_data=val, progress_bar=False)
    bc.learn(600)
    bc.restore_best()
    after = exact_match(lm)
    assert after > before + 0.15, (before, after)
