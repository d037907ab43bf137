"""Beyond the papers, on one world: the three data regimes side by side at equal compute, LSP with the reward an
IRL run extracted from demonstrations instead of the judge, and JEPO's likelihood reward combined with the judge.

    python experiments/cross_method.py [--seeds 0 1 2] [--steps 40] [--per-level 8]

From the shipped base model, every method the same steps and 64 training sequences per step (RL: 16 prompts or
challenger queries x 4 answers; IRL: 64 demonstration rows), each at its preset's learning rate:
  GRPO (data + judge)    training prompts of the whole mix, tinyworld's judge            data and a reward
  LSP (none)             self-play, the judge scores the solver's answers                no data
  JEPO (unverifiable)    training prompts + reference solutions of the reasoning families, no reward at all
  IRL (demonstrations)   offline IRL (lambda 0.01, gamma 0.99) on reference solutions of the whole mix, no reward
  LSP + IRL reward       LSP whose solver reward is the IRL run's extracted reward (same seed), not the judge
  JEPO + judge           JEPO's likelihood reward plus the judge (jepo.rewards: the RL loss where a sample scores 1)
JEPO trains on the reasoning families only: a generation without the answer marker takes JEPO's format penalty,
and the other families' answers have no marker. The extracted reward is scored at the gamma the IRL run trained
with (0.99, recorded with its model): at gamma 1 it would telescope to log pi_IRL(answer|query) + V(query), and
V(query) cancels within a query's group, leaving the IRL model's log-likelihood.
Evaluation: test instances of the whole mix (`--per-level` per family and level, the LSP table's draw),
near-greedy, the checker's score; paired 95% bootstrap intervals against the base and against GRPO on data, on
the whole mix and on the reasoning families. Writes results/cross_method.{md,json}; runs go to runs/cross_method/.
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import (experiment_parser, finished, interval_cell, measured, paired_gain, run_folder,  # noqa: E402
                    run_metrics, table)
PRESETS = ROOT / "src" / "langplay" / "presets"
JUDGE = "{kind: function, function: 'langplay.tinyworld.datasets:judge_reward'}"
METHODS = {  # name: (preset, overrides)
    "GRPO (data + judge)": ("grpo_tinyworld.yaml", ["grpo.group_size=4"]),
    "LSP (none)": ("lsp_tinyworld.yaml", []),
    "JEPO (unverifiable)": ("jepo_tinyworld.yaml", []),
    "IRL (demonstrations)": ("irl_tinyworld.yaml", ["train.prompts_per_step=64", "train.micro_batch_size=64"]),
    "LSP + IRL reward": ("lsp_tinyworld.yaml", []),  # + the IRL run's model as the reward (run_one)
    "JEPO + judge": ("jepo_tinyworld.yaml", [f"jepo.rewards=[{JUDGE}]"]),
}
DATA_BASELINE = "GRPO (data + judge)"
TRAIN_ROWS = 4000
EVAL_SEED = 123


@functools.cache
def reasoning_families() -> tuple[str, ...]:
    """The families whose answers work steps before the answer (tinyworld's `kind`)."""
    from langplay.tinyworld.tasks import FAMILIES

    return tuple(sorted(name for name, family in FAMILIES.items() if family.kind == "reasoning"))


def hard_reasoning(task) -> bool:
    """A reasoning task above level 1: where the base answers hastily instead of working the steps."""
    return task.family in reasoning_families() and task.level > 1


def training_rows(method: str, seed: int) -> list[dict] | None:
    """The method's data: training prompts (with references) of the whole mix, or of the reasoning families for
    JEPO; None for self-play."""
    from langplay.tinyworld.datasets import task_rows

    if method.startswith("LSP"):
        return None
    families = list(reasoning_families()) if method.startswith("JEPO") else None
    return task_rows("train", TRAIN_ROWS, seed, families=families)


def run_one(method: str, seed: int, args) -> Path:
    import datasets

    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.trainer import Trainer

    preset, overrides = METHODS[method]
    if method == "LSP + IRL reward":
        irl = run_one("IRL (demonstrations)", seed, args) / "final"
        overrides = [*overrides, f"lsp.rewards=[{{kind: irl, model: '{irl}'}}]"]
    config = load_config(PRESETS / preset, [
        f"model.name_or_path={base_model_path()}", f"train.steps={args.steps}", f"train.seed={seed}",
        "train.prompts_per_step=16", "run.progress=false", "run.save_every=0", *overrides,
    ])
    rows = training_rows(method, seed)
    slug = method.split(" (")[0].lower().replace(" + ", "-").replace(" ", "-")
    out = run_folder(args.work, f"{slug}-seed{seed}", config, f"train rows: {TRAIN_ROWS}, seed {seed}, {method}")
    if not finished(out):
        Trainer(config, dataset=None if rows is None else datasets.Dataset.from_list(rows)).train()
    return out


def mix_answers(model, per_level: int) -> dict:
    """Near-greedy answers to the whole mix's test instances (held_out_tasks' order): each one's checker score,
    and on the reasoning tasks above level 1, the share of answers that work the steps and their mean length (how
    a reward that favours short answers shows)."""
    from langplay.evaluation.tinyworld import answer, held_out_tasks, load_policy
    from langplay.tinyworld.tasks import check, shows_work

    tasks = held_out_tasks(per_level, seed=EVAL_SEED)
    responses = [r[0] for r in answer(load_policy(model), tasks, seed=EVAL_SEED)]
    hard = [r for t, r in zip(tasks, responses) if hard_reasoning(t)]
    return {"scores": [check(t, r) for t, r in zip(tasks, responses)],
            "worked": statistics.mean(map(shows_work, hard)), "hard_length": statistics.mean(map(len, hard))}


def hasty_against_worked(irl_model, per_level: int) -> dict:
    """How the IRL-extracted reward (the scorer LSP + IRL reward uses, at its recorded gamma) ranks the hasty answer against the
    worked reference on the reasoning test tasks above level 1: the share where the hasty one scores higher, by the
    sum (the scorer's) and by the per-token mean, and the mean sums of both."""
    from langplay.evaluation.tinyworld import held_out_tasks
    from langplay.rewards.implicit import ImplicitRewardScorer, implicit_rewards
    from langplay.tinyworld.tasks import hasty_response

    tasks = [t for t in held_out_tasks(per_level, seed=EVAL_SEED) if hard_reasoning(t)]
    scorer = ImplicitRewardScorer(str(irl_model))
    prompts = [scorer.policy.format_prompt(t.prompt) for t in tasks]
    (hasty_tokens, hasty), (worked_tokens, worked) = (
        implicit_rewards(scorer.policy, prompts, answers, scorer.gamma)
        for answers in ([hasty_response(t) for t in tasks], [t.reference for t in tasks]))
    per_token = lambda tokens: [sum(row) / len(row) for row in tokens]  # noqa: E731
    return {"tasks": len(tasks), "hasty_wins_sum": statistics.mean(float(h > w) for h, w in zip(hasty, worked)),
            "hasty_wins_mean": statistics.mean(float(h > w) for h, w in
                                               zip(per_token(hasty_tokens), per_token(worked_tokens))),
            "hasty_sum": statistics.mean(hasty), "worked_sum": statistics.mean(worked), "gamma": scorer.gamma}


def measure(args) -> dict:
    from langplay.tinyworld.base import base_model_path

    settings = {"seeds": args.seeds, "steps": args.steps, "per_level": args.per_level, "methods": args.methods}
    base = mix_answers(base_model_path(), args.per_level)
    results = {"settings": settings, "base": base.pop("scores"), "base_answers": base, "runs": []}
    for seed in args.seeds:
        for method in args.methods:
            started = time.time()
            out = run_one(method, seed, args)
            minutes = sum(m.get("time/step", 0.0) for m in run_metrics(out)) / 60
            results["runs"].append({"method": method, "seed": seed, **mix_answers(out / "final", args.per_level),
                                    "train_minutes": minutes, "minutes": (time.time() - started) / 60})
            if method == "IRL (demonstrations)":  # why LSP with this reward does what it does
                results["runs"][-1]["hasty_against_worked"] = hasty_against_worked(out / "final", args.per_level)
            print(f"{method:22s} seed {seed}: score {statistics.mean(results['runs'][-1]['scores']):.3f} "
                  f"(base {statistics.mean(results['base']):.3f}), {minutes:.1f} min training", flush=True)
    return results


def write_markdown(results: dict, path: Path) -> None:
    from langplay.evaluation.tinyworld import held_out_tasks

    s = results["settings"]
    tasks = held_out_tasks(s["per_level"], seed=EVAL_SEED)
    families = reasoning_families()
    reasoning = [i for i, t in enumerate(tasks) if t.family in families]
    lines = [
        "# One world, three data regimes, and two crossings of the methods", "",
        f"Regenerate: `python experiments/cross_method.py --seeds {' '.join(map(str, s['seeds']))} "
        f"--steps {s['steps']} --per-level {s['per_level']}`. From the shipped base model, {s['steps']} steps of 64 "
        "training sequences each (see the script's docstring for every method's data and reward). Test instances "
        f"of the whole mix ({len(tasks)} prompts, {len(reasoning)} of them in the reasoning families "
        f"{', '.join(families)}), near-greedy, the checker's score. Gains are paired over prompts (each method's "
        "per-prompt score averaged over its seeds) with 95% bootstrap intervals.", "",
        f"Base model: whole mix {statistics.mean(results['base']):.3f}, reasoning families "
        f"{statistics.mean(results['base'][i] for i in reasoning):.3f}; its answers to reasoning tasks above level 1 "
        f"work the steps {results['base_answers']['worked']:.2f} of the time, "
        f"{results['base_answers']['hard_length']:.0f} characters on average (the last two columns: the same, for "
        "each method's answers).", "",
        *table(["method", "regime", "score", "vs base", "vs GRPO on data", "reasoning: vs base",
                "reasoning: vs GRPO", "training min / run", "works the steps", "answer length"],
               summary_rows(results, reasoning)), "",
    ]
    lines += hasty_lines(results)
    reading = path.with_name(f"{path.stem}_reading.md")
    if reading.is_file():  # the written reading of the numbers, kept apart so the table can be regenerated
        lines += [reading.read_text()]
    path.write_text("\n".join(lines))


def hasty_lines(results: dict) -> list[str]:
    """The extracted reward's verdict on hasty against worked answers, means over the IRL runs' seeds."""
    found = [r["hasty_against_worked"] for r in results["runs"] if "hasty_against_worked" in r]
    if not found:
        return []
    mean = lambda key: statistics.mean(f[key] for f in found)  # noqa: E731
    return [f"The IRL-extracted reward that LSP + IRL reward uses (gamma {found[0].get('gamma', 1.0):g}) scores the hasty answer (the prompt's "
            f"first number at once) above the worked reference on {mean('hasty_wins_sum'):.2f} of the "
            f"{found[0]['tasks']} reasoning test tasks above level 1 (mean over {len(found)} seeds; mean reward "
            f"{mean('hasty_sum'):.2f} against {mean('worked_sum'):.2f}); by the per-token mean instead of the sum, "
            f"on {mean('hasty_wins_mean'):.2f} of them.", ""]


def summary_rows(results: dict, reasoning: list[int]) -> list[list[str]]:
    runs_of = {m: [r for r in results["runs"] if r["method"] == m] for m in METHODS}
    subset = lambda runs: [[run[i] for i in reasoning] for run in runs]  # noqa: E731
    base, data = [results["base"]], [r["scores"] for r in runs_of[DATA_BASELINE]]
    rows = []
    for method, mine in runs_of.items():
        if not mine:
            continue
        runs, versus_data = [r["scores"] for r in mine], method != DATA_BASELINE and bool(data)
        minutes = statistics.mean(r["train_minutes"] for r in mine)
        rows.append([
            method.split(" (")[0], method.split(" (")[1].rstrip(")") if " (" in method else "crossed",
            f"{statistics.mean(statistics.mean(run) for run in runs):.3f}",
            interval_cell(paired_gain(runs, base)),
            interval_cell(paired_gain(runs, data)) if versus_data else "—",
            interval_cell(paired_gain(subset(runs), subset(base))),
            interval_cell(paired_gain(subset(runs), subset(data))) if versus_data else "—",
            f"{minutes:.1f}", f"{statistics.mean(r['worked'] for r in mine):.2f}",
            f"{statistics.mean(r['hard_length'] for r in mine):.0f}"])
    return rows


def main(argv=None) -> int:
    parser = experiment_parser("cross_method")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--per-level", type=int, default=8)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args(argv)
    measured(args, args.results / "cross_method.json", lambda: measure(args), write_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
