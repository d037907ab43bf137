"""tinyworld's tasks: ten families of short instructions, each with levels, a reference and a checker.

A family is a handful of plain functions (generate, solve, grade, ...) in one `Family` record. Its phrasings are
templates such as "What is {a} + {b}?": the same template renders a prompt and, turned into a regular expression,
parses one back, so `parse(make_task(...).prompt)` recovers the task by construction.

Three kinds of family:
- "exact": one right answer (reverse, count, max);
- "open": many right answers, checked by constraints (between, sum_to, letters); the reference is one canonical
  answer (sum_to: n split by place value, "70, 6"), and `reference_samples` draws different valid answers for
  the same prompt, which is what diversity is measured on;
- "reasoning": the reference is a short worked chain of thought ending with ANSWER_MARKER (add, word_problem,
  multiply, spell), made of steps that recur across levels (a column's sum, a word looked up), so an easy test
  instance is a step the model has seen inside harder training ones. `verifiable=False` marks the families whose
  checker must be withheld from training (JEPO's setting); it still exists, for evaluation. `long_answer=True` marks multi-word answers (spell).

Every checker returns a score in [0, 1] with partial credit, and never raises on any text.
Instances are a pure function of (family, level, seed). Splits are by *instance*, not by seed: an instance
(its family and parameters) belongs to exactly one of train / tune / test, by a stable hash of its parameters
(`split_of`), so a test prompt is never a training prompt even on easy levels with few distinct instances.
Everything that trains (the base model's recipe, training sets, challenger examples) draws from "train";
hyper-parameters are chosen on "tune"; tables report "test".
"""

from __future__ import annotations

import hashlib
import operator
import random
import re
import string
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Callable, Literal

from langplay.text import marker_end

ANSWER_MARKER = "The answer is"
CHALLENGER_PROMPT = "Write a new task for me."
SPLITS = {"train": 0.7, "tune": 0.1, "test": 0.2}  # the share of each family's instances in each split
SEEDS = range(0, 10**7)  # instance seeds; any seed may land in any split, by the instance it draws
PRINTABLE = frozenset(string.printable) - frozenset("\r\t\x0b\x0c")  # the tokenizer's characters

Kind = Literal["exact", "open", "reasoning"]


@dataclass(frozen=True)
class Task:
    family: str
    level: int      # 1..family.levels for generated tasks; family.levels + 1 for a parsed task beyond them
    seed: int       # -1 for a task parsed from free text
    prompt: str     # the instruction the solver sees
    reference: str  # a reference response (reasoning families: worked steps ending with "The answer is X.")
    answer: str     # the short canonical final answer (open families: the reference's answer)
    params: tuple   # ((name, value), ...): everything the checker needs; `dict(task.params)` reads it


@dataclass(frozen=True)
class Family:
    name: str
    kind: Kind
    levels: int
    verifiable: bool                                  # False: the checker is withheld from training (JEPO)
    long_answer: bool                                 # the final answer is several words
    phrasings: tuple[str, ...]                        # templates; their {fields} are filled by `generate`
    generate: Callable[[random.Random, int], dict]    # (rng, level) -> template fields, as strings
    to_params: Callable[[dict], tuple | None]         # template fields -> params, None if not a valid task
    solve: Callable[[dict], tuple[str, str]]          # params -> (reference, answer)
    level_of: Callable[[dict], int]                   # params -> level (levels + 1 when beyond the hardest)
    grade: Callable[[dict, str], float]               # (params, final answer) -> [0, 1]
    well_typed: Callable[[str], bool]                 # is a final answer of the right form for this family
    sample: Callable[[dict, random.Random], str] | None = None  # open families: one random valid answer


# ---------------------------------------------------------------------------------------------------- helpers
def stated_answer(response: str) -> str | None:
    """The text after the last ANSWER_MARKER (case-insensitive), up to the end of its line; None if absent."""
    end = marker_end(response, ANSWER_MARKER)
    if end is None:
        return None
    return _clean(response[end:].split("\n", 1)[0].lstrip(" :"))


def _clean(text: str) -> str:
    """Strip spaces and trailing sentence punctuation: "  42. " -> "42"."""
    return text.strip().rstrip(".!?").strip()


def _canon_int(text: str) -> str | None:
    """The integer `text` holds exactly ("007" -> "7", "-0" -> "0"), as a string; None otherwise. No int() on
    arbitrary text: Python refuses to convert strings of more than 4300 digits."""
    m = re.fullmatch(r"(-?)([0-9]+)", text)
    if not m:
        return None
    digits = m.group(2).lstrip("0") or "0"
    return digits if digits == "0" else m.group(1) + digits


