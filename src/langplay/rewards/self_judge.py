"""LSP's quality self-reward: the frozen reference model judges each (query, answer) with the paper's Box 3.

The judge writes a short justification, `<Calculation>1+0+1+...=N</Calculation>` and `<Score>N</Score>`.
`parse_score` copes with anything:
- the last readable `<Score>` wins; otherwise the last readable `<Calculation>`; otherwise the fallback;
- a number reads through markdown emphasis (`**5**`, `_5_`, `` `5` ``) and as "N/7" (7, the scale: "5/10" is
  unreadable);
- a Calculation reads as the result stated after its last '=', or, where none is ("1+0+1", "1+0+1="), as the sum
  of its addends. The stated result is the judge's own total, as its Score is (trusted over the addends too): Box
  3's "make sure the sum is correct" asks the judge to check its sum; the parser reads that verdict rather than
  redo it;
- a score outside 0..7 is unreadable (outcome "out_of_range"), not clamped: clamping gave a reply of 10 the top
  score.
The judge's fallback is NaN: a reply with no readable score is left out of R_Q (the paper's protocol), not scored
0; each outcome ("score", "calculation", "out_of_range", "fallback") is counted.

`DigitJudge` (lsp.judge=digits; not in the paper) reads the score instead of writing it: the reference reads Box 3
with its reply begun as "<Score>", and its next-token probabilities of the digits 0..7, renormalised, weigh each
score. One forward pass, never unreadable, but no justification is written first: on a model too small to follow
Box 3's format (SmolLM2-135M) it is the only judge that gives a score at all (results/smollm2_lsp_game.md).
"""

from __future__ import annotations

import re
from collections import Counter

import torch

from langplay.config import SamplingConfig
from langplay.errors import LangplayError
from langplay.text import encodable

MAX_SCORE = 7
SCORE_OPEN = "<Score>"

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

# tag contents hold no '<': a tag left open never scans past the next one
_SCORE = re.compile(r"<\s*score\s*>([^<]*)<\s*/\s*score\s*>", re.IGNORECASE)
_CALCULATION = re.compile(r"<\s*calculation\s*>([^<]*)<\s*/\s*calculation\s*>", re.IGNORECASE)
_EMPHASIS = re.compile(r"[*_`]")
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_VALUE = re.compile(rf"({_NUMBER})(?:\s*/\s*({_NUMBER}))?")
_SUM = re.compile(rf"{_NUMBER}(?:\s*\+\s*{_NUMBER})*")


def parse_score(text: str, fallback: float = 0.0) -> tuple[float, str]:
    """(score in 0..7, how it was found: "score", "calculation"; or `fallback` and "out_of_range" or "fallback")."""
    text = str(text)[:20000]
    for how, found in (("score", map(read_number, _SCORE.findall(text))),
                       ("calculation", map(read_calculation, _CALCULATION.findall(text)))):
        readable = [value for value in found if value is not None]
        if readable:
            value = readable[-1]
            return (value, how) if 0 <= value <= MAX_SCORE else (fallback, "out_of_range")
    return fallback, "fallback"


def read_number(text: str) -> float | None:
    """The number `text` holds, markdown emphasis around it and "/7" after it allowed; None if it holds none."""
    match = _VALUE.fullmatch(_EMPHASIS.sub("", text).strip())
    if match is None or (match[2] is not None and float(match[2]) != MAX_SCORE):
        return None
    return float(match[1])


def read_calculation(text: str) -> float | None:
    """The result stated after the last '='; where none is, the sum of the addends; None if neither reads."""
    parts = text.split("=")
    stated = read_number(parts[-1])
    if stated is not None:
        return stated
    addends = _EMPHASIS.sub("", parts[0]).strip()
    return sum(map(float, re.findall(_NUMBER, addends))) if _SUM.fullmatch(addends) else None


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
                self.sampler = self.make_sampler(self.sampling, Policy(model, self.policy.tokenizer))
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                replies += self.sampler.generate(chunk, 1, [key_of(start, i) for i in range(len(chunk))]).texts
        return read_scores(replies, float("nan"), "self_reward_parse")


def score_tokens(tokenizer, context: str) -> list[int]:
    """The token of each score 0..7 written right after `context`; an error where a score is not one token there
    (the judge reads one next-token distribution)."""
    before = tokenizer(encodable(context), add_special_tokens=False)["input_ids"]
    tokens = []
    for score in range(MAX_SCORE + 1):
        after = tokenizer(encodable(context + str(score)), add_special_tokens=False)["input_ids"]
        if len(after) != len(before) + 1 or after[: len(before)] != before:
            raise LangplayError(f"lsp.judge=digits: this tokenizer does not write the score {score} as one token after "
                                f"{SCORE_OPEN!r}; use lsp.judge=reply")
        tokens.append(after[-1])
    return tokens


def expected_scores(digit_logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(expected score, probability mass on the digits) per row of log-probs of the scores 0..7 (rows, 8): the
    digits' probabilities renormalised to sum to 1 weigh each score."""
    probabilities = digit_logprobs.float().exp()
    mass = probabilities.sum(-1)
    scores = torch.arange(probabilities.shape[-1], dtype=probabilities.dtype, device=probabilities.device)
    return (probabilities * scores).sum(-1) / mass, mass


class DigitJudge:
    """R_Q as the frozen reference's expected Box 3 score, read from its next-token probabilities of 0..7 after
    "<Score>" (one forward pass; never unreadable)."""

    __name__ = "self_reward"

    def __init__(self, policy, batch_size: int = 16):
        self.policy, self.batch_size = policy, batch_size
        self.tokens = None  # the scores' token ids, found on the first batch

    @torch.no_grad()
    def score(self, prompts, completions, columns: dict) -> tuple[list[float], dict[str, float]]:
        """(expected R_Q per answer; the mean probability mass the judge puts on the digits)."""
        from langplay.logprobs import next_token_logprobs

        queries = columns.get("raw_prompt") or prompts
        texts = [self.policy.format_prompt(judge_prompt(q, a)) + SCORE_OPEN for q, a in zip(queries, completions)]
        if self.tokens is None:
            self.tokens = score_tokens(self.policy.tokenizer, texts[0])
        prompt_ids = [self.policy.encode(text) for text in texts]
        with self.policy.reference_model() as model:
            logprobs = next_token_logprobs(model, prompt_ids, self.tokens, self.policy.tokenizer.pad_token_id,
                                           self.batch_size)
        scores, mass = expected_scores(logprobs)
        return scores.tolist(), {"self_reward_digit_mass": mass.mean().item()}


def default_sampler(sampling: SamplingConfig, judge):
    """The run's backend over the judge's weights: the reference, so a LoRA policy's base without its adapter."""
    from langplay.sampling import make_sampler

    return make_sampler(sampling, judge, adapter=False)
