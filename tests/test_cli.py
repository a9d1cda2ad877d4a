"""The ``textgym`` command (textgym/cli.py): errors, config resolution, train -> resume -> eval.

The fast tests stop before any model is loaded; the slow ones run every command end to end on the
embedded model with tiny budgets.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import textgym
from textgym import cli
from textgym.cli import AGENTS, Meta, flag_names, main, parse_reward, resolve_train, reward_text
from textgym.evaluation import ALL_METRICS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder: the default --out (runs/AGENT) lands there."""
    monkeypatch.chdir(tmp_path)


def run_main(
    argv: list[str], capsys: pytest.CaptureFixture[str], **kwargs: Any
) -> tuple[int, str, str]:
    code = main(argv, **kwargs)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``argv``; assert exit status 2 and a one-line message on stderr; return it."""
    capsys.readouterr()  # what came before
    code, _, err = run_main(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("textgym"), lines[0]
    assert ": error: " in lines[0]
    return lines[0]


# --- errors: one line, exit status 2, the valid names ---------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["nope"], "unknown command 'nope'; commands: train, eval, bench, demo"),
        (["train", "ppoo"], "unknown agent 'ppoo'; did you mean 'ppo'? agents: reinforce, ppo,"),
        (["train", "ppo", "--lrr", "1e-3"], "unknown flag --lrr; did you mean --lr? valid flags:"),
        (["train", "ppo", "--reward", "blue"], "unknown reward 'blue'; did you mean 'bleu'?"),
        (["train", "ppo", "--reward", "bleu=0.5,sentimnt=0.5"], "unknown reward 'sentimnt'"),
        (["train", "ppo", "--task", "reviws"], "unknown task 'reviws': no such file"),
        (["train", "ppo", "--lr", "abc"], "Error parsing --lr: could not convert string to float"),
        (["train", "ppo", "--lr", "-1"], "PPOConfig.lr must be in (0, inf), got -1.0"),
        (["train", "ppo", "--steps", "0"], "--steps must be in [1, inf), got 0"),
        (
            ["train", "reinforce", "--baseline", "rlo"],
            "invalid choice 'rlo' for argument '--baseline'. Expected one of ('none', "
            "'moving_average', 'rloo', 'value')",
        ),
        (["train", "dpo"], "dpo trains on pairs: give --data"),
        (["train", "dagger", "--task", "concepts"], "dagger needs a task with an expert"),
        (["eval", "--task", "nope"], "unknown task 'nope'"),
        (["eval", "--reward", "blue"], "unknown reward 'blue'"),
        (["eval", "--promts", "3"], "unknown flag --promts; did you mean --prompts?"),
        (["bench", "--agents", "nope"], "argument --agents: invalid choice: 'nope'"),
    ],
)
def test_user_errors_are_one_line_with_exit_status_2(
    argv: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    message = one_line_error(argv, capsys)
    assert expected in message
    assert not (tmp_path / "runs").exists()  # a setup error writes no run


def test_unknown_names_list_every_valid_one(capsys: pytest.CaptureFixture[str]) -> None:
    from textgym.rewards.registry import names as reward_names

    from textgym.tasks import names as task_names

    assert all(a in one_line_error(["train", "x"], capsys) for a in AGENTS)
    flags = one_line_error(["train", "gail", "--x"], capsys)
    assert all(f" {f}" in flags for f in ("--ppo.lr", "--disc-lr", "--task", "--resume"))
    assert all(r in one_line_error(["eval", "--reward", "x"], capsys) for r in reward_names())
    assert all(t in one_line_error(["eval", "--task", "x"], capsys) for t in task_names())


def test_a_config_file_with_an_unknown_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("lr: 1.0e-3\nlearning_rate: 3\n")
    message = one_line_error(["train", "ppo", "--config", str(config)], capsys)
    assert f"{config}: unknown key 'learning_rate' for ppo; valid keys: agent, model," in message
    config.write_text("sampling: {temprature: 0.9}\n")  # a nested key: the sub-config's fields
    assert "Sampling has no field(s) ['temprature']" in one_line_error(
        ["train", "ppo", "--config", str(config)], capsys
    )
    config.write_text("agent: grpo\n")
    assert "is a run of 'grpo', not 'ppo'" in one_line_error(
        ["train", "ppo", "--config", str(config)], capsys
    )


def fake_run(directory: Path, argv: list[str], finished: bool = False) -> None:
    """A run directory as ``textgym train`` leaves it, without training."""
    plan = resolve_train(argv)
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(plan.resolved()))
    status = {"format": "textgym-run/1", "steps": plan.budget, "unit": "updates",
              "steps_done": 2, "finished": finished}  # fmt: skip
    (directory / "run.json").write_text(json.dumps(status))


def test_an_output_directory_holding_another_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    fake_run(out, ["ppo", "--lr", "1e-3", "--steps", "5"])
    argv = ["train", "ppo", "--lr", "3e-4", "--steps", "5", "--out", str(out)]
    message = one_line_error(argv, capsys)
    assert f"--out {out} holds a different run (lr: 0.001 there, 0.0003 here)" in message
    assert "--resume" in message
    assert "--overwrite" in message
    same = one_line_error(
        ["train", "ppo", "--lr", "1e-3", "--steps", "5", "--out", str(out)], capsys
    )
    assert "holds this run, stopped at 2 of 5 updates: continue it with --resume" in same
    # Not a run: never deleted, not even with --overwrite.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        message = one_line_error(["train", "ppo", "--out", str(other), *extra], capsys)
        assert "is not empty and holds no textgym run" in message
    assert (other / "notes.txt").read_text() == "keep me"


def test_resume_refuses_flags_that_change_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    fake_run(out, ["ppo", "--lr", "1e-3"])
    message = one_line_error(["train", "--resume", str(out), "--lr", "0.5"], capsys)
    assert "these flags differ from its config.json: lr: 0.001 there, 0.5 here" in message
    assert "holds no textgym run" in one_line_error(["train", "--resume", str(tmp_path)], capsys)
    # The same command again, with --resume: the run it names, unchanged.
    plan = resolve_train(["ppo", "--lr", "1e-3", "--resume", str(out)])
    assert plan.meta.out == str(out)
    assert plan.resolved() == json.loads((out / "config.json").read_text())


# --- resolution: defaults, then the file, then the flags ------------------------------------------


def test_a_yaml_config_and_flags_resolve_to_the_same_config(tmp_path: Path) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(
        "agent: ppo\ntask: concepts\nsteps: 7\nlr: 1e-3\nn-epochs: 2\nkl_target: 6\n"
        "sampling: {temperature: 0.9}\nsampling.top-k: 20\nreward: {bleu: 0.7, length: 0.3}\n"
    )
    flags = ["ppo", "--task", "concepts", "--steps", "7", "--lr", "1e-3", "--n-epochs", "2",
             "--kl-target", "6", "--sampling.temperature", "0.9", "--sampling.top-k", "20",
             "--reward", "bleu=0.7,length=0.3"]  # fmt: skip
    from_file = resolve_train(["--config", str(yaml_file)]).resolved()
    from_flags = resolve_train(flags).resolved()
    assert from_file == from_flags
    assert type(from_file["lr"]) is float  # YAML 1.2's 1e-3, not YAML 1.1's string
    assert from_file["lr"] == 1e-3
    assert type(from_file["kl_target"]) is float  # an int in the file, a float field
    assert from_file["kl_target"] == 6.0
    assert from_file["sampling"] == {"temperature": 0.9, "top_k": 20, "top_p": None}
    assert from_file["reward"] == "bleu=0.7,length=0.3"
    assert from_file["n_minibatches"] == 4  # untouched fields keep PPOConfig's defaults
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps(from_file))  # what a run directory's config.json holds
    assert resolve_train(["--config", str(json_file)]).resolved() == from_flags


def test_flags_override_the_file_and_nested_configs_keep_their_defaults(tmp_path: Path) -> None:
    config = tmp_path / "gail.yaml"
    config.write_text("ppo: {lr: 0.01}\ndisc_epochs: 2\nsteps: 9\n")
    plan = resolve_train(["gail", "--config", str(config), "--disc-epochs", "3"])
    gail = textgym.agents.GAILConfig()
    assert plan.config.disc_epochs == 3  # the flag over the file
    assert plan.run["steps"] == 9  # the file over the default
    # GAIL's own PPO defaults (gamma = lambda = 0, 2 epochs) stay under the file's ppo.lr.
    assert plan.config.ppo == dataclasses.replace(gail.ppo, lr=0.01)
    assert resolve_train(["gail"]).config == gail


def test_the_config_file_example_of_the_docs_is_its_flags(tmp_path: Path) -> None:
    """docs/cli.md: the YAML example and the command under it resolve to one config."""
    import shlex

    doc = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    section = doc[doc.index("### Config files") :]
    yaml_text = section.split("```yaml\n")[1].split("```")[0]
    command = section.split("```bash\n")[1].split("```")[0].replace("\\\n", " ").splitlines()[0]
    (tmp_path / "run.yaml").write_text(yaml_text)
    argv = shlex.split(command)
    assert argv[:2] == ["textgym", "train"]
    assert resolve_train(["--config", "run.yaml"]).resolved() == resolve_train(argv[2:]).resolved()
    for agent in AGENTS:  # and the page lists every agent
        assert f"| `{agent}` |" in doc


def test_reward_specs_parse_to_one_text() -> None:
    assert parse_reward("bleu") == "bleu"
    assert parse_reward("bleu=0.7, length=0.3") == {"bleu": 0.7, "length": 0.3}
    assert parse_reward('{"bleu": 0.7, "length": 0.3}') == {"bleu": 0.7, "length": 0.3}
    assert reward_text(parse_reward('{"bleu": 1, "length": 0.3}')) == "bleu=1.0,length=0.3"
    assert reward_text(parse_reward("bleu=1,length=.3")) == "bleu=1.0,length=0.3"


@pytest.mark.parametrize("agent", list(AGENTS))
def test_every_agent_config_field_is_a_flag_and_no_two_flags_collide(
    agent: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config_class = cli._config_class(agent)
    groups = [flag_names(Meta), flag_names(cli._run_class(agent)), flag_names(config_class)]
    flags = [f for group in groups for f in group]
    assert len(flags) == len(set(flags))  # the run options never shadow a config field
    with pytest.raises(SystemExit) as exit_:
        resolve_train([agent, "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    for flag in flags:
        assert flag in help_text  # tyro's names are the ones errors list as valid


def test_python_m_textgym_without_arguments_is_still_the_demo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[list[str], str]] = []
    monkeypatch.setattr(cli, "demo_command", lambda argv, prog: calls.append((argv, prog)) or 0)
    assert main([], prog="python -m textgym", default="demo") == 0
    assert main(["--updates", "3"], prog="python -m textgym", default="demo") == 0
    assert main(["demo", "--seconds", "1"]) == 0
    assert calls == [([], "python -m textgym demo"), (["--updates", "3"], "python -m textgym demo"),
                     (["--seconds", "1"], "textgym demo")]  # fmt: skip
    code, out, _ = run_main([], capsys)  # the console script lists the commands instead
    assert code == 0
    assert all(name in out for name in ("train", "eval", "bench", "demo"))
    monkeypatch.undo()
    code, out, _ = run_main(["demo", "--help"], capsys)  # the demo's own options
    assert code == 0
    assert "usage: textgym demo" in out
    assert "--updates" in out


def test_the_console_script_is_declared() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {"textgym": "textgym.cli:main"}
    assert {"tyro", "pyyaml"} <= {d.split(">")[0].split("<")[0] for d in
                                  pyproject["project"]["dependencies"]}  # fmt: skip


def test_every_agent_of_the_package_has_a_command_line_wiring() -> None:
    """A new agent gets an AGENTS entry (or is listed here, with the reason, as Python-only)."""
    import textgym.agents as agents
    from textgym.agents.base import Agent

    python_only = {"IRL": "needs a feature map", "RewardModelTrainer": "trains r_phi, no policy"}
    classes = {n for n in agents.__all__ if isinstance(c := getattr(agents, n), type)
               and issubclass(c, Agent)}  # fmt: skip
    assert classes == {spec.cls for spec in AGENTS.values()} | set(python_only)


# --- end to end on the embedded model -------------------------------------------------------------

TINY = ["--num-envs", "4", "--max-new-tokens", "8", "--no-progress"]


def strip_times(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: strip_times(v) for k, v in data.items() if not k.startswith("time")}
    if isinstance(data, list):
        return [strip_times(v) for v in data]
    return data


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return [strip_times(row) for row in csv.DictReader(f)]


def assert_same_checkpoint(a: Path, b: Path) -> None:
    """Every state file and tensor of two checkpoints equal (timings left out); sub-agents too."""
    files = sorted(f.relative_to(a) for f in a.rglob("*") if f.is_file())
    assert files == sorted(f.relative_to(b) for f in b.rglob("*") if f.is_file())
    for name in files:
        if name.name == "trainer_state.json":  # counters, RNG states, history
            state_a, state_b = (json.loads((d / name).read_text()) for d in (a, b))
            assert strip_times(state_a) == strip_times(state_b), name
        elif name.suffix == ".safetensors":  # weights, optimizer moments, heads
            tensors_a, tensors_b = load_file(a / name), load_file(b / name)
            assert tensors_a.keys() == tensors_b.keys(), name
            for key in tensors_a:
                assert torch.equal(tensors_a[key], tensors_b[key]), (name, key)


def interrupt_after_first_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C right after the first checkpoint is written."""
    save = cli._save_checkpoint

    def save_then_stop(agent: Any, out: Path) -> None:
        save(agent, out)
        monkeypatch.setattr(cli, "_save_checkpoint", save)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_save_checkpoint", save_then_stop)


