"""The demo: a few minutes of GRPO on tinyworld from the shipped base model, then a before/after evaluation.

Everything is local: the base model ships with the package, the tasks are generated, the judge is code.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from langplay.config import load_config
from langplay.evaluation.tinyworld import evaluate_world, plot_report, render_table
from langplay.tinyworld.base import base_model_path
from langplay.tinyworld.datasets import judge_reward, task_dataset

DEMO_SETTINGS = [
    "algorithm=grpo", "train.prompts_per_step=16", "grpo.group_size=8", "grpo.beta=0.01",
    "train.lr=1e-4", "train.warmup_steps=2", "train.micro_batch_size=64", "sampling.max_new_tokens=96",
    "sampling.temperature=1.0", "run.save_every=20", "run.samples_per_step=4", "model.device=cpu",
]


def run_demo(output_dir: str | Path = "runs/demo", steps: int = 50, per_level: int = 8, seed: int = 0) -> dict:
    console = Console()
    output_dir = Path(output_dir)
    base = base_model_path()
    console.rule("[bold]langplay demo: GRPO on tinyworld, from the shipped base model")
    config = load_config(overrides=DEMO_SETTINGS + [
        f"model.name_or_path={base}", f"train.steps={steps}", f"train.seed={seed}", f"run.output_dir={output_dir}",
    ])
    from langplay.trainer import Trainer

    trainer = Trainer(config, dataset=task_dataset("train", 4000, seed, verifiable_only=True), rewards=[judge_reward])
    history = trainer.train(resume=(output_dir / "checkpoints").is_dir())
    console.print(f"trained {trainer.step} steps; reward {history[0]['reward']:.3f} -> {history[-1]['reward']:.3f}"
                  if history else "nothing left to train (resumed a finished run)")
    console.rule("[bold]held-out evaluation: trained model against the base model")
    report = evaluate_world(output_dir / "final", baseline=base, per_level=per_level, seed=seed)
    console.print(render_table(report))
    (output_dir / "eval.json").write_text(json.dumps(report, indent=2))
    plot_report(report, output_dir / "eval.png")
    plot_training(output_dir / "metrics.jsonl", output_dir / "training.png")
    console.print(f"run folder: {output_dir} (metrics.jsonl, samples.jsonl, eval.json, eval.png, training.png, final/)")
    return report


def plot_training(metrics_path: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["reward"] for r in rows], label="mean reward")
    ax.set_xlabel("step")
    ax.set_ylabel("judge reward")
    ax.set_title("GRPO on tinyworld")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
