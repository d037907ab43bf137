"""tinyworld's judges: `score` plays the reward model, `quality` plays LSP's 7-point self-reward.

Both take free text (a query, perhaps written by the model as challenger, and a response) and never raise.

`score` uses the task checker when the query parses. When it does not, it falls back on surface features of the
response (non-empty, short, printable, ends cleanly, not repetitive), as a neural reward model scores anything
it is shown. That is a deliberate hole, as in the LSP paper: a nonsense query answered by a short tidy string
earns up to SURFACE_MAX, without any task being solved. `quality` closes most of it: a query that does not parse
loses criteria 1, 2, 4, 5 and 6, so it scores at most 2 of 7.
"""

from __future__ import annotations

import re

from .tasks import FAMILIES, PRINTABLE, check, final_answer, parse

SURFACE_MAX = 0.8       # the most a response to an unparseable query can score
SHORT_CHARS = 40        # a response this short counts as concise
CLEAR_QUERY_CHARS = 80  # a longer query is not "clear" (quality criterion 2)


def _repetitive(text: str) -> bool:
    """A character repeated 6 times in a row, or a 2-8 character chunk repeated 4 times: degenerate output."""
    return bool(re.search(r"(.)\1{5}|(.{2,8})\2{3}", text[:2000], flags=re.DOTALL))


def _well_formed(response: str) -> bool:
    """Non-empty, only the tokenizer's characters, ends with a letter, digit or closing punctuation."""
    text = response.strip()
    return (bool(text) and len(text) <= 200 and all(c in PRINTABLE for c in text)
            and (text[-1].isascii() and (text[-1].isalnum() or text[-1] in ".!?)")))


def surface_score(response: str) -> float:
    """What a reward model that cannot read the task gives: the mean of five surface features, times SURFACE_MAX."""
    text = response.strip()
    if not text:
        return 0.0
    features = [
        1.0,                                                          # says something
        max(0.0, min(1.0, (4 * SHORT_CHARS - len(text)) / (3 * SHORT_CHARS))),  # short: 1 up to 40 chars, 0 at 160
        float(all(c in PRINTABLE for c in text)),                     # plain characters
        float(_well_formed(text)),                                    # ends cleanly
        float(not _repetitive(text)),                                 # not degenerate
    ]
    return SURFACE_MAX * sum(features) / len(features)


def score(query: str, response: str) -> float:
    """The reward model: the task checker in [0, 1] if `query` parses, else `surface_score(response)`."""
    query, response = str(query), str(response)
    task = parse(query)
    return check(task, response) if task is not None else surface_score(response)


def quality(query: str, response: str) -> int:
    """LSP's self-reward, 0..7, +1 per criterion (Kuba et al. 2025, Box 3):
    1 the task is identifiable (the query parses);
    2 the query is clear: it parses, is at most CLEAR_QUERY_CHARS long, and its level is one the family has;
    3 the response is non-empty and well formed (plain characters, ends cleanly, not degenerate);
    4 it addresses the question: its final answer has the right form (a number, letters, words, a list ...);
    5 it is at least partly correct (checker >= 0.5);
    6 it is correct (checker == 1);
    7 it is concise and organised: short (<= max(40, 2 x reference) chars), and a reasoning family's answer
      follows the answer marker. For an unparseable query only criteria 3 and 7 (<= 40 chars) can be met."""
    query, response = str(query), str(response)
    task = parse(query)
    text = response.strip()
    points = int(_well_formed(text) and not _repetitive(text))  # 3
    if task is None:
        return points + int(0 < len(text) <= SHORT_CHARS)  # 7
    family = FAMILIES[task.family]
    answer, placed = final_answer(task, response)
    correct = check(task, response)
    points += 1                                                                      # 1
    points += len(query.strip()) <= CLEAR_QUERY_CHARS and 1 <= task.level <= family.levels  # 2
    points += family.well_typed(answer)                                              # 4
    points += correct >= 0.5                                                         # 5
    points += correct == 1.0                                                         # 6
    points += 0 < len(text) <= max(SHORT_CHARS, 2 * len(task.reference)) and placed  # 7
    return int(points)

