"""LSP's quality self-reward: the frozen reference model judges each (query, answer) with the paper's Box 3.

The judge writes a short justification, `<Calculation>1+0+1+...=N</Calculation>` and `<Score>N</Score>`.
`parse_score` copes with anything: the last well-formed `<Score>` wins; otherwise the result of the last
`<Calculation>`; otherwise the fallback. Scores outside 0..7 are clamped. The judge's fallback is NaN: a reply
with no readable score is left out of R_Q (the paper's protocol), not scored 0; each outcome is counted.
"""

from __future__ import annotations

import re
from collections import Counter

import torch

from langplay.config import SamplingConfig

MAX_SCORE = 7

# Box 3 of the paper, every instruction kept.
JUDGE_PROMPT = """Review the user's instruction and the assistant's response below, and score the interaction with an \
additive 7-point integer scoring system. The base score is 0. Add 1 point for each of the following binary \
criteria that is met, and 0 points for each that is not:
1. The user's task is clearly identifiable from the instruction.
2. The instruction is clear, specific and well-structured.
3. The user will be able to understand the response.
4. The response addresses a significant portion of the question, not necessarily completely.
5. The response usefully and comprehensively answers the core elements of the question.
6. The response is clearly written, concise, well-organised and helpful.
7. The user will most likely like the form and style of the response.

<Instruction>{instruction}</Instruction>
<Response>{response}</Response>

After examining the instruction and the response, justify your total score briefly, in at most 100 words, \
remembering the score of each criterion. Then write the sum of the points between <Calculation> and \
</Calculation>, for example <Calculation>1+0+1+0+1+1+0=4</Calculation>, and make sure the sum is correct. \
Conclude with the total score, from 0 to 7, between <Score> and </Score>. The format is crucial."""

_SCORE = re.compile(r"<\s*score\s*>\s*([-+]?\d+(?:\.\d+)?)\s*<\s*/\s*score\s*>", re.IGNORECASE)
_CALCULATION = re.compile(r"<\s*calculation\s*>(.*?)<\s*/\s*calculation\s*>", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_score(text: str, fallback: float = 0.0) -> tuple[float, str]:
    """(score in 0..7, how it was found: "score", "calculation", "fallback"; "+clamped" if out of range)."""
    text = str(text)[:20000]
    found = _SCORE.findall(text)
    how = "score"
    if not found:
        found = [m for calc in _CALCULATION.findall(text) for m in _NUMBER.findall(calc.split("=")[-1])]
        how = "calculation"
    if not found:
        return fallback, "fallback"
    try:
        value = float(found[-1])
    except ValueError:  # pragma: no cover - the regex only matches numbers
        return fallback, "fallback"
    if not 0 <= value <= MAX_SCORE:
        return min(max(value, 0.0), float(MAX_SCORE)), how + "+clamped"
    return value, how


def judge_prompt(instruction: str, response: str) -> str:
    """Box 3 filled with one (instruction, response) pair."""
    return JUDGE_PROMPT.format(instruction=instruction, response=response)


def read_scores(replies: list[str], fallback: float, metrics_prefix: str) -> tuple[list[float], dict[str, float]]:
    """The score of each judge reply (`fallback` where none is readable) and the count of each parse outcome."""
    scores, outcomes = [], Counter()
    for reply in replies:
        value, how = parse_score(reply, fallback=fallback)
        outcomes[how] += 1
        scores.append(value)
    return scores, {f"{metrics_prefix}/{how}": float(count) for how, count in outcomes.items()}


class ReferenceJudge:
    """R_Q(q, a) from the frozen reference model, prompted with Box 3 (near-greedy decoding); NaN where its
    reply has no readable score."""

    __name__ = "self_reward"

    def __init__(self, policy, max_new_tokens: int = 256, temperature: float = 0.01, batch_size: int = 16,
                 make_sampler=None, sampling: SamplingConfig | None = None):
        self.policy, self.batch_size = policy, batch_size
        # the run's sampler settings (backend, engine sizes, prompt limit), with the judge's own decoding
        self.sampling = (sampling or SamplingConfig()).model_copy(update={
            "temperature": temperature, "max_new_tokens": max_new_tokens, "top_p": 1.0, "ignore_eos": False})
        self.make_sampler = make_sampler or default_sampler  # (sampling config, judge Policy) -> Sampler
        self.sampler = None  # made once: the reference's weights never change (a vLLM engine is built once)

    @torch.no_grad()
    def score(self, prompts, completions, columns: dict) -> tuple[list[float], dict[str, float]]:
        """(R_Q per answer, NaN where the reply has no readable score; counts of each parse outcome). The judge
        writes through the Sampler protocol, with the frozen reference model's weights."""
        from langplay.policy import Policy
        from langplay.sampling.keys import key_of

        queries = columns.get("raw_prompt") or prompts
        texts = [self.policy.format_prompt(judge_prompt(q, a)) for q, a in zip(queries, completions)]
        replies = []
        with self.policy.reference_model() as model:
            if self.sampler is None:
                judge = Policy(model, self.policy.tokenizer)
                judge.adapters_off = self.policy.uses_lora  # the reference of a LoRA policy: its base
                self.sampler = self.make_sampler(self.sampling, judge)
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                replies += self.sampler.generate(chunk, 1, [key_of(start, i) for i in range(len(chunk))]).texts
        return read_scores(replies, float("nan"), "self_reward_parse")


def default_sampler(sampling: SamplingConfig, judge):
    from langplay.sampling import make_sampler

    return make_sampler(sampling, judge)
