"""The `langplay` command: train / eval / reward / demo. Config loading and error reporting; nothing else."""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path
from typing import Optional

import typer

from langplay.console import quiet_libraries
from langplay.errors import LangplayError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Post-train language models with RL when data, verifiers or rewards are missing.",
)


def friendly(command):
    """Bad input: one line on stderr and exit code 2. Ctrl-C: exit 130 (the trainer has saved a checkpoint)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LangplayError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@friendly
def train(
    algorithm: str = typer.Argument(..., help="sft, grpo, lsp, jepo or irl"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. train.lr=1e-5"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file"),
    resume: bool = typer.Option(False, "--resume", help="continue from the run folder's latest checkpoint"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a run already in the run folder"),
):
    """Train with an algorithm, e.g. `langplay train grpo --config FILE train.lr=1e-5`."""
    from langplay.config import ALGORITHMS, load_config

    if algorithm not in ALGORITHMS:
        raise LangplayError(f"unknown algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    cfg = load_config(config, list(overrides or []) + (["run.overwrite=true"] if overwrite else []),
                      algorithm=algorithm)
    if cfg.algorithm != algorithm:  # the file (or an override) names another algorithm: say so, never pick one
        raise LangplayError(f"`langplay train {algorithm}` but {config or 'an override'} sets algorithm: "
                            f"{cfg.algorithm}; use `langplay train {cfg.algorithm}` or change the file")
    quiet_libraries()
    from langplay.trainer import Trainer

    trainer = Trainer(cfg)
    history = trainer.train(resume=resume)
    if trainer.is_main and history:
        last = history[-1]
        shown = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k in ("loss", "reward", "nll", "kl"))
        typer.echo(f"done: {trainer.step} steps ({shown}); run folder {trainer.run_dir}")


eval_app = typer.Typer(help="Evaluate models: tinyworld's held-out set, a dataset's rewards, pairwise win rates, "
                         "accuracy, likelihood of reference answers, diversity.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("tinyworld")
@friendly
def eval_tinyworld(
    model: Optional[str] = typer.Option(None, "--model", help="model folder (default: tinyworld's base model)"),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="model folder to compare against"),
    per_level: int = typer.Option(12, "--per-level", help="test prompts per family and level"),
    output: Optional[Path] = typer.Option(None, "--output", help="report folder (default runs/eval-tinyworld)"),
):
    """tinyworld's test instances: score, accuracy and NLL per family and level, win rate, diversity."""
    quiet_libraries()
    from langplay.evaluation.tinyworld import evaluate_world, render_table, save_report
    from langplay.tinyworld.base import base_model_path

    target = model or str(base_model_path())
    for path in [target] + ([baseline] if baseline else []):
        if not Path(path).exists():
            raise LangplayError(f"model folder not found: {path}")
    report = evaluate_world(target, baseline, per_level=per_level)
    typer.echo(render_table(report))
    folder = save_report(report, output or Path("runs") / "eval-tinyworld")
    typer.echo(f"report: {folder}/eval.json, table {folder}/eval.txt, plot {folder}/eval.png")


@eval_app.command("rewards")
@friendly
def eval_rewards(
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config: model, data, grpo.rewards"),
    model: Optional[str] = typer.Option(None, "--model", help="model to evaluate (model.name_or_path)"),
    samples: int = typer.Option(1, "--samples", help="completions per prompt"),
    output: Optional[Path] = typer.Option(None, "--output", help="where to write the JSON report"),
):
    """The mean of the config's rewards (grpo.rewards) on the config's dataset."""
    quiet_libraries()
    from langplay.config import load_config
    from langplay.evaluation import evaluate_rewards_from_config
    from langplay.files import write_json

    extra = [f"model.name_or_path={model}"] if model else []
    cfg = load_config(config, list(overrides or []) + extra)
    report = evaluate_rewards_from_config(cfg, samples)
    for key, value in report.items():
        typer.echo(f"{key:>24}  {value:.4f}" if isinstance(value, float) else f"{key:>24}  {value}")
    if output:
        write_json(output, report)


