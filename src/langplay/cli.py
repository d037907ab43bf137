"""The `langplay` command: train / eval / demo. Config loading and error reporting; nothing else."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer

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


def quiet_libraries() -> None:
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


@app.command()
@friendly
def train(
    algorithm: str = typer.Argument(..., help="sft or grpo"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. train.lr=1e-5"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file"),
    resume: bool = typer.Option(False, "--resume", help="continue from the run folder's latest checkpoint"),
):
    """Train with an algorithm: `langplay train grpo --config FILE [key=value ...]`."""
    from langplay.config import ALGORITHMS, load_config

    if algorithm not in ALGORITHMS:
        raise LangplayError(f"unknown algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    cfg = load_config(config, list(overrides or []), algorithm=algorithm)
    quiet_libraries()
    from langplay.trainer import Trainer

    trainer = Trainer(cfg)
    history = trainer.train(resume=resume)
    if trainer.is_main and history:
        last = history[-1]
        shown = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k in ("loss", "reward", "nll", "kl"))
        typer.echo(f"done: {trainer.step} steps ({shown}); run folder {trainer.run_dir}")


@app.command("eval")
@friendly
def evaluate(
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config: model, data, grpo.rewards"),
    model: Optional[str] = typer.Option(None, "--model", help="model to evaluate (overrides model.name_or_path)"),
    samples: int = typer.Option(1, "--samples", help="completions per prompt"),
    output: Optional[Path] = typer.Option(None, "--output", help="write the report as JSON here"),
):
    """Mean reward of a model's completions on a prompt dataset (data.eval_path, or data.path)."""
    from langplay.config import load_config

    extra = [f"model.name_or_path={model}"] if model else []
    cfg = load_config(config, list(overrides or []) + extra)
    quiet_libraries()
    from langplay.evaluation import evaluate_rewards_from_config

    report = evaluate_rewards_from_config(cfg, samples)
    for key, value in report.items():
        typer.echo(f"{key:>24}  {value:.4f}" if isinstance(value, float) else f"{key:>24}  {value}")
    if output:
        import json

        output.write_text(json.dumps(report, indent=2))


@app.command()
@friendly
def demo(
    output_dir: Path = typer.Option(Path("runs/demo"), "--output-dir", help="run folder"),
    steps: int = typer.Option(40, "--steps", help="training steps"),
):
    """A few minutes of RL on a built-in task, then a before/after table and a plot."""
    quiet_libraries()
    from langplay.demo import run_demo

    run_demo(output_dir, steps)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
