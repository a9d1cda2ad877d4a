"""Agent checkpoints without pickle: tensors in safetensors, everything else in JSON.

Every agent writes the same kind of folder::

    dir/config.json                 the agent's config, exact (rebuilt through its constructor)
    dir/trainer_state.json          format, agent, parts, step counters, RNG states, history...
    dir/trainer_state.safetensors   every tensor of the state (optimizer moments, value head, RNG)
    dir/<part>/                     the parts it names: policy/, reference/, adapter/ (HF or peft
                                    directories), or a sub-agent's own checkpoint (bc/, gail/)

Loading executes nothing that the files say: JSON is parsed into plain data, tensors come from
safetensors, numpy generators are rebuilt from a fixed list of bit generators, and the config goes
through its dataclass constructor (so it is validated like a new one). A missing, empty or corrupt
file is an error that names the file; nothing is ever substituted for a missing part.

The JSON side keeps what plain JSON would lose, with one tagged object per case
(``{"__textgym__": kind, ...}``): tensors (a key into the safetensors file), numpy arrays, tuples,
dicts whose keys are not strings (an optimizer's ``state`` is keyed by parameter index), non-finite
floats, and ``numpy.random.Generator`` objects.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from textgym.config import config_from_dict, config_to_dict

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "STATE_FILE",
    "TENSOR_FILE",
    "CheckpointError",
    "decode",
    "encode",
    "load_state",
    "require_part",
    "restoring",
    "save_state",
]

FORMAT = "textgym-checkpoint/1"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.json"
TENSOR_FILE = "trainer_state.safetensors"
LEGACY_FILE = "trainer_state.pt"
TAG = "__textgym__"
BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM,
                  "MT19937": np.random.MT19937, "Philox": np.random.Philox,
                  "SFC64": np.random.SFC64}  # fmt: skip

C = TypeVar("C")


class CheckpointError(ValueError):
    """A checkpoint file is missing a value, is corrupt, or belongs to another agent."""


# ---------------------------------------------------------------------------- encoding


def encode(obj: Any, tensors: dict[str, Tensor], where: str = "state") -> Any:
    """``obj`` as JSON-ready data; every tensor moves into ``tensors`` under a fresh key.

    Raises:
        TypeError: a value this format does not hold (a dataclass, a function, an object), with
            its path in ``obj`` (``where``), so the agent can store it as plain data.
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else {TAG: "float", "value": str(value)}
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {TAG: "tensor", "key": key}
    if isinstance(obj, np.ndarray):
        return {TAG: "ndarray", "value": encode(torch.from_numpy(obj.copy()), tensors, where)}
    if isinstance(obj, np.random.Generator):
        name = type(obj.bit_generator).__name__
        return {TAG: "generator", "bit_generator": name, "state": encode(obj.bit_generator.state,
                tensors, f"{where}.bit_generator")}  # fmt: skip
    if isinstance(obj, tuple):
        return {TAG: "tuple", "items": [encode(v, tensors, f"{where}[{i}]") for i, v in
                enumerate(obj)]}  # fmt: skip
    if isinstance(obj, list):
        return [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj) and TAG not in obj:
            return {k: encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        items = [[encode(k, tensors, where), encode(v, tensors, f"{where}[{k!r}]")]
                 for k, v in obj.items()]  # fmt: skip
        return {TAG: "dict", "items": items}
    raise TypeError(
        f"a checkpoint holds plain data and tensors only; {where} is a {type(obj).__name__}"
    )


def decode(data: Any, tensors: Mapping[str, Tensor], source: str = "checkpoint") -> Any:
    """Invert :func:`encode`; ``source`` (the file) names where a bad value came from."""
    if isinstance(data, list):
        return [decode(v, tensors, source) for v in data]
    if not isinstance(data, dict):
        return data
    kind = data.get(TAG)
    if kind is None:
        return {k: decode(v, tensors, source) for k, v in data.items()}
    try:
        return _decode_tagged(kind, data, tensors, source)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{source}: a {kind!r} value is malformed ({err!r})") from err


def _decode_tagged(
    kind: str, data: dict[str, Any], tensors: Mapping[str, Tensor], source: str
) -> Any:
    if kind == "tensor":
        if data["key"] not in tensors:
            raise CheckpointError(
                f"{source}: tensor {data['key']!r} is missing from its tensor file"
            )
        return tensors[data["key"]]
    if kind == "ndarray":
        return decode(data["value"], tensors, source).numpy()
    if kind == "float":
        return float(data["value"])
    if kind == "tuple":
        return tuple(decode(v, tensors, source) for v in data["items"])
    if kind == "dict":
        return {decode(k, tensors, source): decode(v, tensors, source) for k, v in data["items"]}
    if kind == "generator":
        name = data["bit_generator"]
        if name not in BIT_GENERATORS:
            raise CheckpointError(
                f"{source}: unknown bit generator {name!r}; known: {sorted(BIT_GENERATORS)}"
            )
        bit_generator = BIT_GENERATORS[name]()
        bit_generator.state = decode(data["state"], tensors, source)
        return np.random.Generator(bit_generator)
    raise CheckpointError(f"{source}: unknown value kind {kind!r}")


# ---------------------------------------------------------------------------- files


def _write_atomic(path: Path, write: Any) -> None:
    """Write through a temporary file and rename, so an interrupted save leaves no half file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_state(
    directory: str | os.PathLike[str],
    *,
    agent: str,
    config: Any,
    state: Mapping[str, Any],
    parts: Sequence[str] = (),
) -> None:
    """Write ``config.json``, ``trainer_state.json`` and ``trainer_state.safetensors``.

    Args:
        directory: the checkpoint folder (created if missing).
        agent: the class that wrote it (``load_state`` refuses a checkpoint of another agent).
        config: the agent's config dataclass.
        state: plain data and tensors (see :func:`encode`): step, optimizer, RNG states...
        parts: the sub-folders the agent wrote beside (``policy``, ``reference``...); loading
            checks that each exists before anything else is read.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    body = {"format": FORMAT, "agent": agent, "parts": list(parts), "state": encode(state, tensors)}
    text = json.dumps(body, allow_nan=False)
    config_text = json.dumps(config_to_dict(config), indent=2, allow_nan=False) + "\n"
    _write_atomic(path / TENSOR_FILE, lambda p: save_file(tensors, str(p)))
    _write_atomic(path / CONFIG_FILE, lambda p: p.write_text(config_text))
    _write_atomic(path / STATE_FILE, lambda p: p.write_text(text))  # last: marks a whole save
    legacy = path / LEGACY_FILE
    if legacy.exists():  # a pickle left by an earlier save in this folder: never read again
        legacy.unlink()


def _read_json(file: Path) -> Any:
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint file {file} is missing")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        size = file.stat().st_size
        raise CheckpointError(
            f"checkpoint file {file} ({size} bytes) is not valid JSON: {err}"
        ) from err


def require_part(directory: str | os.PathLike[str], part: str) -> Path:
    """``directory/part``, which must exist (a missing part is never replaced by another)."""
    path = Path(directory) / part
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint part {path} is missing; the checkpoint in {directory} needs it "
            "(copy the whole folder, or save again)"
        )
    return path