@eval_app.command("winrate")
@friendly
def eval_winrate(
    model: Optional[str] = typer.Option(None, "--model", help="model to evaluate: local folder or Hub name"),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="model to compare against"),
    data: Optional[str] = typer.Option(None, "--data", help="prompts: .jsonl/.json/.parquet/.csv file or Hub dataset"),
    prompt_column: Optional[str] = typer.Option(None, "--prompt-column", help="column of the prompts (default prompt)"),
    subset: Optional[str] = typer.Option(None, "--subset", help="the Hub dataset's config"),
    split: Optional[str] = typer.Option(None, "--split", help="the Hub dataset's split (default test)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="the first N prompts only"),
    subset_column: Optional[str] = typer.Option(None, "--subset-column", help="report per value of this column"),
    judge: Optional[str] = typer.Option(None, "--judge", help="a causal LM as judge: local folder or Hub name"),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="OpenAI-compatible endpoint of a judge"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="the model the --judge-url serves"),
    reward_model: Optional[str] = typer.Option(None, "--reward-model", help="a reward model as judge"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="answers' temperature (default 0.01)"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="longest answer (default 512)"),
    judge_max_new_tokens: Optional[int] = typer.Option(None, "--judge-max-new-tokens",
                                                       help="longest judge reply (default 512)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="keys the answers' sampling noise (default 0)"),
    backend: Optional[str] = typer.Option(None, "--backend", help="hf or vllm, for the answers and an LLM judge "
                                          "(default: vllm on CUDA when installed)"),
    output: Optional[Path] = typer.Option(None, "--output", help="report folder (default runs/eval-winrate)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="a packaged evaluation preset, e.g. eval_lsp_alpacaeval"),
):
    """Pairwise win rate against a baseline: both answer every prompt, a judge decides each pair in both orders."""
    quiet_libraries()
    from langplay.evaluation import pairwise
    from langplay.evaluation.answers import (Decoding, check_backend, eval_folder, eval_preset, load_prompt_rows,
                                             require_model_source)

    given = dict(model=model, baseline=baseline, data=data, prompt_column=prompt_column, subset=subset, split=split,
                 limit=limit, subset_column=subset_column, judge=judge, judge_url=judge_url, judge_model=judge_model,
                 reward_model=reward_model, temperature=temperature, max_new_tokens=max_new_tokens,
                 judge_max_new_tokens=judge_max_new_tokens, seed=seed, backend=backend)
    # config.py holds training's defaults only; an evaluation's live in the library it calls. Winrate calls several
    # (the prompt rows, the answers' Decoding, a judge), so it gathers theirs here, below a preset and the command line.
    decoding = Decoding()
    defaults = {"prompt_column": "prompt", "split": "test", "temperature": decoding.temperature,
                "max_new_tokens": decoding.max_new_tokens, "seed": decoding.seed,
                "judge_max_new_tokens": inspect.signature(pairwise.llm_judge).parameters["max_new_tokens"].default}
    o = {**defaults, **pairwise.prefer_given_judge(eval_preset(preset, "winrate", given), given)}
    for key in ("model", "baseline", "data"):
        if o.get(key) is None:
            raise LangplayError(f"no {key} given: set --{key}")
    kind = pairwise.check_judge_choice(o.get("judge"), o.get("judge_url"), o.get("judge_model"), o.get("reward_model"))
    check_backend(o.get("backend"))
    columns = [o["prompt_column"]] + ([o["subset_column"]] if o.get("subset_column") else [])
    rows = load_prompt_rows(o["data"], columns, o.get("subset"), o["split"], o.get("limit"))
    for key in ("model", "baseline", "judge", "reward_model"):
        if o.get(key) is not None:
            require_model_source(o[key], key.replace("_", " "))
    folder = eval_folder(output, "winrate")
    cache = pairwise.answer_cache(folder)
    if kind == "judge":
        chosen = pairwise.llm_judge(o["judge"], cache, max_new_tokens=o["judge_max_new_tokens"],
                                    backend=o.get("backend"))
    elif kind == "judge_url":
        chosen = pairwise.http_judge(o["judge_url"], o["judge_model"], cache, max_tokens=o["judge_max_new_tokens"])
    else:
        chosen = pairwise.reward_model_judge(o["reward_model"])
    report, judgments = pairwise.evaluate_win_rate(
        o["model"], o["baseline"], [row[o["prompt_column"]] for row in rows], chosen,
        [row[o["subset_column"]] for row in rows] if o.get("subset_column") else None,
        Decoding(temperature=o["temperature"], max_new_tokens=o["max_new_tokens"], seed=o["seed"]), cache,
        backend=o.get("backend"))
    report["data"] = {key: o.get(key) for key in ("data", "subset", "split", "prompt_column", "subset_column", "limit")}
    paths = pairwise.save_win_rate(report, judgments, folder)
    typer.echo(pairwise.render_table(report))
    typer.echo(f"report: {paths['report']}, judgments {paths['judgments']}, plot {paths['plot']}")


# -- accuracy, likelihood, diversity: any model on any file. Options default to None so that a preset
# (--preset NAME, presets/NAME.yaml) can set them; the library functions hold the defaults.
MODEL = typer.Option(None, "--model", help="model to evaluate: local folder or Hub name")
DATA = typer.Option(None, "--data", help=".jsonl/.json/.parquet/.csv file, or a Hub dataset name")
PROMPT_COLUMN = typer.Option(None, "--prompt-column", "--question-column", help="the prompt (default prompt)")
ANSWER_COLUMN = typer.Option(None, "--answer-column", help="the reference answer (default answer)")
ANSWER_FORMAT = typer.Option(None, "--answer-format", help="reference answers: plain, gsm8k (#### x) or boxed "
                             "(the last \\boxed{x}); default plain")
VERIFIER = typer.Option(None, "--verifier", help="math (math-verify), numeric_match or exact_match")
FILE_OPTIONS = {  # the options every evaluation of a file takes after its own: name: (type, option)
    "limit": (Optional[int], typer.Option(None, "--limit", help="the first N rows only")),
    "system_prompt": (Optional[str], typer.Option(None, "--system-prompt", help="a system message before each prompt")),
    "max_new_tokens": (Optional[int], typer.Option(None, "--max-new-tokens", help="longest answer (default 512)")),
    "subset": (Optional[str], typer.Option(None, "--subset", help="a Hub dataset's configuration")),
    "split": (Optional[str], typer.Option(None, "--split", help="a Hub dataset's split (default test)")),
    "seed": (Optional[int], typer.Option(None, "--seed", help="keys the sampling noise (default 0)")),
    "backend": (Optional[str], typer.Option(None, "--backend", help="hf or vllm (default: vllm on CUDA when "
                                            "installed)")),
    "output": (Optional[Path], typer.Option(None, "--output", help="eval folder: report, table, plots, answer cache "
                                            "(default runs/eval-COMMAND); the same folder again continues an "
                                            "interrupted run")),
    "preset": (Optional[str], typer.Option(None, "--preset", help="a packaged evaluation preset, e.g. "
                                           "eval_jepo_math")),
}


def eval_options(preset: str | None, command: str, options: dict, required: list[str]) -> dict:
    """A command's options: its preset's, then those given on the command line; `required` must be set by one."""
    from langplay.evaluation.answers import eval_preset

    chosen = eval_preset(preset, command, options)
    for name in required:
        if name not in chosen:
            raise LangplayError(f"no {name} given: set --{name} (or a --preset that sets it)")
    return chosen


def file_evaluation(name: str, required: list[str], written: str):
    """Registers `langplay eval NAME`. The decorated function declares the command's own options (typer reads them
    from its signature, followed by FILE_OPTIONS) and, called without arguments when the command runs, imports and
    returns the library's evaluation and table: (evaluate, render). The command takes its options from --preset
    and the command line (`required` must be set by one), runs the evaluation, prints its table and where its
    report is (`written`: the files beside report.json, e.g. "per row {folder}/rows.jsonl")."""

    def register(declare):
        own = list(inspect.signature(declare, eval_str=True).parameters.values())
        shared = [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                  for key, (kind, option) in FILE_OPTIONS.items()]

        @functools.wraps(declare)
        def command(**options):
            preset = options.pop("preset")
            quiet_libraries()
            evaluate, render = declare()
            report = evaluate(**eval_options(preset, name, options, required))
            typer.echo(render(report))
            typer.echo(f"report: {report['folder']}/report.json, {written.format(folder=report['folder'])}")

        command.__signature__ = inspect.Signature(own + shared)
        return eval_app.command(name)(friendly(command))

    return register


@file_evaluation("accuracy", ["model", "data", "verifier"], "per row {folder}/rows.jsonl")
def eval_accuracy(
    model: Optional[str] = MODEL, data: Optional[str] = DATA, verifier: Optional[str] = VERIFIER,
    answer_column: Optional[str] = ANSWER_COLUMN, prompt_column: Optional[str] = PROMPT_COLUMN,
    answer_format: Optional[str] = ANSWER_FORMAT,
    samples: Optional[int] = typer.Option(None, "--samples", help="k samples a prompt for pass@1..pass@k "
                                          "(default 0: near-greedy only)"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="of the k samples (default 1.0)"),
    subset_column: Optional[str] = typer.Option(None, "--subset-column", help="also report per value of this column"),
):
    """Accuracy with a verifier: near-greedy (T 0.01), and pass@1 / pass@k from k samples at a temperature."""
    from langplay.evaluation.accuracy import evaluate_accuracy, render_accuracy

    return evaluate_accuracy, render_accuracy


@file_evaluation("likelihood", ["model", "data"], "per row {folder}/rows.jsonl")
def eval_likelihood(
    model: Optional[str] = MODEL, data: Optional[str] = DATA, prompt_column: Optional[str] = PROMPT_COLUMN,
    answer_column: Optional[str] = ANSWER_COLUMN, answer_format: Optional[str] = ANSWER_FORMAT,
    samples: Optional[int] = typer.Option(None, "--samples", help="n chains of thought for the bound (default 4, "
                                          "the JEPO paper's; 0: the plain likelihood only)"),
    marker: Optional[str] = typer.Option(None, "--marker", help="the answer marker chains are cut at (default "
                                         "JEPO's 'The final answer is')"),
    answer_eos: Optional[bool] = typer.Option(None, "--answer-eos/--no-answer-eos", help="score EOS after the "
                                              "answer (default no, as JEPO's S)"),
):
    """Likelihood of reference answers: log pi(a*|x), and JEPO's bound log (1/n) sum_i pi(a*|x, c_i) over n chains."""
    from langplay.evaluation.likelihood import evaluate_likelihood, render_likelihood

    return evaluate_likelihood, render_likelihood


@file_evaluation("diversity", ["model", "data"], "plot {folder}/frontier.png")
def eval_diversity(
    model: Optional[str] = MODEL, data: Optional[str] = DATA, prompt_column: Optional[str] = PROMPT_COLUMN,
    temperatures: Optional[str] = typer.Option(None, "--temperatures", help="comma-separated (default 0.5,0.7,1.0)"),
    samples: Optional[int] = typer.Option(None, "--samples", help="k samples a prompt, >= 2 (default 8)"),
    verifier: Optional[str] = VERIFIER, answer_column: Optional[str] = ANSWER_COLUMN,
    answer_format: Optional[str] = ANSWER_FORMAT,
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="n-grams of words or characters "
                                            "(default words)"),
    max_n: Optional[int] = typer.Option(None, "--max-n", help="Self-BLEU's largest n-gram (default 4)"),
):
    """IRL's diversity frontier: per temperature, the verifier's score and Self-BLEU / distinct-n per prompt."""
    from langplay.evaluation.frontier import evaluate_diversity, render_diversity

    return evaluate_diversity, render_diversity


