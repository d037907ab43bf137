"""tinyworld as datasets and rewards for the trainers: prompt rows, SFT rows, and the judge as a scorer."""

from __future__ import annotations

from langplay.tinyworld.judges import quality, score
from langplay.tinyworld.tasks import ANSWER_MARKER, FAMILIES, check, parse, sample_tasks


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
