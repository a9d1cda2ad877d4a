"""Tasks: the prompts an episode starts from, their references, an optional expert, a split.

A :class:`Task` is plain data. The env tokenises its prompts once at construction, picks one per
episode with ``np_random`` (or ``options={"prompt_index": i}``), and hands the references to the
reward. Build one from a list, a JSONL file or a (Hugging Face) dataset, or load a built-in one::

    Task.from_list(["Say hi:", "Say bye:"], references=[" hi", [" bye", " goodbye"]])
    Task.from_jsonl("my_task.jsonl", split="train")  # {"prompt": ..., "references": [...]} lines
    textgym.tasks.load("reverse", split="validation")      # shipped data + default reward + expert

Expert API (defined in :mod:`textgym.experts`)
----------------------------------------------
An expert π_E labels *any* state of the token MDP (including states off its own distribution, as
DAgger needs) with its next token. It is defined once here and reached through the envs
(``TextGenEnv.expert_action()``, ``TextGenVectorEnv.expert_actions()``):

- :class:`Expert` is unbound data (picklable, tokenizer-free) that a task carries;
- ``expert.bind(task, tokenizer, max_new_tokens)`` returns a :class:`BoundExpert`, a batched
  function ``(prompt_index (B,), input_ids (B, L), prompt_lengths (B,), completion_lengths (B,))
  -> (B,) int64`` over the env's right-padded observation arrays. The env binds its task's expert
  once, at construction, with its own tokenizer.

:class:`ReferenceExpert` is the exact oracle of tasks whose answer is determined (the reverse
task): position-based, its action at completion step t is token t of the tokenised reference,
then EOS, whatever the prefix. :class:`FunctionExpert` wraps a per-row Python function.
``Task.demonstrations()`` gives (prompt, completion) pairs for behaviour cloning.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

from textgym.dynamic_tasks import PuzzleExpert, PuzzleReward
from textgym.experts import BoundExpert, Expert, FunctionExpert, ReferenceExpert
from textgym.records import FieldTypeError, MissingFieldError, read_jsonl
from textgym.verifiable import FormatReward, MathReward, builtin_records

__all__ = [  # the experts and record errors are defined in textgym.experts / textgym.records
    "SPLITS",
    "BoundExpert",
    "Expert",
    "FieldTypeError",
    "FunctionExpert",
    "MissingFieldError",
    "ReferenceExpert",
    "RewardSpec",
    "Task",
    "load",
    "names",
    "read_jsonl",
]

RewardSpec = Any
"""What ``textgym.rewards.make`` accepts: a name, a dict of weights, a reward object, a callable."""

SPLITS = ("train", "validation", "test")


def _as_reference_group(refs: str | Iterable[str], i: int) -> tuple[str, ...]:
    """One prompt's references as a tuple of str; a bare str is one reference."""
    # Callers pass raw JSON / dataset values, so the element types are checked here at run time.
    if isinstance(refs, str):
        group: tuple[Any, ...] = (refs,)
    elif isinstance(refs, Iterable) and not isinstance(refs, Mapping | bytes):
        group = tuple(refs)
    else:
        group = ()
    if not group or not all(isinstance(r, str) for r in group):
        raise ValueError(
            f"references of prompt {i} must be a str or a non-empty sequence of str, "
            f"got {refs!r:.200}"
        )
    return group


def _check_record(
    rec: Mapping[str, Any], where: str, prompt_field: str, references_field: str | None
) -> None:
    """Field checks of one task record read from a file; errors name ``where`` and the field."""
    if prompt_field not in rec:
        raise MissingFieldError(
            f"{where}: no {prompt_field!r} field (the prompt); fields: {sorted(rec)}"
        )
    if not isinstance(rec[prompt_field], str):
        raise FieldTypeError(
            f"{where}: field {prompt_field!r} must be a str, got {rec[prompt_field]!r:.100}"
        )
    refs = rec.get(references_field) if references_field is not None else None
    if refs is not None and not (
        isinstance(refs, str)
        or (isinstance(refs, list) and refs and all(isinstance(r, str) for r in refs))
    ):
        raise FieldTypeError(
            f"{where}: field {references_field!r} must be a str or a non-empty list of str, "
            f"got {refs!r:.100}"
        )
    split = rec.get("split")
    if split is not None and not isinstance(split, str):
        raise FieldTypeError(f"{where}: field 'split' must be a str, got {split!r:.100}")


