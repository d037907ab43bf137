"""Shared by the benchmarks that run on the real model: where it and GSM8K are, the rewards, and what a JSON
records of the run (the CPU as lscpu names it, the date, the commit, the command).

The real model is SmolLM2-135M-Instruct as `./dev setup` imports it (a float32 safetensors folder with its
tokenizer and ChatML template) in ${LANGPLAY_CACHE:-~/.cache/langplay}/models/; `--model real` names it. GSM8K's
questions come from `--data`, by default the test split beside the checkout (../shared/data/gsm8k/test.jsonl), or
else the 50 rows copied into tests/data/ (a user's clone has no ../shared).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_MODEL = "SmolLM2-135M-Instruct"
GSM8K_CANDIDATES = (ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl", ROOT / "tests" / "data" / "gsm8k_sample.jsonl")


def real_model_dir() -> Path:
    cache = Path(os.environ.get("LANGPLAY_CACHE") or Path.home() / ".cache" / "langplay")
    return cache / "models" / REAL_MODEL


def model_path(name: str) -> Path:
    """`real`: the real model's folder; anything else: a model folder. Either must hold a config.json."""
    path = real_model_dir() if name == "real" else Path(name).expanduser()
    if not (path / "config.json").is_file():
        hint = " (./dev setup puts it there; LANGPLAY_CACHE moves it)" if name == "real" else ""
        raise SystemExit(f"no model at {path}: {path / 'config.json'} does not exist{hint}")
    return path


def gsm8k_path(given: Path | None) -> Path:
    """--data as given, else the first GSM8K file that exists (the test split beside the checkout, the tests' rows)."""
    if given is not None:
        if not given.is_file():
            raise SystemExit(f"--data {given}: no such file")
        return given
    for path in GSM8K_CANDIDATES:
        if path.is_file():
            return path
    raise SystemExit("no GSM8K file: pass --data PATH (a .jsonl of question, answer rows)")


def gsm8k_rows(path: Path, count: int, offset: int = 0) -> list[dict]:
    """The rows offset .. offset + count of a GSM8K .jsonl, as {"question", "answer"} (answer: "... #### n")."""
    rows = []
    with path.open() as lines:
        for index, line in enumerate(lines):
            if index >= offset + count:
                break
            if index >= offset and line.strip():
                row = json.loads(line)
                rows.append({"question": row["question"], "answer": row["answer"]})
    if len(rows) < count:
        raise SystemExit(f"{path} has {offset + len(rows)} rows; {offset + count} are needed")
    return rows


def completion_texts(completions) -> list[str]:
    """Completions as text: langplay passes strings, TRL (conversational prompts) a list of messages each."""
    return [c[-1]["content"] if isinstance(c, list) else c for c in completions]


def gsm8k_match(prompts, completions, answer, **columns) -> list[float]:
    """1 where the completion's last number is the gold answer's (what follows GSM8K's '####'), else 0: the same
    Python function scores both sides."""
    from langplay.rewards.verifiers import gsm8k_answer, numeric_match

    return [numeric_match(text, gsm8k_answer(gold)) for text, gold in zip(completion_texts(completions), answer)]


_NUMBER_AT_END = re.compile(r"\d[^\d]{0,40}$")


def ends_with_number(prompts, completions, **columns) -> list[float]:
    """1 where a number is written within the completion's last 40 characters: a reward that needs no gold answer,
    so GRPO on GSM8K and LSP on its own queries are scored alike."""
    return [float(bool(_NUMBER_AT_END.search(text.rstrip()))) for text in completion_texts(completions)]


def lscpu() -> dict:
    """lscpu's model name, CPU count and the bf16-relevant flags (or /proc/cpuinfo's where lscpu is missing)."""
    fields: dict[str, str] = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"}).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if "Model name" not in fields:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "flags") and key.strip().title() not in fields:
                    fields["Model name" if key.strip() == "model name" else "Flags"] = value.strip()
        except OSError:
            pass
    flags = fields.get("Flags", "").split()
    return {"model_name": fields.get("Model name", platform.processor() or platform.machine()),
            "cpus": fields.get("CPU(s)", str(os.cpu_count())), "vendor": fields.get("Vendor ID"),
            "hypervisor": fields.get("Hypervisor vendor"),
            "bf16_flags": [f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2")]}


def commit() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"sha": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def peak_rss_gb() -> float:
    """The process's peak resident memory so far, in GB (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def provenance(args=None) -> dict:
    """What a benchmark's JSON records of its run: the CPU (lscpu), the date, the commit, the command, the settings,
    and the process's peak memory (taken when this is called: at the end of the run)."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} if args is not None else {}
    return {"cpu": lscpu(), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": commit(), "command": [Path(sys.executable).name, *sys.argv],
            "platform": f"{platform.system()} {platform.release()}", "settings": settings,
            "peak_rss_gb": round(peak_rss_gb(), 2)}


# -- the step-cost benchmarks on the real model (step_cost.run's --model) -----------------------------------------
def add_real_model_options(parser, defaults: dict | None = None) -> None:
    group = parser.add_argument_group("on the real model (--model): the methods train it on GSM8K")
    group.add_argument("--model", help="a model folder, or `real`: SmolLM2-135M-Instruct where ./dev setup put it "
                                       "(default: tinyworld's shipped base model, with the tinyworld settings)")
    group.add_argument("--data", type=Path, help="GSM8K .jsonl (question, answer; default: ../shared/data/gsm8k/"
                                                 "test.jsonl, else tests/data/gsm8k_sample.jsonl)")
    group.add_argument("--prompts", type=int, default=8, help="prompts (LSP: challenger queries) per step")
    group.add_argument("--group", type=int, default=4, help="completions per prompt")
    group.add_argument("--tokens", type=int, default=128, help="max new tokens of a completion")
    group.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    group.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="langplay's sampler")
    group.add_argument("--fixed-length", action="store_true",
                       help="every sampled completion runs to its limit (sampling.ignore_eos); default: they end at EOS")
    parser.set_defaults(**(defaults or {}))


def trainer_overrides(args, work: Path) -> list[str]:
    """The settings every method shares on the real model: the model, precision, sampler, batch and lengths."""
    return [
        f"model.name_or_path={model_path(args.model)}", "model.device=cpu", "model.dtype=float32",
        f"train.precision={args.precision}", "train.steps=100000", f"train.prompts_per_step={args.prompts}",
        "train.micro_batch_size=64", "train.lr=1e-6", "train.max_grad_norm=1.0",
        f"sampling.max_new_tokens={args.tokens}", "sampling.max_prompt_tokens=1024", "sampling.temperature=1.0",
        f"sampling.ignore_eos={str(args.fixed_length).lower()}", f"sampling.backend={args.backend}",
        *(["sampling.vllm_dtype=bfloat16"] if args.precision == "bf16" else []),
        f"run.output_dir={work}", "run.progress=false", "run.save_every=0",
    ]


def gsm8k_overrides(args) -> list[str]:
    """GSM8K as the dataset: its questions as prompts (the chat template applied), its solutions in `answer`."""
    return [f"data.path={gsm8k_path(args.data)}", "data.prompt_column=question"]


def function_reward(name: str) -> str:
    """A reward entry naming one of this file's functions, for a config's `rewards` list."""
    return f"{{kind: function, function: '{Path(__file__).resolve()}:{name}'}}"


def real_trainer(overrides: list[str]):
    from langplay.config import load_config
    from langplay.trainer import Trainer

    return Trainer(load_config(overrides=overrides))