@pytest.mark.slow
def test_train_resume_eval_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["train", "ppo", "--steps", "3", "--checkpoint-every", "2", "--lr", "1e-3", *TINY]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*argv, "--out", str(straight)]) == 0
    interrupt_after_first_checkpoint(monkeypatch)
    code, _, err = run_main([*argv, "--out", str(resumed)], capsys)
    assert code == 130
    assert f"continue with: textgym train --resume {resumed}" in err
    assert json.loads((resumed / "run.json").read_text())["steps_done"] == 2
    assert not (resumed / "policy").exists()
    assert main(["train", "--resume", str(resumed), "--no-progress"]) == 0

    # --resume equals the uninterrupted run: checkpoint state, weights, history, exported policy.
    assert_same_checkpoint(straight / "checkpoint", resumed / "checkpoint")
    assert csv_rows(straight / "progress.csv") == csv_rows(resumed / "progress.csv")
    assert len(csv_rows(resumed / "progress.csv")) == 3
    for d in (straight, resumed):
        assert (d / "policy" / "model.safetensors").read_bytes() == (
            straight / "policy" / "model.safetensors"
        ).read_bytes()

    # The run directory: resolved config, provenance, checkpoint, policy, logs, curve.
    config = json.loads((resumed / "config.json").read_text())
    assert config == resolve_train(argv[1:]).resolved()
    status = json.loads((resumed / "run.json").read_text())
    assert status["format"] == "textgym-run/1"
    assert (status["agent"], status["seed"], status["steps"], status["steps_done"]) == (
        "ppo",
        0,
        3,
        3,
    )
    assert status["finished"] is True
    assert {"python", "textgym", "torch", "transformers"} <= set(status["versions"])
    assert status["git"]
    assert [s["ended"] for s in status["sessions"]] == ["interrupted", "finished"]
    assert status["sessions"][1]["command"] == ["textgym", "train", "--resume", str(resumed),
                                                 "--no-progress"]  # fmt: skip
    assert [(s["start_step"], s["end_step"]) for s in status["sessions"]] == [(0, 2), (2, 3)]
    assert (resumed / "curve.png").read_bytes().startswith(PNG_SIGNATURE)
    policy = textgym.LanguageModel.from_pretrained(resumed / "policy", device="cpu")
    assert policy.vocab_size == textgym.LanguageModel.from_pretrained(device="cpu").vocab_size
    agent = textgym.agents.PPO.load(
        resumed / "checkpoint", _env(), device="cpu", progress_bar=False
    )
    assert agent.step == 3

    # A finished run: --resume has nothing to do; the same command again is refused.
    assert main(["train", "--resume", str(resumed)]) == 0
    assert "finished (3 of 3 updates); --overwrite" in one_line_error(
        [*argv, "--out", str(resumed)], capsys
    )

    # eval: the run's policy against its starting model, a table and a JSON file in the run.
    code, out, _ = run_main(["eval", "--model", str(resumed), "--prompts", "4"], capsys)
    assert code == 0
    result = json.loads((resumed / "eval" / "reviews_test.json").read_text())
    assert result["ref"] == textgym.DEFAULT_MODEL
    assert result["task"] == "reviews"
    assert result["max_new_tokens"] == 8  # the run's
    metrics = result["metrics"]
    assert set(ALL_METRICS) - {"toxicity"} <= set(metrics)  # toxicity: an optional extra
    assert metrics["kl"] > 0  # the trained policy moved away from the starting model
    for name, value in metrics.items():
        assert f"| {name} | {value:.4g} |" in out
    code, out, _ = run_main(
        ["eval", "--model", str(resumed), "--prompts", "4", "--json", "-"], capsys
    )
    assert (
        json.loads(out)["metrics"] == metrics
    )  # the same prompts and sampler seed: the same texts
    base = tmp_path / "base.json"
    assert main(["eval", "--prompts", "4", "--max-new-tokens", "8", "--json", str(base)]) == 0
    assert abs(json.loads(base.read_text())["metrics"]["kl"]) < 1e-5  # the model against itself


