"""Text helpers shared by the algorithms, the evaluation and tinyworld: where an answer marker ends, and text
any tokenizer can take."""

from __future__ import annotations

import re


def marker_end(text: str, marker: str) -> int | None:
    """The index just after the *last* occurrence of `marker` in `text`, matched case-insensitively, or None.

    One rule everywhere (JEPO's chain cut, the proxy-NLL evaluation, tinyworld's checker). Matched on the text
    itself, so characters whose lower case is longer (e.g. "İ") do not shift the cut.
    """
    found = None
    for found in re.finditer(re.escape(marker), text, flags=re.IGNORECASE):
        pass
    return found.end() if found is not None else None


def chain_through_marker(sample: str, marker: str) -> str:
    """The chain of thought of a sampled response, the context the reference answer is scored after: the text
    up to its last marker; a response without one gets the marker appended, so every sample counts in the
    proxy-NLL bound (training, JEPO leaves such samples out of its bound and penalises them instead)."""
    end = marker_end(sample, marker)
    return sample[:end] if end is not None else sample.rstrip() + " " + marker


def after_marker(answer: str) -> str:
    """A reference answer as it follows the marker: with one leading space ("The final answer is 42")."""
    return answer if answer[:1].isspace() else " " + answer


def encodable(text: str) -> str:
    """`text` with lone surrogate characters (e.g. "a\\udf29", which no tokenizer can encode: they raise inside
    it) replaced by U+FFFD; valid text is returned unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
