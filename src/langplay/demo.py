"""The demo: a minute of Language Self-Play on tinyworld from the shipped base model, no data at all.

The model writes its own tasks (challenger) and answers them (solver); tinyworld's judge scores the answers and
its quality judge plays LSP's self-reward. Then: the held-out score of the whole mix before and after (paired, with
its bootstrap interval), the held-out evaluation of every family against the base model, and where the
challenger's queries went (valid fraction and difficulty mix, first steps against last steps).
Everything is local: the base model ships with the package, the tasks are generated, the judges are code.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from langplay.config import load_config
from langplay.evaluation.tinyworld import evaluate_world, family_comparison, plot_report, query_mix, render_table
from langplay.files import save_figure, write_json
from langplay.tinyworld.base import base_model_path

PRESET = Path(__file__).resolve().parent / "presets" / "lsp_demo.yaml"
FIRST_STEPS = 5  # the challenger's queries are compared over the first and the last FIRST_STEPS steps
MIX_PER_LEVEL = 32  # held-out prompts per family and level for the whole-mix gain: 1,280 in all


def run_demo(output_dir: str | Path = "runs/demo", steps: int | None = None, per_level: int = 8, seed: int = 0) -> dict:
    console = Console()
    output_dir = Path(output_dir)
    base = base_model_path()
    console.rule("[bold]langplay demo: Language Self-Play on tinyworld (no data), from the shipped base model")
    config = load_config(PRESET, [
        f"model.name_or_path={base}", *([f"train.steps={steps}"] if steps else []), f"train.seed={seed}",
        f"run.output_dir={output_dir}",
    ])
    from langplay.trainer import Trainer

    trainer = Trainer(config)
    history = trainer.train(resume=(output_dir / "checkpoints").is_dir())
    console.print(f"trained {trainer.step} steps; solver reward on the challenger's queries {history[0]['reward']:.3f} -> "
                  f"{history[-1]['reward']:.3f} (it falls as the queries get harder: see their levels below)"
                  if history else "nothing left to train (resumed a finished run)")
    console.rule("[bold]held-out evaluation: trained model against the base model")
    report = evaluate_world(output_dir / "final", baseline=base, per_level=per_level, seed=seed)
    console.print(render_table(report))
    report["mix"] = family_comparison(output_dir / "final", base, None, MIX_PER_LEVEL, seed)
    console.print(describe_mix(report["mix"]))
    samples = output_dir / "samples.jsonl"
    last = trainer.step
    report["queries"] = {"first": query_mix(samples, range(1, min(FIRST_STEPS, last) + 1)),
                         "last": query_mix(samples, range(max(1, last - FIRST_STEPS + 1), last + 1))}
    console.print(describe_queries(report["queries"]))
    write_json(output_dir / "eval.json", report)
    plot_report(report, output_dir / "eval.png")
    plot_training(output_dir / "metrics.jsonl", report["queries"], output_dir / "training.png")
    console.print(f"run folder: {output_dir} (metrics.jsonl, samples.jsonl, eval.json, eval.png, training.png, final/)")
    return report


def describe_mix(mix: dict) -> str:
    low, high = mix["gain_interval"]
    return (f"held-out score of the whole mix ({mix['prompts']} test prompts, near-greedy): base "
            f"{mix['baseline_score']:.3f} -> trained {mix['score']:.3f} ({mix['score'] - mix['baseline_score']:+.3f}, "
            f"paired 95% interval [{low:+.3f}, {high:+.3f}]), win rate {mix['win_rate']:.3f} "
            f"({mix['wins']} wins, {mix['ties']} ties, {mix['losses']} losses)")


def describe_queries(queries: dict) -> str:
    def mix(part: dict) -> str:
        levels = ", ".join(f"L{level} {share:.0%}" for level, share in part["levels"].items()) or "none valid"
        return f"{part['valid']:.0%} valid ({levels})"

    return (f"challenger's queries, first {FIRST_STEPS} steps: {mix(queries['first'])}\n"
            f"challenger's queries, last {FIRST_STEPS} steps:  {mix(queries['last'])}")


def plot_training(metrics_path: Path, queries: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [r["step"] for r in rows]
    left.plot(steps, [r["reward"] for r in rows], label="solver reward (judge)")
    if "valid_queries" in rows[0]:
        left.plot(steps, [r["valid_queries"] for r in rows], label="valid queries")
    left.set_xlabel("step")
    left.set_title("Language Self-Play on tinyworld")
    left.legend(fontsize=8)
    levels = sorted(set(queries["first"]["levels"]) | set(queries["last"]["levels"]))
    for offset, (name, part) in enumerate(queries.items()):
        right.bar([int(level) + 0.4 * offset for level in levels], [part["levels"].get(level, 0) for level in levels],
                  0.4, label=f"{name} {FIRST_STEPS} steps")
    right.set_xlabel("difficulty level of valid queries")
    right.set_title("where the challenger's queries went")
    right.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
