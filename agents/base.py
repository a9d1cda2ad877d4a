"""The family every agent belongs to, as stable-baselines3's ``BaseAlgorithm``: no algorithm here.

Every agent

- is built from objects (policy LM, env or data, reward, ``config=<Algo>Config(...)``) and keeps its
  frozen config as ``self.config``; runtime settings are constructor arguments, never config fields:
  ``device``, ``log_dir``, ``tensorboard``, ``progress_bar`` and ``accelerator``;
- runs ``learn(n)``, which returns the new history rows and appends them to ``self.history`` (and,
  with ``log_dir``, to ``progress.csv``);
- saves and loads through one pair of methods, :meth:`Agent.save` / :meth:`Agent.load`, in the one
  checkpoint format of :mod:`textgym.checkpoint` (safetensors + JSON, no pickle). An agent says
  what to write through three hooks: ``_write_parts`` (model folders, sub-agents), ``_state``
  (plain data and tensors) and ``_restore`` (rebuild from them; its arguments are ``load``'s).

:class:`DataParallel` holds the arithmetic of data parallelism through ``accelerate`` (sums over
processes, each process's share of a batch, the loss scale that makes DDP's average of W gradients
the gradient of the global mean), so that ``learn()`` reads the same with one process or many.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from textgym.checkpoint import load_state, restoring, save_state
from textgym.training import CSVLogger

__all__ = ["Agent", "DataParallel"]


class DataParallel:
    """Sums over data-parallel processes and each process's share of a batch.

    Without an accelerator (one process) every method is the identity of its single-process
    meaning, so agents call them unconditionally.

    Args:
        accelerator: an ``accelerate.Accelerator`` or None.
    """

    def __init__(self, accelerator: Any = None) -> None:
        self.accelerator = accelerator
        self.world = 1 if accelerator is None else int(accelerator.num_processes)
        self.rank = 0 if accelerator is None else int(accelerator.process_index)
        self.is_main = accelerator is None or bool(accelerator.is_main_process)

    def sum(self, x: Tensor) -> Tensor:
        """Σ over processes (``x`` itself in one process)."""
        return x if self.accelerator is None else self.accelerator.reduce(x, reduction="sum")

    def weighted_sums(self, values: dict[str, Tensor], weight: float) -> dict[str, Tensor]:
        """Σ over processes of ``weight`` x each value, in one all-reduce.

        With ``weight`` = this process's share of the global batch (or 1/W for values already
        scaled by W), per-process means become global means. In one process the values are
        returned as they are.
        """
        if self.accelerator is None:
            return values
        stacked = torch.stack([v.detach().double() * weight for v in values.values()])  # (K,)
        summed = self.accelerator.reduce(stacked, reduction="sum")
        return dict(zip(values, summed.unbind(), strict=True))

    def global_terms(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """Loss terms as global values, the same on every process (the same dict in one process).

        Each process's terms are its shard's share of the global token or episode mean scaled by
        W, so the mean over processes is the global value; logging and the finiteness check then
        agree on every process.
        """
        return self.weighted_sums(terms, 1.0 / self.world)

    def shard(self, index: Tensor) -> Tensor:
        """This process's contiguous share of a global batch of row indices (all of it in one)."""
        b = len(index)
        return index[self.rank * b // self.world : (self.rank + 1) * b // self.world]

    def loss_scale(self, local: int, total: int) -> float:
        """W·B_r/B: DDP averages W gradients, so weighting process r's mean loss over its B_r of
        the B rows by this makes the average the gradient of the mean over all B (1 in one)."""
        return self.world * local / total

    def barrier(self) -> None:
        """Wait for every process (nothing in one)."""
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


class Agent:
    """Base of every agent: config, runtime settings, history, logging and checkpoints."""

    config_class: ClassVar[type]
    """The agent's config dataclass (a checkpoint's config.json is rebuilt into it)."""
    agent_name: ClassVar[str] = ""
    """The name a checkpoint records (``load`` refuses another agent's); default: the class name."""

    config: Any
    step: int
    history: list[dict[str, float]]
    dp: DataParallel
    logger: CSVLogger | None
    progress_bar: bool

    def _setup_runtime(
        self,
        *,
        log_dir: str | Path | None = None,
        tensorboard: bool = False,
        progress_bar: bool = True,
        accelerator: Any = None,
    ) -> None:
        """The runtime settings every agent's constructor takes (only the main process logs)."""
        self.dp = DataParallel(accelerator)
        self.accelerator = accelerator
        self.world = self.dp.world
        log = log_dir is not None and self.dp.is_main
        self.logger = CSVLogger(log_dir, tensorboard) if log else None  # type: ignore[arg-type]
        self.progress_bar = progress_bar and self.dp.is_main
        self.step = 0
        self.history = []

    def _record(self, row: dict[str, float]) -> None:
        """Append one row to the history and to the CSV/TensorBoard log."""
        self.history.append(row)
        if self.logger is not None:
            self.logger.log(row)

    @classmethod
    def _name(cls) -> str:
        return cls.agent_name or cls.__name__

    # ------------------------------------------------------------------ checkpoint hooks

    def _write_parts(self, path: Path) -> list[str]:
        """Write the model folders / sub-agent checkpoints under ``path``; return their names."""
        return []

    def _state(self) -> dict[str, Any]:
        """Everything else a resumed run needs, as plain data and tensors."""
        raise NotImplementedError

    @classmethod
    def _restore(
        cls, path: Path, config: Any, state: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Rebuild the agent from a checkpoint; ``args``/``kwargs`` are :meth:`load`'s."""
        raise NotImplementedError

    # ------------------------------------------------------------------ save / load

    def save(self, directory: str | Path) -> None:
        """Write a checkpoint that :meth:`load` resumes bit for bit on CPU.

        Under ``accelerate`` every process calls it; the main process writes, and it returns on
        every process once the files are complete, so any process may ``load`` them next.
        """
        path = Path(directory)
        self.dp.barrier()
        if self.dp.is_main:
            parts = self._write_parts(path)
            save_state(
                path, agent=self._name(), config=self.config, parts=parts, state=self._state()
            )
        self.dp.barrier()

    @classmethod
    def load(cls, directory: str | Path, *args: Any, **kwargs: Any) -> Any:
        """Rebuild an agent saved by :meth:`save` and resume where it stopped.

        What ``args``/``kwargs`` it takes is the agent's (its env, ``device``, runtime settings:
        see the agent's docstring). Every part the checkpoint lists must be there: a missing one is
        an error naming it, never a substitute.
        """
        path = Path(directory)
        config: Any
        config, state = load_state(path, agent=cls._name(), config_class=cls.config_class)
        with restoring(path):
            return cls._restore(path, config, state, *args, **kwargs)
