"""Metrics on texts and scores: win rate, diversity (distinct-n, Self-BLEU, n-gram entropy), likelihood bounds.

Self-BLEU: for each text, BLEU (nltk `sentence_bleu`, uniform weights up to `max_n`, smoothing method1) against
all the *other* texts of its pool as references; the mean over the pool, in [0, 1]; higher = less diverse.
Tokenisation is the caller's (`tokenize`): whitespace words by default, characters for tinyworld.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Sequence

Tokenize = Callable[[str], list[str]]


def characters(text: str) -> list[str]:
    return list(text)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int, tokenize: Tokenize = str.split) -> float:
    """Distinct n-grams / all n-grams over the texts (0 when there are none)."""
    grams = [g for t in texts for g in ngrams(tokenize(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def ngram_entropy(texts: Sequence[str], n: int, tokenize: Tokenize = str.split) -> float:
    """Entropy (nats) of the empirical n-gram distribution over the texts."""
    counts = Counter(g for t in texts for g in ngrams(tokenize(t), n))
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values()) if total else 0.0


def self_bleu(texts: Sequence[str], max_n: int = 4, tokenize: Tokenize = str.split) -> float:
    """Mean BLEU of each text against the others of the pool (nltk, smoothing method1); needs >= 2 texts."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    tokens = [tokenize(t) for t in texts]
    if len(tokens) < 2:
        raise ValueError("Self-BLEU needs at least two texts")
    weights = tuple([1.0 / max_n] * max_n)
    smoothing = SmoothingFunction().method1
    scores = []
    for i, hypothesis in enumerate(tokens):
        references = [t for j, t in enumerate(tokens) if j != i]
        if not hypothesis or not any(references):
            scores.append(0.0 if hypothesis else 1.0)
            continue
        scores.append(sentence_bleu(references, hypothesis, weights=weights, smoothing_function=smoothing))
    return sum(scores) / len(scores)


def win_rate(scores: Sequence[float], baseline_scores: Sequence[float], tie_margin: float = 1e-9) -> dict:
    """Pairwise comparison per prompt: a win when the model's score beats the baseline's; ties count half."""
    wins = sum(a > b + tie_margin for a, b in zip(scores, baseline_scores))
    losses = sum(b > a + tie_margin for a, b in zip(scores, baseline_scores))
    ties = len(scores) - wins - losses
    return {"win_rate": (wins + 0.5 * ties) / max(1, len(scores)), "wins": wins, "ties": ties, "losses": losses}


def log_mean_exp(values: Sequence[float]) -> float:
    """log((1/n) sum exp(v)): the multi-sample bound from per-sample log-likelihoods."""
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))
