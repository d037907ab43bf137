"""Self-play steered to one family: LSP in tinyworld with the challenger's reply starting with the family's opening.

    python experiments/lsp_steered.py [--seeds 0 1 2] [--steps 60]

The family is chosen on the tune split before anything trains: among the families one of whose phrasings opens
with words no other family's does (PREFIXES), the one whose base near-greedy score on tune instances is nearest 0.5
(room to gain and to lose).
From the shipped base model, the steered preset (src/langplay/presets/lsp_steered.yaml: 16 queries x 4 answers,
lr 1e-4, quality self-reward) with lsp.query_prefix set to that opening and the challenger's weight alpha_Ch
swept; beside it LSP-Zero (no self-reward) and GRPO on the family's training prompts (the data baseline: 16
prompts x 4, same lr and steps). Held-out test instances of the family (128 per level), near-greedy and sampled
(temperature 1, 4 answers each), and of the other nine families (8 per family and level), near-greedy: each
run's gain over the base and LSP's over GRPO and over LSP-Zero, paired per prompt (seeds averaged per prompt)
with 95% bootstrap intervals. Steering itself is measured too: the share of the challenger's queries in the last
10 steps that parse as a task of the family. Writes results/lsp_steered.{md,json,png}; runs go to runs/lsp_steered/.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import (experiment_parser, finished, interval_cell, paired_gain, provenance, run_folder,  # noqa: E402
                    saved_results, table)

PRESET = ROOT / "src" / "langplay" / "presets" / "lsp_steered.yaml"
# Per family, the opening of one of its phrasings (tinyworld.tasks) that no other family's phrasing starts with: the
# challenger's reply starts with it. Not here: add, reverse, sum_to and word_problem, whose phrasings all open
# with words another family's share or with a number or a name.
PREFIXES = {"between": "Name any", "count": "How many times does", "letters": "Make a",
            "max": "Give the largest number in", "multiply": "Multiply", "spell": "Spell"}
TUNE_PER_LEVEL = 16  # tune instances per level for choosing the family
FOCUS_PER_LEVEL = 128  # 512 held-out prompts of the family: on 128 the gain of one run moved by +-0.02 between sets
OTHERS_PER_LEVEL = 8
PRESET_ALPHA = "LSP, alpha_Ch 0.03 (the preset)"
GRPO = "GRPO on the family's prompts (data)"
RUNS = {  # name -> overrides of the steered preset
    "LSP, alpha_Ch 0": ["lsp.alpha_challenger=0"],
    "LSP, alpha_Ch 0.01": ["lsp.alpha_challenger=0.01"],
    PRESET_ALPHA: [],
    "LSP, alpha_Ch 0.1": ["lsp.alpha_challenger=0.1"],
    "LSP, alpha_Ch 1": ["lsp.alpha_challenger=1"],
    "LSP-Zero, alpha_Ch 0.03": ["lsp.self_reward=false"],
    GRPO: ["algorithm=grpo", "grpo.group_size=4", "grpo.beta=0.01",
           "grpo.rewards=[{kind: function, function: 'langplay.tinyworld.datasets:judge_reward'}]"],
}
STEERING_STEPS = 10  # the challenger's queries of the last steps, for the share that lands in the family


def choose_family(base) -> tuple[str, dict[str, float]]:
    """The family (of PREFIXES) whose base near-greedy score on tune instances is nearest 0.5, and the scores it
    was chosen from: a design choice made on the tune split, never on the test split."""
    from langplay.evaluation.tinyworld import held_out_tasks, task_scores

    scores = {family: statistics.mean(task_scores(base, held_out_tasks(TUNE_PER_LEVEL, seed=7, families=[family],
                                                                       split="tune")))
              for family in PREFIXES}
    return min(scores, key=lambda family: abs(scores[family] - 0.5)), scores


def run_one(name: str, family: str, seed: int, steps: int, work: Path) -> Path:
    import datasets

    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.datasets import task_rows
    from langplay.trainer import Trainer

    config = load_config(PRESET, [
        f"model.name_or_path={base_model_path()}", f"train.steps={steps}", f"train.seed={seed}",
        "run.progress=false", "run.save_every=0", f"lsp.query_prefix={PREFIXES[family]}", *RUNS[name],
    ])
    grpo = config.algorithm == "grpo"  # self-play writes its own prompts; GRPO trains on the family's prompts
    out = run_folder(work, f"run{list(RUNS).index(name)}-seed{seed}", config,
                     f"train rows: 4000, seed {seed}, {family}" if grpo else "")
    if not finished(out):
        data = datasets.Dataset.from_list(task_rows("train", 4000, seed, families=[family])) if grpo else None
        Trainer(config, dataset=data).train()
    return out


def evaluate(model, family: str) -> dict:
    """Per held-out prompt: the family's near-greedy and sampled scores, and the other families' near-greedy."""
    from langplay.evaluation.tinyworld import held_out_tasks, task_scores
    from langplay.tinyworld import FAMILIES

    focus = held_out_tasks(FOCUS_PER_LEVEL, seed=123, families=[family])
    others = held_out_tasks(OTHERS_PER_LEVEL, seed=123, families=[f for f in sorted(FAMILIES) if f != family])
    return {"near_greedy": task_scores(model, focus),
            "sampled": task_scores(model, focus, n=4, temperature=1.0, seed=5),
            "others": task_scores(model, others)}


def challenger_samples(out: Path) -> list[dict]:
    """A run's challenger queries from its samples.jsonl (every query of every step, with one of its answers),
    each with the task it parses as (None if it does not) and whether it is in the last STEERING_STEPS steps;
    none for a run without queries (GRPO)."""
    from langplay.tinyworld.judges import parse

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    last = max(s["step"] for s in samples)
    return [{**s, "task": parse(s["query"]), "late": s["step"] > last - STEERING_STEPS}
            for s in samples if "query" in s]


def steering(out: Path, family: str) -> float | None:
    """The share of the challenger's queries in the run's last STEERING_STEPS steps that parse as a task of the
    family; None for a run without queries (GRPO)."""
    late = [s["task"] for s in challenger_samples(out) if s["late"]]
    if not late:
        return None
    return sum(task is not None and task.family == family for task in late) / len(late)


def answer_shortcut(out: Path, family: str) -> dict | None:
    """What the challenger asks and the solver learns: over the family's queries of the first 5 and the last
    STEERING_STEPS steps, the most common reference answer of the last steps, the share of queries whose answer
    it is, and the share of the solver's answers that are it. None for a run without queries (GRPO)."""
    from collections import Counter

    samples = [s for s in challenger_samples(out) if s["task"] is not None and s["task"].family == family]
    if not samples:
        return None
    asked = {"first": [s for s in samples if s["step"] <= 5], "last": [s for s in samples if s["late"]]}
    common = Counter(s["task"].answer for s in asked["last"]).most_common(1)[0][0]
    report = {"answer": common}
    for name, window in asked.items():
        report[f"queries_{name}"] = sum(s["task"].answer == common for s in window) / len(window)
        report[f"answers_{name}"] = sum(s["answer"].strip() == common for s in window) / len(window)
    return report