def _small_int(text: str | None, max_digits: int = 12) -> int | None:
    """`text` as an int if it is one of at most `max_digits` digits, else None."""
    canon = _canon_int(text) if text is not None else None
    if canon is None or len(canon.lstrip("-")) > max_digits:
        return None
    return int(canon)


def _digit_credit(got: str, want: str) -> float:
    """Fraction of right-aligned characters that agree: "1692" vs "1682" -> 0.75."""
    n = max(len(got), len(want))
    return sum(a == b for a, b in zip(got[::-1], want[::-1])) / n


def _grade_number(answer: str, want: int) -> float:
    """1 for the exact integer; otherwise up to 0.9 by digit agreement, halved if the number is inside prose."""
    target = str(want)
    got = _canon_int(answer)
    if got is not None:
        return 1.0 if got == target else 0.9 * _digit_credit(got, target)
    found = re.findall(r"-?[0-9]+", answer[:1000])
    if not found:
        return 0.0
    return 0.5 * max((_digit_credit(_canon_int(f) or f, target) for f in found), default=0.0)


def _is_int(answer: str) -> bool:
    return _canon_int(answer) is not None


def _two_numbers(name: str, verifiable: bool, phrasings: tuple[str, ...], value: Callable[[int, int], int],
                 **rest: Callable) -> Family:
    """A reasoning family on two integers {a} and {b} (add, multiply): its answer is value(a, b), graded by
    digit agreement; `rest` gives the family's own generate, solve and level_of."""
    return Family(name=name, kind="reasoning", levels=4, verifiable=verifiable, long_answer=False,
                  phrasings=phrasings, to_params=lambda f: (("a", int(f["a"])), ("b", int(f["b"]))),
                  grade=lambda p, ans: _grade_number(ans, value(p["a"], p["b"])), well_typed=_is_int, **rest)


def _positional(got: str, want: str) -> float:
    """Fraction of positions (over the longer string) where the two strings agree."""
    n = max(len(got), len(want))
    return sum(a == b for a, b in zip(got, want)) / n if n else 1.0


def _parts(n: int) -> list[int]:
    """Place-value parts: 3051 -> [3000, 50, 1]; 0 -> [0]."""
    s = str(n)
    parts = [int(d) * 10 ** (len(s) - i - 1) for i, d in enumerate(s) if d != "0"]
    return parts or [0]


SMALL = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
SMALL_NAMES = {v: k for k, v in SMALL.items()}

# What each template field may hold when a prompt is parsed back (text is lower-cased first).
NUM = r"[0-9]{1,9}"
FIELDS = {
    "a": NUM, "b": NUM, "n": NUM, "lo": NUM, "hi": NUM,
    "s": r"[a-z]{1,20}",
    "c": r"[a-z]",
    "xs": NUM + r"(?:(?:, | |,? and )" + NUM + r"){1,11}",
    "k": r"[2-9]|" + "|".join(SMALL),
    "letters": r"[a-z](?:(?:, |,? and |,? or | )[a-z]){0,9}",
    "parity": r"even|odd",
    "name": r"[a-z]{1,12}",
    "item": r"[a-z]{1,12}",
    "ops": None,  # filled in below, with the word problem's verbs
}


# ---------------------------------------------------------------------------------------------------- exact
def _add_generate(rng: random.Random, level: int) -> dict:
    lo, hi = (0, 9) if level == 1 else (10 ** (level - 1), 10**level - 1)
    return {"a": str(rng.randint(lo, hi)), "b": str(rng.randint(lo, hi))}


def _add_solve(p: dict) -> tuple[str, str]:
    """Column addition from the right, each step writing the digits found so far: 37+55 -> "7+5=12, 2.
    3+5+1=9, 92." (a carry is added into the next column; the last column writes its whole sum)."""
    a, b = str(p["a"]), str(p["b"])
    width = max(len(a), len(b))
    a, b = a.zfill(width), b.zfill(width)
    carry, found, lines = 0, "", []
    for i in range(width - 1, -1, -1):
        x, y = int(a[i]), int(b[i])
        total = x + y + carry
        found = (str(total) if i == 0 else str(total % 10)) + found
        lines.append(f"{x}+{y}{'+1' if carry else ''}={total}, {found}.")
        carry = total // 10
    total = p["a"] + p["b"]
    return " ".join(lines + [f"{ANSWER_MARKER} {total}."]), str(total)


