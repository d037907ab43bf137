"""Metrics on texts and scores: win rate, diversity (distinct-n, Self-BLEU, n-gram entropy, token entropy),
the statistics of k samples per prompt, Spearman's rank correlation, how an IRL model's extracted reward ranks
responses (`reward_agreement`), likelihood bounds.

Self-BLEU, as fixed here (the papers that report it rarely say):
- per text, BLEU of the text against all the *other* texts of its pool as references: nltk `sentence_bleu` with
  uniform weights over n-gram orders 1..`max_n` (default 4; tinyworld uses 2 on characters), brevity penalty
  against the closest reference length, and smoothing `SmoothingFunction().method1` (epsilon 0.1 added to
  zero n-gram match counts, so one missing order does not zero the score);
- the mean over the pool, on a 0-1 scale (not 0-100); higher = less diverse: identical texts score 1,
  texts that share no token score 0;
- the pool is either a corpus (`self_bleu(texts)`: all outputs together) or per prompt
  (`self_bleu_per_prompt(groups)`: the k samples of each prompt form a pool, averaged over prompts, which
  measures diversity *given* the prompt, the quantity the IRL paper compares);
- tokenisation is the caller's (`tokenize`): whitespace words by default, `characters` for tinyworld.
distinct-n and n-gram entropy use the same `tokenize`.
"""

from __future__ import annotations

import math
import statistics
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
    """Corpus-pool Self-BLEU in [0, 1]: mean BLEU-`max_n` (nltk, smoothing method1) of each text against all the
    others; needs >= 2 texts. An empty text scores 1 against an empty pool and 0 otherwise."""
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


def self_bleu_per_prompt(groups: Sequence[Sequence[str]], max_n: int = 4, tokenize: Tokenize = str.split) -> float:
    """Per-prompt Self-BLEU in [0, 1]: each group (the k >= 2 samples of one prompt) is its own pool; the mean of
    the groups' Self-BLEU, every prompt weighing the same."""
    if not groups:
        raise ValueError("per-prompt Self-BLEU needs at least one group of samples")
    return statistics.mean(self_bleu(group, max_n, tokenize) for group in groups)


def pool_stats(pools: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], finished: Sequence[Sequence[bool]],
               max_n: int = 4, tokenize: Tokenize = str.split) -> dict:
    """Quality and diversity of k samples per prompt: pools[i] holds prompt i's samples, scores[i] their checker
    scores (1 = fully right) and finished[i] whether each ended with EOS. accuracy: the share of samples scoring 1;
    score: the mean score; self_bleu: per-prompt Self-BLEU (order `max_n`); distinct_2: distinct-2 per prompt,
    averaged; distinct_answers: distinct samples (ignoring surrounding space) / k, averaged; length: mean characters
    per sample; truncated: the share of samples cut at the length limit (no EOS)."""
    flat = [s for row in scores for s in row]
    return {
        "accuracy": statistics.mean(float(s == 1.0) for s in flat),
        "score": statistics.mean(flat),
        "self_bleu": self_bleu_per_prompt(pools, max_n=max_n, tokenize=tokenize),
        "distinct_2": statistics.mean(distinct_n(pool, 2, tokenize) for pool in pools),
        "distinct_answers": statistics.mean(len({p.strip() for p in pool}) / len(pool) for pool in pools),
        "length": statistics.mean(len(p) for pool in pools for p in pool),
        "truncated": statistics.mean(float(not f) for row in finished for f in row),
    }


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's on average ranks (ties share their mean rank), as
    scipy.stats.spearmanr (scipy is not a dependency). NaN when either side is constant."""
    if len(x) != len(y):
        raise ValueError(f"Spearman needs pairs: {len(x)} x values, {len(y)} y values")
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else float("nan")


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of the values; tied values share the mean of the ranks they span ([5, 7, 5] -> [1.5, 3, 1.5])."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in range(i, j + 1):
            out[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return out


def mean_token_entropy(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                       temperature: float = 1.0, micro_batch_size: int = 64) -> float:
    """Mean entropy (nats) of the model's next-token distribution over all completion tokens (teacher forcing on
    the given completions, typically the model's own samples; at `temperature`)."""
    import torch

    from langplay.batch import build_batch
    from langplay.logprobs import sequence_logprobs

    device = next(model.parameters()).device
    total, tokens = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(prompt_ids), micro_batch_size):
            batch = build_batch(prompt_ids[start : start + micro_batch_size],
                                completion_ids[start : start + micro_batch_size], pad_id, device)
            entropy = sequence_logprobs(model, batch, temperature, with_entropy=True).entropy
            total += float((entropy * batch["completion_mask"]).sum())
            tokens += float(batch["completion_mask"].sum())
    return total / tokens if tokens else 0.0


def reward_agreement(policy, prompts: list[str], responses: list[str], finished: list[bool],
                     scores: list[float], groups: list[str], gamma: float) -> dict[str, dict[str, float]]:
    """How the extracted reward (rewards.implicit.extracted_rewards) of an IRL model's responses agrees with their
    `scores` (a checker's), over all responses ("all") and the responses of each group (groups[i]: response i's):
    Spearman of reward and score, and of log pi(y|x) and score for comparison; the mean extracted reward; the
    model's mean next-token entropy on the responses. Sets eval mode."""
    from langplay.logprobs import completion_logprob_sums
    from langplay.rewards.implicit import extracted_rewards

    policy.model.eval()
    eos, pad = policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id
    extracted = extracted_rewards(policy, prompts, responses, finished, gamma)
    prompt_ids = [policy.encode(p) for p in prompts]
    response_ids = [policy.encode(r) + ([eos] if f else []) for r, f in zip(responses, finished)]
    loglik = completion_logprob_sums(policy.model, prompt_ids, response_ids, pad)
    out = {}
    for group in ("all", *sorted(set(groups))):
        index = [i for i, g in enumerate(groups) if group in ("all", g)]
        pick = lambda values: [values[i] for i in index]  # noqa: E731
        out[group] = {
            "spearman_reward": spearman(pick(extracted), pick(scores)),
            "spearman_loglik": spearman(pick(loglik), pick(scores)),
            "mean_reward": statistics.mean(pick(extracted)),
            "token_entropy": mean_token_entropy(policy.model, pick(prompt_ids), pick(response_ids), pad),
        }
    return out


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


def bootstrap_interval(values: Sequence[float], level: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float | None, float | None]:
    """The percentile bootstrap interval of the mean of `values` (items resampled with replacement). For a paired
    comparison pass the per-item differences (model minus baseline on the same prompt): the interval of the
    mean difference then excludes 0 exactly when the gain is resolved at this level. No values: (None, None)."""
    import numpy as np

    if len(values) == 0:
        return None, None
    data = np.asarray(values, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(data), size=(resamples, len(data)))
    low, high = np.quantile(data[picks].mean(axis=1), [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
