"""No code from a model folder runs, and nothing prompts on stdin, unless the caller opts in.

``transformers`` runs a folder's own Python (its config's ``auto_map``) when
``trust_remote_code=True``; left unset it *asks on stdin*, and a "y" there runs it. The folder
below holds such code: importing it writes a marker file. Every loader is called with "y" waiting
on stdin; the marker must not appear and no question may be printed. Two model types: one that
``transformers`` does not know (loading needs the code: a clear error) and ``gpt2`` (it loads
with the built-in class, the ``auto_map`` ignored).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import io
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from textgym.rewards import make
from textgym.rewards.reward_model import RewardModel

import textgym
from textgym.lm import LanguageModel

PROMPT = "Do you wish to run the custom code"

CUSTOM_PY = """\
from pathlib import Path

Path({marker!r}).write_text("remote code ran")

from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2Model
from transformers import PreTrainedTokenizerFast


class CustomConfig(GPT2Config):
    model_type = {model_type!r}


class CustomLM(GPT2LMHeadModel):
    config_class = CustomConfig


class CustomModel(GPT2Model):
    config_class = CustomConfig


class CustomClassifier(GPT2ForSequenceClassification):
    config_class = CustomConfig


class CustomTokenizer(PreTrainedTokenizerFast):
    pass
"""


def _remote_code_dir(root: Path, model_type: str) -> tuple[Path, Path]:
    """A copy of the embedded model whose config and tokenizer point at custom.py."""
    model = root / "model"
    shutil.copytree(textgym.DEFAULT_MODEL, model)
    marker = root / "MARKER"
    (model / "custom.py").write_text(CUSTOM_PY.format(marker=str(marker), model_type=model_type))
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {
        "AutoConfig": "custom.CustomConfig",
        "AutoModel": "custom.CustomModel",
        "AutoModelForCausalLM": "custom.CustomLM",
        "AutoModelForSequenceClassification": "custom.CustomClassifier",
    }
    (model / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((model / "tokenizer_config.json").read_text())
    tok_config["auto_map"] = {"AutoTokenizer": [None, "custom.CustomTokenizer"]}
    (model / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return model, marker


LOADERS: dict[str, Callable[[Path], Any]] = {
    "gym.make": lambda d: gym.make("TextGen-v0", model=d, max_new_tokens=4),
    "gym.make_vec": lambda d: gym.make_vec("TextGen-v0", num_envs=2, model=str(d)),
    "LanguageModel.from_pretrained": lambda d: LanguageModel.from_pretrained(d, device="cpu"),
    "classifier": lambda d: make("classifier", path=str(d), device="cpu"),
    "similarity": lambda d: make("similarity", path=str(d), device="cpu"),
    "length": lambda d: make("length", unit="tokens", tokenizer=str(d)),
    "banned_tokens": lambda d: make("banned_tokens", banned_ids=[0], tokenizer=str(d)),
    "token_repetition": lambda d: make("token_repetition", tokenizer=str(d)),
    "RewardModel.from_backbone": lambda d: RewardModel.from_backbone(d, device="cpu"),
}


# A tokenizer loads from tokenizer.json whatever the model type.
TOKENIZER_ONLY = {"length", "banned_tokens", "token_repetition"}


@pytest.mark.parametrize("model_type", ["textgym_custom", "gpt2"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_a_model_folder_with_code_never_runs_it_nor_prompts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    loader: str,
    model_type: str,
) -> None:
    model, marker = _remote_code_dir(tmp_path, model_type)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # a "yes" waits on stdin
    if model_type == "gpt2" or loader in TOKENIZER_ONLY:
        LOADERS[loader](model)  # the built-in classes load it; the auto_map is ignored
    else:  # transformers cannot build this type without the code, and says so
        with pytest.raises(ValueError, match=rf"{re.escape(str(model))} contains custom code"):
            LOADERS[loader](model)
    out = capsys.readouterr()
    assert PROMPT not in out.out + out.err, f"{loader} asked on stdin"
    assert sys.stdin.read() == "y\n", f"{loader} read stdin"
    assert not marker.exists(), f"{loader} ran the folder's code"


def test_trust_remote_code_is_the_documented_opt_in(tmp_path: Path) -> None:
    model, marker = _remote_code_dir(tmp_path, "textgym_custom")
    env = gym.make("TextGen-v0", model=model, max_new_tokens=4, trust_remote_code=True)
    assert marker.exists()
    assert env.unwrapped.config.vocab_size == 1536


@pytest.mark.parametrize("flag", ["yes", 1, None])
def test_trust_remote_code_must_be_a_bool(flag: object) -> None:
    # A truthy string would otherwise run code; None would make transformers ask on stdin.
    with pytest.raises(TypeError, match=rf"trust_remote_code must be True or False, got {flag!r}"):
        gym.make("TextGen-v0", trust_remote_code=flag)
    with pytest.raises(TypeError, match=rf"trust_remote_code must be True or False, got {flag!r}"):
        LanguageModel.from_pretrained(device="cpu", trust_remote_code=flag)
    with pytest.raises(TypeError, match=rf"trust_remote_code must be True or False, got {flag!r}"):
        make("length", unit="tokens", tokenizer=textgym.DEFAULT_MODEL, trust_remote_code=flag)


# --- every from_pretrained in the package says trust_remote_code --------------------------------

# Our own loaders whose trust_remote_code defaults to False (checked below); a call of one of them
# with no trust_remote_code is that safe default.
WRAPPERS: dict[str, Callable[..., Any]] = {"LanguageModel": LanguageModel.from_pretrained}
# peft adapters are a JSON config and weights: peft has no auto_map and no trust_remote_code.
NO_CODE = {"PeftModel"}


def _package_files() -> list[Path]:
    files: list[Path] = []
    for pkg in ("textgym", "textgym.rewards", "textgym.agents"):
        spec = importlib.util.find_spec(pkg)
        assert spec is not None
        assert spec.submodule_search_locations
        root = Path(next(iter(spec.submodule_search_locations)))
        files += sorted(root.rglob("*.py"))  # subpackages too (textgym/envs, decoding)
    return files


def _receiver(call: ast.Call) -> str:
    func = call.func
    assert isinstance(func, ast.Attribute)
    return ast.unparse(func.value)


def test_every_from_pretrained_passes_trust_remote_code() -> None:
    for name, fn in WRAPPERS.items():
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False, name
    unsafe, seen = [], 0
    for path in _package_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"
            ):
                continue
            seen += 1
            explicit = any(k.arg == "trust_remote_code" for k in node.keywords)
            receiver = _receiver(node)
            if not (explicit or receiver in WRAPPERS or receiver in NO_CODE):
                unsafe.append(f"{path.name}:{node.lineno}: {receiver}.from_pretrained(...)")
    assert seen >= 10  # the scan found the calls (a wrong root would pass vacuously)
    assert not unsafe, "from_pretrained without trust_remote_code=:\n" + "\n".join(unsafe)