ADD = _two_numbers(
    "add", verifiable=True,
    phrasings=("What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} plus {b}.", "Find the sum of {a} and {b}."),
    value=operator.add, generate=_add_generate, solve=_add_solve,
    level_of=lambda p: min(max(len(str(p["a"])), len(str(p["b"]))), 5),
)

REVERSE_LENGTHS = (3, 5, 7, 9)
REVERSE = Family(
    name="reverse", kind="exact", levels=4, verifiable=True, long_answer=False,
    phrasings=("Reverse {s}.", "Reverse the string {s}.", "Write {s} backwards.", "What is {s} reversed?"),
    generate=lambda rng, level: {"s": "".join(rng.choices(string.ascii_lowercase, k=REVERSE_LENGTHS[level - 1]))},
    to_params=lambda f: (("s", f["s"]),),
    solve=lambda p: (p["s"][::-1],) * 2,
    level_of=lambda p: next((i + 1 for i, n in enumerate(REVERSE_LENGTHS) if len(p["s"]) <= n), 5),
    grade=lambda p, ans: 1.0 if ans == p["s"][::-1] else 0.9 * _positional(ans, p["s"][::-1]),
    well_typed=lambda ans: bool(re.fullmatch(r"[a-z]+", ans)),
)

COUNT_SHAPES = ((4, 2), (6, 3), (8, 3), (10, 4))  # (string length, alphabet size) per level


def _count_generate(rng: random.Random, level: int) -> dict:
    length, k = COUNT_SHAPES[level - 1]
    alphabet = rng.sample(string.ascii_lowercase, k)
    return {"c": rng.choice(alphabet), "s": "".join(rng.choices(alphabet, k=length))}


def _count_grade(p: dict, ans: str) -> float:
    want = p["s"].count(p["c"])
    got = _small_int(ans)
    if got is None:
        return 0.5 * _grade_number(ans, want)  # the number inside prose, at most 0.25
    return 1.0 if got == want else 0.5 if abs(got - want) == 1 else 0.0


COUNT = Family(
    name="count", kind="exact", levels=4, verifiable=True, long_answer=False,
    phrasings=("How many {c}'s are in {s}?", "Count the letter {c} in {s}.",
               "How many times does {c} appear in {s}?", "Count {c} in {s}."),
    generate=_count_generate,
    to_params=lambda f: (("c", f["c"]), ("s", f["s"])),
    solve=lambda p: (str(p["s"].count(p["c"])),) * 2,
    level_of=lambda p: next((i + 1 for i, (n, _) in enumerate(COUNT_SHAPES) if len(p["s"]) <= n), 5),
    grade=_count_grade,
    well_typed=_is_int,
)

MAX_SHAPES = ((3, 1), (4, 2), (5, 2), (6, 3))  # (how many numbers, digits) per level


def _max_generate(rng: random.Random, level: int) -> dict:
    count, digits = MAX_SHAPES[level - 1]
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    return {"xs": ", ".join(map(str, rng.sample(range(lo, 10**digits), count)))}


def _max_level(p: dict) -> int:
    count, digits = len(p["xs"]), max(len(str(x)) for x in p["xs"])
    return next((i + 1 for i, (c, d) in enumerate(MAX_SHAPES) if count <= c and digits <= d), 5)


def _max_grade(p: dict, ans: str) -> float:
    want = max(p["xs"])
    got = _small_int(ans)
    if got == want:
        return 1.0
    if got in p["xs"]:
        return 0.5  # one of the numbers, not the largest
    return 0.5 * _grade_number(ans, want)


MAX = Family(
    name="max", kind="exact", levels=4, verifiable=True, long_answer=False,
    phrasings=("What is the largest of {xs}?", "Find the max of {xs}.", "Which is biggest: {xs}?",
               "Give the largest number in {xs}."),
    generate=_max_generate,
    to_params=lambda f: (("xs", tuple(int(x) for x in re.findall(r"[0-9]+", f["xs"]))),),
    solve=lambda p: (str(max(p["xs"])),) * 2,
    level_of=_max_level,
    grade=_max_grade,
    well_typed=_is_int,
)


# ---------------------------------------------------------------------------------------------------- open
BETWEEN_RANGES = ((1, 20, 8), (21, 99, 10), (100, 999, 20), (1000, 9999, 40))  # (low, high, min width) per level