@app.command()
@friendly
def reward(
    model: str = typer.Option(..., "--model", help="an IRL-trained causal LM: local folder or Hub name"),
    data: Path = typer.Option(..., "--data", help=".jsonl/.json/.parquet/.csv file of prompts and completions"),
    output: Optional[Path] = typer.Option(None, "--output", help="JSONL: each row's reward and per-token rewards"),
    gamma: Optional[float] = typer.Option(None, "--gamma", help=(
        "discount of the implicit reward; default: the irl.gamma recorded with the model")),
    prompt_column: str = typer.Option("prompt", "--prompt-column"),
    completion_column: str = typer.Option("completion", "--completion-column"),
):
    """Score completions by the implicit reward of an IRL-trained model: sum of log pi + V(s) - gamma V(s')."""
    import statistics

    quiet_libraries()
    from langplay.config import ModelConfig
    from langplay.data import load_rows, require_columns
    from langplay.files import write_jsonl
    from langplay.policy import Policy
    from langplay.rewards.implicit import implicit_rewards, resolve_gamma

    rows = load_rows(str(data))
    require_columns(rows, [prompt_column, completion_column], f"dataset {str(data)!r}")
    gamma = resolve_gamma(model, gamma)
    policy = Policy.from_config(ModelConfig(name_or_path=model), with_reference=False)
    prompts = [policy.format_prompt(row[prompt_column]) for row in rows]
    per_token, sums = implicit_rewards(policy, prompts, [row[completion_column] for row in rows], gamma)
    typer.echo(f"{len(sums)} completions: mean reward {statistics.fmean(sums):.4f}")
    if output:
        write_jsonl(output, [{"reward": total, "token_rewards": tokens} for total, tokens in zip(sums, per_token)])


