"""The distribution installs the three import names, from an editable install and from a wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRAMMAR_FILES = ("english", "reviews", "concepts", "reverse")
IMPORT_CHECK = (
    "import textgym, textgym.rewards, textgym.agents, os;"
    "print(os.path.dirname(textgym.__file__));"
    "print(os.path.dirname(textgym.rewards.__file__));"
    "print(os.path.dirname(textgym.agents.__file__));"
    "print(os.path.isfile(os.path.join(textgym.DEFAULT_MODEL, 'config.json')))"
)


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_installed_package_imports_from_outside_the_repo(tmp_path: Path) -> None:
    lines = _run([sys.executable, "-c", IMPORT_CHECK], cwd=tmp_path).split()
    assert lines[0] == str(ROOT / "textgym")
    assert lines[1] == str(ROOT / "rewards")
    assert lines[2] == str(ROOT / "agents")


@pytest.mark.slow
def test_built_wheel_holds_the_three_packages_and_the_model(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(ROOT),
        ],
        cwd=tmp_path,
    )
    (wheel,) = wheel_dir.glob("textgym-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in (
        "textgym/__init__.py",
        "textgym/rewards/__init__.py",
        "textgym/agents/__init__.py",
        # The corpus grammars' tables: without them textgym.assets.corpus fails at import.
        *(f"textgym/assets/grammar/{name}.json" for name in GRAMMAR_FILES),
    ):
        assert module in names
    assert not any(name.startswith(("rewards/", "agents/", "tests/")) for name in names)
    site = tmp_path / "site"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        cwd=tmp_path,
    )
    # The wheel's copy must win over the editable install: PYTHONPATH precedes the editable finder.
    env = {**os.environ, "PYTHONPATH": str(site)}
    lines = _run([sys.executable, "-c", IMPORT_CHECK], cwd=tmp_path, env=env).split()
    assert lines[0] == str(site / "textgym")
    assert lines[1] == str(site / "textgym" / "rewards")
    assert lines[2] == str(site / "textgym" / "agents")
    assert lines[3] == "True", "the embedded model is missing from the wheel"
