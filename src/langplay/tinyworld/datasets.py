"""tinyworld as datasets and rewards for the trainers: prompt rows, SFT rows, demonstration sets with several
valid answers per prompt (IRL), and the judge as a scorer."""

from __future__ import annotations

import random

from langplay.tinyworld.judges import quality, score
from langplay.tinyworld.tasks import ANSWER_MARKER, FAMILIES, Task, check, parse, reference_samples, sample_tasks


def task_rows(split: str, n: int, seed: int = 0, families=None, levels=None, verifiable_only: bool = False) -> list[dict]:
    """Rows {prompt, reference, answer, final, family, level, seed} of n task instances from one split.

    `final` is what follows the answer marker in the reference ("The answer is| 27.") for reasoning families,
    the whole reference otherwise: JEPO's a*.
    """
    if verifiable_only:
        families = [f for f in (families or FAMILIES) if FAMILIES[f].verifiable]
    tasks = sample_tasks(split, n, seed, families=families, levels=levels)
    return [{"prompt": t.prompt, "reference": t.reference, "answer": t.answer, "final": final_part(t.reference),
             "family": t.family, "level": t.level, "seed": t.seed} for t in tasks]


def final_part(reference: str) -> str:
    at = reference.rfind(ANSWER_MARKER)
    return reference[at + len(ANSWER_MARKER) :] if at >= 0 else reference


def task_dataset(split: str, n: int, seed: int = 0, **kw):
    import datasets

    return datasets.Dataset.from_list(task_rows(split, n, seed, **kw))


def valid_answers(task: Task, k: int) -> list[str]:
    """An open family's task: k valid answers (tasks.reference_samples, drawn from the task's own seed; distinct
    where the task has enough); any other task: its one reference."""
    return reference_samples(task, k, task.seed) if FAMILIES[task.family].kind == "open" else [task.reference]


def demonstration_units(rows: int, seed: int, k: int = 4) -> list[list[dict]]:
    """About `rows` demonstrations {prompt, reference, family, level} from the training split, in units of k rows:
    an open family's prompt with k valid answers (`valid_answers`: states with several expert continuations), or
    k exact-family prompts with their one reference. Half the units (at least one) of each kind."""
    count = max(2, rows // k)
    exact = [f for f in sorted(FAMILIES) if FAMILIES[f].kind == "exact"]
    opened = [f for f in sorted(FAMILIES) if FAMILIES[f].kind == "open"]
    n_exact = count // 2
    exact_tasks = sample_tasks("train", n_exact * k, 1000 * seed + 1, families=exact)
    open_tasks = sample_tasks("train", count - n_exact, 1000 * seed + 2, families=opened)
    row = lambda task, reference: {"prompt": task.prompt, "reference": reference, "family": task.family,  # noqa: E731
                                   "level": task.level}
    units = [[row(t, t.reference) for t in exact_tasks[i : i + k]] for i in range(0, len(exact_tasks), k)]
    return units + [[row(t, answer) for answer in valid_answers(t, k)] for t in open_tasks]


def unit_order(units: list[list[dict]], total: int, seed: int, per_step: int) -> list[dict]:
    """`total` rows in training order, for a trainer that reads them as they come (data.shuffle=false): the units
    (of k rows each) reshuffled every epoch, per_step / k whole units to a step, their rows interleaved (unit 1's
    first row, unit 2's first row, ..., then their second rows), so a step's first rows are different prompts.
    An epoch drops the units that do not fill a step."""
    k, per_block = len(units[0]), per_step // len(units[0])
    if per_step % k or not 0 < per_block <= len(units):
        raise ValueError(f"a step of {per_step} rows must be whole units of {k}, at most the {len(units)} there are")
    out, epoch = [], 0
    while len(out) < total:
        order = list(range(len(units)))
        random.Random(f"irl-demos/{seed}/{epoch}").shuffle(order)
        for start in range(0, len(order) - per_block + 1, per_block):
            block = [units[i] for i in order[start : start + per_block]]
            out += [unit[j] for j in range(k) for unit in block]
        epoch += 1
    return out[:total]


def judge_reward(prompts: list[str], completions: list[str], raw_prompt: list[str] | None = None, **_) -> list[float]:
    """The tinyworld judge as a reward function: the task's checker if the (raw) prompt parses, else surface score."""
    queries = raw_prompt if raw_prompt is not None else prompts
    return [score(q, c) for q, c in zip(queries, completions)]


def verifier_reward(prompts: list[str], completions: list[str], raw_prompt: list[str] | None = None,
                    family: list[str] | None = None, **_) -> list[float]:
    """A 0/1 verifier (the checker passes fully) where the family is verifiable; NaN (no verifier) elsewhere."""
    queries = raw_prompt if raw_prompt is not None else prompts
    out = []
    for query, completion, name in zip(queries, completions, family or [None] * len(queries)):
        task = parse(query)
        if task is None or not FAMILIES[name or task.family].verifiable:
            out.append(float("nan"))
        else:
            out.append(float(check(task, completion) == 1.0))
    return out


def checker_reward(prompts: list[str], completions: list[str], raw_prompt: list[str] | None = None, **_) -> list[float]:
    """The checker as a 0/1 reward on every family, verifiable or not: an oracle for experiments (in JEPO's
    setting the checker of a `verifiable=False` family is withheld from training; RL with it is an upper
    reference, not a method that setting allows)."""
    queries = raw_prompt if raw_prompt is not None else prompts
    return [float((task := parse(q)) is not None and check(task, c) == 1.0) for q, c in zip(queries, completions)]


def quality_reward(prompts: list[str], completions: list[str], raw_prompt: list[str] | None = None, **_) -> list[float]:
    """tinyworld's quality judge (0..7) as a scorer: LSP's self-reward R_Q in tinyworld."""
    queries = raw_prompt if raw_prompt is not None else prompts
    return [float(quality(q, c)) for q, c in zip(queries, completions)]


def valid_query(queries: list[str]) -> list[bool]:
    """Whether each challenger query parses as a tinyworld task."""
    return [parse(q) is not None for q in queries]
