"""IRL's diversity frontier (Wulfmeier et al. 2024): a model's task metric against the diversity of its samples
as the sampling temperature moves. At each temperature, k samples per prompt give
- the task metric: a verifier's mean score over all samples (pass@1), when a verifier is given;
- the diversity of each prompt's k samples, averaged over prompts: Self-BLEU (metrics.self_bleu_per_prompt,
  BLEU-`max_n` of each sample against the prompt's other samples, 0-1, higher = less diverse), distinct-1 and
  distinct-2 (distinct n-grams / n-grams), on whitespace words or characters.
Diversity given the prompt is what the paper compares: IRL keeps more of it than MLE at the same task metric.
One model's points trace its frontier; run the command per model and compare the points (report.json).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from langplay.errors import LangplayError
from langplay.evaluation.accuracy import checker, verify
from langplay.evaluation.answers import Decoding
from langplay.evaluation.metrics import characters, distinct_n, self_bleu_per_prompt
from langplay.evaluation.report import FileEvaluation, table_text
from langplay.files import save_figure
from langplay.rewards.verifiers import gold_answer

TOKENIZERS = {"words": str.split, "characters": characters}


def parse_temperatures(value) -> list[float]:
    """"0.5,0.7,1.0" (or a list, from a preset) as temperatures: numbers > 0, in the order given, no repeats."""
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    try:
        temperatures = [float(p) for p in parts]
    except (TypeError, ValueError):
        temperatures = []
    repeated = len(set(temperatures)) < len(temperatures)
    if not temperatures or repeated or not all(0 < t < math.inf for t in temperatures):
        raise LangplayError(f"--temperatures must be distinct numbers > 0 separated by commas, e.g. 0.5,0.7,1.0; "
                            f"got {value!r}")
    return temperatures


def frontier_point(pools: list[list[str]], scores: list[list[float]] | None = None, max_n: int = 4,
                   tokenize=str.split) -> dict:
    """One temperature's point: each prompt's pool of k >= 2 samples, and (scores) the verifier's score of each."""
    point = {"self_bleu": self_bleu_per_prompt(pools, max_n, tokenize),
             "distinct_1": statistics.fmean(distinct_n(pool, 1, tokenize) for pool in pools),
             "distinct_2": statistics.fmean(distinct_n(pool, 2, tokenize) for pool in pools)}
    if scores is not None:
        point["score"] = statistics.fmean(s for row in scores for s in row)
    return point


def evaluate_diversity(model: str, data: str, temperatures="0.5,0.7,1.0", samples: int = 8,
                       verifier: str | None = None, answer_column: str = "answer", answer_format: str = "plain",
                       prompt_column: str = "prompt", tokenizer: str = "words", max_n: int = 4,
                       max_new_tokens: int = 512, limit: int | None = None, system_prompt: str | None = None,
                       subset: str | None = None, split: str = "test", seed: int = 0, output=None,
                       backend: str | None = None, batch_size: int = 32, progress: bool = True) -> dict:
    """The frontier: at each temperature, `samples` answers per prompt, their diversity and (verifier) their
    mean score; writes report.json, report.txt and frontier.png into the eval folder (`output`, default
    runs/eval-diversity), whose answer cache lets an interrupted run continue."""
    run = FileEvaluation("diversity", model, data, output, backend, system_prompt, batch_size, progress)
    temperatures = parse_temperatures(temperatures)
    check = checker(verifier) if verifier is not None else None
    if samples < 2:
        raise LangplayError(f"--samples must be >= 2: Self-BLEU compares each sample with the others, got {samples}")
    if tokenizer not in TOKENIZERS:
        raise LangplayError(f"unknown tokenizer {tokenizer!r}: choose one of {', '.join(TOKENIZERS)}")
    rows = run.load_rows([prompt_column] + ([answer_column] if check else []), prompt_column, subset, split, limit)
    golds = [gold_answer(str(row[answer_column]), answer_format) for row in rows] if check else None
    points = []
    for temperature in temperatures:
        pools = run.answers(Decoding(temperature, samples, max_new_tokens, seed=seed), f"T = {temperature}")
        scores = verify(pools, golds, check) if check else None
        points.append({"temperature": temperature, **frontier_point(pools, scores, max_n, TOKENIZERS[tokenizer])})
    report = {"model": run.model, "data": run.data, "prompts": len(rows), "samples": samples, "verifier": verifier,
              "tokenizer": tokenizer, "max_n": max_n, "max_new_tokens": max_new_tokens, "points": points}
    run.finish(report, render_diversity)
    plot_frontier(report, run.folder / "frontier.png")
    return report


def render_diversity(report: dict) -> str:
    scored = report["verifier"] is not None
    header = ["temperature", *([f"{report['verifier']} score"] if scored else []), "Self-BLEU", "distinct-1",
              "distinct-2"]
    rows = [[f"{p['temperature']:g}", *([f"{p['score']:.3f}"] if scored else []), f"{p['self_bleu']:.3f}",
             f"{p['distinct_1']:.3f}", f"{p['distinct_2']:.3f}"] for p in report["points"]]
    return table_text(f"diversity frontier ({report['prompts']} prompts, {report['samples']} samples each; "
                      f"per prompt, on {report['tokenizer']})", header, rows)


def plot_frontier(report: dict, path: str | Path) -> Path:
    """The task metric against Self-BLEU, one point per temperature (without a verifier: Self-BLEU against the
    temperature)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["points"]
    scored = report["verifier"] is not None
    x = [p["self_bleu"] for p in points] if scored else [p["temperature"] for p in points]
    y = [p["score"] for p in points] if scored else [p["self_bleu"] for p in points]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(x, y, "o-", label="/".join(Path(str(report["model"])).parts[-2:]))  # runs/irl/final: irl/final
    for p, a, b in zip(points, x, y):
        ax.annotate(f"T={p['temperature']:g}", (a, b), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("Self-BLEU per prompt (lower = more diverse)" if scored else "temperature")
    ax.set_ylabel(f"{report['verifier']} score" if scored else "Self-BLEU per prompt")
    ax.set_title("diversity frontier")
    ax.margins(0.15)  # room for the temperature labels
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)