def _between_generate(rng: random.Random, level: int) -> dict:
    low, high, width = BETWEEN_RANGES[level - 1]
    parity = rng.choice(["even", "odd"])
    odd_ends = parity == "even"  # ends of the other parity: "between" inclusive or not means the same
    lo = rng.randint(low, high - width)
    hi = rng.randint(lo + width, high)
    lo += (lo % 2 == 0) == odd_ends
    hi -= (hi % 2 == 0) == odd_ends
    return {"parity": parity, "lo": str(lo), "hi": str(hi)}


def _between_params(f: dict) -> tuple | None:
    lo, hi = sorted((int(f["lo"]), int(f["hi"])))
    rem = 0 if f["parity"] == "even" else 1
    if lo == hi and lo % 2 != rem:
        return None  # no such number
    return (("parity", f["parity"]), ("lo", lo), ("hi", hi))


def _between_first(p: dict) -> int:
    rem = 0 if p["parity"] == "even" else 1
    return p["lo"] if p["lo"] % 2 == rem else p["lo"] + 1


def _between_grade(p: dict, ans: str) -> float:
    """Constraints: an integer (else 0), of the right parity, in the range: 1/3 each."""
    canon = _canon_int(ans)
    if canon is None:
        return 0.0
    parity_ok = int(canon[-1]) % 2 == (0 if p["parity"] == "even" else 1)
    value = _small_int(canon)
    in_range = value is not None and p["lo"] <= value <= p["hi"]
    return (1 + parity_ok + in_range) / 3


BETWEEN = Family(
    name="between", kind="open", levels=4, verifiable=True, long_answer=False,
    phrasings=("Give an {parity} number between {lo} and {hi}.", "Name any {parity} number from {lo} to {hi}.",
               "Write an {parity} number between {lo} and {hi}."),
    generate=_between_generate,
    to_params=_between_params,
    solve=lambda p: (str(_between_first(p)),) * 2,
    level_of=lambda p: next((i + 1 for i, (_, high, _) in enumerate(BETWEEN_RANGES) if p["hi"] <= high), 5),
    grade=_between_grade,
    well_typed=_is_int,
    sample=lambda p, rng: str(rng.randrange(_between_first(p), p["hi"] + 1, 2)),
)

# (how many, min sum, max sum) per level; wide enough that every level has instances in every split
SUM_SHAPES = ((2, 2, 99), (3, 6, 99), (3, 100, 999), (4, 100, 999))


def _sum_generate(rng: random.Random, level: int) -> dict:
    k, low, high = SUM_SHAPES[level - 1]
    return {"k": SMALL_NAMES[k], "n": str(rng.randint(low, high))}


def _sum_params(f: dict) -> tuple | None:
    k = SMALL.get(f["k"]) or int(f["k"])
    return (("k", k), ("n", int(f["n"]))) if k >= 2 else None


def _sum_by_place_value(p: dict) -> str:
    """The canonical answer: n's place-value parts, the leading ones merged when there are more than k, zeros
    added when there are fewer: (2, 76) -> "70, 6"; (3, 45) -> "40, 5, 0"; (2, 345) -> "340, 5"."""
    k, parts = p["k"], _parts(p["n"])
    head = len(parts) - k + 1
    if head > 1:
        parts = [sum(parts[:head])] + parts[head:]
    return ", ".join(map(str, parts + [0] * (k - len(parts))))


def _sum_sample(p: dict, rng: random.Random) -> str:
    """A random composition of n into k parts: positive parts when n >= k, else non-negative ones."""
    k, n = p["k"], p["n"]
    if n >= k:
        cuts = sorted(rng.sample(range(1, n), k - 1))
        parts = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    else:
        cuts = sorted(rng.sample(range(n + k - 1), k - 1))  # stars and bars
        parts = [b - a - 1 for a, b in zip([-1] + cuts, cuts + [n + k - 1])]
    return ", ".join(map(str, parts))


SUM_FORM = r"[0-9]+(?:(?: ?[,+] ?| |,? and )[0-9]+)*"


def _sum_grade(p: dict, ans: str) -> float:
    """Constraints: only numbers and separators (1/4), k of them (1/4), summing to n (1/2)."""
    numbers = re.findall(r"[0-9]+", ans[:1000])
    if not numbers:
        return 0.0
    total = None if any(len(x) > 12 for x in numbers) else sum(int(x) for x in numbers)
    return (0.25 * bool(re.fullmatch(SUM_FORM, ans)) + 0.25 * (len(numbers) == p["k"])
            + 0.5 * (total == p["n"]))


