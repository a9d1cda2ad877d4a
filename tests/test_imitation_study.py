"""The imitation study's pure pieces: closed-loop metrics on hand-made trajectories, the summary
JSON schema, DART's noisy rollouts, the one-hot teacher, checkpoint choice, IRL features."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from textgym.agents.bc import bc_loss
from textgym.agents.distill import distill_loss

import textgym
from textgym import imitation_study as study
from textgym.dynamic_tasks import HORIZON, parse
from textgym.tasks import load

gym.register_envs(textgym)


def hand_made() -> study.Trajectories:
    """Three episodes (labels 7 everywhere; -1 past the end):
    a: 7 7 7        all clean and right            horizon 3
    b: 7 5 7 7      one mistake at t=1, then right  horizon 6
    c: 5 5 7        mistake at t=0 and t=1          horizon 10
    """
    actions = np.array([[7, 7, 7, -1], [7, 5, 7, 7], [5, 5, 7, -1]])
    labels = np.where(actions >= 0, 7, -1)
    return study.Trajectories(
        actions=actions,
        labels=labels,
        success=np.array([1.0, 1.0, 0.0]),
        horizon=np.array([3, 6, 10]),
    )


def test_mistake_masks_split_states_at_the_first_mistake() -> None:
    t = hand_made()
    wrong, clean, after = study.mistake_masks(t.actions, t.labels)
    assert wrong.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]]
    assert clean.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]]
    assert after.tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0]]
    with pytest.raises(ValueError, match="differ in shape"):
        study.mistake_masks(t.actions, t.labels[:, :2])


def test_bucket_metrics_by_hand() -> None:
    m = study.bucket_metrics(hand_made())
    assert set(m) == {"3-5", "6-8", "9-12", "all"}
    a = m["all"]
    assert a["success"] == pytest.approx(2 / 3)
    assert a["disagreement"] == pytest.approx((0 + 1 / 4 + 2 / 3) / 3)  # mean of episode shares
    # clean states: a's 3, b's t=0,1, c's t=0 -> 6 states, 2 wrong (b t=1, c t=0)
    assert a["error_clean"] == pytest.approx(2 / 6)
    # after a mistake: b t=2,3 and c t=1,2 -> 4 states, 1 wrong (c t=1)
    assert a["error_after_mistake"] == pytest.approx(1 / 4)
    assert m["3-5"] == {
        "success": 1.0,
        "disagreement": 0.0,
        "error_clean": 0.0,
        "error_after_mistake": pytest.approx(math.nan, nan_ok=True),  # no mistake, no such state
    }
    assert m["9-12"]["error_clean"] == 1.0
    assert m["9-12"]["error_after_mistake"] == 0.5
    pos = study.padded_position_errors(hand_made(), 6)
    assert pos[:4] == pytest.approx([1 / 3, 2 / 3, 0.0, 0.0])
    assert all(math.isnan(x) for x in pos[4:])


def cell(method: str, seed: int, success: float, after: float | None) -> dict:
    metrics = {
        h: {"success": success, "disagreement": 0.5, "error_clean": 0.25,
            "error_after_mistake": after}
        for h in ("3-5", "6-8", "9-12", "all")
    }  # fmt: skip
    return {"kind": "cell", "task": "target_sum", "method": method, "labels": 2000, "seed": seed,
            "metrics": metrics, "position_error": [0.1] * HORIZON}  # fmt: skip


def test_summary_schema_and_report(tmp_path: Path) -> None:
    cells = [cell("bc", s, 0.1 * s, 0.5) for s in (2, 0, 1)] + [
        cell("dagger", 0, 0.4, None), cell("dagger", 1, 0.6, 0.3)
    ]  # fmt: skip
    recovery = {"kind": "irl_recovery", "task": "target_sum", "method": "irl_recovery",
                "labels": 2000, "seed": 0, "spearman": 0.8, "return_ratio": 0.5,
                "gain_ratio": 0.2, "return_start": 0.1, "return_recovered": 0.2,
                "return_true": 0.4}  # fmt: skip
    study.write_report([*cells, recovery], tmp_path, "cmd", "header")
    rows = json.loads((tmp_path / "summary.json").read_text())
    metric_rows = [r for r in rows if r["method"] != "irl_recovery"]
    assert len(metric_rows) == 2 * 4 * 4  # methods x horizons x metrics
    for r in metric_rows:
        assert {"task", "method", "labels", "horizon", "metric", "values", "mean", "ci95"} <= set(r)
        assert r["metric"] in study.METRICS
        assert r["method"] in ("bc", "dagger")
    bc = next(
        r for r in rows if (r["method"], r["horizon"], r["metric"]) == ("bc", "all", "success")
    )
    assert bc["values"] == pytest.approx([0.0, 0.1, 0.2])  # one per seed, in seed order
    assert bc["mean"] == pytest.approx(0.1)
    assert bc["ci95"][0] <= bc["mean"] <= bc["ci95"][1]
    key = ("dagger", "all", "error_after_mistake")
    dag = next(r for r in rows if (r["method"], r["horizon"], r["metric"]) == key)
    assert dag["values"] == [None, 0.3]
    assert dag["mean"] == pytest.approx(0.3)
    (rec,) = [r for r in rows if r["method"] == "irl_recovery"]
    assert rec["task"] == "target_sum"
    assert rec["spearman"] == 0.8
    assert rec["return_ratio"] == 0.5
    md = (tmp_path / "table.md").read_text()
    assert "| 2000 | all | 0.100 [" in md  # the DAgger - BC comparison
    assert (tmp_path / "error_by_position.png").exists()
    assert (tmp_path / "success_vs_labels.png").exists()


def test_forward_kl_to_a_one_hot_teacher_is_the_bc_loss() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)  # (B, T, V)
    labels = torch.randint(0, 11, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).float()
    teacher = study.one_hot_logits(labels, 11)
    got = distill_loss(logits, teacher, mask, "forward_kl")
    torch.testing.assert_close(got, bc_loss(logits, labels, mask), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("task", ["target_sum", "grid_nav"])
def test_noisy_rollouts_spend_the_budget_and_label_every_state(task: str) -> None:
    lm = textgym.LanguageModel.from_pretrained(device="cpu")
    env = gym.make_vec("TextGen-v0", num_envs=8, model=lm, task=task, max_new_tokens=HORIZON)
    clean = study.noisy_rollouts(lm, env, load(task), 0.0, 100, seed=0)
    assert clean.n_labels == 100
    m = clean.mask > 0
    assert torch.equal(clean.completion_ids[m], clean.labels[m])  # ε = 0: the expert's own rollout
    noisy = study.noisy_rollouts(lm, env, load(task), 1.0, 150, seed=0)
    assert noisy.n_labels == 150
    m = noisy.mask > 0
    words = {
        int(lm.tokenizer(" " + w)["input_ids"][-1])
        for w in parse(task, load(task).prompts[0]).actions
    }
    assert set(noisy.completion_ids[m].tolist()) <= words  # ε = 1: action words only, no EOS
    assert (noisy.completion_ids[m] != noisy.labels[m]).any()


def test_train_with_selection_loads_the_best_checkpoint() -> None:
    class Holder:
        model = torch.nn.Linear(1, 1, bias=False).requires_grad_(False)

    lm = Holder()
    w0 = float(lm.model.weight)
    scores = iter([0.5, 0.2, 0.7])

    def learn(n: int) -> None:
        lm.model.weight += n

    sel = study.train_with_selection(lm, learn, 6, 2, lambda _: next(scores))  # type: ignore[arg-type]
    assert (sel.step, sel.score) == (4, 0.2)
    assert sel.scores == [(2, 0.5), (4, 0.2), (6, 0.7)]
    assert float(lm.model.weight) == pytest.approx(w0 + 4)  # the step-4 weights, loaded back


def test_puzzle_features_of_the_expert_and_of_junk() -> None:
    task = load("target_sum", "test")
    phi = study.puzzle_features("target_sum")
    p, y = task.demonstrations()[0]
    n = parse("target_sum", p).optimal_length()
    out = phi([p, p], [y, " foo run"])
    assert out[0] == pytest.approx([1.0, 0.0, n / 12, 0.0])
    assert out[1][0] == 0.0
    assert out[1][2:] == pytest.approx([1 / 12, 1 / 12])
