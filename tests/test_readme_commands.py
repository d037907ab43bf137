"""Every `langplay ...` command the README shows runs (issue 39): each is read from the README's bash blocks and run
through the CLI in a folder laid out like a fresh clone, a step or two on the shipped tinyworld model.

What a README command names that a fresh clone does not hold is stood in for, by name (STAND_INS): a Hub model or
a path to a trained model by the shipped base (a reward model by a tiny one), a data file or Hub dataset by one
local file with every column the commands ask for, vLLM by the transformers sampler, a judge's server by the
tests' own. Then each command gets options that make it small (SMALL: one training step, two prompts, eight new
tokens) and, where it names none, a folder of its own. Commands run in the README's order, so one can use what
an earlier one wrote (`eval tinyworld` reads the GRPO run the preset wrote). `torchrun` lines are
tests/test_multiprocess.py's; `langplay model import` needs the real GGUF file and runs in the real-model stage.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "src" / "langplay" / "tinyworld" / "assets" / "base"
DATA_PLACEHOLDERS = ["my_data.jsonl", "prompts.jsonl", "gsm8k.jsonl", "gsm8k_test.jsonl", "test.jsonl",
                     "proofs.jsonl", "openai/gsm8k"]
MODEL_PLACEHOLDERS = ["Qwen/Qwen2.5-0.5B-Instruct", "BASE", "JUDGE", "M", "models/smollm2", "runs/grpo/final",
                      "runs/jepo-math/final", "runs/irl/final", "runs/lsp_paper/final"]
ELSEWHERE = {"torchrun": "tests/test_multiprocess.py", "model import": "the real-model stage (below)"}
SMALL = {
    "train": ["train.steps=1", "train.prompts_per_step=2", "train.micro_batch_size=8", "sampling.max_new_tokens=8",
              "grpo.group_size=2", "lsp.group_size=2", "jepo.group_size=2", "lsp.max_query_tokens=16",
              "run.save_every=1", "run.progress=false"],
    "eval tinyworld": ["--per-level", "1"],
    "eval winrate": ["--limit", "2", "--max-new-tokens", "8", "--judge-max-new-tokens", "8"],
    "eval accuracy": ["--limit", "2", "--max-new-tokens", "8"],
    "eval likelihood": ["--limit", "2", "--max-new-tokens", "8"],
    "eval diversity": ["--limit", "2", "--max-new-tokens", "8"],
    "world build-base": ["--steps", "1"],
}


def readme_commands(text: str) -> list[str]:
    """Each command line of the README's ```bash blocks that runs langplay, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip()
            if line.startswith("langplay ") or " -m langplay " in line:
                commands.append(line)
    return commands


def where_else(command: str) -> str | None:
    return next((where for start, where in ELSEWHERE.items() if command.startswith(start)
                 or command.startswith(f"langplay {start}")), None)


def kind_of(args: list[str]) -> str:
    return args[0] if args[0] in ("train", "reward") else " ".join(args[:2])