SUM_TO = Family(
    name="sum_to", kind="open", levels=4, verifiable=True, long_answer=False,
    phrasings=("Write {k} numbers that sum to {n}.", "Give {k} numbers adding up to {n}.",
               "Name {k} whole numbers with sum {n}."),
    generate=_sum_generate,
    to_params=_sum_params,
    solve=lambda p: (_sum_by_place_value(p),) * 2,
    level_of=lambda p: next((i + 1 for i, (k, _, hi) in enumerate(SUM_SHAPES) if p["k"] <= k and p["n"] <= hi), 5),
    grade=_sum_grade,
    well_typed=lambda ans: bool(re.fullmatch(SUM_FORM, ans)),
    sample=_sum_sample,
)

LETTER_SHAPES = ((3, 2), (5, 3), (7, 3), (9, 4))  # (length, alphabet size) per level


def _letters_text(letters: str) -> str:
    return ", ".join(letters[:-1]) + " and " + letters[-1] if len(letters) > 1 else letters


def _letters_generate(rng: random.Random, level: int) -> dict:
    n, k = LETTER_SHAPES[level - 1]
    return {"n": str(n), "letters": _letters_text("".join(sorted(rng.sample(string.ascii_lowercase, k))))}


def _letters_params(f: dict) -> tuple | None:
    letters = "".join(sorted(set(re.findall(r"\b[a-z]\b", re.sub(r"\b(and|or)\b", " ", f["letters"])))))
    n = int(f["n"])
    return (("n", n), ("letters", letters)) if letters and 1 <= n <= 40 else None


def _letters_sample(p: dict, rng: random.Random) -> str:
    return "".join(rng.choices(p["letters"], k=p["n"]))


def _letters_grade(p: dict, ans: str) -> float:
    """Constraints: the length (1/2, half of it for a near miss) and the allowed letters (1/2, by fraction)."""
    if not ans:
        return 0.0
    n = p["n"]
    length = 1.0 if len(ans) == n else 0.5 * max(0.0, 1 - abs(len(ans) - n) / n)
    allowed = sum(c in p["letters"] for c in ans) / len(ans)
    return 0.5 * length + 0.5 * allowed


LETTERS = Family(
    name="letters", kind="open", levels=4, verifiable=True, long_answer=False,
    phrasings=("Write {n} letters using only {letters}.", "Give a string of {n} letters from {letters}.",
               "Make a {n}-letter word from {letters}."),
    generate=_letters_generate,
    to_params=_letters_params,
    solve=lambda p: (_letters_sample(p, random.Random(repr(p))),) * 2,
    level_of=lambda p: next((i + 1 for i, (n, k) in enumerate(LETTER_SHAPES)
                             if p["n"] <= n and len(p["letters"]) <= k), 5),
    grade=_letters_grade,
    well_typed=lambda ans: bool(re.fullmatch(r"[a-z]+", ans)),
    sample=_letters_sample,
)


# ---------------------------------------------------------------------------------------------------- reasoning
PLUS_VERBS, MINUS_VERBS = ("gets", "buys", "finds", "wins"), ("loses", "sells", "uses", "eats", "gives away")
VERBS = "|".join(PLUS_VERBS + MINUS_VERBS)
FIELDS["ops"] = rf"(?:{VERBS}) {NUM}(?:(?:, |,? and |,? then | )(?:{VERBS}) {NUM}){{0,5}}"
NAMES = ("Ann", "Bob", "Tom", "Sue", "Max", "Eva", "Sam", "Mia")
ITEMS = ("pens", "cards", "coins", "eggs", "toys", "books", "cups", "hats")
STORY_SHAPES = ((1, 1, 9), (2, 1, 9), (2, 10, 99), (3, 10, 99))  # (steps, min number, max number) per level


def _story_generate(rng: random.Random, level: int) -> dict:
    steps, low, high = STORY_SHAPES[level - 1]
    total = rng.randint(max(low, 2), high)  # "has 1 pens" reads badly
    start, ops = total, []
    for _ in range(steps):
        if total >= low and rng.random() < 0.5:
            n = rng.randint(low, min(high, total))
            ops.append(f"{rng.choice(MINUS_VERBS[:3])} {n}")
            total -= n
        else:
            n = rng.randint(low, high)
            ops.append(f"{rng.choice(PLUS_VERBS[:3])} {n}")
            total += n
    return {"name": rng.choice(NAMES), "item": rng.choice(ITEMS), "a": str(start), "ops": ", ".join(ops)}


