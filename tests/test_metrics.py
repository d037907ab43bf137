"""Diversity and comparison metrics against hand computations and nltk's BLEU."""

import math

import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from langplay.evaluation.metrics import characters, distinct_n, log_mean_exp, ngram_entropy, self_bleu, win_rate


def test_distinct_n_by_hand():
    assert distinct_n(["a b a", "a b"], 1) == pytest.approx(2 / 5)
    assert distinct_n(["a b a", "a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n(["ab", "ab"], 1, characters) == 0.5
    assert distinct_n([""], 2) == 0.0


def test_ngram_entropy_by_hand():
    assert ngram_entropy(["a b", "c d"], 1) == pytest.approx(math.log(4))
    assert ngram_entropy(["a a a"], 1) == 0.0


def test_self_bleu_is_the_mean_bleu_against_the_others():
    texts = ["the cat sat on the mat", "the cat lay on the mat", "a dog ran in the park"]
    smooth = SmoothingFunction().method1
    expected = sum(
        sentence_bleu([t.split() for j, t in enumerate(texts) if j != i], texts[i].split(), smoothing_function=smooth)
        for i in range(3)
    ) / 3
    assert self_bleu(texts) == pytest.approx(expected)
    assert self_bleu(["same words here", "same words here"], max_n=3) == pytest.approx(1.0)
    assert self_bleu(["aaaa", "bbbb"], max_n=2, tokenize=characters) < 0.01
    with pytest.raises(ValueError):
        self_bleu(["alone"])


def test_win_rate_counts_ties_half():
    result = win_rate([1.0, 0.5, 0.0, 0.2], [0.0, 0.5, 1.0, 0.1])
    assert result == {"win_rate": (2 + 0.5) / 4, "wins": 2, "ties": 1, "losses": 1}


def test_log_mean_exp():
    assert log_mean_exp([math.log(0.2), math.log(0.4)]) == pytest.approx(math.log(0.3))
    assert log_mean_exp([-1000.0, -1000.0]) == pytest.approx(-1000.0)
    assert log_mean_exp([-math.inf]) == -math.inf
