"""The embedded assets: corpus generator, task data files, shipped tokenizer and model."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from textgym.assets import DATA_DIR, MODEL_DIR, TASK_NAMES, corpus, load_grammar, load_jsonl

# Measured on the shipped model: perplexity 2.19 on these 64 test reviews (2.24 on the 300
# validation reviews, see model/training_log.json). The bound leaves room for a rebuild on other
# hardware, yet an untrained model (about the vocabulary size, ~1500) or a broken one fails.
REVIEW_PPL_BOUND = 5.0
SMALL = {"train": 20, "validation": 5, "test": 5}


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------


def test_generator_is_deterministic() -> None:
    assert corpus.review(random.Random(3)) == corpus.review(random.Random(3))
    assert corpus.review(random.Random(3)) != corpus.review(random.Random(4))
    for make in (corpus.review_records, corpus.concept_records, corpus.reverse_records):
        assert make(7, SMALL) == make(7, SMALL)
        assert make(7, SMALL) != make(8, SMALL)
    assert corpus.lm_documents(1, 10, 10, 2) == corpus.lm_documents(1, 10, 10, 2)


CORPUS_PY = Path(corpus.__file__)
# The corpus modules: the task rows and documents, the grammars, their shared English helpers.
CORPUS_MODULES = ("corpus", "review_grammar", "concept_grammar", "english")


def _without_textgym_init() -> str:
    """Python code that imports ``textgym.assets`` and its corpus without ``textgym/__init__.py``.

    That file pulls in torch and transformers: slow, and it would hide whether the assets import
    torch themselves. A bare package object stands in for ``textgym``.
    """
    return (
        "import sys, types\n"
        "package = types.ModuleType('textgym')\n"
        f"package.__path__ = [{str(CORPUS_PY.parents[1])!r}]\n"
        "sys.modules['textgym'] = package\n"
        f"from textgym.assets import {', '.join(CORPUS_MODULES)}\n"
    )


def test_generator_is_deterministic_across_processes() -> None:
    """String hashing is salted per process: the text must not depend on it."""
    code = _without_textgym_init() + (
        "import hashlib, json\n"
        "rows = corpus.concept_records(0) + corpus.review_records(0, {'train': 50,"
        " 'validation': 5, 'test': 5})\n"
        "print(hashlib.sha256(json.dumps(rows).encode()).hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_generator_leaves_global_rng_alone() -> None:
    state = random.getstate()
    corpus.review_records(0, SMALL)
    corpus.concept_records(0, SMALL)
    corpus.lm_documents(0, 5, 5, 1)
    assert random.getstate() == state


def test_concept_forms_and_coverage() -> None:
    assert set(corpus.concept_forms("throw")) == {"throw", "throws", "threw", "throwing", "thrown"}
    assert "dogs" in corpus.concept_forms("dog")
    assert corpus.covers("The boy throws the ball to the dog.", ["dog", "ball", "throw"])
    assert not corpus.covers("The boy throws the ball.", ["dog", "ball", "throw"])


def test_concept_split_sets_are_disjoint() -> None:
    split = corpus.concept_split(0)
    sets = {name: {frozenset(k) for k in keys} for name, keys in split.items()}
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]


# ---------------------------------------------------------------------------------------------
# Data files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TASK_NAMES)
def test_data_file_fields(name: str) -> None:
    rows = load_jsonl(name)
    counts = {s: 0 for s in corpus.SPLITS}
    for row in rows:
        assert isinstance(row["prompt"], str)
        assert row["prompt"]
        refs = row["references"]
        assert isinstance(refs, list)
        assert refs
        for ref in refs:  # completions start with a space and say something
            assert isinstance(ref, str)
            assert ref.startswith(" ")
            assert ref.strip()
        counts[row["split"]] += 1
    assert counts["train"] >= 2000
    assert counts["validation"] >= 200
    assert counts["test"] >= 200
    assert len({r["prompt"] for r in rows}) == len(rows), "prompts must be unique"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_data_files_are_what_the_generator_makes(name: str) -> None:
    make = {
        "reviews": corpus.review_records,
        "concepts": corpus.concept_records,
        "reverse": corpus.reverse_records,
    }[name]
    assert load_jsonl(name) == json.loads(json.dumps(make(0)))


def test_data_files_are_small() -> None:
    total = sum(p.stat().st_size for p in DATA_DIR.glob("*.jsonl"))
    assert total < 3_000_000, total


def test_review_rows() -> None:
    for row in load_jsonl("reviews"):
        assert row["prompt"].startswith("Review: ")
        assert 4 <= len(row["prompt"].removeprefix("Review: ").split(" ")) <= 8
        assert row["label"] in ("positive", "negative", "mixed")
        assert len(row["references"]) == 1


def test_concept_rows() -> None:
    rows = load_jsonl("concepts")
    pattern = re.compile(r"^Concepts: (\w+), (\w+), (\w+)\. Sentence:$")
    by_split: dict[str, set[frozenset[str]]] = {s: set() for s in corpus.SPLITS}
    for row in rows:
        match = pattern.match(row["prompt"])
        assert match, row["prompt"]
        assert list(match.groups()) == row["concepts"]
        assert 3 <= len(row["references"]) <= 5
        assert len(set(row["references"])) == len(row["references"])
        for ref in row["references"]:
            assert corpus.covers(ref, row["concepts"]), (ref, row["concepts"])
            assert ref[1].isupper()
            assert ref.endswith(".")
        by_split[row["split"]].add(frozenset(row["concepts"]))
    assert not by_split["train"] & by_split["validation"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["validation"] & by_split["test"]


def test_reverse_rows() -> None:
    for row in load_jsonl("reverse"):
        words = row["prompt"].removeprefix("Reverse: ").removesuffix(" ->").split(" ")
        assert words == row["words"]
        assert 3 <= len(words) <= 6
        assert set(words) <= set(corpus.REVERSE_WORDS)
        assert row["references"] == [" " + " ".join(reversed(words))]


def test_load_jsonl_unknown_name_lists_tasks() -> None:
    with pytest.raises(FileNotFoundError, match="reviews"):
        load_jsonl("nope")


def test_load_grammar_missing_file_names_it() -> None:
    with pytest.raises(FileNotFoundError, match=r"grammar/nope\.json"):
        load_grammar("nope")


def test_assets_package_does_not_import_torch() -> None:
    """textgym.assets and its corpus load without torch (cheap to read task data)."""
    code = _without_textgym_init() + "print('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# Shipped tokenizer and model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def model() -> Any:
    from transformers import AutoModelForCausalLM

    import textgym

    assert Path(textgym.DEFAULT_MODEL) == MODEL_DIR
    return AutoModelForCausalLM.from_pretrained(textgym.DEFAULT_MODEL).eval()


def test_tokenizer_special_tokens(tokenizer: Any) -> None:
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == tokenizer.bos_token_id == 0
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.pad_token_id == 1
    assert tokenizer.padding_side == "right"
    ids = tokenizer("Review: I loved it.")["input_ids"]
    assert not {0, 1} & set(ids), "no special token may be added automatically"
    config = json.loads((MODEL_DIR / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"


@pytest.mark.parametrize(
    "text",
    [
        "Review: I loved The Silent Harbor. 9 out of 10.",
        "Concepts: dog, ball, throw. Sentence: The boy throws the ball to the dog.",
        "Reverse: red fox blue owl -> owl blue fox red",
        "  odd   spacing , punctuation !? and ünïcödé ✓ 日本",
    ],
)
def test_tokenizer_round_trips(tokenizer: Any, text: str) -> None:
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_prompt_completion_tokens_concatenate(tokenizer: Any) -> None:
    """Tokens of prompt + completion equal the tokens of each, joined (no merge across)."""
    for name in TASK_NAMES:
        row = load_jsonl(name)[0]
        whole = tokenizer(row["prompt"] + row["references"][0])["input_ids"]
        parts = tokenizer(row["prompt"])["input_ids"] + tokenizer(row["references"][0])["input_ids"]
        assert whole == parts, name


def test_model_loads_with_documented_ids(model: Any, tokenizer: Any) -> None:
    import torch

    assert model.config.eos_token_id == model.config.bos_token_id == 0
    assert model.config.pad_token_id == 1
    assert model.generation_config.eos_token_id == 0
    assert model.generation_config.pad_token_id == 1
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n_params < 2e6, n_params
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert logits.shape[-1] >= len(tokenizer)
    assert (MODEL_DIR / "model.safetensors").is_file()


def test_training_log(model: Any) -> None:
    log = json.loads((MODEL_DIR / "training_log.json").read_text())
    for key in ("parameters", "wall_time_s", "torch", "final", "per_task", "config"):
        assert key in log
    assert log["parameters"] == sum(p.numel() for p in model.parameters())


def test_review_perplexity_below_bound(model: Any, tokenizer: Any) -> None:
    import torch

    rows = [r for r in load_jsonl("reviews") if r["split"] == "test"][:64]
    texts = [r["prompt"] + r["references"][0] + tokenizer.eos_token for r in rows]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)  # (B, L)
    with torch.no_grad():
        loss = model(**batch, labels=labels).loss  # mean NLL over predicted, unpadded tokens
    ppl = math.exp(loss.item())
    assert ppl < REVIEW_PPL_BOUND, ppl


def _greedy(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """Greedy completions (token ids, EOS kept, padding dropped), one batched ``generate``.

    Left padding for a batch of prompts; for these prompts it gave the same tokens as one
    ``generate`` per prompt, at a fraction of the time.
    """
    import torch

    batch = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens)
    new = gen[:, batch["input_ids"].shape[1] :].tolist()  # (B, T)
    out = []
    for row in new:  # after EOS, generate pads with pad_token_id
        eos = tokenizer.eos_token_id
        out.append(row[: row.index(eos) + 1] if eos in row else row)
    return out


def test_model_writes_concept_sentences_and_stops(model: Any, tokenizer: Any) -> None:
    rows = [r for r in load_jsonl("concepts") if r["split"] == "test"][:20]
    completions = _greedy(model, tokenizer, [r["prompt"] for r in rows], 32)
    assert all(c and c[-1] == tokenizer.eos_token_id for c in completions), "must end with EOS"
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in completions]
    covered = sum(corpus.covers(t, r["concepts"]) for t, r in zip(texts, rows, strict=True))
    assert covered >= 6, texts  # held-out concept sets: most, not all, are covered


def test_model_knows_reverse_format_but_not_the_task(model: Any, tokenizer: Any) -> None:
    """Reverse is the imitation-learning task: the shipped model must stop after a few words
    from the closed set, yet leave room for BC/DAgger to improve (it is far from exact)."""
    rows = [r for r in load_jsonl("reverse") if r["split"] == "test"][:20]
    completions = _greedy(model, tokenizer, [r["prompt"] for r in rows], 12)
    assert all(c and c[-1] == tokenizer.eos_token_id for c in completions), "must end with EOS"
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in completions]
    assert all(t.startswith(" ") for t in texts), texts
    in_format = sum(set(t.split()) <= set(corpus.REVERSE_WORDS) for t in texts)
    assert in_format >= 14, texts
    exact = sum(t == r["references"][0] for t, r in zip(texts, rows, strict=True))
    assert exact <= 10, texts
