"""Why RL on data barely moves tinyworld's base model: what sampling finds, what the judge rewards.

    python experiments/lab_diagnosis.py [--model DIR] [--per-level 32] [--k 8] [--name base] [--split test]

GRPO can only sharpen what sampling already finds sometimes, and can only learn from a group whose rewards
differ. On test instances (never training ones), per family and level, from k samples at temperature 1 (the
policy RL trains) and one near-greedy answer:
- greedy score and accuracy; sampled score (pass@1 in expectation) and accuracy; pass@k (some sample exactly
  right); best-of-k score;
- `no signal`: the share of prompts whose k samples all get the same reward (a GRPO group with zero advantage);
- `spread`: the mean standard deviation of the k rewards (what a group's advantages are made of);
- the judge's partial credit: the mean score of the wrong samples (reward for near-misses), and of constant
  answers (the same short string whatever the prompt);
- reasoning families: the share of greedy answers and of samples that work the steps before the answer
  (`shows_work`), and the sampled accuracy of worked and of direct answers (what choosing to work is worth).
And as challenger (self-play needs one): the share of its queries that parse as a task, sampled with LSP's
preset from the challenger prompt (2048 queries, a 95% interval).
Writes results/lab_diagnosis_NAME.{json,md}.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import experiment_parser, measured, table  # noqa: E402

CONSTANT_ANSWERS = ("0", "1", "a", "yes", "The answer is 0.")


def cell_stats(tasks, pools, greedy) -> dict:
    """The statistics of one family and level from its tasks' sample pools and greedy answers."""
    from langplay.tinyworld.tasks import FAMILIES, check

    scores = [[check(t, r) for r in pool] for t, pool in zip(tasks, pools)]
    exact = [[s == 1.0 for s in row] for row in scores]
    greedy_scores = [check(t, g[0]) for t, g in zip(tasks, greedy)]
    wrong = [s for row in scores for s in row if s < 1.0]
    mean = statistics.mean
    return {
        "prompts": len(tasks),
        "greedy_score": mean(greedy_scores), "greedy_accuracy": mean(s == 1.0 for s in greedy_scores),
        "sampled_score": mean(mean(row) for row in scores), "sampled_accuracy": mean(mean(row) for row in exact),
        "pass_at_k": mean(any(row) for row in exact), "best_of_k": mean(max(row) for row in scores),
        "no_signal": mean(max(row) == min(row) for row in scores),
        "spread": mean(statistics.pstdev(row) for row in scores),
        "wrong_credit": mean(wrong) if wrong else float("nan"),
        "constant_credit": mean(check(t, c) for t in tasks for c in CONSTANT_ANSWERS),
        **(work_stats(pools, exact, greedy) if FAMILIES[tasks[0].family].kind == "reasoning" else
           dict.fromkeys(WORK_COLUMNS, float("nan"))),
    }


WORK_COLUMNS = ("greedy_worked", "sampled_worked", "worked_accuracy", "direct_accuracy")


def work_stats(pools, exact, greedy) -> dict:
    """How often answers work the steps, and the sampled accuracy of worked and of direct ones."""
    from langplay.tinyworld.tasks import shows_work

    worked = [[shows_work(r) for r in pool] for pool in pools]
    pairs = [(w, e) for ws, es in zip(worked, exact) for w, e in zip(ws, es)]
    accuracy = lambda kind: statistics.mean(e for w, e in pairs if w == kind) if any(w == kind for w, _ in pairs) \
        else float("nan")  # noqa: E731
    return {"greedy_worked": statistics.mean(shows_work(g[0]) for g in greedy),
            "sampled_worked": statistics.mean(w for w, _ in pairs),
            "worked_accuracy": accuracy(True), "direct_accuracy": accuracy(False)}


def diagnose(model: str, per_level: int, k: int, split: str = "test") -> dict:
    from langplay.evaluation.tinyworld import answer, challenger_queries, held_out_tasks, load_policy
    from langplay.tinyworld.tasks import FAMILIES

    policy = load_policy(model)
    tasks = held_out_tasks(per_level, split=split)
    started = time.time()
    pools = answer(policy, tasks, n=k, temperature=1.0, seed=1)
    greedy = answer(policy, tasks)
    cells = []
    for family in sorted(FAMILIES):
        for level in range(1, FAMILIES[family].levels + 1):
            index = [i for i, t in enumerate(tasks) if t.family == family and t.level == level]
            cells.append({"family": family, "level": level, **cell_stats(
                [tasks[i] for i in index], [pools[i] for i in index], [greedy[i] for i in index])})
    return {"model": str(model), "per_level": per_level, "k": k, "split": split, "cells": cells,
            "challenger": challenger_queries(policy), "minutes": round((time.time() - started) / 60, 2)}


