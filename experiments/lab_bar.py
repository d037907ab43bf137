"""The lab's bar: GRPO on training prompts of the whole mix must clearly beat tinyworld's base model.

    python experiments/lab_bar.py [--seeds 0 1 2] [--steps 200] [--lr 1e-3] [--split test] [--per-level 40]

From the base model, GRPO on training instances of every family and level, rewarded by tinyworld's judge (the
data baseline of every paper's experiment). Evaluation on instances of `--split` (tune to choose settings, test
to report; never a training instance), near-greedy: the checker's score and exact accuracy of each prompt, paired
with the base model's on the same prompt. The gain is the mean over prompts of (mean over seeds of the trained
score) minus the base's score; its 95% interval is the bootstrap over prompts of those paired differences.
The bar (tinyworld v2): gain >= +0.10 and accuracy >= +5 points, the interval excluding 0, each run at most
10 minutes here. Writes results/lab_bar[_SPLIT].{json,md}.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import experiment_parser, finished, measured, paired_gain, run_folder, table  # noqa: E402

PRESET = ROOT / "src" / "langplay" / "presets" / "grpo_tinyworld.yaml"
EVAL_SEED = 321
SAMPLES = 4  # answers per test prompt at temperature 1
TRAIN_ROWS = 20000


def run_one(seed: int, args, work: Path) -> tuple[Path, float]:
    """A GRPO run from the base (reused when its resolved config was run before); (folder, minutes)."""
    import datasets

    from langplay.config import load_config
    from langplay.trainer import Trainer
    from langplay.tinyworld.datasets import task_rows

    config = load_config(PRESET, [
        f"model.name_or_path={args.model}", f"train.steps={args.steps}", f"train.seed={seed}", f"train.lr={args.lr}",
        f"train.prompts_per_step={args.prompts}", f"grpo.group_size={args.group}", f"grpo.beta={args.beta}",
        "run.progress=false", "run.save_every=0", *args.override,
    ])
    out = run_folder(work, f"grpo-seed{seed}", config, f"train rows: {TRAIN_ROWS}, seed {seed}, all families")
    if not finished(out):
        Trainer(config, dataset=datasets.Dataset.from_list(task_rows("train", TRAIN_ROWS, seed))).train()
    return out, training_minutes(out)


def training_minutes(out: Path) -> float:
    """The run's steps' wall time (metrics.jsonl), also right for a run reused from an earlier call."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return sum(json.loads(line).get("time/step", 0.0) for line in lines) / 60


def per_prompt(model, tasks) -> dict:
    """Per task: near-greedy score and exact accuracy; and the same of SAMPLES answers at temperature 1 (the
    policy RL trains), averaged. `worked`: per reasoning task, whether the near-greedy answer works the steps."""
    from langplay.evaluation.tinyworld import answer, load_policy
    from langplay.tinyworld.tasks import FAMILIES, check, shows_work

    policy = load_policy(model)
    responses = [pool[0] for pool in answer(policy, tasks)]
    greedy = [check(task, response) for task, response in zip(tasks, responses)]
    pools = answer(policy, tasks, n=SAMPLES, temperature=1.0, seed=EVAL_SEED)
    sampled = [[check(task, r) for r in pool] for task, pool in zip(tasks, pools)]
    return {"score": greedy, "accuracy": [float(s == 1.0) for s in greedy],
            "sampled_score": [statistics.mean(row) for row in sampled],
            "sampled_accuracy": [statistics.mean(float(s == 1.0) for s in row) for row in sampled],
            "worked": [float(shows_work(r)) for task, r in zip(tasks, responses) if FAMILIES[task.family].kind == "reasoning"]}


def paired(trained: list[dict], base: dict, key: str) -> dict:
    """The gain over the base on `key`, averaged over seeds per prompt, with its bootstrap interval, and per seed."""
    gain = paired_gain([run[key] for run in trained], [base[key]])
    return gain | {"per_seed": [statistics.mean(run[key]) - statistics.mean(base[key]) for run in trained]}


def by_family(tasks, values: list[float]) -> dict:
    groups: dict = {}
    for task, value in zip(tasks, values):
        groups.setdefault(task.family, []).append(value)
    return {family: statistics.mean(v) for family, v in sorted(groups.items())}