def _env() -> Any:
    import gymnasium as gym

    return gym.make_vec("TextGen-v0", num_envs=4, max_new_tokens=8)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def agent_runs(tmp_path: Path) -> dict[str, list[str]]:
    """A tiny run of every agent: two chunks, so that an interruption leaves one to resume."""
    prompts = ["Review: The acting", "Review: I watched", "Review: The plot", "Review: My friends"]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": p, "chosen": " was great and I loved it.", "rejected": " was bad."}
        for p in prompts
    ])  # fmt: skip
    thumbs = write_jsonl(tmp_path / "thumbs.jsonl", [
        {"prompt": p, "completion": c, "label": up}
        for p in prompts for c, up in ((" was great.", True), (" was bad.", False))
    ])  # fmt: skip
    rankings = write_jsonl(tmp_path / "rankings.jsonl", [
        {"prompt": p, "completions": [" was great.", " was fine.", " was bad."]} for p in prompts
    ])  # fmt: skip
    task = str(write_jsonl(tmp_path / "task.jsonl", [
        {"prompt": p, "references": [" was a good film."], "split": s}
        for p in prompts for s in ("train", "test")
    ]))  # fmt: skip
    two = ["--steps", "2", "--checkpoint-every", "1"]
    return {
        "reinforce": ["--task", task, "--reward", "length", *two, *TINY],
        "ppo": ["--task", task, "--reward", "sentiment", *two, *TINY, "--n-minibatches", "2"],
        "grpo": ["--task", task, "--reward", "bleu", *two, *TINY],
        "bc": ["--task", "reverse", "--max-prompts", "32", "--steps", "4", "--eval-every", "2",
               "--checkpoint-every", "2", "--no-progress"],
        "dagger": ["--task", "reverse", "--max-prompts", "16", *two, "--episodes-per-iteration",
                   "4", "--steps-per-iteration", "2", *TINY],
        "gail": ["--task", task, "--env-reward", "bleu", *two, "--disc-batch-size", "4", *TINY],
        "distill": ["--teacher", "embedded", "--task", task, "--reward", "length", *two, *TINY],
        "dpo": ["--data", str(pairs), *two, "--batch-size", "2", "--no-progress"],
        "kto": ["--data", str(thumbs), *two, "--batch-size", "4", "--no-progress"],
        "listwise_dpo": ["--data", str(rankings), *two, "--batch-size", "2", "--no-progress"],
        "iterative_dpo": ["--task", "reverse", "--max-prompts", "8", "--rounds", "2",
                          "--checkpoint-every", "1", "--updates-per-round", "2",
                          "--max-new-tokens", "6", "--include-reference", "--dpo.batch-size",
                          "2", "--no-progress"],
    }  # fmt: skip


