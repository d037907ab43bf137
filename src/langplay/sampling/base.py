"""What every sampler shares: the `Samples` it returns and the `Sampler` protocol it implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class Samples:
    """n completions per prompt, laid out prompt-major: [p0c0, p0c1, ..., p1c0, ...]."""

    prompt_ids: list[list[int]]  # per completion (the prompt's ids, repeated)
    completion_ids: list[list[int]]  # ends with EOS when `finished`
    texts: list[str]  # completions decoded without special tokens
    logprobs: list[list[float]]  # the sampler's own log-prob of each completion token
    finished: list[bool]  # True: ended with EOS; False: hit max_new_tokens

    def __len__(self) -> int:
        return len(self.completion_ids)


class Sampler(Protocol):
    def generate(self, prompts: list[str], n: int, seeds: list[int], max_new_tokens: int | None = None) -> Samples:
        """n completions of each (already formatted) prompt; seeds: one per prompt; the config's length unless given."""
        ...

    def sync_weights(self) -> None:
        """Make the sampler use the policy's current weights (a no-op where it shares them)."""
        ...