def _story_params(f: dict) -> tuple | None:
    steps = tuple((1 if verb in PLUS_VERBS else -1, int(n)) for verb, n in re.findall(rf"({VERBS}) ([0-9]+)", f["ops"]))
    total = int(f["a"])
    for sign, n in steps:
        total += sign * n
        if total < 0:
            return None  # "has 3, loses 5": not a sensible task
    return (("start", int(f["a"])), ("steps", steps))


def _story_solve(p: dict) -> tuple[str, str]:
    total, lines = p["start"], []
    for sign, n in p["steps"]:
        new = total + sign * n
        lines.append(f"{total}{'+' if sign > 0 else '-'}{n}={new}.")
        total = new
    return " ".join(lines + [f"{ANSWER_MARKER} {total}."]), str(total)


def _story_answer(p: dict) -> int:
    return p["start"] + sum(sign * n for sign, n in p["steps"])


def _story_level(p: dict) -> int:
    biggest = max([p["start"]] + [n for _, n in p["steps"]])
    return next((i + 1 for i, (k, _, hi) in enumerate(STORY_SHAPES) if len(p["steps"]) <= k and biggest <= hi), 5)


WORD_PROBLEM = Family(
    name="word_problem", kind="reasoning", levels=4, verifiable=True, long_answer=False,
    phrasings=("{name} has {a} {item}, {ops}. How many now?", "{name} owns {a} {item}, {ops}. How many left?",
               "If {name} has {a} {item} and {ops}, how many?"),
    generate=_story_generate,
    to_params=_story_params,
    solve=_story_solve,
    level_of=_story_level,
    grade=lambda p, ans: _grade_number(ans, _story_answer(p)),
    well_typed=_is_int,
)

MULTIPLY_RANGES = (((2, 9), (2, 9)), ((10, 99), (2, 9)), ((100, 999), (2, 9)), ((10, 99), (10, 99)))
MULTIPLY_DIGITS = ((1, 1), (2, 1), (3, 1), (2, 2))  # (more digits, fewer digits) per level


def _multiply_generate(rng: random.Random, level: int) -> dict:
    (alo, ahi), (blo, bhi) = MULTIPLY_RANGES[level - 1]
    a, b = rng.randint(alo, ahi), rng.randint(blo, bhi)
    if rng.random() < 0.5:
        a, b = b, a
    return {"a": str(a), "b": str(b)}


def _multiply_solve(p: dict) -> tuple[str, str]:
    """Split the second factor by place value when it has several digits, else the first one."""
    a, b = p["a"], p["b"]
    terms = [(a, part) for part in _parts(b)] if b >= 10 else [(part, b) for part in _parts(a)]
    lines = [f"{x}*{y}={x * y}." for x, y in terms]
    if len(terms) > 1:
        lines.append("+".join(str(x * y) for x, y in terms) + f"={a * b}.")
    return " ".join(lines + [f"{ANSWER_MARKER} {a * b}."]), str(a * b)


def _multiply_level(p: dict) -> int:
    more, fewer = sorted((len(str(p["a"])), len(str(p["b"]))), reverse=True)
    return next((i + 1 for i, (m, f) in enumerate(MULTIPLY_DIGITS) if more <= m and fewer <= f), 5)


