"""The JEPO paper's experiment in tinyworld: SFT vs RL with a verifier vs JEPO (single, multi) vs JEPO + RL,
and the paper's ablation of n, the chains per prompt of the multi-sample bound (2 and 8 beside JEPO-1 and JEPO-n's 4).

    python experiments/jepo_tinyworld.py [--seeds 0 1 2] [--steps 30] [--lr 5e-5] [--per-level 40] [--split test]

From the shipped base model, the same budget for every method: 16 prompts per step, 4 samples each (SFT: the 16
reference solutions; the ablation: n each), the same steps and learning rate (choose them with --split tune,
report with --split test). Three splits of tinyworld's reasoning families:
  verifiable      word_problem                 the verifier sees everything
  semi            word_problem + multiply      the verifier sees word_problem only; JEPO sees both
  unverifiable    spell (long-form answers)    no verifier: RL cannot run
Held-out metrics: accuracy by the withheld checker and the proxy NLL of the reference answer (multi-sample
bound, n 4), with paired bootstrap intervals against the base and the data baseline (RL with the verifier, or SFT
where nothing is verifiable). Writes results/jepo_tinyworld[_tune].{md,json} and a plot; runs go to
runs/jepo_experiment/. (jepo.policy_gradient=generation, the paper's update read literally, is no longer run here:
v1's table had it no better than the chain-only default.)
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
                    run_folder, run_metrics, saved_results, table)
SPLITS = {
    "verifiable": {"families": ["word_problem"], "verified": ["word_problem"]},
    "semi": {"families": ["word_problem", "multiply"], "verified": ["word_problem"]},
    "unverifiable": {"families": ["spell"], "verified": []},
}
METHODS = ["SFT", "RL", "JEPO-1", "JEPO-n", "JEPO+RL"]
ABLATION = {"JEPO n=2": 2, "JEPO n=8": 8}  # the paper's n ablation, on the semi split (n=1: JEPO-1, n=4: JEPO-n)
CHAINS = {"JEPO-1": 1, "JEPO-n": 4, **ABLATION}  # n of every method in the ablation table
ABLATION_SPLIT = "semi"
VERIFIER = "langplay.tinyworld.datasets:verifier_reward"


def method_overrides(method: str) -> list[str]:
    if method == "SFT":
        return ["algorithm=sft", "data.completion_column=reference"]
    if method == "RL":  # online RL with a 0/1 verifier reward and a leave-one-out baseline (the paper's baseline)
        return ["algorithm=grpo", "grpo.group_size=4", "grpo.leave_one_out=true", "grpo.scale_rewards=none",
                "grpo.beta=1e-3", f"grpo.rewards=[{{kind: function, function: '{VERIFIER}'}}]"]
    if method in ABLATION:  # the multi-sample bound with n chains per prompt
        return ["jepo.estimator=multi", f"jepo.group_size={ABLATION[method]}"]
    estimator = "single" if method == "JEPO-1" else "multi"
    extra = [f"jepo.rewards=[{{kind: function, function: '{VERIFIER}'}}]"] if method == "JEPO+RL" else []
    return [f"jepo.estimator={estimator}", *extra]


def runnable(method: str, split: str) -> bool:
    if method in ABLATION:
        return split == ABLATION_SPLIT
    return not (method in ("RL", "JEPO+RL") and not SPLITS[split]["verified"])


def data_baseline(split: str) -> str:
    """The method each table compares against besides the base: RL with the verifier where the split has one
    (the paper's comparison), else SFT on the reference solutions."""
    return "RL" if SPLITS[split]["verified"] else "SFT"


def run_one(method: str, split: str, seed: int, args) -> Path:
    import datasets

    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.datasets import task_rows
    from langplay.trainer import Trainer

    families = SPLITS[split]["verified"] if method == "RL" else SPLITS[split]["families"]  # RL: verifiable data only
    config = load_config(ROOT / "src" / "langplay" / "presets" / "jepo_tinyworld.yaml", [
        f"model.name_or_path={base_model_path()}", f"train.steps={args.steps}", f"train.seed={seed}",
        f"train.lr={args.lr}", "run.progress=false", "run.save_every=0", *method_overrides(method),
    ])
    slug = method.lower().replace("+", "_").replace(" ", "-").replace("=", "")  # "JEPO n=2" -> jepo-n2
    out = run_folder(args.work / split, f"{slug}-seed{seed}", config,
                     f"train rows: 2000, seed {seed}, {families}")
    if not finished(out):
        Trainer(config, dataset=datasets.Dataset.from_list(task_rows("train", 2000, seed, families=families))).train()
    return out


def evaluate(model, families: list[str], per_level: int, split: str) -> dict:
    """Near-greedy accuracy by the checker and the proxy NLL, overall, by family and per prompt (`correct`,
    `nlls`: the paired intervals pair them), on `split`'s instances (tune to choose settings, test to report)."""
    from langplay.evaluation.tinyworld import answer, held_out_tasks, load_policy, reference_loglik
    from langplay.tinyworld.tasks import check

    policy = load_policy(model)
    tasks = held_out_tasks(per_level, seed=123, families=families, split=split)
    scores = [check(t, r[0]) for t, r in zip(tasks, answer(policy, tasks, seed=123))]
    nll = [-x for x in reference_loglik(policy, tasks, n=4, seed=123)]
    by_family = {f: {"accuracy": statistics.mean(float(s == 1.0) for t, s in zip(tasks, scores) if t.family == f),
                     "nll": statistics.mean(x for t, x in zip(tasks, nll) if t.family == f)} for f in families}
    correct = [float(s == 1.0) for s in scores]
    return {"accuracy": statistics.mean(correct), "score": statistics.mean(scores), "nll": statistics.mean(nll),
            "by_family": by_family, "correct": correct, "nlls": nll}


def main(argv=None) -> int:
    parser = experiment_parser("jepo_experiment")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--per-level", type=int, default=40)
    parser.add_argument("--split", choices=["tune", "test"], default="test",
                        help="evaluate on tune instances (to choose settings) or test ones (to report)")
    parser.add_argument("--methods", nargs="+", default=[*METHODS, *ABLATION], choices=[*METHODS, *ABLATION])
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--name", default=None, help="results name (default jepo_tinyworld, _tune on the tune split)")
    args = parser.parse_args(argv)
    name = args.name or default_name(args.split)
    path = args.results / f"{name}.json"
    results = saved_results(args, path)
    if results is None:
        from langplay.tinyworld.base import base_model_path

        settings = {k: getattr(args, k) for k in ("seeds", "steps", "lr", "per_level", "split", "methods", "splits")}
        results = {"provenance": provenance(), "settings": settings,
                   "base": {s: evaluate(base_model_path(), SPLITS[s]["families"], args.per_level, args.split)
                            for s in args.splits},
                   "runs": []}
        for seed in args.seeds:
            for split in args.splits:
                for method in args.methods:
                    if not runnable(method, split):
                        continue
                    started = time.time()
                    out = run_one(method, split, seed, args)
                    report = evaluate(out / "final", SPLITS[split]["families"], args.per_level, args.split)
                    metrics = run_metrics(out)
                    results["runs"].append({"method": method, "split": split, "seed": seed, **report,
                                            "minutes": (time.time() - started) / 60,
                                            "bound": [m.get("bound") for m in metrics]})
                    print(f"{split:12s} {method:8s} seed {seed}: accuracy {report['accuracy']:.3f} "
                          f"(base {results['base'][split]['accuracy']:.3f}), nll {report['nll']:.3f} "
                          f"(base {results['base'][split]['nll']:.3f})", flush=True)
                    path.write_text(json.dumps(results, indent=2))
    write_markdown(results, args.results, name)
    plot(results, args.results, name)
    return 0


def write_markdown(results: dict, folder: Path, name: str) -> None:
    s = results["settings"]
    lines = [
        "# JEPO in tinyworld: SFT vs RL with a verifier vs JEPO vs JEPO + RL", "",
        f"Regenerate: `python experiments/jepo_tinyworld.py --seeds {' '.join(map(str, s['seeds']))} "
        f"--steps {s['steps']} --lr {s['lr']:g} --per-level {s['per_level']} --split {s['split']}"
        f"{subset_options(s)}{name_option(name, s['split'])}`. From the shipped "
        f"base model, {s['steps']} steps of 16 prompts x 4 samples (SFT: 16 reference solutions per step), "
        f"lr {s['lr']:g}, the rest as `presets/jepo_tinyworld.yaml`. Held-out {s['split']} instances "
        f"({s['per_level']} per family and level), near-greedy decoding; accuracy by the checker (withheld from "
        "training where the split says so); proxy NLL = -log (1/4) sum_i pi(a*|x, c_i) over 4 sampled chains "
        "(lower is better). Mean ± standard deviation over seeds; the gains are paired over prompts (each "
        "method's per-prompt accuracy averaged over its seeds, minus the base's or the data baseline's on the same "
        "prompt) with 95% bootstrap intervals. The data baseline is RL with the verifier where the split has one, "
        "else SFT.", "",
    ]
    for split in s["splits"]:
        spec = SPLITS[split]
        header = ["method", "accuracy", "vs base", f"vs {data_baseline(split)}", "proxy NLL", "NLL vs base",
                  *(f"{f} acc / NLL" for f in spec["families"])]
        lines += [f"## {split}: families {', '.join(spec['families'])}; verifier on "
                  f"{', '.join(spec['verified']) or 'nothing'}", "",
                  *table(header, split_rows(results, split, [m for m in METHODS if m in s["methods"]])), ""]
    ablation = [m for m in ABLATION if m in s["methods"]]
    if ablation and ABLATION_SPLIT in s["splits"]:
        methods = [m for m in ("JEPO-1", "JEPO-n") if m in s["methods"]] + ablation
        methods.sort(key=CHAINS.get)
        header = ["n", "accuracy", "vs base", f"vs {data_baseline(ABLATION_SPLIT)}", "proxy NLL", "NLL vs base",
                  *(f"{f} acc / NLL" for f in SPLITS[ABLATION_SPLIT]["families"])]
        rows = split_rows(results, ABLATION_SPLIT, methods)[1:]
        for row, method in zip(rows, methods):
            row[0] = f"{method} (n={CHAINS[method]})"
        lines += [f"## The n ablation ({ABLATION_SPLIT} split; n=1 is JEPO-1's single-sample bound, n=4 JEPO-n)",
                  "", *table(header, rows), ""]
    lines += ["RL and JEPO + RL need a verifier: they do not run on the unverifiable split. "
              f"Plot: `{name}.png` (accuracy and proxy NLL by method and split).", ""]
    reading = folder / f"{name}_reading.md"
    if reading.is_file():  # the written reading of the numbers, kept apart so the table can be regenerated
        lines += [reading.read_text()]
    (folder / f"{name}.md").write_text("\n".join(lines))


def default_name(split: str) -> str:
    return "jepo_tinyworld" if split == "test" else "jepo_tinyworld_tune"


def name_option(name: str, split: str) -> str:
    return "" if name == default_name(split) else f" --name {name}"


def subset_options(settings: dict) -> str:
    """The --methods and --splits options of a run of fewer than all (a tuning run)."""
    options = ""
    if settings["methods"] != [*METHODS, *ABLATION]:
        options += " --methods " + " ".join(f"'{m}'" if " " in m else m for m in settings["methods"])
    if settings["splits"] != list(SPLITS):
        options += " --splits " + " ".join(settings["splits"])
    return options


def split_rows(results: dict, split: str, methods: list[str]) -> list[list[str]]:
    """The base model's row, then one per method: mean ± sd over seeds, paired gains with intervals, by family."""
    families, base = SPLITS[split]["families"], results["base"][split]
    rows = [["base model", f"{base['accuracy']:.3f}", "—", "—", f"{base['nll']:.3f}", "—",
             *(family_cell([base], f) for f in families)]]
    runs_of = {m: [r for r in results["runs"] if r["method"] == m and r["split"] == split]
               for m in {*methods, data_baseline(split)}}
    data = runs_of[data_baseline(split)]
    for method in methods:
        mine = runs_of[method]
        if not mine:  # RL needs a verifier: a row of dashes where the split has none
            rows.append([method, *("—" for _ in range(5)), *("—" for _ in families)])
            continue
        versus_data = (interval_cell(paired_gain([r["correct"] for r in mine], [r["correct"] for r in data]))
                       if data and method != data_baseline(split) else "—")
        nll_gain = paired_gain([r["nlls"] for r in mine], [base["nlls"]])
        rows.append([method, mean_sd([r["accuracy"] for r in mine]),
                     interval_cell(paired_gain([r["correct"] for r in mine], [base["correct"]])), versus_data,
                     mean_sd([r["nll"] for r in mine]), interval_cell(nll_gain),
                     *(family_cell(mine, f) for f in families)])
    return rows


def family_cell(reports: list[dict], family: str) -> str:
    """'accuracy / proxy NLL' of one family, means over the reports."""
    accuracy = statistics.mean(r["by_family"][family]["accuracy"] for r in reports)
    return f"{accuracy:.3f} / {statistics.mean(r['by_family'][family]['nll'] for r in reports):.2f}"


def plot(results: dict, folder: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = results["settings"]["splits"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / (len(METHODS) + 1)
    for column, (metric, title) in enumerate([("accuracy", "held-out accuracy (checker)"),
                                              ("nll", "proxy NLL of reference answers")]):
        ax = axes[column]
        for k, method in enumerate(["base"] + METHODS):
            xs, ys, errs = [], [], []
            for i, split in enumerate(splits):
                if method == "base":
                    values = [results["base"][split][metric]]
                else:
                    values = [r[metric] for r in results["runs"] if r["method"] == method and r["split"] == split]
                if values:
                    xs.append(i + k * width)
                    ys.append(statistics.mean(values))
                    errs.append(statistics.stdev(values) if len(values) > 1 else 0)
            ax.bar(xs, ys, width, yerr=errs, label=method)
        ax.set_xticks([i + 0.4 for i in range(len(splits))], splits)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / f"{name}.png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