def runnable(command: str, stand_ins: dict[str, str], number: int) -> list[str]:
    """The command's arguments (after `langplay`), stood in for and made small."""
    args = shlex.split(command, comments=True)[1:]
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if arg in stand_ins:
            arg = stand_ins[arg]
        elif eq and value in stand_ins and not key.startswith("-"):
            arg = f"{key}={stand_ins[value]}"
        out.append(arg)
    kind = kind_of(out)
    out += SMALL.get(kind, [])
    if kind == "train" and "--config" not in out:
        out.append(f"run.output_dir=runs/readme-{number}")
    if kind.startswith("eval ") and "--output" not in out:
        out += ["--output", f"runs/readme-eval-{number}"]
    if kind in ("eval accuracy", "eval likelihood", "eval diversity", "eval winrate") and "--data" not in out:
        out += ["--data", stand_ins["prompts.jsonl"]]  # a preset's Hub dataset
    if kind == "eval winrate" and "--baseline" not in out:
        out += ["--baseline", str(BASE)]  # a preset's Hub model
    if kind == "world build-base":
        out += ["--output", "runs/readme-base"]  # never the shipped checkpoint
    return out


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A folder laid out like a fresh clone (src/ as the repository's), the working directory of the commands."""
    (tmp_path / "src").symlink_to(ROOT / "src")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def stand_ins_in(folder: Path, judge_url: str) -> dict[str, str]:
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from langplay.testing import tiny_llama_config
    from langplay.tinyworld.datasets import task_rows

    rows = [{"prompt": r["prompt"], "completion": r["reference"], "kind": r["family"], "question": r["prompt"],
             "answer": f"{r['reference']}\n#### {r['answer']}", "problem": r["prompt"], "proof": r["reference"],
             "instruction": r["prompt"], "dataset": r["family"], "level": r["level"]} for r in task_rows("train", 4)]
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tokenizer = AutoTokenizer.from_pretrained(BASE)
    config = tiny_llama_config(len(tokenizer), hidden=32, layers=1)
    config.num_labels, config.pad_token_id = 1, tokenizer.pad_token_id
    LlamaForSequenceClassification(config).save_pretrained(folder / "reward-model")
    tokenizer.save_pretrained(folder / "reward-model")
    return {**{name: str(data) for name in DATA_PLACEHOLDERS}, **{name: str(BASE) for name in MODEL_PLACEHOLDERS},
            "Skywork/Skywork-Reward-V2-Llama-3.2-3B": str(folder / "reward-model"),
            "http://localhost:8000/v1": judge_url, "vllm": "hf"}


def my_yaml(folder: Path) -> None:
    """`my.yaml`, the README's config of the user's own: the GRPO preset, run folder runs/my-run, which has run
    one step already (so `--resume` has a run to continue)."""
    from typer.testing import CliRunner

    from langplay.cli import app

    text = (ROOT / "src" / "langplay" / "presets" / "grpo_tinyworld.yaml").read_text()
    assert "output_dir: runs/grpo-tinyworld" in text
    (folder / "my.yaml").write_text(text.replace("output_dir: runs/grpo-tinyworld", "output_dir: runs/my-run"))
    result = CliRunner().invoke(app, ["train", "grpo", "--config", "my.yaml", *SMALL["train"]])
    assert result.exit_code == 0, result.output


def test_every_langplay_command_in_the_readme_runs_from_a_fresh_clone(clone):
    from typer.testing import CliRunner

    from judge_server import chat_reply, serving

    from langplay.cli import app

    commands = readme_commands((ROOT / "README.md").read_text())
    for preset in ("grpo_tinyworld", "lsp_tinyworld", "jepo_tinyworld", "irl_tinyworld"):
        assert any(f"--config {preset}" in c for c in commands), preset
    server, stop = serving()
    server.respond = lambda number, body: chat_reply("[[A]]")
    try:
        stand_ins = stand_ins_in(clone, server.url)
        my_yaml(clone)
        failed = []
        for number, command in enumerate(commands):
            if where_else(command):
                continue
            args = runnable(command, stand_ins, number)
            result = CliRunner().invoke(app, args)
            if result.exit_code != 0:
                failed.append(f"{command}\n  ran as: langplay {shlex.join(args)}\n  exit {result.exit_code}: "
                              f"{result.output.strip()[-600:] or result.exception!r}")
    finally:
        stop()
    assert not failed, "README commands that fail:\n" + "\n".join(failed)
    assert (clone / "runs" / "grpo-tinyworld" / "final").is_dir()  # the preset's run, which eval tinyworld read


def test_each_readme_command_runs_here_or_names_where_it_runs():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 20
    for command in commands:
        assert command.startswith("langplay ") or where_else(command), command
        if command.startswith("langplay "):
            assert kind_of(shlex.split(command, comments=True)[1:]) in {*SMALL, "config show", "model import"}, \
                f"a README command of a new kind: say in SMALL how it runs small ({command})"


@pytest.mark.real_model
def test_the_readmes_model_import_runs_on_the_real_gguf_file(clone):
    from typer.testing import CliRunner

    from real_model import real_gguf

    from langplay.cli import app

    imports = [c for c in readme_commands((ROOT / "README.md").read_text()) if c.startswith("langplay model import")]
    assert imports
    for command in imports:
        args = [real_gguf().as_posix() if a.endswith(".gguf") else a for a in shlex.split(command, comments=True)[1:]]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert (clone / args[-1] / "config.json").is_file()