def main(argv=None) -> int:
    parser = experiment_parser("lsp_steered")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args(argv)
    path = args.results / "lsp_steered.json"
    results = saved_results(args, path)
    if results is None:
        import torch

        from langplay.tinyworld.base import base_model_path

        torch.set_num_threads(2)
        family, tune_scores = choose_family(base_model_path())
        print(f"family chosen on tune: {family} ({', '.join(f'{f} {s:.3f}' for f, s in tune_scores.items())})")
        results = {"provenance": provenance(), "settings": {"seeds": args.seeds, "steps": args.steps},
                   "family": family, "tune_scores": tune_scores, "base": evaluate(base_model_path(), family),
                   "runs": []}
        for seed in args.seeds:
            for name in RUNS:
                out = run_one(name, family, seed, args.steps, args.work)
                report = {"name": name, "seed": seed, **evaluate(out / "final", family),
                          "steering": steering(out, family), "shortcut": answer_shortcut(out, family)}
                results["runs"].append(report)
                print(f"{name:38s} seed {seed}: {family} {statistics.mean(results['base']['near_greedy']):.3f} -> "
                      f"{statistics.mean(report['near_greedy']):.3f}, steering {report['steering']}", flush=True)
                path.write_text(json.dumps(results, indent=1))
    write_markdown(results, args.results)
    plot(results, args.results / "lsp_steered.png")
    return 0


