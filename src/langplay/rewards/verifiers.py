"""Built-in verifiers: a completion against the gold answer in a dataset column, scored 1 or 0."""

from __future__ import annotations

import re

from langplay.errors import LangplayError

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalize(text: str) -> str:
    return " ".join(str(text).strip().lower().split()).rstrip(".")


def last_number(text: str) -> float | None:
    """The last number written in the text (commas as thousands separators), or None."""
    found = _NUMBER.findall(str(text))
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def gsm8k_answer(solution: str) -> str:
    """GSM8K's gold answer: what follows the last `####` (the whole text when there is none)."""
    return solution.rsplit("####", 1)[-1].strip()


def boxed_answer(solution: str) -> str | None:
    """MATH's gold answer: the content of the last \\boxed{...} (braces balanced), or None."""
    start = solution.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin, index = 0, start + len("\\boxed{"), start + len("\\boxed{")
    while index < len(solution):
        char = solution[index]
        if char == "\\":  # an escaped character (\{, \}) is text, not a brace
            index += 2
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return solution[begin:index]
        index += 1
    return None


ANSWER_FORMATS = ("plain", "gsm8k", "boxed")


def gold_answer(text: str, answer_format: str = "plain") -> str:
    """The reference answer in a dataset cell: as is, GSM8K's `#### x`, or MATH's last `\\boxed{x}`."""
    if answer_format not in ANSWER_FORMATS:
        raise LangplayError(f"unknown answer format {answer_format!r}: choose one of {', '.join(ANSWER_FORMATS)}")
    if answer_format == "gsm8k":
        return gsm8k_answer(text)
    if answer_format == "boxed":
        found = boxed_answer(text)
        if found is None:
            raise LangplayError(f"answer_format=boxed but no \\boxed{{...}} in answer {text[:60]!r}")
        return found
    return text


def exact_match(completion: str, gold: str) -> float:
    return float(normalize(completion) == normalize(gold))


def numeric_match(completion: str, gold, tolerance: float = 1e-6) -> float:
    predicted, expected = last_number(completion), last_number(str(gold))
    if predicted is None or expected is None:
        return 0.0
    return float(abs(predicted - expected) <= tolerance * max(1.0, abs(expected)))


MATH_TIMEOUT_SECONDS = 1  # per parse and per comparison: math-verify's default of 5 let one input take 6.9 s
MATH_MAX_CHARS = 4000  # the answer is at the end: longer completions are cut from the left


def math_match(completion: str, gold) -> float:
    """math-verify's equivalence of the gold answer and the completion's last answer (gold first). Time-bounded
    (math-verify's timeouts, which it applies in the main thread) and length-bounded."""
    from math_verify import parse, verify

    try:
        gold = str(gold)[:MATH_MAX_CHARS]
        # math-verify reads LaTeX only between delimiters: a bare answer such as MATH's "(3, \frac{\pi}{2})" or
        # "\text{Evelyn}" (an answer column, or a \boxed{} extracted) parses to nothing unless wrapped in $...$
        delimited = any(mark in gold for mark in ("$", "\\boxed", "\\(", "\\["))
        gold_parsed = parse(gold if delimited else f"${gold}$", parsing_timeout=MATH_TIMEOUT_SECONDS)
        predicted = parse(str(completion)[-MATH_MAX_CHARS:], parsing_timeout=MATH_TIMEOUT_SECONDS)
        return float(verify(gold_parsed, predicted, timeout_seconds=MATH_TIMEOUT_SECONDS))
    except Exception:  # math-verify can fail on odd LaTeX; a completion it can't read is simply not verified
        return 0.0


CHECKS = {"exact_match": exact_match, "numeric_match": numeric_match, "math": math_match}


def make(kind: str, answer_column: str):
    check = CHECKS[kind]

    def verifier(prompts: list[str], completions: list[str], **columns) -> list[float]:
        if answer_column not in columns:
            raise LangplayError(
                f"verifier {kind!r} needs the gold answer in column {answer_column!r}; columns: {', '.join(columns)}"
                " (set answer_column in the reward entry)"
            )
        return [check(c, g) for c, g in zip(completions, columns[answer_column])]

    verifier.__name__ = kind
    return verifier
