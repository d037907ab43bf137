"""Reward functions loaded by path in tests (kind: function)."""


def count_a(prompts, completions, **columns):
    return [c.count("a") / max(1, len(c)) for c in completions]


def length(prompts, completions, **columns):
    """Characters in each completion: a reward that varies whenever the lengths do."""
    return [float(len(c)) for c in completions]