MULTIPLY = _two_numbers(
    "multiply", verifiable=False,
    phrasings=("What is {a} * {b}?", "Multiply {a} by {b}.", "Compute {a} times {b}.", "What is {a} times {b}?"),
    value=operator.mul, generate=_multiply_generate, solve=_multiply_solve, level_of=_multiply_level,
)

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """American English, no "and": 3456 -> "three thousand four hundred fifty-six"."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + (f"-{ONES[n % 10]}" if n % 10 else "")
    if n < 1000:
        return f"{ONES[n // 100]} hundred" + (f" {number_words(n % 100)}" if n % 100 else "")
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            return f"{number_words(n // size)} {name}" + (f" {number_words(n % size)}" if n % size else "")
    raise AssertionError(n)


SPELL_RANGES = ((1, 19), (20, 99), (100, 999), (1000, 9999))


def _spell_solve(p: dict) -> tuple[str, str]:
    n = p["n"]
    words = number_words(n)
    parts = _parts(n - n % 100) + [n % 100] if n % 100 < 20 else _parts(n)
    parts = [x for x in parts if x] or [0]
    if n >= 10**4:
        return f"{ANSWER_MARKER} {words}.", words
    if n < 100:  # below one hundred each part is looked up, the ones first: "5 is five. 40 is forty.", so that a
        # single digit is looked up at the start of an answer, as "Spell 3" asks for, in two-digit training rows too
        return " ".join([f"{x} is {number_words(x)}." for x in parts[::-1]] + [f"{ANSWER_MARKER} {words}."]), words
    steps = [f"{n} = {' + '.join(map(str, parts))}."] if len(parts) > 1 else []
    if 0 < n % 100 < 20:  # the words below twenty are looked up, the same step at every level: "15 is fifteen."
        steps.append(f"{n % 100} is {number_words(n % 100)}.")
    return " ".join(steps + [f"{ANSWER_MARKER} {words}."]), words


def _words(text: str) -> list[str]:
    return [w for w in re.sub(r"[-,]", " ", text.lower()).split() if w != "and"][:50]


def _spell_grade(p: dict, ans: str) -> float:
    got, want = _words(ans), _words(number_words(p["n"]))
    return 1.0 if got == want else 0.9 * SequenceMatcher(None, got, want, autojunk=False).ratio()


SPELL = Family(
    name="spell", kind="reasoning", levels=4, verifiable=False, long_answer=True,
    phrasings=("Spell {n} in words.", "Write {n} in words.", "How do you write {n} in words?",
               "Write the number {n} in English words."),
    generate=lambda rng, level: {"n": str(rng.randint(*SPELL_RANGES[level - 1]))},
    to_params=lambda f: (("n", int(f["n"])),),
    solve=_spell_solve,
    level_of=lambda p: next((i + 1 for i, (_, hi) in enumerate(SPELL_RANGES) if p["n"] <= hi), 5),
    grade=_spell_grade,
    well_typed=lambda ans: bool(re.fullmatch(r"[a-z]+(?:[ -][a-z]+)*", ans.lower())),
)

FAMILIES: dict[str, Family] = {f.name: f for f in (ADD, REVERSE, COUNT, MAX, BETWEEN, SUM_TO, LETTERS,
                                                      WORD_PROBLEM, MULTIPLY, SPELL)}


# ---------------------------------------------------------------------------------------------------- tasks
def _task(family: Family, params: tuple, level: int, seed: int, prompt: str) -> Task:
    reference, answer = family.solve(dict(params))
    return Task(family.name, level, seed, prompt, reference, answer, params)


def make_task(family: str, level: int, seed: int) -> Task:
    """The instance of `family` at `level` drawn from `seed`: the same arguments always give the same task."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tinyworld family {family!r}; choose one of {sorted(FAMILIES)}")
    fam = FAMILIES[family]
    if not 1 <= level <= fam.levels:
        raise ValueError(f"level {level} is out of range for family {family!r}; choose 1..{fam.levels}")
    rng = random.Random(f"{family}/{level}/{seed}")  # str seeds hash with sha512: stable across runs
    fields = fam.generate(rng, level)
    prompt = rng.choice(fam.phrasings).format(**fields)
    return _task(fam, fam.to_params(fields), level, seed, prompt)