def load_state(
    directory: str | os.PathLike[str], *, agent: str, config_class: type[C]
) -> tuple[C, dict[str, Any]]:
    """Read what :func:`save_state` wrote: the config (validated) and the state.

    Raises:
        FileNotFoundError: the folder, one of its files or one of its parts is missing.
        CheckpointError: a file is empty or corrupt, or the checkpoint is another agent's.
    """
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {path}")
    if not (path / STATE_FILE).exists() and (path / LEGACY_FILE).exists():
        raise CheckpointError(
            f"{path / LEGACY_FILE} is a pickle checkpoint of textgym 0.1; textgym no longer reads "
            "pickles, since loading one can run any code it holds. Train again to get a "
            f"{STATE_FILE} checkpoint."
        )
    body = _read_json(path / STATE_FILE)
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        found = body.get("format") if isinstance(body, dict) else type(body).__name__
        raise CheckpointError(f"{path / STATE_FILE} is not a {FORMAT} file (format: {found!r})")
    if body.get("agent") != agent:
        raise CheckpointError(
            f"{path} holds a {body.get('agent')} checkpoint; load it with "
            f"{body.get('agent')}.load, not {agent}.load"
        )
    for part in body.get("parts", []):
        require_part(path, part)
    tensor_file = path / TENSOR_FILE
    if not tensor_file.is_file():
        raise FileNotFoundError(f"checkpoint file {tensor_file} is missing")
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as err:
        size = tensor_file.stat().st_size
        raise CheckpointError(
            f"checkpoint file {tensor_file} ({size} bytes) is corrupt: {err}"
        ) from err
    state = decode(body.get("state"), tensors, str(path / STATE_FILE))
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / STATE_FILE}: the state is not a JSON object")
    try:
        config = config_from_dict(config_class, _read_json(path / CONFIG_FILE))
    except (TypeError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path / CONFIG_FILE}: {err}") from err
    return config, _Entries(state, str(path / STATE_FILE))


class _Entries(dict[str, Any]):
    """The state as a dict whose missing keys raise an error that names the checkpoint file."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        super().__init__(data)
        self.source = source

    def __missing__(self, key: str) -> Any:
        raise CheckpointError(f"{self.source} has no {key!r} entry (an incomplete checkpoint)")


@contextmanager
def restoring(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise what goes wrong while an agent puts a loaded state back (a truncated model file,
    an optimizer state of another shape, a missing entry) as an error that names the checkpoint."""
    try:
        yield
    except (CheckpointError, FileNotFoundError):
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as err:
        raise CheckpointError(f"cannot restore the checkpoint in {directory}: {err}") from err
