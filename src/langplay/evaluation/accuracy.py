"""Accuracy against reference answers: a verifier (rewards.verifiers.CHECKS: exact_match, numeric_match, math)
checks each answer against its row's reference answer. Reported: near-greedy accuracy (temperature 0.01, one
answer a prompt) and, from k samples per prompt at a temperature, pass@1 and pass@k, per prompt then averaged;
per subset too (e.g. MATH's level or subject) when the file has a column for it.

pass@k is Chen et al. (2021)'s unbiased estimator: with n samples of a prompt of which c are correct,
    pass@k = 1 - C(n - c, k) / C(n, k),
the chance that k of the n, drawn without replacement, include a correct one (pass@1 = c / n). An answer is
correct when the verifier gives it 1.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable

from langplay.errors import LangplayError
from langplay.evaluation.answers import GREEDY_TEMPERATURE, Decoding
from langplay.evaluation.report import FileEvaluation, table_text
from langplay.rewards.verifiers import CHECKS, gold_answer

def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased pass@k of a prompt with `correct` of its `n` samples right (exact, in integers)."""
    if not (0 <= correct <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= correct <= n and 1 <= k <= n, got n={n}, correct={correct}, k={k}")
    if n - correct < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def reported_ks(samples: int) -> list[int]:
    """The k of pass@k worth a column: 1, 2, 4, ... below the sample count, and the count itself."""
    ks, k = [], 1
    while k < samples:
        ks.append(k)
        k *= 2
    return ks + [samples] if samples >= 1 else []


def checker(verifier: str) -> Callable[[str, str], float]:
    if verifier not in CHECKS:
        raise LangplayError(f"unknown verifier {verifier!r}: choose one of {', '.join(CHECKS)}")
    return CHECKS[verifier]


def verify(answers: list[list[str]], golds: list[str], check: Callable[[str, str], float]) -> list[list[float]]:
    """Each prompt's answers checked against its (already extracted) reference answer."""
    return [[check(answer, gold) for answer in row] for row, gold in zip(answers, golds)]


def accuracy_metrics(greedy: list[float] | None, sampled: list[list[float]] | None) -> dict:
    """{prompts, greedy (accuracy), pass@k for reported_ks} from per-prompt scores: one greedy score each and
    (or) the scores of each prompt's n samples."""
    rows = greedy if greedy is not None else sampled
    out: dict = {"prompts": len(rows)}
    if greedy is not None:
        out["greedy"] = statistics.fmean(float(s >= 1.0) for s in greedy)
    if sampled:
        n = len(sampled[0])
        for k in reported_ks(n):
            out[f"pass@{k}"] = statistics.fmean(pass_at_k(n, sum(s >= 1.0 for s in row), k) for row in sampled)
    return out


def per_subset(labels: list, greedy: list[float] | None, sampled: list[list[float]] | None) -> dict[str, dict]:
    """accuracy_metrics over the prompts of each subset (labels[i]: prompt i's), subsets in sorted order."""
    out = {}
    for label in sorted({str(label) for label in labels}):
        index = [i for i, value in enumerate(labels) if str(value) == label]
        out[label] = accuracy_metrics([greedy[i] for i in index] if greedy is not None else None,
                                      [sampled[i] for i in index] if sampled else None)
    return out


def evaluate_accuracy(model: str, data: str, verifier: str, answer_column: str = "answer",
                      prompt_column: str = "prompt", answer_format: str = "plain", samples: int = 0,
                      temperature: float = 1.0, max_new_tokens: int = 512, limit: int | None = None,
                      system_prompt: str | None = None, subset_column: str | None = None,
                      subset: str | None = None, split: str = "test", seed: int = 0, output=None,
                      backend: str | None = None, batch_size: int = 32, progress: bool = True) -> dict:
    """Near-greedy accuracy and (samples > 0) pass@1 .. pass@samples at `temperature`, overall and per subset;
    writes report.json, report.txt and rows.jsonl into the eval folder (`output`, default runs/eval-accuracy),
    whose answer cache lets an interrupted run continue."""
    run = FileEvaluation("accuracy", model, data, output, backend, system_prompt, batch_size, progress)
    check = checker(verifier)
    if samples < 0:
        raise LangplayError(f"--samples must be >= 0 (0: near-greedy only), got {samples}")
    greedy_decoding = Decoding(GREEDY_TEMPERATURE, 1, max_new_tokens, seed=seed)
    sampled_decoding = Decoding(temperature, samples, max_new_tokens, seed=seed) if samples else None
    columns = [prompt_column, answer_column] + ([subset_column] if subset_column else [])
    rows = run.load_rows(columns, prompt_column, subset, split, limit)
    golds = [gold_answer(str(row[answer_column]), answer_format) for row in rows]
    greedy_answers = run.answers(greedy_decoding, "greedy answers")
    greedy = [row[0] for row in verify(greedy_answers, golds, check)]
    sampled = verify(run.answers(sampled_decoding, f"{samples} samples a prompt"), golds, check) if samples else None
    report = {"model": run.model, "data": run.data, "verifier": verifier, "answer_format": answer_format,
              "samples": samples, "temperature": temperature if samples else None, "max_new_tokens": max_new_tokens,
              "overall": accuracy_metrics(greedy, sampled)}
    if subset_column:
        report["subset_column"] = subset_column
        report["subsets"] = per_subset([row[subset_column] for row in rows], greedy, sampled)
    return run.finish(report, render_accuracy, [
        {"index": i, "gold": golds[i], "greedy_answer": greedy_answers[i][0], "greedy_score": greedy[i],
         **({"sampled_scores": sampled[i]} if sampled else {}),
         **({"subset": rows[i][subset_column]} if subset_column else {})}
        for i in range(len(rows))])


def render_accuracy(report: dict) -> str:
    overall = report["overall"]
    metrics = [key for key in overall if key != "prompts"]
    groups = [("all", overall)] + [(f"{report['subset_column']} = {name}", values)
                                   for name, values in report.get("subsets", {}).items()]
    rows = [[name, str(values["prompts"]), *(f"{values[m]:.3f}" for m in metrics)] for name, values in groups]
    sampled = f", pass@k from {report['samples']} samples at T = {report['temperature']}" if report["samples"] else ""
    return table_text(f"accuracy ({report['verifier']}; greedy: T = {GREEDY_TEMPERATURE}{sampled})",
                      ["", "prompts", *metrics], rows)
