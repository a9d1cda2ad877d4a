"""Bad files: missing or incomplete model folders, and broken JSON-lines data.

Every error is a ValueError / OSError that names the file (and line) and the field at fault.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from textgym.rewards import make

import textgym
from textgym.lm import LanguageModel, check_model_dir
from textgym.preference import load_jsonl
from textgym.tasks import FieldTypeError, MissingFieldError, Task

# --- model folders -------------------------------------------------------------------------------

LOADERS: dict[str, Callable[[str], Any]] = {
    "gym.make": lambda d: gym.make("TextGen-v0", model=d),
    "gym.make_vec": lambda d: gym.make_vec("TextGen-v0", num_envs=2, model=d),
    "LanguageModel.from_pretrained": lambda d: LanguageModel.from_pretrained(d, device="cpu"),
    "classifier": lambda d: make("classifier", path=d, device="cpu"),
    "similarity": lambda d: make("similarity", path=d, device="cpu"),
    "length": lambda d: make("length", unit="tokens", tokenizer=d),
    "banned_tokens": lambda d: make("banned_tokens", banned_ids=[0], tokenizer=d),
}
TOKENIZER_ONLY = {"length", "banned_tokens"}  # these load no config.json


def _copy_model(tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    d = tmp_path / "model"
    shutil.copytree(textgym.DEFAULT_MODEL, d)
    for name in drop:
        (d / name).unlink()
    return d


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("kind", ["absolute", "relative", "nested", "pathlike"])
def test_a_missing_model_folder_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: str, kind: str
) -> None:
    monkeypatch.chdir(tmp_path)
    path: Any = {
        "absolute": str(tmp_path / "nope"),
        "relative": "./nope",
        "nested": "runs/ppo/policy",
        "pathlike": Path("nope"),
    }[kind]
    with pytest.raises(
        FileNotFoundError, match=rf"model directory '{re.escape(str(path))}' does not exist"
    ):
        LOADERS[loader](path)


def test_a_tilde_path_is_not_expanded_and_says_so() -> None:
    with pytest.raises(FileNotFoundError, match=r"'~/no-such-model' does not exist.*expanduser"):
        LanguageModel.from_pretrained("~/no-such-model")


@pytest.mark.parametrize("loader", sorted(set(LOADERS) - TOKENIZER_ONLY))
def test_a_folder_without_config_json_is_named(tmp_path: Path, loader: str) -> None:
    d = _copy_model(tmp_path, drop=("config.json",))
    with pytest.raises(
        FileNotFoundError, match=rf"model directory '{re.escape(str(d))}' has no config\.json"
    ):
        LOADERS[loader](str(d))


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_a_folder_without_tokenizer_files_is_named(tmp_path: Path, loader: str) -> None:
    d = _copy_model(tmp_path, drop=("tokenizer.json", "tokenizer_config.json"))
    with pytest.raises(
        FileNotFoundError, match=rf"model directory '{re.escape(str(d))}' has no tokenizer files"
    ):
        LOADERS[loader](str(d))


def test_an_empty_folder_and_a_file_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"'.*empty' has no config\.json"):
        gym.make("TextGen-v0", model=str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"'.*weights\.bin' is a file"):
        LanguageModel.from_pretrained(tmp_path / "weights.bin")


def test_an_env_given_a_tokenizer_needs_only_the_config(tmp_path: Path) -> None:
    d = _copy_model(tmp_path, drop=("tokenizer.json", "tokenizer_config.json"))
    tok = LanguageModel.from_pretrained(device="cpu").tokenizer
    env = gym.make("TextGen-v0", model=str(d), tokenizer=tok, max_new_tokens=4)
    assert env.unwrapped.config.vocab_size == 1536


@pytest.mark.parametrize("name", ["gpt2", "org/model", "distilbert-base-uncased"])
def test_hub_names_are_left_to_transformers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    assert check_model_dir(name) == name


def test_an_existing_folder_passes_unchanged() -> None:
    assert check_model_dir(textgym.DEFAULT_MODEL) == textgym.DEFAULT_MODEL
    assert check_model_dir(Path(textgym.DEFAULT_MODEL)) == textgym.DEFAULT_MODEL


# --- JSON-lines data -----------------------------------------------------------------------------

TASK_LINE = {"prompt": "p", "references": ["r"]}
PAIR_LINE = {"prompt": "p", "chosen": "a", "rejected": "b"}


def _write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("line", "error", "match"),
    [
        ({"references": ["r"]}, MissingFieldError, r"t\.jsonl:2: no 'prompt' field"),
        ({"prompt": 3}, FieldTypeError, r"t\.jsonl:2: field 'prompt' must be a str, got 3"),
        ({"prompt": None}, FieldTypeError, r"t\.jsonl:2: field 'prompt' must be a str, got None"),
        (
            {"prompt": "q", "references": 3},
            FieldTypeError,
            r"t\.jsonl:2: field 'references' must be .*, got 3",
        ),
        (
            {"prompt": "q", "references": ["ok", 7]},
            FieldTypeError,
            r"t\.jsonl:2: field 'references' must be .*, got \['ok', 7\]",
        ),
        (
            {"prompt": "q", "references": []},
            FieldTypeError,
            r"t\.jsonl:2: field 'references' must be a str or a non-empty list",
        ),
        (
            {"prompt": "q", "references": {"a": "b"}},
            FieldTypeError,
            r"t\.jsonl:2: field 'references' must be .*, got \{'a': 'b'\}",
        ),
        ({"prompt": "q", "split": 1}, FieldTypeError, r"t\.jsonl:2: field 'split' .*, got 1"),
        ("[1, 2]", FieldTypeError, r"t\.jsonl:2: expected a JSON object, got list"),
        ('"prompt"', FieldTypeError, r"t\.jsonl:2: expected a JSON object, got str"),
        ('{"prompt": "q"', ValueError, r"t\.jsonl:2: not valid JSON"),
    ],
)
def test_task_jsonl_errors_name_file_line_and_field(
    tmp_path: Path, line: Any, error: type[Exception], match: str
) -> None:
    path = _write_lines(tmp_path / "t.jsonl", [TASK_LINE, line])
    with pytest.raises(error, match=match) as info:
        Task.from_jsonl(path)
    assert isinstance(info.value, ValueError)  # bad data is a ValueError, whatever else it is


def test_task_jsonl_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(json.dumps(TASK_LINE).encode() + b'\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"t\.jsonl:2: not UTF-8 text .*b'\\xe9"):
        Task.from_jsonl(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_task_file_is_named(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"empty\.jsonl: no records \(the file is empty\)"):
        Task.from_jsonl(path)


def test_a_good_task_file_still_loads(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "t.jsonl",
        [TASK_LINE, "", {"prompt": "q", "references": "s", "split": "test"}],
    )
    task = Task.from_jsonl(path)
    assert task.prompts == ("p", "q")
    assert task.references == (("r",), ("s",))
    assert Task.from_jsonl(path, split="train").prompts == ("p",)  # lines without one: kept


@pytest.mark.parametrize(
    ("line", "error", "match"),
    [
        ({"prompt": "p", "chosen": "a"}, MissingFieldError, r"p\.jsonl:2: missing .*'rejected'"),
        (
            {"prompt": 1, "chosen": "a", "rejected": "b"},
            FieldTypeError,
            r"p\.jsonl:2: PreferencePair\.prompt must be a str, got int: 1",
        ),
        (
            {"prompt": "p", "chosen": "a", "rejected": None},
            FieldTypeError,
            r"p\.jsonl:2: PreferencePair\.rejected must be a str, got NoneType",
        ),
        ("[1]", FieldTypeError, r"p\.jsonl:2: expected a JSON object, got list"),
        ("{oops", ValueError, r"p\.jsonl:2: not valid JSON"),
    ],
)
def test_preference_jsonl_errors_name_file_line_and_field(
    tmp_path: Path, line: Any, error: type[Exception], match: str
) -> None:
    path = _write_lines(tmp_path / "p.jsonl", [PAIR_LINE, line])
    with pytest.raises(error, match=match) as info:
        load_jsonl(path)
    assert isinstance(info.value, ValueError)


def test_preference_jsonl_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\xff\xfe" + json.dumps(PAIR_LINE).encode() + b"\n")
    with pytest.raises(ValueError, match=r"p\.jsonl:1: not UTF-8 text"):
        load_jsonl(path)


def test_an_empty_preference_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("")
    with pytest.raises(ValueError, match=r"p\.jsonl: no preference records"):
        load_jsonl(path)


@pytest.mark.parametrize("refs", [3, None, b"bytes", {"a": "b"}, ["ok", 7]])
def test_a_reference_group_of_the_wrong_type_is_named(refs: object) -> None:
    with pytest.raises(
        ValueError, match=rf"references of prompt 1 must be .*, got {re.escape(repr(refs))}"
    ):
        Task.from_list(["a", "b"], references=["x", refs])
    with pytest.raises(ValueError, match=r"references of prompt 1 must be"):
        Task.from_records(
            [{"prompt": "a", "references": "x"}, {"prompt": "b", "references": refs or 0}]
        )


@pytest.mark.parametrize("task", [[1, 2], ["ok", None]])
def test_a_prompt_that_is_not_a_str_is_named(task: list[object]) -> None:
    bad = next(p for p in task if not isinstance(p, str))
    with pytest.raises(TypeError, match=rf"prompt \d of task 'custom' is .*, not str: {bad!r}"):
        gym.make("TextGen-v0", task=task)