COLUMNS = ("greedy_score", "greedy_accuracy", "sampled_score", "sampled_accuracy", "pass_at_k", "best_of_k",
           "no_signal", "spread", "wrong_credit", "constant_credit", *WORK_COLUMNS)


def by(cells: list[dict], key: str) -> dict:
    groups: dict = {}
    for cell in cells:
        groups.setdefault(cell[key], []).append(cell)
    return {name: {c: nan_mean([x.get(c, float("nan")) for x in group]) for c in COLUMNS} for name, group in groups.items()}


def nan_mean(values: list[float]) -> float:
    """The mean of the values that are not NaN (the work columns exist for reasoning families only)."""
    kept = [v for v in values if v == v]
    return statistics.mean(kept) if kept else float("nan")


def number(value: float) -> str:
    return "" if value != value else f"{value:.3f}"  # NaN: not measured for this cell


PER_LEVEL, K = 32, 8  # test instances per family and level; samples per instance


def regenerate_options(report: dict, path: Path) -> str:
    """The options that made this report, where they are not the defaults."""
    name = path.stem.removeprefix("lab_diagnosis_")
    shipped = Path(report["model"]).parts[-4:] == ("langplay", "tinyworld", "assets", "base")  # in any checkout
    options = "" if shipped else f" --model {report['model']}"
    options += f" --per-level {report['per_level']}" if report["per_level"] != PER_LEVEL else ""
    options += f" --k {report['k']}" if report["k"] != K else ""
    options += f" --split {report['split']}" if report.get("split", "test") != "test" else ""
    return options + (f" --name {name}" if name != "base" else "")


def challenger_lines(challenger: dict | None) -> list[str]:
    if challenger is None:  # reports written before the challenger was measured here
        return []
    low, high = challenger["interval"]
    return ["", "## As challenger", "",
            f"Of {challenger['queries']} queries sampled with LSP's preset (temperature 1) from the challenger prompt, "
            f"{challenger['parsed']:.3f} [{low:.3f}, {high:.3f}] parse as a task, of {challenger['families']} "
            f"families; {challenger['distinct']:.3f} of them are distinct."]


def write_markdown(report: dict, path: Path) -> None:
    fmt = lambda row: [number(row.get(c, float("nan"))) for c in COLUMNS]  # noqa: E731
    header = [c.replace("_", " ").replace("pass at k", f"pass@{report['k']}") for c in COLUMNS]
    lines = [f"# tinyworld lab diagnosis: {report['model']}", "",
             f"{report.get('split', 'test').capitalize()} instances, {report['per_level']} per family and level; {report['k']} samples at temperature 1 "
             "and one near-greedy answer each. Regenerate: `python experiments/lab_diagnosis.py"
             f"{regenerate_options(report, path)}`.", "",
             "## By level", "", *table(["level"] + header, [[str(lv)] + fmt(r) for lv, r in sorted(by(report["cells"], "level").items())]),
             "", "## By family", "", *table(["family"] + header, [[f] + fmt(r) for f, r in sorted(by(report["cells"], "family").items())]),
             "", "## Every cell", "", *table(["family", "lvl"] + header, [[c["family"], str(c["level"])] + fmt(c) for c in report["cells"]]),
             *challenger_lines(report.get("challenger")),
             "", "## Provenance", "", "```json", json.dumps(report["provenance"], indent=1), "```", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = experiment_parser("lab_diagnosis", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped base)")
    parser.add_argument("--per-level", type=int, default=PER_LEVEL)
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--name", default="base")
    parser.add_argument("--split", default="test", choices=("test", "tune"),
                        help="tune: to choose between builds; tables report test")
    args = parser.parse_args(argv)
    from langplay.tinyworld.base import base_model_path

    measured(args, args.results / f"lab_diagnosis_{args.name}.json",
             lambda: diagnose(args.model or str(base_model_path()), args.per_level, args.k, args.split), write_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
