"""The ``textgym`` command: train any agent, evaluate a model, run the benchmark, the demo.

    textgym train AGENT [--task T] [--reward R] [--model M] [--steps N] [config flags] --out DIR
    textgym train --resume DIR                       # continue an interrupted run
    textgym eval --model M|DIR [--task T] [--reward R] [--ref M] [--split S] [--prompts N]
    textgym bench [--quick] [--agents ...] [--tasks ...] [--seeds N] [--out DIR]
    textgym demo [--updates N] [--seconds S]         # also ``python -m textgym`` with no arguments

Flags are generated from dataclasses, never written twice: an agent's ``<Algo>Config`` (every field
becomes a flag, ``lr`` -> ``--lr``, nested configs under their prefix, ``--sampling.temperature``,
with the field's docstring as its help) and the run options of :data:`RUN_FIELDS`. The parser is
tyro's: it reads the types (ints, finite floats, ``Literal`` choices, ``None`` for optional fields,
``--x/--no-x`` for booleans, nested dataclasses) and the attribute docstrings the configs already
have, which an argparse parser written by hand would repeat field by field.

A config file (``--config run.yaml``, YAML or JSON) holds the same flat keys as the flags
(``lr: 3.0e-4``, ``task: reviews``; a nested config as a mapping,
``sampling: {temperature: 0.9}``, or dotted, ``sampling.temperature: 0.9``); flags override it.
``1e-3`` is read as a number (YAML 1.2), not as the string YAML 1.1 makes of it.

A run directory (``--out``) holds::

    config.json     the resolved config: agent, run options, agent config (``--config`` reads it)
    run.json        provenance: seed, package versions, git revision, command lines, steps done
    checkpoint/     the agent's checkpoint (textgym.checkpoint), every ``--checkpoint-every`` steps
    policy/         the trained policy as a Hugging Face folder, once the run is finished
    progress.csv    the agent's history rows (TensorBoard event files beside it when installed)
    curve.png       the learning curve

``--resume DIR`` reloads the checkpoint and runs the rest of the budget: the result equals an
uninterrupted run (the checkpoint is bit-exact on CPU, and a run always learns in the same chunks,
``--checkpoint-every`` steps each). The history in ``progress.csv`` is rewritten from the
checkpoint on resume; TensorBoard may show the steps between the last checkpoint and the
interruption twice.

Errors a user can fix (an unknown agent, task, reward, flag or config key, a bad value, an output
directory that holds another run) print one line and exit with status 2; an interrupted run exits
with 130 and says how to resume it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import io
import json
import math
import operator
import os
import re
import shutil
import sys
import time
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

if TYPE_CHECKING:
    from textgym.benchmark import TrainSetup
    from textgym.lm import LanguageModel

__all__ = [
    "AGENTS",
    "RUN_FIELDS",
    "AgentSpec",
    "EvalOptions",
    "UsageError",
    "main",
    "parse_reward",
    "resolve_train",
]

EMBEDDED = "embedded"
"""The ``--model`` value that names ``textgym.DEFAULT_MODEL`` (its path differs per install)."""
RUN_FORMAT = "textgym-run/1"
COMMANDS = {
    "train": "train an agent on a task (textgym train --help lists the agents)",
    "eval": "evaluate a model or a run on a task with every metric, as a table and JSON",
    "bench": "the agents x tasks x metrics benchmark (--quick: about 4 minutes on 2 cores)",
    "demo": "decoding, one episode and a minute of PPO on the embedded model",
}


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are :class:`UsageError` (one line) instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# --- the agents ----------------------------------------------------------------------------------

Inputs = Literal["env", "teacher", "demos", "env+demos", "prompts", "pairs", "thumbs", "rankings"]


@dataclass(frozen=True)
class AgentSpec:
    """How ``textgym train NAME`` builds, budgets and plots one agent of ``textgym.agents``."""

    cls: str
    """The class in ``textgym.agents``; its ``config_class`` gives the flags."""
    inputs: Inputs
    """What it trains on: the task's env, a teacher LM and the env, the task's references (and the
    env), the task's prompts ranked by the reward, or a file of pairs, thumbs or rankings."""
    unit: str
    """What one step of the budget is (``learn(n)``'s n)."""
    steps: int | None
    """The default budget; None: the config's own (iterative DPO's ``rounds``)."""
    curve: tuple[str, ...]
    """History columns drawn in curve.png (those present)."""
    about: str


AGENTS: dict[str, AgentSpec] = {
    "reinforce": AgentSpec(
        "REINFORCE",
        "env",
        "updates",
        40,
        ("reward", "kl"),
        "REINFORCE (RLOO, value or no baseline)",
    ),
    "ppo": AgentSpec("PPO", "env", "updates", 40, ("reward", "kl"), "KL-regularised PPO"),
    "grpo": AgentSpec(
        "GRPO", "env", "updates", 40, ("reward", "kl"), "group-relative PO (GRPO, Dr. GRPO, DAPO)"
    ),
    "bc": AgentSpec(
        "BC", "demos", "gradient steps", 200, ("train_loss", "val_loss"), "behaviour cloning"
    ),
    "dagger": AgentSpec(
        "DAgger",
        "env",
        "iterations",
        4,
        ("learner_agreement", "val_loss"),
        "DAgger with the task's expert",
    ),
    "gail": AgentSpec(
        "GAIL",
        "env+demos",
        "updates",
        40,
        ("reward", "gail_return"),
        "GAIL on the task's references",
    ),
    "distill": AgentSpec(
        "Distill", "teacher", "updates", 40, ("loss",), "on-policy distillation from --teacher"
    ),
    "dpo": AgentSpec(
        "DPO", "pairs", "updates", 60, ("loss", "accuracy"), "DPO on preference pairs (--data)"
    ),
    "kto": AgentSpec(
        "KTO", "thumbs", "updates", 60, ("loss", "accuracy"), "KTO on thumbs (--data)"
    ),
    "listwise_dpo": AgentSpec(
        "ListwiseDPO",
        "rankings",
        "updates",
        60,
        ("loss", "accuracy"),
        "Plackett-Luce DPO on rankings (--data)",
    ),
    "iterative_dpo": AgentSpec(
        "IterativeDPO",
        "prompts",
        "rounds",
        None,
        ("sample_score", "val_reward"),
        "rounds of on-policy DPO: K samples ranked by the reward",
    ),
}
"""``textgym train NAME``: the agents with a command-line wiring (IRL needs a feature map and the
reward model trainer a reward-model backbone: both stay Python-only)."""


