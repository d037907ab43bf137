"""Diversity and comparison metrics against hand computations and nltk's BLEU."""

import math

import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from langplay.evaluation.metrics import (
    characters, distinct_n, log_mean_exp, mean_token_entropy, ngram_entropy, pool_stats, ranks, self_bleu,
    self_bleu_per_prompt, spearman, win_rate,
)


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


def test_self_bleu_by_hand_and_its_two_pools():
    # BLEU-2 of "a b c" against "a b d": unigram precision 2/3, bigram 1/2, equal lengths (no brevity penalty)
    pair = math.sqrt(2 / 3 * 1 / 2)
    assert self_bleu(["a b c", "a b d"], max_n=2) == pytest.approx(pair)
    assert self_bleu(["a b c"] * 3, max_n=2) == pytest.approx(1.0)  # identical: 1 on the 0-1 scale
    assert self_bleu(["a b c", "x y z"], max_n=2) == 0.0  # no shared token: 0 (nltk, before any smoothing)
    # one shared word, no shared bigram: method1 puts 0.1 in place of the zero bigram count, sqrt(1/3 * 0.1/2)
    assert self_bleu(["a y z", "a b c"], max_n=2) == pytest.approx(math.sqrt(1 / 3 * 0.1 / 2))
    groups = [["a b c", "a b d"], ["a b c", "a b c"]]
    # per prompt: each prompt's samples are a pool, then the mean over prompts
    assert self_bleu_per_prompt(groups, max_n=2) == pytest.approx((pair + 1) / 2)
    # corpus: one pool, so "a b c" of the first prompt now finds its twin in the second prompt's samples
    assert self_bleu([t for g in groups for t in g], max_n=2) == pytest.approx((3 + pair) / 4)
    with pytest.raises(ValueError):
        self_bleu_per_prompt([])


def test_distinct_n_on_a_hand_example():
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)  # (a b) twice, (b c), (b d)
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["abab"], 2, characters) == pytest.approx(2 / 3)  # ab, ba, ab


def test_mean_token_entropy_by_hand(tmp_path):
    import torch
    from transformers import LlamaForCausalLM

    from langplay.testing import tiny_llama_config

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(50))
    prompts, completions = [[1, 5, 6], [1, 7]], [[8, 9, 2], [10]]
    with torch.no_grad():
        expected = []
        for p, c in zip(prompts, completions):
            logp = model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : -1].log_softmax(-1)
            expected += (-(logp.exp() * logp).sum(-1)).tolist()
    assert mean_token_entropy(model, prompts, completions, pad_id=0) == pytest.approx(sum(expected) / 4, abs=1e-5)
    model.lm_head.weight.data.zero_()  # all logits 0: the uniform distribution, entropy log(vocabulary)
    assert mean_token_entropy(model, prompts, completions, pad_id=0) == pytest.approx(math.log(50), abs=1e-6)


def test_win_rate_counts_ties_half():
    result = win_rate([1.0, 0.5, 0.0, 0.2], [0.0, 0.5, 1.0, 0.1])
    assert result == {"win_rate": (2 + 0.5) / 4, "wins": 2, "ties": 1, "losses": 1}


def test_log_mean_exp():
    assert log_mean_exp([math.log(0.2), math.log(0.4)]) == pytest.approx(math.log(0.3))
    assert log_mean_exp([-1000.0, -1000.0]) == pytest.approx(-1000.0)
    assert log_mean_exp([-math.inf]) == -math.inf


def test_ranks_share_the_mean_rank_on_ties():
    assert ranks([30, 10, 20]) == [3, 1, 2]
    assert ranks([5, 7, 5]) == [1.5, 3, 1.5]
    assert ranks([2, 1, 2, 2]) == [3, 1, 3, 3]  # ranks 2, 3, 4 shared
    assert ranks([]) == []


def test_spearman_by_hand():
    # no ties: 1 - 6 sum d^2 / (n (n^2 - 1)), d = rank differences [0, -1, 1, 0]
    assert spearman([10, 20, 30, 40], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert spearman([1, 2, 3], [1, 8, 27]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1, 2, 3], [9, 4, 1]) == pytest.approx(-1.0)
    # ties: Pearson on the ranks [1, 2.5, 2.5, 4] and [1, 2, 3, 4]: 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    # ties on both sides: the ranks are uncorrelated (the no-ties formula would say 0.2)
    assert spearman([1, 1, 2, 2], [1, 2, 1, 2]) == pytest.approx(0.0)


def test_spearman_is_nan_when_a_side_is_constant():
    assert math.isnan(spearman([1, 2, 3], [4, 4, 4]))
    assert math.isnan(spearman([0.5, 0.5], [0.5, 0.5]))
    assert math.isnan(spearman([1.0], [2.0]))
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])


def test_pool_stats_by_hand():
    pools = [["ab", "ab"], ["ab", "cde"]]
    scores = [[1.0, 1.0], [1.0, 0.5]]
    finished = [[True, True], [True, False]]
    stats = pool_stats(pools, scores, finished, max_n=2, tokenize=characters)
    assert stats == pytest.approx({
        "accuracy": 3 / 4, "score": 3.5 / 4,
        "self_bleu": (1 + 0) / 2,  # identical pair: 1; no shared character: 0
        "distinct_2": (1 / 2 + 3 / 3) / 2,  # bigrams (ab, ab) and (ab, cd, de)
        "distinct_answers": (1 / 2 + 2 / 2) / 2,
        "length": (2 + 2 + 2 + 3) / 4, "truncated": 1 / 4,
    })
    words = pool_stats(pools, scores, finished, max_n=2)  # whitespace words: one token each, so no bigrams
    assert words["distinct_2"] == 0.0


def test_bootstrap_interval_of_a_mean():
    from langplay.evaluation.metrics import bootstrap_interval

    assert bootstrap_interval([0.3] * 50) == (pytest.approx(0.3), pytest.approx(0.3))  # no spread, no width
    low, high = bootstrap_interval([0.0, 1.0] * 200)  # mean 0.5, standard error 0.025: +-1.96 se
    assert low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.008) and high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.008)
    narrow = bootstrap_interval([0.0, 1.0] * 800)
    assert narrow[1] - narrow[0] < (high - low) * 0.6  # 4x the items: about half the width
    gains = [0.1 + 0.01 * (i % 3 - 1) for i in range(30)]  # paired differences, all positive
    assert bootstrap_interval(gains)[0] > 0
    assert bootstrap_interval([]) == (None, None)