def runs_of(results: dict, name: str) -> list[dict]:
    return [r for r in results["runs"] if r["name"] == name]


def gain_rows(results: dict) -> list[list[str]]:
    """Per run name that ran: its gains over the base (paired per prompt, 95% interval), its win rate on the
    family against the base (seeds averaged per prompt; ties count half) and how many of its queries were steered."""
    from langplay.evaluation.metrics import win_rate

    base, rows = results["base"], []
    for name in RUNS:
        runs = runs_of(results, name)
        if not runs:
            continue
        mine = lambda key: [r[key] for r in runs]  # noqa: E731
        averaged = [statistics.mean(values) for values in zip(*mine("near_greedy"))]
        steered = [r["steering"] for r in runs if r["steering"] is not None]
        rows.append([name, interval_cell(paired_gain(mine("near_greedy"), [base["near_greedy"]])),
                     f"{win_rate(averaged, base['near_greedy'])['win_rate']:.3f}",
                     interval_cell(paired_gain(mine("sampled"), [base["sampled"]])),
                     interval_cell(paired_gain(mine("others"), [base["others"]])),
                     f"{statistics.mean(steered):.2f}" if steered else "—"])
    return rows


def comparison_rows(results: dict) -> list[list[str]]:
    """The preset's LSP against GRPO on data and against LSP-Zero, paired per prompt (seeds averaged per prompt)."""
    lsp, rows = runs_of(results, PRESET_ALPHA), []
    for other, label in [(GRPO, "LSP (the preset) over GRPO on data"),
                         ("LSP-Zero, alpha_Ch 0.03", "LSP over LSP-Zero")]:
        theirs = runs_of(results, other)
        if lsp and theirs:
            rows.append([label, *(interval_cell(paired_gain([r[key] for r in lsp], [r[key] for r in theirs]))
                                  for key in ("near_greedy", "sampled", "others"))])
    return rows


def shortcut_lines(results: dict) -> list[str]:
    """The challenger's queries and the solver's answers early and late in each self-play run, averaged over
    seeds: how often the most common answer of the late queries is the answer, against the test instances."""
    from langplay.evaluation.tinyworld import held_out_tasks

    runs = [r for r in results["runs"] if r.get("shortcut")]
    if not runs:
        return []
    answers = {r["shortcut"]["answer"] for r in runs}
    test = held_out_tasks(FOCUS_PER_LEVEL, seed=123, families=[results["family"]])
    in_test = ", ".join(f"{a!r}: {sum(t.answer == a for t in test) / len(test):.3f}" for a in sorted(answers))
    mean = lambda name, key: statistics.mean(r["shortcut"][key] for r in runs_of(results, name))  # noqa: E731
    rows = [[name, ", ".join(sorted({repr(r["shortcut"]["answer"]) for r in runs_of(results, name)})),
             f"{mean(name, 'queries_first'):.2f} -> {mean(name, 'queries_last'):.2f}",
             f"{mean(name, 'answers_first'):.2f} -> {mean(name, 'answers_last'):.2f}"]
            for name in RUNS if any(r.get("shortcut") for r in runs_of(results, name))]
    return ["", f"The challenger's `{results['family']}` queries and the solver's answers, steps 1-5 -> the last "
            f"{STEERING_STEPS} (`samples.jsonl`: every query, one of its answers; means over seeds). The most "
            f"common answer of the late queries, and its share of the test instances: {in_test}.", "",
            *table(["run", "most common answer", "queries with that answer", "solver answers that are it"], rows)]


