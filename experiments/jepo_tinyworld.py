"""The JEPO paper's experiment in tinyworld: SFT vs RL with a verifier vs JEPO (single, multi) vs JEPO + RL.
JEPO-n-gen is JEPO-n with the paper's update read literally (jepo.policy_gradient=generation: the score function
on the whole generation, a* in rows of its own); the others use the default (the chain c_i only).

    python experiments/jepo_tinyworld.py [--seeds 0 1 2] [--steps 30] [--per-level 40]

From the shipped base model, the same budget for every method: 16 prompts per step, 4 samples each (SFT: the 16
reference solutions), the same steps and learning rate. Three splits of tinyworld's reasoning families:
  verifiable      word_problem                 the verifier sees everything
  semi            word_problem + multiply      the verifier sees word_problem only; JEPO sees both
  unverifiable    spell (long-form answers)    no verifier: RL cannot run
Held-out metrics: accuracy by the withheld checker and the proxy NLL of the reference answer (multi-sample
bound, n 4). Writes results/jepo_tinyworld.{md,json} and a plot; runs go to runs/jepo_experiment/.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import (experiment_parser, finished, mean_sd, provenance, run_folder, run_metrics,  # noqa: E402
                    saved_results, table)
SPLITS = {
    "verifiable": {"families": ["word_problem"], "verified": ["word_problem"]},
    "semi": {"families": ["word_problem", "multiply"], "verified": ["word_problem"]},
    "unverifiable": {"families": ["spell"], "verified": []},
}
METHODS = ["SFT", "RL", "JEPO-1", "JEPO-n", "JEPO-n-gen", "JEPO+RL"]  # -gen: the score function on all of y_i
VERIFIER = "langplay.tinyworld.datasets:verifier_reward"


def method_overrides(method: str) -> list[str]:
    if method == "SFT":
        return ["algorithm=sft", "data.completion_column=reference"]
    if method == "RL":  # online RL with a 0/1 verifier reward and a leave-one-out baseline (the paper's baseline)
        return ["algorithm=grpo", "grpo.group_size=4", "grpo.leave_one_out=true", "grpo.scale_rewards=none",
                "grpo.beta=1e-3", f"grpo.rewards=[{{kind: function, function: '{VERIFIER}'}}]"]
    estimator = "single" if method == "JEPO-1" else "multi"
    extra = [f"jepo.rewards=[{{kind: function, function: '{VERIFIER}'}}]"] if method == "JEPO+RL" else []
    extra += ["jepo.policy_gradient=generation"] if method == "JEPO-n-gen" else []
    return [f"jepo.estimator={estimator}", *extra]


def runnable(method: str, split: str) -> bool:
    return not (method in ("RL", "JEPO+RL") and not SPLITS[split]["verified"])


def run_one(method: str, split: str, seed: int, steps: int, work: Path) -> Path:
    import datasets

    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.datasets import task_rows
    from langplay.trainer import Trainer

    families = SPLITS[split]["verified"] if method == "RL" else SPLITS[split]["families"]  # RL: verifiable data only
    config = load_config(ROOT / "src" / "langplay" / "presets" / "jepo_tinyworld.yaml", [
        f"model.name_or_path={base_model_path()}", f"train.steps={steps}", f"train.seed={seed}",
        "run.progress=false", "run.save_every=0", *method_overrides(method),
    ])
    out = run_folder(work / split, f"{method.lower().replace('+', '_')}-seed{seed}", config,
                     f"train rows: 2000, seed {seed}, {families}")
    if not finished(out):
        Trainer(config, dataset=datasets.Dataset.from_list(task_rows("train", 2000, seed, families=families))).train()
    return out


def evaluate(model, families: list[str], per_level: int) -> dict:
    from langplay.evaluation.tinyworld import answer, held_out_tasks, load_policy, reference_loglik
    from langplay.tinyworld.tasks import check

    policy = load_policy(model)
    tasks = held_out_tasks(per_level, seed=123, families=families)
    scores = [check(t, r[0]) for t, r in zip(tasks, answer(policy, tasks, seed=123))]
    nll = [-x for x in reference_loglik(policy, tasks, n=4, seed=123)]
    by_family = {f: {"accuracy": statistics.mean(float(s == 1.0) for t, s in zip(tasks, scores) if t.family == f),
                     "nll": statistics.mean(x for t, x in zip(tasks, nll) if t.family == f)} for f in families}
    return {"accuracy": statistics.mean(float(s == 1.0) for s in scores), "score": statistics.mean(scores),
            "nll": statistics.mean(nll), "by_family": by_family}


def main(argv=None) -> int:
    parser = experiment_parser("jepo_experiment")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--per-level", type=int, default=40)
    args = parser.parse_args(argv)
    path = args.results / "jepo_tinyworld.json"
    results = saved_results(args, path)
    if results is None:
        from langplay.tinyworld.base import base_model_path

        results = {"provenance": provenance(),
                   "settings": {"seeds": args.seeds, "steps": args.steps, "per_level": args.per_level},
                   "base": {s: evaluate(base_model_path(), SPLITS[s]["families"], args.per_level) for s in SPLITS},
                   "runs": []}
        for seed in args.seeds:
            for split in SPLITS:
                for method in METHODS:
                    if not runnable(method, split):
                        continue
                    started = time.time()
                    out = run_one(method, split, seed, args.steps, args.work)
                    report = evaluate(out / "final", SPLITS[split]["families"], args.per_level)
                    metrics = run_metrics(out)
                    results["runs"].append({"method": method, "split": split, "seed": seed, **report,
                                            "minutes": (time.time() - started) / 60,
                                            "bound": [m.get("bound") for m in metrics]})
                    print(f"{split:12s} {method:8s} seed {seed}: accuracy {report['accuracy']:.3f} "
                          f"(base {results['base'][split]['accuracy']:.3f}), nll {report['nll']:.3f} "
                          f"(base {results['base'][split]['nll']:.3f})", flush=True)
                    path.write_text(json.dumps(results, indent=2))
    write_markdown(results, args.results)
    plot(results, args.results)
    return 0



def write_markdown(results: dict, folder: Path) -> None:
    s = results["settings"]
    lines = [
        "# JEPO in tinyworld: SFT vs RL with a verifier vs JEPO vs JEPO + RL", "",
        f"Regenerate: `python experiments/jepo_tinyworld.py --seeds {' '.join(map(str, s['seeds']))} --steps {s['steps']} "
        f"--per-level {s['per_level']}`. From the shipped base model, {s['steps']} steps of 16 prompts x 4 samples "
        "(SFT: 16 reference solutions per step), lr 5e-5, the rest as `presets/jepo_tinyworld.yaml`. Held-out "
        f"instances ({s['per_level']} per family and level), near-greedy decoding; accuracy by the checker (withheld "
        "from training where the split says so); proxy NLL = -log (1/4) sum_i pi(a*|x, c_i) over 4 sampled chains "
        "(lower is better). Mean ± standard deviation over seeds.", "",
    ]
    for split, spec in SPLITS.items():
        header = ["method", "accuracy", "proxy NLL", *(f"{f} acc / NLL" for f in spec["families"])]
        lines += [f"## {split}: families {', '.join(spec['families'])}; verifier on "
                  f"{', '.join(spec['verified']) or 'nothing'}", "", *table(header, split_rows(results, split)), ""]
    lines += ["RL and JEPO + RL need a verifier: they do not run on the unverifiable split. "
              "Plot: `jepo_tinyworld.png` (accuracy and proxy NLL by method and split).", ""]
    reading = folder / "jepo_tinyworld_reading.md"
    if reading.is_file():  # the written reading of the numbers, kept apart so the table can be regenerated
        lines += [reading.read_text()]
    (folder / "jepo_tinyworld.md").write_text("\n".join(lines))


def split_rows(results: dict, split: str) -> list[list[str]]:
    """The base model's row, then one per method: mean ± sd over seeds overall, means by family."""
    families, base = SPLITS[split]["families"], results["base"][split]
    rows = [["base model", f"{base['accuracy']:.3f}", f"{base['nll']:.3f}",
             *(family_cell([base], f) for f in families)]]
    for method in METHODS:
        mine = [r for r in results["runs"] if r["method"] == method and r["split"] == split]
        if not mine:  # RL needs a verifier: a row of dashes where the split has none
            rows.append([method, "—", "—", *("—" for _ in families)])
            continue
        rows.append([method, mean_sd([r["accuracy"] for r in mine]), mean_sd([r["nll"] for r in mine]),
                     *(family_cell(mine, f) for f in families)])
    return rows


def family_cell(reports: list[dict], family: str) -> str:
    """'accuracy / proxy NLL' of one family, means over the reports."""
    accuracy = statistics.mean(r["by_family"][family]["accuracy"] for r in reports)
    return f"{accuracy:.3f} / {statistics.mean(r['by_family'][family]['nll'] for r in reports):.2f}"


def plot(results: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / (len(METHODS) + 1)
    for column, (metric, title) in enumerate([("accuracy", "held-out accuracy (checker)"),
                                              ("nll", "proxy NLL of reference answers")]):
        ax = axes[column]
        for k, method in enumerate(["base"] + METHODS):
            xs, ys, errs = [], [], []
            for i, split in enumerate(SPLITS):
                if method == "base":
                    values = [results["base"][split][metric]]
                else:
                    values = [r[metric] for r in results["runs"] if r["method"] == method and r["split"] == split]
                if values:
                    xs.append(i + k * width)
                    ys.append(statistics.mean(values))
                    errs.append(statistics.stdev(values) if len(values) > 1 else 0)
            ax.bar(xs, ys, width, yerr=errs, label=method)
        ax.set_xticks([i + 0.4 for i in range(len(SPLITS))], list(SPLITS))
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "jepo_tinyworld.png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