def test_agent_runs_cover_every_agent(tmp_path: Path) -> None:
    assert set(agent_runs(tmp_path)) == set(AGENTS)


@pytest.mark.slow
@pytest.mark.parametrize("agent", list(AGENTS))
def test_every_agent_trains_and_resumes_from_the_command_line(
    agent: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = agent_runs(tmp_path)[agent]
    straight, resumed = tmp_path / agent, tmp_path / f"{agent}-resumed"
    code, _, err = run_main(["train", agent, *argv, "--out", str(straight)], capsys)
    assert code == 0, err
    assert json.loads((straight / "run.json").read_text())["finished"]
    assert (straight / "policy" / "config.json").is_file()
    assert csv_rows(straight / "progress.csv")
    interrupt_after_first_checkpoint(monkeypatch)
    assert main(["train", agent, *argv, "--out", str(resumed)]) == 130
    assert main(["train", "--resume", str(resumed)]) == 0
    assert_same_checkpoint(straight / "checkpoint", resumed / "checkpoint")
    assert csv_rows(straight / "progress.csv") == csv_rows(resumed / "progress.csv")
    if agent == "ppo":  # eval of a run on a JSONL task: the run's task and reward
        assert main(["eval", "--model", str(straight), "--prompts", "2", "--json", "e.json"]) == 0
        result = json.loads((tmp_path / "e.json").read_text())
        assert (result["task"], result["reward"], result["prompts"]) == (argv[1], "sentiment", 2)


@pytest.mark.slow
def test_bench_runs_and_resumes_by_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--quick", "--agents", "base", "reinforce", "--tasks", "reverse", "--seeds",
            "1", "--rl-updates", "1", "--test-prompts", "4"]  # fmt: skip
    assert main(argv) == 0
    out = tmp_path / "benchmark_quick"  # --quick's folder, in the current one
    cells = sorted(p.name for p in (out / "cells").glob("*.json"))
    assert cells == ["base__reverse__0.json", "reinforce__reverse__0.json"]
    assert (out / "benchmark.md").is_file()
    assert (out / "benchmark_reward.png").read_bytes().startswith(PNG_SIGNATURE)
    first = (out / "cells" / cells[1]).read_text()
    assert main(argv) == 0  # resumed: every cell is there, nothing is trained again
    assert (out / "cells" / cells[1]).read_text() == first
    message = one_line_error([*argv[:-4], "--rl-updates", "2", "--test-prompts", "4"], capsys)
    assert "was run with another config" in message  # refused before any training


@pytest.mark.slow
def test_the_module_and_the_console_script_exit_with_status_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "textgym", "train", "ppoo"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "python -m textgym train: error: unknown agent 'ppoo'; did you mean 'ppo'? agents: "
        + ", ".join(AGENTS)
    )