def write_markdown(results: dict, folder: Path) -> None:
    s, base, family = results["settings"], results["base"], results["family"]
    tune = ", ".join(f"{f} {v:.3f}" for f, v in results["tune_scores"].items())
    lines = [
        f"# Self-play steered to one family (tinyworld, `{family}`)", "",
        f"Regenerate: `python experiments/lsp_steered.py --seeds {' '.join(map(str, s['seeds']))} "
        f"--steps {s['steps']}`. The family is chosen on tune instances, before anything trains: the one whose base "
        "near-greedy score is nearest 0.5 among the families one of whose phrasings opens with words no other "
        f"family's does (tune scores: {tune}). From the shipped "
        f"base model, {s['steps']} steps of the steered preset (`src/langplay/presets/lsp_steered.yaml`: 16 "
        f"challenger queries x 4 answers, lr 1e-4, quality self-reward), the challenger's reply starting with "
        f"\"{PREFIXES[family]}\", with the challenger's weight alpha_Ch varied; GRPO: 16 `{family}` training prompts "
        f"x 4, same lr and steps. Held-out test instances: `{family}`, {4 * FOCUS_PER_LEVEL} prompts near-greedy (the "
        "checker) and sampled at temperature 1 (4 answers each); the other families near-greedy, "
        f"{OTHERS_PER_LEVEL} prompts per family and level. Gains paired per prompt (seeds averaged per prompt), 95% "
        "bootstrap intervals over prompts; steered: the share of the challenger's queries in the last "
        f"{STEERING_STEPS} steps that are `{family}` tasks.", "",
        f"Base model on these test prompts: `{family}` {statistics.mean(base['near_greedy']):.3f} near-greedy, "
        f"{statistics.mean(base['sampled']):.3f} sampled; other families {statistics.mean(base['others']):.3f}.", "",
        *table(["run", f"`{family}` near-greedy gain", f"win rate on `{family}`", f"`{family}` sampled gain",
                "other families gain", "queries steered"], gain_rows(results)),
        "", "The preset's LSP against the other methods, paired per prompt:", "",
        *table(["comparison", f"`{family}` near-greedy", f"`{family}` sampled", "other families"],
               comparison_rows(results)),
        *shortcut_lines(results),
        "", "Plot: `lsp_steered.png` (the gains by run; dots are seeds).",
    ]
    reading = folder / "lsp_steered_reading.md"
    if reading.is_file():
        lines += ["", reading.read_text()]
    (folder / "lsp_steered.md").write_text("\n".join(lines) + "\n")


def plot(results: dict, path: Path) -> None:
    """Each run's held-out gains over the base (the family near-greedy and sampled, the other families), by seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base, family = results["base"], results["family"]
    names = [n for n in RUNS if runs_of(results, n)]
    metrics = [("near_greedy", f"`{family}`, near-greedy"), ("sampled", f"`{family}`, sampled"),
               ("others", "other families")]
    fig, ax = plt.subplots(figsize=(11, 4))
    for k, (key, label) in enumerate(metrics):
        for i, name in enumerate(names):
            values = [statistics.mean(r[key]) - statistics.mean(base[key]) for r in runs_of(results, name)]
            x = i + (k - 1) * 0.27
            ax.bar(x, statistics.mean(values), 0.25, color=f"C{k}", alpha=0.7, label=label if i == 0 else None)
            ax.scatter([x] * len(values), values, color="black", s=8, zorder=3)
    ax.axhline(0, color="grey", lw=0.8)
    labels = [n.replace(" (the preset)", "\n(the preset)").replace(" on the family's prompts", "\non the family's "
                                                                   "prompts").replace(", ", "\n") for n in names]
    ax.set_xticks(range(len(names)), labels, fontsize=8)
    ax.set_ylabel("held-out score minus the base model's")
    ax.set_title(f"Self-play steered to `{family}`: gain by challenger weight (bars: mean, dots: seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
