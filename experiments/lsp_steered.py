"""Self-play steered to one family: LSP in tinyworld with the challenger's reply starting "What is the largest of".

    python experiments/lsp_steered.py [--seeds 0 1 2] [--steps 60]

From the shipped base model, the steered preset (src/langplay/presets/lsp_steered.yaml: 16 queries x 4 answers,
lr 1e-4, quality self-reward), with the challenger's weight alpha_Ch swept; beside it LSP-Zero (no self-reward)
and GRPO on `max` training prompts (the data baseline: 16 prompts x 4, same lr and steps). Held-out metrics:
the `max` score near-greedy and sampled (temperature 1, 4 answers per prompt), 128 prompts per level, and the
near-greedy score of the other nine families (8 per family and level), each against the base model.
Writes results/lsp_steered.{md,json,png}; runs go to runs/lsp_steered/.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import experiment_parser, finished, gain_cell, provenance, run_folder, saved_results, table  # noqa: E402
PRESET = ROOT / "src" / "langplay" / "presets" / "lsp_steered.yaml"
FAMILY = "max"
FOCUS_PER_LEVEL = 128  # 512 held-out `max` prompts: on 128 the gain of one run moved by +-0.02 between prompt sets
RUNS = {  # name -> overrides of the steered preset
    "LSP, alpha_Ch 0": ["lsp.alpha_challenger=0"],
    "LSP, alpha_Ch 0.01": ["lsp.alpha_challenger=0.01"],
    "LSP, alpha_Ch 0.03 (the preset)": [],
    "LSP, alpha_Ch 0.1": ["lsp.alpha_challenger=0.1"],
    "LSP, alpha_Ch 1": ["lsp.alpha_challenger=1"],
    "LSP-Zero, alpha_Ch 0.03": ["lsp.self_reward=false"],
    "GRPO on max prompts (data)": ["algorithm=grpo", "grpo.group_size=4", "grpo.beta=0.01",
                                   "grpo.rewards=[{kind: function, function: 'langplay.tinyworld.datasets:judge_reward'}]"],
}


def run_one(name: str, seed: int, steps: int, work: Path) -> Path:
    import datasets

    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.datasets import task_rows
    from langplay.trainer import Trainer

    config = load_config(PRESET, [
        f"model.name_or_path={base_model_path()}", f"train.steps={steps}", f"train.seed={seed}",
        "run.progress=false", "run.save_every=0", *RUNS[name],
    ])
    grpo = config.algorithm == "grpo"  # self-play writes its own prompts; GRPO trains on `max` training prompts
    out = run_folder(work, f"run{list(RUNS).index(name)}-seed{seed}", config,
                     f"train rows: 4000, seed {seed}, {FAMILY}" if grpo else "")
    if not finished(out):
        data = datasets.Dataset.from_list(task_rows("train", 4000, seed, families=[FAMILY])) if grpo else None
        Trainer(config, dataset=data).train()
    return out


def evaluate(model, against_base: bool = True) -> dict:
    from langplay.evaluation.tinyworld import family_comparison, held_out_tasks, task_scores
    from langplay.tinyworld import FAMILIES
    from langplay.tinyworld.base import base_model_path

    focus = held_out_tasks(FOCUS_PER_LEVEL, seed=123, families=[FAMILY])
    others = held_out_tasks(8, seed=123, families=[f for f in sorted(FAMILIES) if f != FAMILY])
    sampled = task_scores(model, focus, n=4, temperature=1.0, seed=5)
    out = {"sampled": statistics.mean(sampled), "others": statistics.mean(task_scores(model, others))}
    if against_base:
        out |= family_comparison(model, base_model_path(), FAMILY, per_level=FOCUS_PER_LEVEL, seed=123)
    return out


def main(argv=None) -> int:
    parser = experiment_parser("lsp_steered")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args(argv)
    path = args.results / "lsp_steered.json"
    results = saved_results(args, path)
    if results is None:
        from langplay.tinyworld.base import base_model_path

        results = {"provenance": provenance(), "settings": {"seeds": args.seeds, "steps": args.steps},
                   "base": evaluate(base_model_path(), against_base=False), "runs": []}
        for seed in args.seeds:
            for name in RUNS:
                report = evaluate(run_one(name, seed, args.steps, args.work) / "final")
                results["runs"].append({"name": name, "seed": seed, **report})
                print(f"{name:30s} seed {seed}: max {report['baseline_score']:.3f} -> {report['score']:.3f}, "
                      f"sampled {results['base']['sampled']:.3f} -> {report['sampled']:.3f}, "
                      f"others {results['base']['others']:.3f} -> {report['others']:.3f}", flush=True)
                path.write_text(json.dumps(results, indent=2))
    write_markdown(results, args.results)
    plot(results, args.results / "lsp_steered.png")
    return 0


def write_markdown(results: dict, folder: Path) -> None:
    s, base = results["settings"], results["base"]
    base_max = results["runs"][0]["baseline_score"]

    lines = [
        "# Self-play steered to one family (tinyworld, `max`)", "",
        f"Regenerate: `python experiments/lsp_steered.py --seeds {' '.join(map(str, s['seeds']))} --steps {s['steps']}`. "
        f"From the shipped base model, {s['steps']} steps of the steered preset (`src/langplay/presets/lsp_steered.yaml`: "
        "16 challenger queries x 4 answers, the reply starts with \"What is the largest of\", lr 1e-4, quality "
        "self-reward) with the challenger's weight alpha_Ch varied; GRPO: 16 `max` training prompts x 4, same lr and "
        f"steps. Held-out: `max` near-greedy score (the checker) and win rate, {4 * FOCUS_PER_LEVEL} prompts; the same prompts sampled at "
        "temperature 1 (4 answers each); the other nine families near-greedy, 8 prompts per family and level. "
        "Differences to the base model, mean ± standard deviation over seeds.", "",
        f"Base model: `max` {base_max:.3f} near-greedy, {base['sampled']:.3f} sampled; other families {base['others']:.3f}.",
        "", *table(["run", "`max` near-greedy", "win rate on `max`", "`max` sampled", "other families"],
                   gain_rows(results)),
        "", "Plot: `lsp_steered.png` (the gains by run; dots are seeds).",
    ]
    reading = folder / "lsp_steered_reading.md"
    if reading.is_file():
        lines += ["", reading.read_text()]
    (folder / "lsp_steered.md").write_text("\n".join(lines) + "\n")


def gain_rows(results: dict) -> list[list[str]]:
    """Per run name that ran: its gains over the base model and its mean win rate on `max`."""
    base, base_max, rows = results["base"], results["runs"][0]["baseline_score"], []
    for name in RUNS:
        runs = [r for r in results["runs"] if r["name"] == name]
        if runs:
            wins = statistics.mean(r["win_rate"] for r in runs)
            rows.append([name, gain_cell(runs, "score", base_max), f"{wins:.3f}",
                         gain_cell(runs, "sampled", base["sampled"]), gain_cell(runs, "others", base["others"])])
    return rows


def plot(results: dict, path: Path) -> None:
    """The held-out `max` gain of every run (near-greedy and sampled) and the other families' change, by seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base, base_max = results["base"], results["runs"][0]["baseline_score"]
    names = [n for n in RUNS if any(r["name"] == n for r in results["runs"])]
    metrics = [("score", base_max, "`max`, near-greedy"), ("sampled", base["sampled"], "`max`, sampled"),
               ("others", base["others"], "other families")]
    fig, ax = plt.subplots(figsize=(11, 4))
    for k, (key, reference, label) in enumerate(metrics):
        for i, name in enumerate(names):
            values = [r[key] - reference for r in results["runs"] if r["name"] == name]
            x = i + (k - 1) * 0.27
            ax.bar(x, statistics.mean(values), 0.25, color=f"C{k}", alpha=0.7, label=label if i == 0 else None)
            ax.scatter([x] * len(values), values, color="black", s=8, zorder=3)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(names)), [n.replace(" (the preset)", "\n(the preset)").replace(", ", "\n") for n in names],
                  fontsize=8)
    ax.set_ylabel("held-out score minus the base model's")
    ax.set_title("Self-play steered to `max`: gain by challenger weight (bars: mean, dots: seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