@dataclass(frozen=True, eq=False)
class Task:
    """Prompts, optional references (one or many per prompt), optional expert, split.

    Attributes:
        name: shown in errors, ``repr`` and env ids.
        prompts: N prompt strings.
        references: None, or N tuples of reference strings (several per prompt allowed).
        split: which split the prompts come from (``None``: all / unknown).
        expert: an :class:`Expert` (see the module docstring), or None.
        stop_sequences: strings that end an episode like EOS (``terminated=True``). Matched on
            token ids: the env tokenises each one on its own and ends an episode when the
            completion's last tokens equal it, so nothing is decoded per step.
        reward: the reward spec the env uses when it is given none (``textgym.rewards.make``).
    """

    name: str
    prompts: tuple[str, ...]
    references: tuple[tuple[str, ...], ...] | None = None
    split: str | None = None
    expert: Expert | None = None
    stop_sequences: tuple[str, ...] = ()
    reward: RewardSpec | None = field(default=None)

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples, so that a Task stays immutable.
        if isinstance(self.prompts, str):
            raise TypeError(f"prompts must be a sequence of str, got one str {self.prompts!r:.80}")
        prompts = tuple(self.prompts)
        if not prompts:
            raise ValueError(f"task {self.name!r} has no prompts")
        bad = next((i for i, p in enumerate(prompts) if not isinstance(p, str)), None)
        if bad is not None:
            raise TypeError(
                f"prompt {bad} of task {self.name!r} is {type(prompts[bad]).__name__}, not str: "
                f"{prompts[bad]!r:.80}"
            )
        object.__setattr__(self, "prompts", prompts)
        if self.references is not None:
            if isinstance(self.references, str):
                raise TypeError(
                    "references must be one str or sequence of str per prompt, not one str"
                )
            refs = tuple(_as_reference_group(r, i) for i, r in enumerate(self.references))
            if len(refs) != len(prompts):
                raise ValueError(
                    f"task {self.name!r}: {len(prompts)} prompts but {len(refs)} reference sets"
                )
            object.__setattr__(self, "references", refs)
        stops = (
            (self.stop_sequences,)
            if isinstance(self.stop_sequences, str)
            else tuple(self.stop_sequences)
        )
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError(f"stop_sequences must be non-empty strings, got {stops!r}")
        object.__setattr__(self, "stop_sequences", stops)
        if self.expert is not None and not isinstance(self.expert, Expert):
            raise TypeError(
                "expert must be a textgym.tasks.Expert (e.g. ReferenceExpert()), "
                f"got {self.expert!r}"
            )

    def __len__(self) -> int:
        return len(self.prompts)

    def __repr__(self) -> str:
        refs = "none" if self.references is None else f"{sum(map(len, self.references))}"
        return (
            f"Task(name={self.name!r}, prompts={len(self.prompts)}, references={refs}, "
            f"split={self.split!r}, expert={type(self.expert).__name__ if self.expert else None})"
        )

    def demonstrations(self, reference_index: int = 0) -> list[tuple[str, str]]:
        """(prompt, completion) pairs for behaviour cloning: each prompt with one reference.

        Args:
            reference_index: which reference to use as the completion.

        Returns:
            N pairs.
        """
        if self.references is None:
            raise ValueError(f"task {self.name!r} has no references, so no demonstrations")
        out = []
        for i, (p, refs) in enumerate(zip(self.prompts, self.references, strict=True)):
            if reference_index >= len(refs):
                raise ValueError(
                    f"prompt {i} has {len(refs)} reference(s), no index {reference_index}"
                )
            out.append((p, refs[reference_index]))
        return out

    # --- builders ----------------------------------------------------------------------------

    @classmethod
    def from_list(
        cls,
        prompts: Sequence[str],
        references: Sequence[str | Sequence[str]] | None = None,
        *,
        name: str = "custom",
        split: str | None = None,
        expert: Expert | None = None,
        stop_sequences: Sequence[str] = (),
        reward: RewardSpec | None = None,
    ) -> Task:
        """A task from Python lists.

        Args:
            prompts: N prompts.
            references: None, or N items, each one reference (str) or several (list of str).
            name: task name.
            split: split label (informational).
            expert: optional expert.
            stop_sequences: strings that end an episode like EOS.
            reward: default reward spec.

        Returns:
            The task.
        """
        refs = (
            None
            if references is None
            else tuple(_as_reference_group(r, i) for i, r in enumerate(references))
        )
        return cls(
            name=name,
            prompts=tuple(prompts),
            references=refs,
            split=split,
            expert=expert,
            stop_sequences=tuple(stop_sequences),
            reward=reward,
        )

    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        *,
        name: str = "custom",
        split: str | None = None,
        prompt_field: str = "prompt",
        references_field: str | None = "references",
        **kwargs: Any,
    ) -> Task:
        """A task from dict-like records, keeping those whose ``"split"`` equals ``split``.

        Args:
            records: mappings with a prompt field and optionally a references field (a str or a
                list of str) and a ``"split"`` field.
            name: task name.
            split: keep only records with this ``"split"``; None keeps all. Records without a
                ``"split"`` field are kept whatever ``split`` is.
            prompt_field: key of the prompt.
            references_field: key of the references; None, or a key no record has, for none.
            **kwargs: ``expert``, ``stop_sequences``, ``reward`` (see :class:`Task`).

        Returns:
            The task.
        """
        prompts: list[str] = []
        refs: list[tuple[str, ...]] = []
        n_with_refs = 0
        seen_splits: set[str] = set()
        for i, rec in enumerate(records):
            rec_split = rec.get("split")
            if rec_split is not None:
                seen_splits.add(str(rec_split))
            if split is not None and rec_split is not None and rec_split != split:
                continue
            if prompt_field not in rec:
                raise KeyError(f"record {i} has no {prompt_field!r} field; fields: {sorted(rec)}")
            prompts.append(rec[prompt_field])
            r = rec.get(references_field) if references_field is not None else None
            if r is not None:
                refs.append(_as_reference_group(r, i))
                n_with_refs += 1
            else:
                refs.append(())
        if not prompts:
            raise ValueError(
                f"no records for split={split!r} in task {name!r}; "
                f"splits present: {sorted(seen_splits)}"
            )
        if 0 < n_with_refs < len(prompts):
            missing = next(i for i, r in enumerate(refs) if not r)
            raise ValueError(
                f"task {name!r}: {n_with_refs} of {len(prompts)} records have references "
                f"(kept record {missing} has none); give every record references or none"
            )
        return cls(
            name=name,
            prompts=tuple(prompts),
            references=tuple(refs) if n_with_refs else None,
            split=split,
            **kwargs,
        )

    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike[str],
        split: str | None = None,
        *,
        name: str | None = None,
        prompt_field: str = "prompt",
        references_field: str | None = "references",
        **kwargs: Any,
    ) -> Task:
        """A task from a JSON-lines file, one ``{"prompt": ..., "references": [...]}`` a line.

        Args:
            path: the file.
            split: keep lines whose ``"split"`` equals it (lines without one are kept).
            name: task name (default: the file's stem).
            prompt_field: key of the prompt.
            references_field: key of the references (a str or a list of str).
            **kwargs: ``expert``, ``stop_sequences``, ``reward`` (see :class:`Task`).

        Returns:
            The task.
        """
        path = Path(path)
        lines = read_jsonl(path)
        if not lines:
            raise ValueError(f"{path}: no records (the file is empty)")
        for where, rec in lines:
            _check_record(rec, where, prompt_field, references_field)
        records = [rec for _, rec in lines]
        return cls.from_records(
            records,
            name=name or path.stem,
            split=split,
            prompt_field=prompt_field,
            references_field=references_field,
            **kwargs,
        )

    @classmethod
    def from_dataset(
        cls,
        ds: Any,
        prompt_field: str = "prompt",
        references_field: str | None = None,
        *,
        split: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Task:
        """A task from a Hugging Face dataset (or any iterable of dict rows).

        Args:
            ds: a ``datasets.Dataset``, a ``DatasetDict`` (then ``split`` picks one), a dataset
                name for ``datasets.load_dataset(ds, split=split)`` (needs ``datasets``), or any
                iterable of mappings.
            prompt_field: column of the prompt.
            references_field: column of the references (a str or a list of str), if any.
            split: the split to load or pick.
            name: task name (default: the dataset's name when known).
            **kwargs: ``expert``, ``stop_sequences``, ``reward`` (see :class:`Task`).

        Returns:
            The task.
        """
        if isinstance(ds, str):
            try:
                import datasets
            except ImportError as err:
                raise ImportError(
                    "Task.from_dataset(<name>) needs the optional package `datasets`: "
                    "pip install datasets (or pass the rows / a loaded dataset instead)"
                ) from err
            name = name or ds
            ds = datasets.load_dataset(ds, split=split)
        elif isinstance(ds, Mapping):
            # A DatasetDict (a dict subclass) or any dict of splits: pick the split.
            if split is None or split not in ds:
                raise ValueError(
                    f"pass split= one of {sorted(ds.keys())} to pick from {type(ds).__name__}"
                )
            ds = ds[split]
        if hasattr(ds, "column_names"):
            # Column access is one Arrow conversion instead of a Python dict per row.
            cols = list(ds.column_names)
            if prompt_field not in cols:
                raise KeyError(f"dataset has no column {prompt_field!r}; columns: {cols}")
            prompts = list(ds[prompt_field])
            refs = None
            if references_field is not None:
                if references_field not in cols:
                    raise KeyError(f"dataset has no column {references_field!r}; columns: {cols}")
                refs = list(ds[references_field])
            info_name = getattr(getattr(ds, "info", None), "dataset_name", None)
            return cls.from_list(
                prompts, refs, name=name or info_name or "dataset", split=split, **kwargs
            )
        # Rows are already one split: don't filter on a "split" field again.
        return cls.from_records(
            ds,
            name=name or "dataset",
            split=None,
            prompt_field=prompt_field,
            references_field=references_field,
            **kwargs,
        )


# --- built-in tasks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Builtin:
    file: str
    reward: RewardSpec
    doc: str
    expert: Callable[[], Expert | None] = lambda: None
    stop_sequences: tuple[str, ...] = ()
    records: Callable[[], Iterable[Mapping[str, Any]]] | None = None
    """Rows generated in code instead of read from ``file`` (``textgym.verifiable``)."""


BUILTIN: dict[str, _Builtin] = {
    "reviews": _Builtin(
        "reviews",
        "sentiment",
        "continue the start of a movie review; reward: positive sentiment (VADER compound).",
    ),
    "concepts": _Builtin(
        "concepts",
        {"bleu": 0.5, "rougeL": 0.5},
        "write one sentence using given concepts (CommonGen-like), several references per "
        "prompt; reward: 0.5 BLEU + 0.5 ROUGE-L against all references.",
    ),
    "reverse": _Builtin(
        "reverse",
        "exact_match",
        "write the prompt's words in reverse order; reward: exact match; expert: the exact "
        "position-based oracle (ReferenceExpert).",
        expert=ReferenceExpert,
    ),
    "target_sum": _Builtin(
        "target_sum",
        PuzzleReward("target_sum"),
        "reach a target total from a start with steps run +5, walk +2, back -3; reward: 1 when "
        "the final total is the target; expert: the dynamic shortest-path oracle "
        "(textgym.dynamic_tasks, docs/dynamic_tasks.md).",
        expert=lambda: PuzzleExpert("target_sum"),
    ),
    "grid_nav": _Builtin(
        "grid_nav",
        PuzzleReward("grid_nav"),
        "walk a 5x5 grid with walls from @ to * with N E S W; reward: 1 when the walk ends on "
        "*; expert: the dynamic shortest-path oracle (textgym.dynamic_tasks).",
        expert=lambda: PuzzleExpert("grid_nav"),
    ),
    "arithmetic": _Builtin(
        "arithmetic",
        MathReward(),
        "multi-step arithmetic word problems (1-3 steps in train/validation, 4-5 in test); "
        "references: worked solutions ending 'The answer is N.'; reward: 1 when the final answer "
        "is exact (textgym.verifiable, docs/verifiable.md).",
        records=lambda: builtin_records("arithmetic"),
    ),
    "format": _Builtin(
        "format",
        FormatReward(),
        "write three words in a requested format (brackets, capitals, numbered, JSON, "
        "reversed); reward: 1 for the exact text, 0.5 for the right format with other words.",
        records=lambda: builtin_records("format"),
    ),
}
"""The built-in tasks: name -> data file (in ``textgym/assets/data``), default reward, expert."""


def names() -> list[str]:
    """The names :func:`load` accepts."""
    return sorted(BUILTIN)


def load(name: str, split: str | None = "train") -> Task:
    """A built-in task, read from the data shipped in the package, with its default reward.

    Args:
        name: one of :func:`names` (``"reviews"``, ``"concepts"``, ``"reverse"``).
        split: ``"train"``, ``"validation"``, ``"test"``, or None for all.

    Returns:
        The task; ``task.reward`` is its default reward spec.
    """
    if name not in BUILTIN:
        raise ValueError(f"unknown task {name!r}; built-in tasks: {', '.join(names())}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    from textgym.assets import DATA_DIR

    spec = BUILTIN[name]
    if spec.records is not None:
        return Task.from_records(
            spec.records(),
            name=name,
            split=split,
            expert=spec.expert(),
            stop_sequences=spec.stop_sequences,
            reward=spec.reward,
        )
    return Task.from_jsonl(
        Path(DATA_DIR) / f"{spec.file}.jsonl",
        split=split,
        name=name,
        expert=spec.expert(),
        stop_sequences=spec.stop_sequences,
        reward=spec.reward,
    )
