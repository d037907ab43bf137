"""The likelihood of reference answers, JEPO's evaluation of unverifiable data (Tang et al. 2025): for a question x
and its reference answer a*,
    plain   log pi(a* | x)                                   a* right after the prompt, no chain of thought
    bound   log (1/n) sum_i pi(a* | x, c_i),  c_i ~ pi(.|x)  the multi-sample bound over n sampled chains
The paper's proxy NLL is the bound's negative mean, n = 4. Each chain is cut at its last answer marker (one
without a marker gets it appended, so all n count) and a* follows the marker after a space, as JEPO scores it;
a* ends with EOS only when asked (`answer_eos`, tinyworld's convention; JEPO's S has none). Chains are drawn at
temperature 1 (the bound is a bound on log pi(a*|x) only under the policy's own chains) and cached like every
evaluation's answers. NLLs are reported per answer (the mean of -log-likelihood) and per answer token (summed
over answers, divided by their tokens).
"""

from __future__ import annotations

import statistics

from langplay.config import JEPOConfig
from langplay.errors import LangplayError
from langplay.evaluation.answers import Decoding
from langplay.evaluation.metrics import log_mean_exp
from langplay.evaluation.report import FileEvaluation, table_text
from langplay.logprobs import completion_logprob_sums
from langplay.rewards.verifiers import gold_answer
from langplay.text import after_marker, chain_through_marker, marker_end

DEFAULT_MARKER = JEPOConfig().answer_marker
PAPER_SAMPLES = 4  # the JEPO paper's n for its proxy NLL


def target_logliks(policy, contexts: list[list[int]], texts: list[str],
                   eos: bool = True) -> tuple[list[float], list[int]]:
    """Per pair: log pi(text [+ EOS] | context) summed over the text's tokens (teacher forcing; `contexts` are
    token ids, a formatted prompt and whatever follows it), and the number of those tokens, EOS included."""
    tail = [policy.tokenizer.eos_token_id] if eos else []
    targets = [policy.encode(text) + tail for text in texts]
    sums = completion_logprob_sums(policy.model, contexts, targets, policy.tokenizer.pad_token_id)
    return sums, [len(t) for t in targets]


def answer_logliks(policy, prompt_ids: list[list[int]], answers: list[str], chains: list[list[str] | None],
                   marker: str = DEFAULT_MARKER, eos: bool = False) -> tuple[list[float], list[int]]:
    """Per prompt, the log-likelihood of its answer and the answer's token count: chains[i] None gives the plain
    log pi(a*|x), a* right after the prompt; a list of sampled responses gives the multi-sample bound
    log (1/n) sum_j pi(a*|x, c_j), each c_j the response through its last marker and a* after it. All pairs are
    scored in one pass, in prompt order."""
    contexts, targets, owner = [], [], []
    for index, (x, answer, samples) in enumerate(zip(prompt_ids, answers, chains)):
        if samples is not None and not samples:
            raise ValueError(f"prompt {index}: the bound needs at least one chain")
        pairs = [(x, answer)] if samples is None else \
            [(x + policy.encode(chain_through_marker(s, marker)), after_marker(answer)) for s in samples]
        for context, target in pairs:
            contexts.append(context)
            targets.append(target)
            owner.append(index)
    sums, lengths = target_logliks(policy, contexts, targets, eos)
    per_prompt: list[list[float]] = [[] for _ in prompt_ids]
    tokens = [0] * len(prompt_ids)
    for index, value, length in zip(owner, sums, lengths):
        per_prompt[index].append(value)
        tokens[index] = length
    return [log_mean_exp(values) for values in per_prompt], tokens


def nll_summary(logliks: list[float], tokens: list[int]) -> dict:
    """Mean NLL per answer, and per answer token (pooled: all answers' NLL over all their tokens)."""
    return {"nll": -statistics.fmean(logliks), "nll_per_token": -sum(logliks) / sum(tokens)}


def marker_rate(chains: list[list[str]], marker: str) -> float:
    """The share of sampled chains that wrote the marker themselves (the rest had it appended)."""
    flat = [sample for samples in chains for sample in samples]
    return sum(marker_end(s, marker) is not None for s in flat) / len(flat)


def evaluate_likelihood(model: str, data: str, prompt_column: str = "prompt", answer_column: str = "answer",
                        samples: int = PAPER_SAMPLES, marker: str = DEFAULT_MARKER, answer_format: str = "plain",
                        answer_eos: bool = False, max_new_tokens: int = 512, limit: int | None = None,
                        system_prompt: str | None = None, subset: str | None = None, split: str = "test",
                        seed: int = 0, output=None, backend: str | None = None, batch_size: int = 32,
                        progress: bool = True, noise_keys: list[int] | None = None) -> dict:
    """The plain log-likelihood of each row's reference answer and (samples > 0) the multi-sample bound over
    `samples` chains of thought; writes report.json, report.txt and rows.jsonl (per row: the answer, its
    log-likelihoods and their token counts, EOS included when scored) into the eval folder (`output`, default
    runs/eval-likelihood), whose answer cache lets an interrupted run continue.
    `noise_keys`: each row's sampling key, to draw the chains another evaluation drew (tinyworld's)."""
    run = FileEvaluation("likelihood", model, data, output, backend, system_prompt, batch_size, progress)
    if samples < 0:
        raise LangplayError(f"--samples must be >= 0 (0: the plain likelihood only), got {samples}")
    rows = run.load_rows([prompt_column, answer_column], prompt_column, subset, split, limit)
    answers = [gold_answer(str(row[answer_column]), answer_format) for row in rows]
    policy = run.policy
    policy.model.eval()
    prompt_ids = [policy.encode(policy.format_prompt(p, system_prompt)) for p in run.prompts]

    plain, plain_tokens = answer_logliks(policy, prompt_ids, answers, [None] * len(rows), marker, answer_eos)
    report = {"model": run.model, "data": run.data, "prompts": len(rows), "answer_eos": answer_eos,
              "plain": nll_summary(plain, plain_tokens)}
    bound, bound_tokens = [None] * len(rows), [None] * len(rows)
    if samples > 0:
        decoding = Decoding(temperature=1.0, n=samples, max_new_tokens=max_new_tokens, seed=seed)
        chains = run.answers(decoding, "chains of thought", noise_keys=noise_keys)
        bound, bound_tokens = answer_logliks(policy, prompt_ids, answers, chains, marker, answer_eos)
        report["bound"] = {"samples": samples, "marker": marker, **nll_summary(bound, bound_tokens),
                           "marker_found": marker_rate(chains, marker)}
    return run.finish(report, render_likelihood, [
        {"index": i, "answer": answers[i], "plain": plain[i], "plain_tokens": plain_tokens[i], "bound": bound[i],
         "bound_tokens": bound_tokens[i]} for i in range(len(rows))])


def render_likelihood(report: dict) -> str:
    rows = [["plain log pi(a*|x)", f"{report['plain']['nll']:.4f}", f"{report['plain']['nll_per_token']:.4f}", ""]]
    if "bound" in report:
        b = report["bound"]
        rows.append([f"bound, n = {b['samples']} chains", f"{b['nll']:.4f}", f"{b['nll_per_token']:.4f}",
                     f"{b['marker_found']:.2f}"])
    return table_text(f"likelihood of the reference answers ({report['prompts']} prompts)",
                      ["", "NLL / answer", "NLL / token", "marker found"], rows)