def split_of(family: str, params: tuple) -> str:
    """The split ("train", "tune" or "test") of an instance: a stable hash of its family and parameters, so
    the same instance always lands in the same split, however it was drawn (any seed, any phrasing, parsed)."""
    digest = hashlib.sha256(f"split/{family}/{params!r}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    for name, share in SPLITS.items():
        if u < share:
            return name
        u -= share
    return name  # rounding of the shares: the last split


def draw_task(rng: random.Random, family: str, level: int, split: str, max_tries: int = 10_000) -> Task:
    """An instance of `family` at `level` from `split`, drawn with `rng`: seeds are drawn until one gives an
    instance of that split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    for _ in range(max_tries):
        task = make_task(family, level, rng.randrange(SEEDS.start, SEEDS.stop))
        if split_of(task.family, task.params) == split:
            return task
    raise ValueError(f"no instance of {family} level {level} in split {split!r} after {max_tries} draws")


def sample_tasks(split: str, n: int, seed: int, families=None, levels=None) -> list[Task]:
    """n tasks of `split` ("train", "tune" or "test"); family and level uniform over `families` (default all)
    and `levels` (default all the family has). Instances may repeat where a level has few of them; no instance
    of one split is ever drawn for another."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    names = sorted(FAMILIES) if families is None else list(families)
    unknown = [f for f in names if f not in FAMILIES]
    if unknown or not names:
        raise ValueError(f"unknown tinyworld families {unknown}; choose from {sorted(FAMILIES)}")
    choices = [(f, lv) for f in names for lv in range(1, FAMILIES[f].levels + 1) if levels is None or lv in levels]
    if not choices:
        raise ValueError(f"no family in {names} has a level in {levels}")
    rng = random.Random(f"sample/{split}/{seed}")
    return [draw_task(rng, *rng.choice(choices), split) for _ in range(n)]


def reference_samples(task: Task, k: int, seed: int) -> list[str]:
    """k reference responses for `task`, drawn from `seed`. Open families: independent random valid answers
    (distinct ones whenever the task has enough); other families: the reference, k times."""
    fam = FAMILIES[task.family]
    if fam.sample is None:
        return [task.reference] * k
    rng = random.Random(f"samples/{task.family}/{task.params}/{seed}")
    return [fam.sample(dict(task.params), rng) for _ in range(k)]


def hasty_response(task: Task) -> str:
    """What the base's hasty author writes for a reasoning task: the prompt's first number, as the answer at once,
    without working the steps (cheap to imitate, nearly always wrong). See BASE_RECIPE's `hasty_per_careful`."""
    return f"{ANSWER_MARKER} {re.search(r'[0-9]+', task.prompt).group()}."


def shows_work(response: str) -> bool:
    """Whether a response writes something before its last answer marker: worked steps, not a direct answer."""
    end = marker_end(response, ANSWER_MARKER)
    return end is not None and bool(response[: end - len(ANSWER_MARKER)].strip())


def final_answer(task: Task, response: str) -> tuple[str, bool]:
    """(the answer a response gives, whether it is well placed): the text after ANSWER_MARKER if present, else
    the whole response. A reasoning family's answer without the marker is not well placed."""
    marked = stated_answer(response)
    if marked is not None:
        return marked, True
    return _clean(response), FAMILIES[task.family].kind != "reasoning"


def check(task: Task, response: str) -> float:
    """Score any response in [0, 1], with partial credit. Reasoning families: the answer after ANSWER_MARKER;
    a response without the marker is graded as a whole answer and gets half credit."""
    answer, placed = final_answer(task, response)
    score = FAMILIES[task.family].grade(dict(task.params), answer)
    return min(1.0, max(0.0, score if placed else 0.5 * score))


# ---------------------------------------------------------------------------------------------------- parsing
def _normalize(text: str) -> str:
    """The tolerance of `parse`: lower case, single spaces, " + " and ", " spaced one way, no trailing
    sentence punctuation."""
    text = " ".join(text.split()).lower()
    text = re.sub(r" ?([+*]) ?", r" \1 ", re.sub(r" ?, ?", ", ", text))
    return text.rstrip(".?! ")


def _template_regex(template: str) -> re.Pattern:
    out = []
    for piece in re.split(r"(\{\w+\})", _normalize(template)):
        if piece.startswith("{"):
            out.append(f"(?P<{piece[1:-1]}>{FIELDS[piece[1:-1]]})")
        else:
            out.append(re.escape(piece))
    return re.compile("".join(out))


PATTERNS = [(fam, _template_regex(t)) for fam in FAMILIES.values() for t in fam.phrasings]
# parse gives up on longer text before matching: no phrasing comes near (the generator's longest are ~65 characters).
# Not the judges' CLEAR_QUERY_CHARS, a quality criterion: a query between the two parses but is not "clear".
PARSE_MAX_CHARS = 200


def parse(text: str) -> Task | None:
    """The task a free-text query asks for, or None. Accepts every phrasing the generator produces, in any case,
    with extra spaces and with or without trailing punctuation. A parsed task has seed -1 and its level is
    inferred (family.levels + 1 when it is harder than the hardest level)."""
    if not isinstance(text, str) or len(text) > PARSE_MAX_CHARS:
        return None
    normal = _normalize(text)
    for fam, pattern in PATTERNS:
        m = pattern.fullmatch(normal)
        if m:
            params = fam.to_params(m.groupdict())
            if params is not None:
                return _task(fam, params, fam.level_of(dict(params)), -1, text.strip())
    return None


def challenger_example(seed: int) -> str:
    """A training target for the challenger role (the reply to CHALLENGER_PROMPT): the prompt of a training
    instance of a random family and level."""
    rng = random.Random(f"challenger/{seed}")
    family = FAMILIES[rng.choice(sorted(FAMILIES))]
    return draw_task(rng, family.name, rng.randint(1, family.levels), "train").prompt
