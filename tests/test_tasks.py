"""Task: builders (list, JSONL, dataset), built-in tasks, experts, demonstrations."""

from __future__ import annotations

import builtins
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import AutoTokenizer

from textgym import tasks
from textgym.envs import TextGenEnv
from textgym.tasks import FunctionExpert, ReferenceExpert, Task


def test_from_list_one_or_many_references() -> None:
    t = Task.from_list(["a", "b"], references=["x", ["y", "z"]], name="t")
    assert t.prompts == ("a", "b")
    assert t.references == (("x",), ("y", "z"))
    assert len(t) == 2
    assert t.split is None
    assert t.expert is None
    assert t.demonstrations() == [("a", "x"), ("b", "y")]
    assert t.demonstrations(reference_index=0) == [("a", "x"), ("b", "y")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.name = "other"  # type: ignore[misc]  # frozen on purpose


def test_task_validation() -> None:
    with pytest.raises(ValueError, match="no prompts"):
        Task.from_list([])
    with pytest.raises(TypeError, match="one str"):
        Task(name="t", prompts="abc")  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(ValueError, match="2 prompts but 1 reference"):
        Task.from_list(["a", "b"], references=["x"])
    with pytest.raises(ValueError, match="references of prompt 1"):
        Task.from_list(["a", "b"], references=["x", []])
    with pytest.raises(TypeError, match="prompt 1"):
        Task.from_list(["a", 3])  # type: ignore[list-item]  # the mistake under test
    with pytest.raises(ValueError, match="no references"):
        Task.from_list(["a"]).demonstrations()
    with pytest.raises(TypeError, match="Expert"):
        Task.from_list(["a"], expert=lambda i, c: 0)  # type: ignore[arg-type]  # the mistake under test


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_from_jsonl_with_split(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"prompt": "one two", "references": [" three"], "split": "train"},
            {"prompt": "four five", "references": " six", "split": "test"},
            {"prompt": "red blue", "references": [" green", " one"], "split": "train"},
        ],
    )
    t = Task.from_jsonl(path, split="train")
    assert t.name == "mine"
    assert t.split == "train"
    assert t.prompts == ("one two", "red blue")
    assert t.references == (
        (" three",),
        (" green", " one"),
    )
    assert len(Task.from_jsonl(path)) == 3
    assert Task.from_jsonl(path, split="test").references == ((" six",),)
    with pytest.raises(ValueError, match=r"no records for split='validation'.*\['test', 'train'\]"):
        Task.from_jsonl(path, split="validation")


def test_from_jsonl_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        Task.from_jsonl(bad)
    half = write_jsonl(
        tmp_path / "half.jsonl", [{"prompt": "a", "references": ["x"]}, {"prompt": "b"}]
    )
    with pytest.raises(ValueError, match="1 of 2 records have references"):
        Task.from_jsonl(half)
    nofield = write_jsonl(tmp_path / "nofield.jsonl", [{"text": "a"}])
    with pytest.raises(KeyError, match="'prompt'"):
        Task.from_jsonl(nofield)
    assert Task.from_jsonl(nofield, prompt_field="text").prompts == ("a",)


def test_user_jsonl_task_in_env(tmp_path: Path, tiny_gpt2_dir: str) -> None:
    path = write_jsonl(
        tmp_path / "copy.jsonl",
        [
            {"prompt": "one two ->", "references": [" one two"]},
            {"prompt": "red ->", "references": [" red"]},
        ],
    )
    task = Task.from_jsonl(path, expert=ReferenceExpert())
    env = TextGenEnv(tiny_gpt2_dir, task, "exact_match", max_new_tokens=4)
    for i in range(2):
        env.reset(options={"prompt_index": i})
        done = False
        while not done:
            _, r, te, tr, info = env.step(env.expert_action())
            done = te or tr
        assert r == 1.0
        assert info["references"] == task.references[i]


