"""Property tests of every parser on arbitrary unicode, lone surrogates included: none raises, and each finds
what it must find whatever surrounds it."""

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from langplay.rewards.self_judge import parse_score
from langplay.rewards.verifiers import boxed_answer, gold_answer, last_number, math_match
from langplay.text import encodable, marker_end
from langplay.tinyworld.tasks import ANSWER_MARKER, check, make_task, parse, stated_answer

# any code point, lone surrogates (which no UTF-8 text can hold) included
ANY_TEXT = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
                   max_size=60)
NO_MARKER = ANY_TEXT.filter(lambda t: marker_end(t + " ", ANSWER_MARKER) is None)


@settings(max_examples=300, deadline=None)
@given(prefix=NO_MARKER)
def test_the_answer_after_the_last_marker_is_found_whatever_comes_before(prefix):
    """`İ` lower-cases to two characters: a cut found in the lower-cased text used to land in the wrong place."""
    assert stated_answer(prefix + " The answer is 42.") == "42"
    assert stated_answer(prefix + " the ANSWER is 7.\nmore") == "7"


def test_a_character_whose_lower_case_is_longer_does_not_shift_the_cut():
    assert stated_answer("İİİ The answer is 42.") == "42"
    assert marker_end("İİİ The answer is", ANSWER_MARKER) == len("İİİ The answer is")


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT)
def test_parsers_never_raise_on_any_text(text):
    stated_answer(text)
    parse(text)
    boxed_answer(text)
    last_number(text)
    gold_answer(text, "gsm8k")
    value, _ = parse_score(text)
    assert 0 <= value <= 7
    assert 0.0 <= check(make_task("word_problem", 2, 1), text) <= 1.0
    clean = encodable(text)
    clean.encode("utf-8")  # always encodable
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert clean == text  # valid text is left as it is


def test_the_tokenizer_path_takes_lone_surrogates(tiny_model):
    from langplay.config import ModelConfig
    from langplay.policy import Policy

    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model), device="cpu"), with_reference=False)
    assert policy.encode("a\udf29b") == policy.encode("a\ufffdb")
    assert policy.encode("plain text") == policy.tokenizer("plain text", add_special_tokens=False)["input_ids"]


@settings(max_examples=200, deadline=None)
@given(inner=st.text(st.characters(blacklist_characters="{}\\", codec="utf-8"), max_size=20), prefix=ANY_TEXT)
def test_boxed_finds_the_last_box_and_escaped_braces_are_text(inner, prefix):
    assert boxed_answer(prefix.replace("\\boxed{", "") + "\\boxed{" + inner + "}") == inner
    assert boxed_answer("\\boxed{a\\}b}") == "a\\}b"  # \} is an escaped brace, not the closing one
    assert boxed_answer("\\boxed{\\}}") == "\\}"


def test_math_match_is_time_bounded():
    nasty = "\\frac{" * 40 + "1" + "}" * 40 + " = " + "x^{" * 30 + "2" + "}" * 30
    started = time.perf_counter()
    assert math_match(nasty * 3, "2") in (0.0, 1.0)
    assert time.perf_counter() - started < 8
    assert math_match("so the answer is $\\frac{1}{2}$", "0.5") == 1.0