# --- run options: fields beside the agent's config ----------------------------------------------


@dataclass(frozen=True)
class RunField:
    type: Any
    default: Any
    help: str


RUN_FIELDS: dict[str, RunField] = {
    "model": RunField(
        str,
        EMBEDDED,
        "the starting policy (and π_ref): an HF path or hub name, or "
        "'embedded' (textgym.DEFAULT_MODEL)",
    ),
    "task": RunField(
        str,
        "reviews",
        "a built-in task or the path of a JSONL file of "
        '{"prompt", "references", "split"} lines; its train split is used',
    ),
    "reward": RunField(
        str | None,
        None,
        "a reward name ('bleu'), weights ('bleu=0.7,length=0.3' "
        "or a JSON object); None: the task's own",
    ),
    "data": RunField(
        str | None,
        None,
        "the training data: a JSONL file of preference pairs "
        '{"prompt", "chosen", "rejected"} (dpo), thumbs {"prompt", "completion", "label"} (kto) '
        'or rankings {"prompt", "completions", "ranks"} (listwise_dpo)',
    ),
    "env_reward": RunField(
        str | None,
        None,
        "the reward the env reports, logged as 'reward' (GAIL trains on its discriminator's): a "
        "spec as --reward's; None: the task's own",
    ),
    "teacher": RunField(str | None, None, "the teacher LM (an HF path or hub name, or 'embedded')"),
    "steps": RunField(int, 0, "the budget (learn(n)'s n; the default is the agent's)"),
    "max_prompts": RunField(
        int | None,
        None,
        "use only the first N prompts (and references) of the train split; None: all",
    ),
    "num_envs": RunField(int, 32, "episodes per round (the vector env's size)"),
    "max_new_tokens": RunField(int, 32, "the longest completion, in tokens (the env's default)"),
    "device": RunField(str, "auto", "where to train: auto (CUDA when available), cpu, cuda:0, ..."),
    "checkpoint_every": RunField(int, 10, "save a checkpoint every N steps (and at the end)"),
}
"""Every run option; each agent takes those its inputs need (:func:`run_fields`)."""

_INPUT_FIELDS: dict[Inputs, tuple[str, ...]] = {
    "env": ("model", "task", "reward", "max_prompts", "steps", "num_envs", "max_new_tokens"),
    "teacher": (
        "model",
        "teacher",
        "task",
        "reward",
        "max_prompts",
        "steps",
        "num_envs",
        "max_new_tokens",
    ),
    "demos": ("model", "task", "max_prompts", "steps"),
    # GAILConfig.reward names the discriminator's reward: the env's is env_reward.
    "env+demos": (
        "model",
        "task",
        "env_reward",
        "max_prompts",
        "steps",
        "num_envs",
        "max_new_tokens",
    ),
    "prompts": ("model", "task", "reward", "max_prompts"),
    "pairs": ("model", "data", "steps"),
    "thumbs": ("model", "data", "steps"),
    "rankings": ("model", "data", "steps"),
}


REWARD_FIELDS = ("reward", "env_reward")
"""Run options that hold a reward spec (config.json records each as one canonical text)."""


def run_fields(agent: str) -> tuple[str, ...]:
    """The run options ``textgym train agent`` takes."""
    return (*_INPUT_FIELDS[AGENTS[agent].inputs], "device", "checkpoint_every")


@dataclass(frozen=True)
class Meta:
    """Options about the run directory, not part of the resolved config."""

    out: str | None = None
    """The run directory (default: runs/AGENT)."""
    config: str | None = None
    """A YAML or JSON file of flag values (the same flat keys); flags override it."""
    resume: str | None = None
    """Continue the run in this directory (as its config.json says) to the end of its budget."""
    overwrite: bool = False
    """Replace the run that --out holds."""
    progress: bool = True
    """Progress bars."""


_META_KEYS = ("out",)
"""Meta options a config file may set."""


def _run_class(agent: str) -> type:
    """The dataclass of ``agent``'s run options (tyro reads the help from ``Annotated``)."""
    import tyro

    spec = AGENTS[agent]
    fields = []
    for name in run_fields(agent):
        f = RUN_FIELDS[name]
        default, help_ = f.default, f.help
        if name == "steps":
            default, help_ = spec.steps, f"the budget, in {spec.unit} (learn(n)'s n)"
        typ = operator.getitem(Annotated, (f.type, tyro.conf.arg(help=help_)))  # built at run time
        fields.append((name, typ, dataclasses.field(default=default)))
    return dataclasses.make_dataclass(f"{spec.cls}Run", fields, frozen=True)


def _config_class(agent: str) -> type:
    import textgym.agents

    cls: type = getattr(textgym.agents, AGENTS[agent].cls).config_class
    return cls


