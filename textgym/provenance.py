"""Where a result came from: the git revision and the versions of the packages that made it.

Every benchmark, study and command-line run records these (one home: the scripts in experiments/
and the ``textgym`` command call this module instead of each asking git themselves).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

__all__ = ["describe", "git_sha", "versions"]

_ROOT = Path(__file__).resolve().parent.parent


def git_sha(directory: str | os.PathLike[str] | None = None) -> str:
    """The short revision of the checkout holding ``directory`` (the package's own by default),
    with ``-dirty`` when tracked files differ from it; ``"unknown"`` outside a git checkout."""
    cwd = Path(directory) if directory is not None else _ROOT

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}{'-dirty' if dirty else ''}"


def versions(*names: str) -> dict[str, str]:
    """Installed versions of python, torch, transformers and ``names`` ("not installed" if not)."""
    out = {"python": platform.python_version()}
    for name in ("textgym", "torch", "transformers", *names):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def describe(*names: str) -> str:
    """One line for a results header: git revision, versions, machine and command line."""
    parts = [f"git {git_sha()}"]
    parts += [f"{k} {v}" for k, v in versions(*names).items()]
    parts.append(f"{platform.machine()}, {os.cpu_count()} cores")
    parts.append("command: " + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    return ", ".join(parts)