config_app = typer.Typer(help="Configs: every key, its default, its value and what it does.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
@friendly
def config_show(
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. train.lr=1e-5"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file or preset name"),
    algorithm: Optional[str] = typer.Option(None, "--algorithm", "-a", help="show this algorithm's section only"),
):
    """Every config key with its default, the resolved value (file and overrides applied) and its description."""
    from langplay.config import ALGORITHMS, describe_config, load_config

    if algorithm is not None and algorithm not in ALGORITHMS:
        raise LangplayError(f"unknown algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    cfg = load_config(config, list(overrides or []), **({"algorithm": algorithm} if algorithm else {}))
    shown = [a for a in ALGORITHMS if a != (algorithm or cfg.algorithm)]
    for key, default, value, description in describe_config(cfg):
        if key.split(".")[0] in shown:
            continue
        mark = "" if value == default else "  (set)"
        typer.echo(f"{key} = {value!r}{mark}\n    default {default!r}. {description}")


world_app = typer.Typer(help="The built-in world (tinyworld): build its base model.", no_args_is_help=True)
app.add_typer(world_app, name="world")


@world_app.command("build-base")
@friendly
def build_base_command(
    output: Path = typer.Option(None, "--output", help="folder to write (default: the shipped checkpoint's)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="training steps (default: the recipe's)"),
):
    """Train tinyworld's base model from scratch with the recipe in langplay/tinyworld/base.py."""
    import json

    quiet_libraries()
    from langplay.build_base import build_base
    from langplay.tinyworld.base import base_model_path, weights_sha256

    shipped = json.loads((base_model_path() / "recipe.json").read_text()).get("weights_sha256")
    path = build_base(output or base_model_path(), steps=steps)
    digest = weights_sha256(path)
    same = "the same as" if digest == shipped else "not"
    typer.echo(f"base model written to {path}; weights sha256 {digest[:16]}..., {same} the shipped checkpoint's")


model_app = typer.Typer(help="Models from other formats: import a GGUF file as a plain Hugging Face folder.",
                        no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("import")
@friendly
def model_import(
    file: Path = typer.Argument(..., help="the .gguf file"),
    output: Path = typer.Argument(..., help="the folder to write: config, safetensors weights, tokenizer, chat "
                                  "template"),
    dtype: str = typer.Option("float32", "--dtype", help="the weights' storage: float32 or bfloat16"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace OUTPUT when it exists and is not empty"),
):
    """Dequantize a GGUF model into a folder that `langplay train`, transformers and vLLM load as they are."""
    quiet_libraries()
    from langplay.gguf import import_gguf

    model = import_gguf(file, output, dtype, overwrite)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    typer.echo(f"imported {file} ({model.config.model_type}, {millions:.1f}M parameters, {dtype}) to {output}")


@app.command()
@friendly
def demo(
    output_dir: Path = typer.Option(Path("runs/demo"), "--output-dir", help="run folder"),
    steps: Optional[int] = typer.Option(None, "--steps", help="training steps (default: the demo preset's)"),
):
    """A few minutes of Language Self-Play on tinyworld (no data), then a before/after table and plots."""
    quiet_libraries()
    from langplay.demo import run_demo

    run_demo(output_dir, steps)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