def _check_agent(name: str) -> str:
    if name not in AGENTS:
        close = difflib.get_close_matches(name, AGENTS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown agent {name!r}; {hint}agents: {', '.join(AGENTS)}")
    return name


# --- flags through tyro --------------------------------------------------------------------------


def _hint(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def flag_names(cls: type, prefix: str = "") -> list[str]:
    """The flags tyro makes of ``cls``'s fields: ``--a-b``, ``--no-a-b`` for a bool, a nested
    dataclass's under ``--field.``."""
    names = []
    for f in dataclasses.fields(cls):
        hint = _hint(cls, f.name)
        name = prefix + f.name.replace("_", "-")
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            names += flag_names(hint, f"{name}.")
            continue
        names.append(f"--{name}")
        if hint is bool:
            dot = name.rfind(".") + 1
            names.append(f"--{name[:dot]}no-{name[dot:]}")
    return names


def _tyro_message(text: str) -> str:
    """The first line of a tyro error box: its title and rules left out."""
    lines = [line.strip().strip("│").strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not set(line) <= set("─-╭╮╰╯│ ")]
    return lines[1] if len(lines) > 1 else (lines[0] if lines else "invalid arguments")


def _parse_flags(
    struct: type, args: Sequence[str], default: Any, prog: str, valid: list[str]
) -> Any:
    """Parse ``args`` into ``struct`` over ``default``; every error a :class:`UsageError`.

    ``--help`` prints tyro's help and exits 0 (a ``SystemExit`` the caller passes on).
    """
    import tyro

    if "-h" in args or "--help" in args:
        tyro.cli(struct, args=args, default=default, prog=prog)
    captured, columns = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "10000"  # tyro wraps its error box to the terminal: one line each
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            parsed, unknown = tyro.cli(
                struct, args=args, default=default, prog=prog, return_unknown_args=True
            )
    except SystemExit as err:
        if err.code in (0, None):
            raise
        raise UsageError(f"{_tyro_message(captured.getvalue())} (see {prog} --help)") from None
    except (TypeError, ValueError) as err:  # a config's own check of a value, e.g. lr > 0
        raise UsageError(str(err)) from None
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    if unknown:
        flags = [a.split("=")[0] for a in unknown if a.startswith("-")]
        if not flags:
            raise UsageError(f"unexpected argument {unknown[0]!r} (see {prog} --help)")
        close = difflib.get_close_matches(flags[0], valid, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UsageError(f"unknown flag {flags[0]}; {hint}valid flags: {' '.join(sorted(valid))}")
    return parsed


# --- config files --------------------------------------------------------------------------------

_YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The keys of a YAML or JSON config file, nested and dotted keys as nested mappings.

    Raises:
        UsageError: a missing file, a parse error, or a document that is not a mapping.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        """YAML 1.2 floats: ``1e-3`` is a number, not the string YAML 1.1 makes of it."""

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise UsageError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = yaml.load(text, Loader=Loader)  # a SafeLoader subclass: plain data only
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not valid YAML/JSON ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(
            f"{path}: a config file holds a mapping of keys, got {type(data).__name__}"
        )
    return _nest(data)


def _nest(data: Mapping[str, Any]) -> dict[str, Any]:
    """Keys as field names (``n-epochs`` -> ``n_epochs``), dotted keys as nested mappings."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        parts = str(key).replace("-", "_").split(".")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        value = _nest(value) if isinstance(value, Mapping) else value
        target[parts[-1]] = _merge(target.get(parts[-1]), value)
    return out


def _merge(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``; mappings merge key by key (a nested config keeps the fields
    the file does not set: GAIL's ``ppo: {lr: ...}`` keeps GAIL's own PPO defaults)."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over


def _floats(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with ints in float fields made floats (``kl_target: 6`` in a file), so that a
    file and the flags resolve to the same JSON."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for name, value in values.items():
        hint = hints.get(name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            out[name] = _floats(hint, value)
        elif (hint is float or hint == float | None) and type(value) is int:
            out[name] = float(value)
    return out


def parse_reward(text: str | Mapping[str, Any] | None) -> str | dict[str, float] | None:
    """A reward spec from the command line: a name, ``name=weight,...`` or a JSON object.

    Raises:
        UsageError: an unknown reward name (the valid ones listed) or a weight that is no number.
    """
    if text is None:
        return None
    from textgym.rewards.registry import names

    spec: str | dict[str, float]
    if isinstance(text, Mapping):
        spec = dict(text)
    elif text.strip().startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"--reward {text!r}: not a JSON object ({err.msg})") from None
    elif "=" in text or "," in text:
        spec = {}
        for part in text.split(","):
            name, _, weight = part.partition("=")
            try:
                spec[name.strip()] = float(weight)
            except ValueError:
                raise UsageError(
                    f"--reward {text!r}: write weights as name=number,... (got {part!r})"
                ) from None
    else:
        spec = text.strip()
    for name in [spec] if isinstance(spec, str) else list(spec):
        if name not in names():
            close = difflib.get_close_matches(str(name), names(), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"unknown reward {name!r}; {hint}rewards: {', '.join(names())}")
    if isinstance(spec, dict) and not all(
        isinstance(w, int | float) and not isinstance(w, bool) for w in spec.values()
    ):
        raise UsageError(f"--reward {text!r}: every weight must be a number")
    return spec


def reward_text(spec: str | Mapping[str, float] | None) -> str | None:
    """The one text of a reward spec that config.json records: ``bleu``, ``bleu=0.7,length=0.3``
    (so a YAML mapping, a JSON object and the flag's text resolve alike)."""
    if spec is None or isinstance(spec, str):
        return spec
    return ",".join(f"{k}={float(v)!r}" for k, v in spec.items())


# --- resolving a train command ------------------------------------------------------------------


@dataclass
class TrainPlan:
    """A resolved ``textgym train``: what to run, where, and how it was asked for."""

    agent: str
    run: dict[str, Any]
    config: Any
    meta: Meta
    command: list[str] = field(default_factory=list)
    """The command line, as run.json records it."""

    def resolved(self) -> dict[str, Any]:
        """The run's config as ``config.json`` holds it: flat, the keys the flags have."""
        from textgym.config import config_to_dict

        return {"agent": self.agent, **self.run, **config_to_dict(self.config)}

    @property
    def out(self) -> Path:
        return Path(self.meta.out or f"runs/{self.agent}")

    @property
    def budget(self) -> int:
        return int(self.run["steps"]) if "steps" in self.run else int(self.config.rounds)


def _pre_parse(argv: Sequence[str]) -> tuple[str | None, argparse.Namespace]:
    """The agent and the options needed before the flags can be parsed (--config, --resume)."""
    agent = argv[0] if argv and not argv[0].startswith("-") else None
    pre = _Parser(add_help=False, allow_abbrev=False)
    for name in ("--config", "--resume", "--out"):
        pre.add_argument(name)
    ns, _ = pre.parse_known_args(argv[1:] if agent else argv)
    return agent, ns


def _check_run_values(run: Any, agent: str) -> None:
    from textgym.config import check_fields, check_range

    try:
        check_fields(run)
        for name in ("steps", "num_envs", "max_new_tokens", "checkpoint_every", "max_prompts"):
            if hasattr(run, name):
                check_range(run, name, low=1)
    except (TypeError, ValueError) as err:
        flag = lambda m: "--" + m.group(1).replace("_", "-")  # noqa: E731
        raise UsageError(re.sub(rf"{type(run).__name__}\.(\w+)", flag, str(err))) from None


def _given_values(pre: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The values of ``--config FILE``, or of the resumed run's config.json, and where from."""
    if pre.resume:
        if pre.config:
            raise UsageError("--resume continues a run as its config.json says: drop --config")
        stored = Path(pre.resume) / "config.json"
        if not (Path(pre.resume) / "run.json").is_file() or not stored.is_file():
            raise UsageError(f"{pre.resume} holds no textgym run (no run.json/config.json)")
        if pre.out and Path(pre.out).resolve() != Path(pre.resume).resolve():
            raise UsageError(
                f"--resume {pre.resume} writes to that directory: drop --out {pre.out}"
            )
        return json.loads(stored.read_text()), str(stored)
    if pre.config:
        return read_config_file(pre.config), pre.config
    return {}, "flags"


def _defaults(name: str, values: dict[str, Any], source: str) -> tuple[Any, Any]:
    """The run options and the agent's config: its defaults under the given ``values``."""
    from textgym.config import config_from_dict, config_to_dict

    run_cls, config_cls = _run_class(name), _config_class(name)
    run_keys, config_keys = set(run_fields(name)), {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - run_keys - config_keys)
    if unknown:
        valid = ["agent", *run_fields(name), *(f.name for f in dataclasses.fields(config_cls))]
        raise UsageError(
            f"{source}: unknown key {unknown[0]!r} for {name}; valid keys: {', '.join(valid)}"
        )
    run_values = {k: v for k, v in values.items() if k in run_keys}
    for key in REWARD_FIELDS:
        if isinstance(run_values.get(key), Mapping):
            run_values[key] = reward_text(parse_reward(run_values[key]))
    try:
        run = run_cls(**run_values)
        base = config_to_dict(config_cls())
        given = {k: v for k, v in values.items() if k in config_keys}
        config: Any = config_from_dict(config_cls, _floats(config_cls, _merge(base, given)))
    except (TypeError, ValueError) as err:
        raise UsageError(f"{source}: {err}") from None
    _check_run_values(run, name)
    return run, config


def resolve_train(argv: Sequence[str], prog: str = "textgym train") -> TrainPlan:
    """Resolve ``textgym train`` arguments: the agent's defaults, then the config file (or the
    resumed run's config.json), then the flags.

    Raises:
        UsageError: an unknown agent, flag or file key, a bad value, a conflicting --resume.
        SystemExit: ``--help`` (status 0), after printing the help.
    """
    argv = list(argv)
    agent, pre = _pre_parse(argv)
    if agent is None and not pre.resume and not pre.config and ("-h" in argv or "--help" in argv):
        print(_train_overview(prog))
        raise SystemExit(0)
    values, source = _given_values(pre)
    file_agent = values.pop("agent", None)
    if agent is None and file_agent is None:
        raise UsageError(f"give an agent: {prog} AGENT ... (agents: {', '.join(AGENTS)})")
    if agent is not None and file_agent is not None and agent != file_agent:
        raise UsageError(f"{source} is a run of {file_agent!r}, not {agent!r}")
    name = _check_agent(agent or str(file_agent))
    meta_values = {k: values.pop(k) for k in _META_KEYS if k in values and not pre.resume}
    run, config = _defaults(name, values, source)
    run_cls, config_cls = type(run), type(config)
    struct = dataclasses.make_dataclass(
        "Train",
        [("meta", Annotated[Meta, _no_prefix()]), ("run", Annotated[run_cls, _no_prefix()]),
         ("config", Annotated[config_cls, _no_prefix()])],
        frozen=True,
    )  # fmt: skip
    meta_default = Meta(**{**meta_values, "config": pre.config, "resume": pre.resume})
    valid = [*flag_names(Meta), *flag_names(run_cls), *flag_names(config_cls)]
    rest = argv[1:] if agent else argv
    parsed = _parse_flags(struct, rest, struct(meta_default, run, config), f"{prog} {name}", valid)
    _check_run_values(parsed.run, name)
    plan = TrainPlan(
        name, dataclasses.asdict(parsed.run), parsed.config, parsed.meta, [*prog.split(), *argv]
    )
    for key in REWARD_FIELDS:
        if plan.run.get(key) is not None:
            plan.run[key] = reward_text(parse_reward(plan.run[key]))
    if pre.resume:
        differ = _differences(values | {"agent": name}, plan.resolved())
        if differ:
            raise UsageError(
                f"--resume continues {pre.resume} as it was started; these flags differ from its "
                f"config.json: {differ}"
            )
        plan.meta = dataclasses.replace(plan.meta, out=pre.resume)
    return plan


def _no_prefix() -> Any:
    import tyro

    return tyro.conf.arg(name="")


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``key: old there, new here`` for every key whose value differs (nested keys dotted)."""

    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, Mapping):
                out |= flat(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v
        return out

    a, b = flat(old), flat(new)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "(unset)") != b.get(k, "(unset)")]
    return "; ".join(
        f"{k}: {a.get(k, '(unset)')!r} there, {b.get(k, '(unset)')!r} here" for k in keys
    )


def _train_overview(prog: str) -> str:
    lines = [
        f"usage: {prog} AGENT [--task T] [--reward R] [--model M] [--steps N] [config flags] "
        "[--config FILE] [--out DIR]",
        f"       {prog} --resume DIR",
        "",
        f"agents ({prog} AGENT --help lists the flags of each):",
    ]
    for name, spec in AGENTS.items():
        budget = f"--steps: {spec.unit}" if spec.steps else f"budget: --{spec.unit}"
        lines.append(f"  {name:<14}{spec.about} ({budget})")
    return "\n".join(lines)


# --- running a train command ---------------------------------------------------------------------


def _model_path(name: str) -> str:
    from textgym.assets import DEFAULT_MODEL

    return DEFAULT_MODEL if name == EMBEDDED else name


def _task(name: str, split: str | None, max_prompts: int | None = None) -> Any:
    """A built-in task name (kept as a name, so the env sizes it as the benchmark does) or a Task
    read from a JSONL file; ``max_prompts`` cuts either to its first prompts."""
    from textgym.tasks import Task, load, names

    if name in names():
        if max_prompts is None:
            return name
        task = load(name, split)
    elif Path(name).is_file():
        task = Task.from_jsonl(name, split=split)
    else:
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(
            f"unknown task {name!r}: no such file, and not a built-in task; {hint}built-in tasks: "
            f"{', '.join(names())} (or the path of a JSONL file)"
        )
    if max_prompts is not None:
        refs = None if task.references is None else task.references[:max_prompts]
        task = dataclasses.replace(task, prompts=task.prompts[:max_prompts], references=refs)
    return task


def _setup(plan: TrainPlan) -> TrainSetup:
    """The agent's inputs from the run options (for the agents that train on a task)."""
    from textgym.benchmark import TrainSetup

    run = plan.run
    setup = TrainSetup(
        _task(run["task"], "train", run.get("max_prompts")),
        reward=parse_reward(run.get("reward") or run.get("env_reward")),
        num_envs=run.get("num_envs", RUN_FIELDS["num_envs"].default),
        max_new_tokens=run.get("max_new_tokens", RUN_FIELDS["max_new_tokens"].default),
        device=run["device"],
    )
    spec = AGENTS[plan.agent]
    task = setup.train_task()
    if spec.inputs != "demos" and setup.reward is None and task.reward is None:
        flag = "--env-reward" if spec.inputs == "env+demos" else "--reward"
        raise UsageError(f"task {task.name!r} has no reward of its own: give {flag}")
    if spec.inputs in ("demos", "env+demos") and task.references is None:
        raise UsageError(f"{plan.agent} imitates references: task {task.name!r} has none")
    if plan.agent == "dagger" and task.expert is None:
        raise UsageError(
            f"dagger needs a task with an expert (built-in: reverse, target_sum, grid_nav); "
            f"task {task.name!r} has none"
        )
    if spec.inputs != "demos":
        from textgym.rewards import make

        make(setup.reward_spec())  # an unknown name or a missing extra fails here, not mid-run
    if plan.agent == "iterative_dpo":
        n = plan.config.prompts_per_round or len(task)
        setup = dataclasses.replace(setup, val_prompts=min(n, 128))
    return setup


DATA_FILES = ("pairs", "thumbs", "rankings")
"""The inputs read from ``--data``: the records of ``textgym.preference`` / ``textgym.feedback``."""


def _read_data(plan: TrainPlan) -> list[Any]:
    kind = AGENTS[plan.agent].inputs
    path = plan.run.get("data")
    if path is None:
        raise UsageError(
            f"{plan.agent} trains on {kind}: give --data FILE.jsonl (to make pairs on-policy from "
            "a task and a reward, use textgym train iterative_dpo)"
        )
    if not Path(path).is_file():
        raise UsageError(f"--data {path}: no such file")
    if kind == "pairs":
        from textgym.preference import load_jsonl

        return load_jsonl(path)
    from textgym.feedback import load_jsonl as load_feedback

    return load_feedback(path, "thumb" if kind == "thumbs" else "ranking")


def _build(plan: TrainPlan, runtime: dict[str, Any]) -> Any:
    """A new agent from the run's model, inputs and config."""
    import torch

    import textgym.agents as agents
    from textgym.benchmark import BUILD
    from textgym.lm import LanguageModel

    run, spec = plan.run, AGENTS[plan.agent]
    setup = _setup(plan) if spec.inputs not in DATA_FILES else None
    data = _read_data(plan) if spec.inputs in DATA_FILES else None
    teacher = _teacher(plan)
    torch.manual_seed(_seed(plan.config))  # value heads and discriminators start from it
    lm = LanguageModel.from_pretrained(_model_path(run["model"]), device=run["device"])
    if plan.agent in BUILD:
        return BUILD[plan.agent](lm, setup, plan.config, **runtime)
    cls = getattr(agents, spec.cls)
    if spec.inputs == "teacher":
        assert setup is not None
        return cls(lm, teacher, setup.env(lm), config=plan.config, **runtime)
    return cls(lm, data=data, config=plan.config, device=str(lm.device), **runtime)


def _teacher(plan: TrainPlan) -> LanguageModel | None:
    if AGENTS[plan.agent].inputs != "teacher":
        return None
    from textgym.lm import LanguageModel

    if plan.run.get("teacher") is None:
        raise UsageError("distill needs --teacher MODEL (an HF path or hub name, or 'embedded')")
    teacher = LanguageModel.from_pretrained(
        _model_path(plan.run["teacher"]), device=plan.run["device"]
    )
    teacher.model.requires_grad_(False)
    return teacher


def _load(plan: TrainPlan, checkpoint: Path, runtime: dict[str, Any]) -> Any:
    """The agent of ``checkpoint``, with the inputs it does not store rebuilt from the run."""
    import textgym.agents as agents

    run, spec = plan.run, AGENTS[plan.agent]
    cls = getattr(agents, spec.cls)
    device = run["device"]
    if spec.inputs == "demos" or spec.inputs in DATA_FILES:
        return cls.load(checkpoint, device=device, **runtime)
    setup = _setup(plan)
    if spec.inputs == "prompts":
        from textgym.rewards import make

        return cls.load(checkpoint, reward=make(setup.reward_spec()), device=device, **runtime)
    env = setup.env(
        _model_path(run["model"]), **({"fixed_horizon": True} if spec.inputs == "env+demos" else {})
    )
    if spec.inputs == "teacher":
        return cls.load(checkpoint, _teacher(plan), env, device=device, **runtime)
    return cls.load(checkpoint, env, device=device, **runtime)


def _seed(config: Any) -> int:
    """The seed of an agent's config (GAIL's is its generator's)."""
    return int(config.seed if hasattr(config, "seed") else config.ppo.seed)


def _check_out(plan: TrainPlan) -> bool:
    """Refuse an output directory that holds anything but this new run; return whether it holds
    a textgym run to replace (``--overwrite``)."""
    out = plan.out
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    if not (out / "run.json").is_file():
        raise UsageError(f"--out {out} is not empty and holds no textgym run: choose another --out")
    if plan.meta.overwrite:
        return True
    status = json.loads((out / "run.json").read_text())
    config = out / "config.json"
    stored = json.loads(config.read_text()) if config.is_file() else {}
    differ = _differences(stored, plan.resolved())
    if differ:
        raise UsageError(
            f"--out {out} holds a different run ({differ}): use another --out, --resume {out} to "
            "continue that run, or --overwrite to replace it"
        )
    done = f"{status.get('steps_done', 0)} of {status.get('steps')} {status.get('unit')}"
    if status.get("finished"):
        raise UsageError(
            f"--out {out} holds this run, finished ({done}); --overwrite to run it again"
        )
    raise UsageError(
        f"--out {out} holds this run, stopped at {done}: continue it with --resume {out}, or "
        "--overwrite to start again"
    )


def _provenance(plan: TrainPlan) -> dict[str, Any]:
    import platform

    from textgym.provenance import git_sha, versions

    return {
        "format": RUN_FORMAT,
        "agent": plan.agent,
        "seed": _seed(plan.config),
        "steps": plan.budget,
        "unit": AGENTS[plan.agent].unit,
        "steps_done": 0,
        "finished": False,
        "git": git_sha(),
        "versions": versions("tyro", "gymnasium", "tensorboard"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "sessions": [],
    }


def _save_checkpoint(agent: Any, out: Path) -> None:
    """Replace ``out/checkpoint`` by the agent's state: written beside, then swapped, so that an
    interruption leaves the previous checkpoint (or ``checkpoint.old``) whole."""
    new, old, final = out / "checkpoint.tmp", out / "checkpoint.old", out / "checkpoint"
    shutil.rmtree(new, ignore_errors=True)
    agent.save(new)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _rewrite_csv(history: Sequence[Mapping[str, float]], path: Path) -> None:
    """``progress.csv`` as ``training.CSVLogger`` writes it, from the history a checkpoint holds."""
    import csv

    path.unlink(missing_ok=True)
    if not history:
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def plot_curve(
    history: Sequence[Mapping[str, float]], keys: Sequence[str], path: Path, title: str
) -> Path | None:
    """One panel per history column of ``keys`` present (else the first two non-timing ones)."""
    from textgym import plots

    if not history:
        return None
    present = [k for k in keys if any(k in row for row in history)]
    if not present:
        numeric = [
            k for k in history[0] if not k.startswith("time") and k not in ("update", "step")
        ]
        present = numeric[:2]
    if not present:
        return None
    plt = plots.pyplot()
    fig, axes = plt.subplots(
        1, len(present), figsize=(4.2 * len(present), 3.2), dpi=90, squeeze=False
    )
    for ax, key in zip(axes[0], present, strict=True):
        ys = [row.get(key, math.nan) for row in history]
        ax.plot(range(len(ys)), ys, "o-", markersize=3)
        ax.set_xlabel("history row")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return plots.save(fig, path)


def _chunk(plan: TrainPlan) -> int:
    """Steps per ``learn`` call between checkpoints. BC's are whole evaluation periods, since its
    logged train loss is a mean over one ``learn`` call's steps."""
    every = int(plan.run["checkpoint_every"])
    if plan.agent == "bc":
        period = int(plan.config.eval_every)
        every = -(-every // period) * period
    return every


def _done(agent: Any, budget: int) -> bool:
    return int(agent.step) >= budget or bool(getattr(agent, "stopped", False))


def _latest_checkpoint(out: Path) -> Path | None:
    for name in ("checkpoint", "checkpoint.old"):
        if (out / name / "trainer_state.json").is_file():
            return out / name
    return None


def train(plan: TrainPlan) -> int:
    """Run (or resume) ``plan`` in its directory; return the exit status."""
    import importlib.util

    from textgym.records import write_json
    from textgym.training import CSVLogger

    out, spec = plan.out, AGENTS[plan.agent]
    resuming = plan.meta.resume is not None
    replace_old = False if resuming else _check_out(plan)
    runtime = {"progress_bar": plan.meta.progress}
    checkpoint = _latest_checkpoint(out) if resuming else None
    try:  # nothing is written before the agent is built: a setup error leaves no run behind
        agent = _load(plan, checkpoint, runtime) if checkpoint else _build(plan, runtime)
    except (ValueError, TypeError, KeyError, OSError, ImportError) as err:
        raise UsageError(str(err).strip().splitlines()[0]) from err
    if replace_old:
        shutil.rmtree(out)
    if not resuming:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", plan.resolved())
        write_json(out / "run.json", _provenance(plan))
    status = json.loads((out / "run.json").read_text())
    budget, start_step = plan.budget, int(agent.step)
    from textgym.provenance import git_sha, versions

    session: dict[str, Any] = {
        "command": plan.command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "start_step": start_step,
        "git": git_sha(),  # a resumed session may run other code: each records its own
        "versions": versions("tyro", "gymnasium"),
    }
    status["sessions"].append(session)
    verb = f"resuming at {start_step}" if checkpoint else "starting"
    print(f"textgym train {plan.agent}: {budget} {spec.unit}, {verb}, in {out}")
    _rewrite_csv(agent.history, out / "progress.csv")
    logger = CSVLogger(out, tensorboard=importlib.util.find_spec("tensorboard") is not None)
    began = time.perf_counter()

    def close_session(ended: str) -> None:
        session.update(end_step=int(agent.step), seconds=time.perf_counter() - began, ended=ended)
        status["steps_done"] = int(agent.step)
        write_json(out / "run.json", status)

    try:
        while not _done(agent, budget):
            seen = len(agent.history)
            agent.learn(min(_chunk(plan), budget - int(agent.step)))
            for row in agent.history[seen:]:
                logger.log(row)
            _save_checkpoint(agent, out)
            status["steps_done"] = int(agent.step)
            write_json(out / "run.json", status)
            last = agent.history[-1] if agent.history else {}
            shown = ", ".join(f"{k} {last[k]:.4g}" for k in spec.curve if k in last)
            print(f"  {agent.step}/{budget} {spec.unit}{': ' + shown if shown else ''}")
    except KeyboardInterrupt:
        close_session("interrupted")
        print(
            f"interrupted: {out}/checkpoint holds {status['steps_done']} of {budget} {spec.unit}; "
            f"continue with: textgym train --resume {out}",
            file=sys.stderr,
        )
        return 130
    finally:
        logger.close()
    if _latest_checkpoint(out) is None:  # the budget was done before the first chunk (BC)
        _save_checkpoint(agent, out)
    _export_policy(plan, agent, out)
    plot_curve(agent.history, spec.curve, out / "curve.png", f"textgym train {plan.agent}")
    status["finished"] = True
    close_session("finished")
    print(f"done: {out}/policy; evaluate it with: textgym eval --model {out}")
    return 0


def _export_policy(plan: TrainPlan, agent: Any, out: Path) -> None:
    """``out/policy``: the trained policy as a plain HF folder (BC's best weights when kept)."""
    if plan.agent == "bc" and plan.config.restore_best:
        agent.restore_best()
    tmp = out / "policy.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    agent.policy.save_pretrained(tmp)
    shutil.rmtree(out / "policy", ignore_errors=True)
    tmp.rename(out / "policy")


def train_command(argv: Sequence[str], prog: str = "textgym train") -> int:
    plan = resolve_train(argv, prog)
    if plan.meta.resume:
        status = json.loads((plan.out / "run.json").read_text())
        if status.get("finished") and (plan.out / "policy").is_dir():
            print(
                f"{plan.out} is finished ({status['steps_done']} {status['unit']}): nothing to do"
            )
            return 0
    with _quiet_transformers():
        return train(plan)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" / "Writing model shards" bars at every model load and checkpoint."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


# --- eval ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalOptions:
    """``textgym eval``: the evaluation every study uses (``textgym.evaluation``)."""

    model: str = EMBEDDED
    """The model to evaluate: an HF path or hub name, 'embedded', or a `textgym train` run
    directory (its policy/)."""
    task: str | None = None
    """A built-in task or a JSONL file (default: the run's task, else reviews)."""
    reward: str | None = None
    """The "reward" metric's spec (default: the run's --reward, else the task's own)."""
    ref: str | None = None
    """π_ref of the KL and perplexity metrics (default: the run's starting model, else the model
    itself)."""
    split: Literal["train", "validation", "test"] = "test"
    prompts: int = 128
    """Evaluate on the first N prompts of the split, one sampled completion each."""
    max_new_tokens: int | None = None
    """The longest completion (default: the run's, else 32, the env's default)."""
    seed: int = 0
    """Seeds the sampler (temperature 1: the policy's own distribution)."""
    device: str = "auto"
    json: str | None = None
    """Write the metrics as JSON here (default for a run: DIR/eval/<task>_<split>.json); '-':
    print the JSON alone, instead of the table."""


def _eval_inputs(opts: EvalOptions) -> tuple[str, str, dict[str, Any] | None]:
    """(policy path, reference path, the run's config) for ``opts.model`` (None: not a run)."""
    run_dir = Path(opts.model)
    if (run_dir / "run.json").is_file() and (run_dir / "config.json").is_file():
        run = json.loads((run_dir / "config.json").read_text())
        if not (run_dir / "policy").is_dir():
            raise UsageError(
                f"{run_dir} is not finished (no policy/ yet): textgym train --resume {run_dir}"
            )
        ref = opts.ref or run.get("model", EMBEDDED)
        return str(run_dir / "policy"), _model_path(ref), run
    return _model_path(opts.model), _model_path(opts.ref or opts.model), None


def evaluate(opts: EvalOptions) -> dict[str, Any]:
    """The metrics of ``opts`` and what they were measured on (the JSON ``textgym eval`` writes)."""
    from textgym.evaluation import evaluate_policy_on_task
    from textgym.lm import LanguageModel
    from textgym.provenance import git_sha, versions
    from textgym.tasks import load

    if opts.prompts < 1:
        raise UsageError(f"--prompts must be >= 1, got {opts.prompts}")
    policy_path, ref_path, run = _eval_inputs(opts)
    run = run or {}
    task_name = opts.task or run.get("task") or "reviews"
    reward = parse_reward(opts.reward or run.get("reward") or run.get("env_reward"))
    max_new = int(
        opts.max_new_tokens or run.get("max_new_tokens") or RUN_FIELDS["max_new_tokens"].default
    )
    task = _task(task_name, opts.split)
    spec = load(task, opts.split) if isinstance(task, str) else task
    if reward is None and spec.reward is None:
        raise UsageError(f"task {task_name!r} has no reward of its own: give --reward")
    try:
        policy = LanguageModel.from_pretrained(policy_path, device=opts.device)
        ref = LanguageModel.from_pretrained(ref_path, device=opts.device)
    except (OSError, ValueError) as err:
        raise UsageError(str(err).strip().splitlines()[0]) from err
    ref.model.requires_grad_(False)
    policy.model.eval()
    start = time.perf_counter()
    metrics = evaluate_policy_on_task(
        policy,
        task,
        ref=ref,
        split=opts.split,
        n_prompts=opts.prompts,
        max_new_tokens=max_new,
        seed=opts.seed,
        reward=reward,
    )
    return {
        "model": opts.model,
        "policy": policy_path,
        "ref": ref_path,
        "task": task_name,
        "split": opts.split,
        "prompts": min(opts.prompts, len(spec)),
        "max_new_tokens": max_new,
        "reward": reward_text(reward),
        "seed": opts.seed,
        "metrics": metrics,
        "seconds": time.perf_counter() - start,
        "device": str(policy.device),
        "git": git_sha(),
        "versions": versions(),
        "command": ["textgym", "eval", *sys.argv[2:]] if sys.argv[1:2] == ["eval"] else None,
    }


def metrics_table(metrics: Mapping[str, float]) -> str:
    """A Markdown table, metric | value, in ``textgym.evaluation.ALL_METRICS``' order."""
    from textgym.evaluation import ALL_METRICS

    order = [m for m in ALL_METRICS if m in metrics] + [m for m in metrics if m not in ALL_METRICS]
    return "\n".join(
        ["| metric | value |", "|---|---|", *(f"| {m} | {metrics[m]:.4g} |" for m in order)]
    )


def eval_command(argv: Sequence[str], prog: str = "textgym eval") -> int:
    from textgym.records import write_json

    valid = flag_names(EvalOptions)
    opts = _parse_flags(EvalOptions, list(argv), EvalOptions(), prog, valid)
    with _quiet_transformers():
        result = evaluate(opts)
    if opts.json == "-":  # the JSON alone, on stdout (textgym eval ... --json - | jq)
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"# textgym eval: {result['model']} on {result['task']} ({result['split']}, "
        f"{result['prompts']} prompts, {result['seconds']:.0f} s), ref {result['ref']}"
    )
    print(metrics_table(result["metrics"]))
    target = opts.json
    if target is None and _eval_inputs(opts)[2] is not None:
        target = str(Path(opts.model) / "eval" / f"{Path(result['task']).stem}_{opts.split}.json")
    if target is not None:
        print(f"# written to {write_json(target, result)}")
    return 0


# --- bench, demo ---------------------------------------------------------------------------------


def bench_command(argv: Sequence[str], prog: str = "textgym bench") -> int:
    """``textgym.benchmark`` with its own flags; ``--out`` defaults to ./benchmark[_quick]."""
    from textgym import benchmark

    cfg = benchmark.parse(list(argv), prog=prog, parser_class=_Parser)
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        cfg = dataclasses.replace(cfg, out=Path(cfg.out).name)
    for path in sorted((Path(cfg.out) / "cells").glob("*.json")):
        try:  # a cell of another budget is refused before hours of training, not after
            benchmark.check_same_config(json.loads(path.read_text()), cfg, path)
        except ValueError as err:
            raise UsageError(str(err)) from None
    with _quiet_transformers():
        benchmark.main_with(cfg)
    return 0


def demo_command(argv: Sequence[str], prog: str = "textgym demo") -> int:
    from textgym.__main__ import main as demo

    demo(list(argv), prog=prog)
    return 0


# --- main ----------------------------------------------------------------------------------------


def _overview(prog: str) -> str:
    lines = [f"usage: {prog} <command> [options]   ({prog} <command> --help for its options)", ""]
    lines += [f"  {name:<7}{about}" for name, about in COMMANDS.items()]
    return "\n".join(lines)


def main(
    argv: Sequence[str] | None = None, prog: str = "textgym", default: str | None = None
) -> int:
    """Run one command; return the exit status (2 for a usage error, printed as one line).

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
        prog: the program name shown in messages.
        default: the command run when ``argv`` is empty or starts with an option that is not
            ``--help`` (``python -m textgym`` passes ``"demo"``, as before there were commands);
            None prints the command list.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if default and (not args or (args[0].startswith("-") and args[0] not in ("-h", "--help"))):
        args = [default, *args]
    if not args or args[0] in ("-h", "--help"):
        print(_overview(prog))
        return 0
    if args[0] == "--version":
        from textgym import __version__

        print(f"textgym {__version__}")
        return 0
    command, rest = args[0], args[1:]
    run = {
        "train": train_command,
        "eval": eval_command,
        "bench": bench_command,
        "demo": demo_command,
    }
    try:
        if command not in run:
            raise UsageError(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
        return run[command](rest, f"{prog} {command}")
    except UsageError as err:
        name = f"{prog} {command}" if command in run else prog
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as err:  # --help
        return err.code if isinstance(err.code, int) else 0
    except KeyboardInterrupt:
        print(f"{prog} {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