def measure(args) -> dict:
    from langplay.evaluation.tinyworld import held_out_tasks

    tasks = held_out_tasks(args.per_level, seed=EVAL_SEED, split=args.split)
    base = per_prompt(args.model, tasks)
    runs, minutes = [], []
    for seed in args.seeds:
        out, took = run_one(seed, args, args.work)
        runs.append(per_prompt(out / "final", tasks))
        minutes.append(took)
        print(f"seed {seed}: score {statistics.mean(base['score']):.3f} -> {statistics.mean(runs[-1]['score']):.3f} "
              f"({took:.1f} min)", flush=True)
    score, accuracy = paired(runs, base, "score"), paired(runs, base, "accuracy")
    sampled = {key: paired(runs, base, key) for key in ("sampled_score", "sampled_accuracy")}
    return {**score, "accuracy": accuracy, **sampled, "seeds": args.seeds, "minutes": max(minutes) if minutes else 0.0,
            "run_minutes": minutes, "prompts": len(tasks), "split": args.split,
            "base": {key: statistics.mean(values) for key, values in base.items() if key != "worked"},
            "worked": {"base": statistics.mean(base["worked"]), "trained": [statistics.mean(r["worked"]) for r in runs]},
            "by_family": {"base": by_family(tasks, base["score"]),
                          "trained": by_family(tasks, [statistics.mean(r["score"][i] for r in runs) for i in range(len(tasks))])},
            "settings": {k: v for k, v in vars(args).items() if k in ("steps", "lr", "prompts", "group", "beta",
                                                                    "per_level", "override", "model")}}


ROWS = [("score", "score, near-greedy"), ("accuracy", "accuracy, near-greedy"),
        ("sampled_score", f"score, T=1 ({SAMPLES} answers)"), ("sampled_accuracy", f"accuracy, T=1 ({SAMPLES} answers)")]


def gain_row(report: dict, key: str, label: str) -> list[str]:
    gain = report if key == "score" else report[key]
    return [label, f"{report['base'][key]:.3f}", f"{gain['gain']:+.3f}", f"[{gain['ci_low']:+.3f}, {gain['ci_high']:+.3f}]",
            ", ".join(f"{g:+.3f}" for g in gain["per_seed"])]


def other_options(report: dict, path: Path) -> str:
    """The regenerate command's options away from their defaults: --per-level, and --tag (from the file's name)."""
    s, options = report["settings"], ""
    if s["per_level"] != 40:
        options += f" --per-level {s['per_level']}"
    tag = path.stem.removeprefix("lab_bar").removeprefix("" if report["split"] == "test" else f"_{report['split']}")
    return options + (f" --tag {tag[1:]}" if tag else "")


def write_markdown(report: dict, path: Path) -> None:
    s, acc = report["settings"], report["accuracy"]
    met = report["gain"] >= 0.10 and acc["gain"] >= 0.05 and report["ci_low"] > 0 and report["minutes"] <= 10
    families = list(report["by_family"]["base"])
    lines = [
        f"# The lab's bar: GRPO on data against the base model ({report['split']} split)", "",
        f"GRPO from `{s['model']}`, {s['steps']} steps of {s['prompts']} training prompts x {s['group']} answers, "
        f"lr {s['lr']}, beta {s['beta']}, seeds {report['seeds']}; {report['prompts']} {report['split']} instances "
        f"({s['per_level']} per family and level), near-greedy. Regenerate: `python experiments/lab_bar.py "
        f"--seeds {' '.join(map(str, report['seeds']))} --steps {s['steps']} --lr {s['lr']} --split {report['split']}"
        f"{other_options(report, path)}`.", "",
        *table(["", "base", "gain (paired, mean over seeds)", "95% interval", "per seed"],
               [gain_row(report, key, label) for key, label in ROWS if key in report["base"]]),
        *([] if "worked" not in report else [
            "", f"Near-greedy answers to reasoning tasks that work the steps first: base {report['worked']['base']:.2f}, "
            f"trained {', '.join(f'{w:.2f}' for w in report['worked']['trained'])} (by seed)."]),
        "", f"Longest run: {report['minutes']:.1f} minutes. Bar (gain >= +0.10, accuracy >= +0.05, interval above 0, "
        f"<= 10 minutes): **{'met' if met else 'not met'}**.", "",
        "Score by family:", "",
        *table(["model"] + families, [[name] + [f"{report['by_family'][name][f]:.3f}" for f in families]
                                      for name in ("base", "trained")]),
        "", "```json", json.dumps(report["provenance"], indent=1), "```", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = experiment_parser("lab_bar", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="the base model (default: the shipped one)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=2e-4, help="default: the diagnosis's best on tune")
    parser.add_argument("--prompts", type=int, default=16, help="training prompts per step")
    parser.add_argument("--group", type=int, default=8, help="answers per prompt")
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--split", choices=["tune", "test"], default="test")
    parser.add_argument("--per-level", type=int, default=40)
    parser.add_argument("--override", nargs="*", default=[], help="more config overrides, key=value")
    parser.add_argument("--tag", default="", help="results/lab_bar[_SPLIT][_TAG].json: a sweep's points side by side")
    args = parser.parse_args(argv)
    name = "lab_bar" + ("" if args.split == "test" else f"_{args.split}") + (f"_{args.tag}" if args.tag else "")
    from langplay.tinyworld.base import base_model_path

    args.model = args.model or str(base_model_path())
    measured(args, args.results / f"{name}.json", lambda: measure(args), write_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
