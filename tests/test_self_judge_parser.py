"""The Box-3 judge's score parser on the replies judges really write (issue 37): sums without a result, markdown
emphasis, "N/7", and scores out of 0..7, which are unreadable rather than clamped."""

import math

import pytest

from langplay.rewards.self_judge import parse_score, read_scores


@pytest.mark.parametrize("text, expected", [
    ("<Calculation>1+0+1</Calculation>", 2.0),  # no result: the sum of the addends, not the last one
    ("<Calculation> 1 + 1 + 1 + 0 = </Calculation>", 3.0),
    ("<Calculation>**1+0+1+1**</Calculation>", 3.0),
    ("<Calculation>4</Calculation>", 4.0),  # one addend
    ("<Calculation>1+0+1+0+1+1+0=4</Calculation>", 4.0),  # Box 3's own example
    ("<Calculation>1+1=3</Calculation>", 3.0),  # a stated result is the judge's total, like its Score
    ("<Calculation>1+1=**5/7**</Calculation>", 5.0),
])
def test_a_calculation_reads_its_stated_result_or_else_the_sum_of_its_addends(text, expected):
    assert parse_score(text) == (expected, "calculation")


@pytest.mark.parametrize("text", ["<Calculation>1 (clear) + 0</Calculation>",
                                  "<Calculation>criteria 1, 3</Calculation>"])
def test_a_calculation_that_is_not_a_sum_is_unreadable(text):
    assert parse_score(text) == (0.0, "fallback")


@pytest.mark.parametrize("inner", ["**5**", "__5__", "*5*", "_5_", "`5`", "** 5 **", "5/7", "5 / 7", "**5**/7",
                                   "**5/7**"])
def test_a_score_is_read_through_markdown_emphasis_and_over_seven(inner):
    assert parse_score(f"Good answer. <Score>{inner}</Score>") == (5.0, "score")


def test_a_score_over_another_denominator_is_unreadable():
    assert parse_score("<Score>5/10</Score>") == (0.0, "fallback")
    assert parse_score("<Calculation>1+1=2</Calculation> <Score>5/10</Score>") == (2.0, "calculation")


@pytest.mark.parametrize("text", ["<Score>10</Score>", "<Score>-1</Score>", "<Score>8/7</Score>",
                                  "<Score>7.5</Score>", "<Calculation>1+1+1+1+1+1+1+1</Calculation>",
                                  "<Score>5</Score> on second thought <Score>**9**</Score>"])
def test_a_score_out_of_range_is_unreadable_not_clamped(text):
    assert parse_score(text) == (0.0, "out_of_range")
    value, how = parse_score(text, fallback=float("nan"))
    assert math.isnan(value) and how == "out_of_range"


def test_the_ends_of_the_scale_are_in_range():
    assert parse_score("<Score>0</Score>") == (0.0, "score")
    assert parse_score("<Score>7</Score>") == (7.0, "score")


def test_out_of_range_replies_score_the_fallback_and_are_counted():
    """As the http_judge reward reads them (fallback 0) and as LSP's R_Q does (NaN, left out)."""
    replies = ["<Score>10</Score>", "<Score>**4**</Score>", "none"]
    assert read_scores(replies, 0.0, "http_judge_parse") == (
        [0.0, 4.0, 0.0], {"http_judge_parse/out_of_range": 1.0, "http_judge_parse/score": 1.0,
                          "http_judge_parse/fallback": 1.0})
    scores, _ = read_scores(replies, float("nan"), "self_reward_parse")
    assert math.isnan(scores[0]) and scores[1] == 4.0 and math.isnan(scores[2])
