"""The LSP paper's experiment in tinyworld: GRPO on data vs LSP-Zero vs LSP (no data), from the shipped base model.

    python experiments/lsp_tinyworld.py [--seeds 0 1 2] [--steps 40] [--per-level 8]
    python experiments/lsp_tinyworld.py --steps 200 --methods LSP-Zero LSP --name lsp_tinyworld_long  # the long run

Same reward for all (tinyworld's judge), same number of solver completions per step (16 prompts or queries x 4).
Writes results/NAME.md, results/NAME.json and plots in results/ (NAME: lsp_tinyworld unless --name); runs go to
runs/lsp_experiment/ unless --work.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import (experiment_parser, finished, interval_cell, mean_sd, paired_gain, provenance,  # noqa: E402
                    run_folder, run_metrics, table)
METHODS = {
    "GRPO (data)": "src/langplay/presets/grpo_tinyworld.yaml",
    "LSP-Zero": "src/langplay/presets/lsp_zero_tinyworld.yaml",
    "LSP": "src/langplay/presets/lsp_tinyworld.yaml",
}


def run_one(method: str, seed: int, steps: int, work: Path, lr: float | None = None) -> Path:
    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.datasets import task_dataset
    from langplay.trainer import Trainer

    config = load_config(ROOT / METHODS[method], [
        f"model.name_or_path={base_model_path()}", f"train.steps={steps}", f"train.seed={seed}",
        "run.progress=false", "run.samples_per_step=16", "run.save_every=0",
        "grpo.group_size=4", "train.prompts_per_step=16", *([f"train.lr={lr}"] if lr else []),
    ])
    out = run_folder(work, f"{method.split()[0].lower()}-seed{seed}", config,
                     f"train rows: 4000, seed {seed}" if config.algorithm == "grpo" else "")
    if finished(out):
        return out
    if config.algorithm == "grpo":  # the data baseline: tinyworld's training prompts, every family
        trainer = Trainer(config, dataset=task_dataset("train", 4000, seed))  # the preset names the judge as reward
    else:
        trainer = Trainer(config)
    trainer.train()
    return out


SAMPLED = {"per_level": 16, "n": 4, "temperature": 1.0, "seed": 5}  # the trained (sampling) policy, 4 answers per prompt


def sampled_by_family(model) -> dict:
    """Mean checker score by family of answers sampled at the training temperature (held-out, eval seed 123)."""
    from langplay.evaluation.tinyworld import held_out_tasks, task_scores

    tasks = held_out_tasks(per_level=SAMPLED["per_level"], seed=123)
    scores: dict = {}
    for task, score in zip(tasks, task_scores(model, tasks, SAMPLED["n"], SAMPLED["temperature"], SAMPLED["seed"])):
        scores.setdefault(task.family, []).append(score)
    return {family: statistics.mean(v) for family, v in sorted(scores.items())}


def main(argv=None) -> int:
    parser = experiment_parser("lsp_experiment")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--per-level", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None, help="every run's lr (default: each preset's)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--name", default="lsp_tinyworld", help="results/NAME.{json,md} (e.g. lsp_tinyworld_long)")
    args = parser.parse_args(argv)
    if args.report_only:
        results = json.loads((args.results / f"{args.name}.json").read_text())
        write_markdown(results, args.results)
        plot(results, args.results)
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    from langplay.console import quiet_libraries

    quiet_libraries()
    from langplay.evaluation.tinyworld import evaluate_world, query_mix
    from langplay.tinyworld.base import base_model_path

    args.results.mkdir(parents=True, exist_ok=True)
    results: dict = {"provenance": provenance(),
                     "settings": vars(args) | {"work": str(args.work), "results": str(args.results)}, "runs": []}
    base_report = evaluate_world(base_model_path(), per_level=args.per_level, seed=123)
    results["base"] = {"score": base_report["score"], "accuracy": base_report["accuracy"],
                       "by_family": family_means(base_report["table"]), "by_level": level_means(base_report["table"]),
                       "sampled_by_family": sampled_by_family(base_model_path()),
                       "prompt_scores": base_report["scores"]}
    for seed in args.seeds:
        for method in args.methods:
            started = time.time()
            out = run_one(method, seed, args.steps, args.work, args.lr)
            report = evaluate_world(out / "final", baseline=base_model_path(), per_level=args.per_level, seed=123)
            metrics = run_metrics(out)
            run = {
                "method": method, "seed": seed, "minutes": (time.time() - started) / 60,
                "win_rate": report["versus_baseline"]["win_rate"], "wins_ties_losses": report["versus_baseline"],
                "score": report["score"], "accuracy": report["accuracy"],
                "by_family": family_means(report["table"]), "by_level": level_means(report["table"]),
                "sampled_by_family": sampled_by_family(out / "final"),
                "prompt_scores": report["scores"],
                "train_reward": [m["reward"] for m in metrics],
                "valid_queries": [m.get("valid_queries") for m in metrics],
            }
            if method != "GRPO (data)":
                n = len(metrics)
                run["queries_first"] = query_mix(out / "samples.jsonl", range(1, min(6, n + 1)))
                run["queries_last"] = query_mix(out / "samples.jsonl", range(max(1, n - 4), n + 1))
            results["runs"].append(run)
            print(f"{method:12s} seed {seed}: win rate {run['win_rate']:.3f}, score {run['score']:.3f} "
                  f"(base {results['base']['score']:.3f}), {run['minutes']:.1f} min", flush=True)
            (args.results / f"{args.name}.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, args.results)
    plot(results, args.results)
    return 0


def family_means(table: list[dict]) -> dict:
    out: dict = {}
    for row in table:
        out.setdefault(row["family"], []).append(row["score"])
    return {f: statistics.mean(v) for f, v in out.items()}


def level_means(table: list[dict]) -> dict:
    out: dict = {}
    for row in table:
        out.setdefault(row["level"], []).append(row["score"])
    return {str(l): statistics.mean(v) for l, v in sorted(out.items())}



def write_markdown(results: dict, folder: Path) -> None:
    runs, s = results["runs"], results["settings"]
    name, methods = name_of(results), s.get("methods", list(METHODS))
    chosen = f" --methods {' '.join(repr(m) for m in methods)}" if methods != list(METHODS) else ""
    families, levels = sorted(runs[0]["by_family"]), sorted(runs[0]["by_level"])
    lines = [
        "# LSP in tinyworld: " + " vs ".join({"GRPO (data)": "GRPO on data"}.get(m, m) for m in methods)
        + " (no data)",
        "",
        f"Regenerate: `python experiments/lsp_tinyworld.py --seeds {' '.join(map(str, s['seeds']))} --steps {s['steps']} "
        f"--per-level {s['per_level']}" + (f" --lr {s['lr']:g}" if s.get("lr") else "") + chosen
        + (f" --name {name}" if name != "lsp_tinyworld" else "") + "`. From the shipped base model; reward: tinyworld's judge for all; 16 prompts "
        "(GRPO) or 16 challenger queries (LSP) x 4 solver answers per step; evaluation on held-out instances "
        f"({s['per_level']} per family and level), near-greedy decoding; win rate against the base model (judge "
        "decides each prompt, ties count half). Mean ± standard deviation over seeds.",
        "",
        f"Base model: mean score {results['base']['score']:.3f}, accuracy {results['base']['accuracy']:.3f}.",
        "",
        *table(["method", "win rate vs base", "mean score", "accuracy", "valid queries (last step)"],
               summary_rows(runs)),
        *paired_lines(results),
        *long_run_lines(results, folder),
        "", "Mean score by family (held-out):", "",
        *table(["method", *families], breakdown_rows(results, "by_family", families)),
        "", "Mean score by level (held-out):", "",
        *table(["method", *(f"level {l}" for l in levels)], breakdown_rows(results, "by_level", levels)),
    ]
    if "sampled_by_family" in results["base"]:
        lines += sampled_table(results)
    lines += ["", "Where the challenger's queries went (first 5 steps -> last 5 steps, all seeds pooled):", ""]
    lines += query_lines(runs)
    lines += ["", f"Plots: `{name}_training.png` (training reward and valid-query fraction per step).", ""]
    reading = folder / f"{name}_reading.md"
    if reading.is_file():  # the written reading of the numbers, kept apart so the tables can be regenerated
        lines += [reading.read_text()]
    (folder / f"{name}.md").write_text("\n".join(lines))


def name_of(results: dict) -> str:
    """The results' file name (--name); results saved before the option were lsp_tinyworld's."""
    return results["settings"].get("name", "lsp_tinyworld")


def paired_lines(results: dict) -> list[str]:
    """Each method's score gain over the base and (when GRPO ran) over GRPO on data, paired per test prompt (each
    side averaged over its seeds), with 95% bootstrap intervals over prompts. Older results without per-prompt
    scores: none."""
    runs = results["runs"]
    if "prompt_scores" not in results["base"]:
        return []
    data = [r["prompt_scores"] for r in runs_of(runs, "GRPO (data)")]
    rows = []
    for method in METHODS:
        mine = [r["prompt_scores"] for r in runs_of(runs, method)]
        if mine:
            versus_data = [interval_cell(paired_gain(mine, data)) if method != "GRPO (data)" else "—"] if data else []
            rows.append([method, interval_cell(paired_gain(mine, [results["base"]["prompt_scores"]])), *versus_data])
    header = ["method", "gain over the base", *(["gain over GRPO on data"] if data else [])]
    return ["", "Score gain, paired per test prompt (seeds averaged per prompt), 95% bootstrap interval:", "",
            *table(header, rows)]


def long_run_lines(results: dict, folder: Path) -> list[str]:
    """What a long run (--name other than lsp_tinyworld) is for, paired per test prompt: LSP over LSP-Zero, and
    each method against its own run in lsp_tinyworld.json (the short run) where that run drew the same prompts."""
    if name_of(results) == "lsp_tinyworld" or "prompt_scores" not in results["base"]:
        return []
    scores = lambda r, method: [run["prompt_scores"] for run in runs_of(r["runs"], method)]  # noqa: E731
    steps, rows = results["settings"]["steps"], []
    if scores(results, "LSP") and scores(results, "LSP-Zero"):
        rows.append([f"LSP over LSP-Zero at {steps} steps", interval_cell(
            paired_gain(scores(results, "LSP"), scores(results, "LSP-Zero")))])
    short_path = folder / "lsp_tinyworld.json"
    short = json.loads(short_path.read_text()) if short_path.is_file() else None
    if short and short["base"].get("prompt_scores") == results["base"]["prompt_scores"]:
        for method in METHODS:
            if scores(results, method) and scores(short, method):
                rows.append([f"{method} at {steps} steps over {short['settings']['steps']} (`lsp_tinyworld.md`)",
                             interval_cell(paired_gain(scores(results, method), scores(short, method)))])
    return ["", "The long run's comparisons, paired per test prompt, 95% bootstrap interval:", "",
            *table(["comparison", "score gain"], rows)] if rows else []


def runs_of(runs: list[dict], method: str) -> list[dict]:
    return [r for r in runs if r["method"] == method]


def summary_rows(runs: list[dict]) -> list[list[str]]:
    """Per method that ran: win rate, score, accuracy and the valid-query fraction of the last step, mean ± sd."""
    rows = []
    for method in METHODS:
        mine = runs_of(runs, method)
        if mine:
            valid = [r["valid_queries"][-1] for r in mine if r["valid_queries"][-1] is not None]  # GRPO: no queries
            rows.append([method, mean_sd([r["win_rate"] for r in mine]), mean_sd([r["score"] for r in mine]),
                         mean_sd([r["accuracy"] for r in mine]), mean_sd(valid)])
    return rows


def breakdown_rows(results: dict, key: str, columns: list[str]) -> list[list[str]]:
    """Mean score by family or by level (`key`: by_family, by_level): the base model's row where the results have
    it, then one row per method, means over seeds."""
    rows = []
    if key in results["base"]:
        rows.append(["base model", *(f"{results['base'][key][c]:.3f}" for c in columns)])
    for method in METHODS:
        mine = runs_of(results["runs"], method)
        if mine:
            rows.append([method, *(f"{statistics.mean(r[key][c] for r in mine):.3f}" for c in columns)])
    return rows


def query_lines(runs: list[dict]) -> list[str]:
    """Per self-play method: the valid-query fraction and the level mix of the first and last 5 steps."""
    lines = []
    for method in ("LSP-Zero", "LSP"):
        mine = runs_of(runs, method)
        if mine:
            first = statistics.mean(r["queries_first"]["valid"] for r in mine)
            last = statistics.mean(r["queries_last"]["valid"] for r in mine)
            mix = lambda key: ", ".join(f"L{l} {statistics.mean(r[key]['levels'].get(l, 0) for r in mine):.2f}"
                                        for l in ("1", "2", "3", "4", "5") if any(l in r[key]["levels"] for r in mine))
            distinct = ""
            if all("distinct" in r["queries_first"] for r in mine):  # older results did not count them
                distinct = (f"; distinct queries {statistics.mean(r['queries_first']['distinct'] for r in mine):.2f} -> "
                            f"{statistics.mean(r['queries_last']['distinct'] for r in mine):.2f}")
            lines.append(f"- {method}: valid queries {first:.2f} -> {last:.2f}{distinct}; level mix "
                         f"{mix('queries_first')} -> {mix('queries_last')}")
    return lines


def sampled_table(results: dict) -> list[str]:
    """Sampled scores by family, as differences to the base model (mean over seeds); all families and all but count."""
    base = results["base"]["sampled_by_family"]
    families = sorted(base)
    rows = [["base model (score)", *(f"{base[f]:.3f}" for f in families), f"{statistics.mean(base.values()):.3f}",
             f"{statistics.mean(base[f] for f in families if f != 'count'):.3f}"]]
    for method in METHODS:
        mine = [r for r in runs_of(results["runs"], method) if "sampled_by_family" in r]
        if mine:
            diff = {f: statistics.mean(r["sampled_by_family"][f] for r in mine) - base[f] for f in families}
            rows.append([method, *(f"{diff[f]:+.3f}" for f in families), f"{statistics.mean(diff.values()):+.3f}",
                         f"{statistics.mean(diff[f] for f in families if f != 'count'):+.3f}"])
    return ["", f"Sampled at temperature {SAMPLED['temperature']:g} (the policy being trained; {SAMPLED['n']} answers "
            f"per prompt, {SAMPLED['per_level']} prompts per family and level): difference to the base model, mean "
            "over seeds.", "", *table(["method", *families, "all", "all but count"], rows)]


def plot(results: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colours = dict(zip(METHODS, ["tab:blue", "tab:orange", "tab:green"]))
    for run in results["runs"]:
        label = run["method"] if run["seed"] == results["settings"]["seeds"][0] else None
        left.plot(run["train_reward"], color=colours[run["method"]], alpha=0.7, label=label)
        if run["valid_queries"][0] is not None:
            right.plot(run["valid_queries"], color=colours[run["method"]], alpha=0.7, label=label)
    left.set(title="mean judge reward of solver answers", xlabel="step")
    right.set(title="fraction of challenger queries that parse", xlabel="step", ylim=(0, 1.05))
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(folder / f"{name_of(results)}_training.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