def test_from_dataset_rows_and_hf_dataset() -> None:
    rows = [{"q": "a", "a": ["x"]}, {"q": "b", "a": "y"}]
    t = Task.from_dataset(rows, prompt_field="q", references_field="a", name="rows")
    assert t.prompts == ("a", "b")
    assert t.references == (("x",), ("y",))
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(
        [{"q": "a", "a": ["x"]}, {"q": "b", "a": ["y"]}]
    )  # Arrow: one type
    t = Task.from_dataset(ds, prompt_field="q", references_field="a")
    assert t.prompts == ("a", "b")
    assert t.references == (("x",), ("y",))
    dd = datasets.DatasetDict({"train": ds, "test": ds.select([1])})
    assert Task.from_dataset(dd, prompt_field="q", split="test").prompts == ("b",)
    with pytest.raises(ValueError, match="split="):
        Task.from_dataset(dd, prompt_field="q")
    with pytest.raises(KeyError, match="no column 'prompt'"):
        Task.from_dataset(ds)


def test_from_dataset_name_without_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_datasets(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ImportError, match="pip install datasets"):
        Task.from_dataset("some/dataset", split="train")


@pytest.mark.parametrize("name", ["reviews", "concepts", "reverse"])
def test_builtin_tasks(name: str) -> None:
    train = tasks.load(name)
    val = tasks.load(name, split="validation")
    assert train.name == name
    assert train.split == "train"
    assert len(train) > len(val) > 0
    assert train.references is not None
    assert all(train.references)
    assert train.reward is not None
    assert set(train.prompts).isdisjoint(val.prompts) or name == "reviews"
    if name == "concepts":
        assert max(len(r) for r in train.references) > 1  # several references per prompt
    if name == "reverse":
        assert isinstance(train.expert, ReferenceExpert)
        p, ref = train.prompts[0], train.references[0][0]
        words = p.removeprefix("Reverse:").removesuffix("->").split()
        assert ref.split() == words[::-1]


def test_load_errors() -> None:
    names = "arithmetic, concepts, format, grid_nav, reverse, reviews, target_sum"
    with pytest.raises(ValueError, match=f"built-in tasks: {names}"):
        tasks.load("nope")
    with pytest.raises(ValueError, match="split must be"):
        tasks.load("reverse", split="dev")
    assert tasks.names() == [
        "arithmetic", "concepts", "format", "grid_nav", "reverse", "reviews", "target_sum",
    ]  # fmt: skip


def test_reference_expert_table(tiny_gpt2_dir: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    t = Task.from_list(["a", "b"], references=["red blue", ["one two three four five", "x"]])
    bound = ReferenceExpert().bind(t, tok, max_new_tokens=4)
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    dummy = np.zeros((2, 10), dtype=np.int64)
    labels = [
        bound(np.array([0, 1]), dummy, np.array([1, 1]), np.array([t, t])).tolist()
        for t in range(4)
    ]
    red_blue, long = ids("red blue"), ids("one two three four five")
    assert [row[0] for row in labels] == [*red_blue, 0, 0]  # then EOS (id 0)
    assert [row[1] for row in labels] == long[:4]  # cut at the horizon: never EOS
    with pytest.raises(ValueError, match="reference_index=1"):
        ReferenceExpert(1).bind(t, tok, 4)
    with pytest.raises(ValueError, match="needs references"):
        ReferenceExpert().bind(Task.from_list(["a"]), tok, 4)


def test_function_expert_gets_completion_so_far() -> None:
    calls: list[tuple[int, list[int]]] = []
    expert = FunctionExpert(lambda i, c: calls.append((i, c)) or 7)  # type: ignore[func-returns-value]  # records, then answers 7
    bound = expert.bind(Task.from_list(["a", "b"]), None, 4)  # type: ignore[arg-type]  # needs no tokenizer
    ids = np.array([[5, 6, 9, 1], [5, 9, 9, 9]])
    out = bound(np.array([0, 1]), ids, np.array([2, 1]), np.array([1, 3]))
    assert out.tolist() == [7, 7]
    assert calls == [(0, [9]), (1, [9, 9, 9])]
