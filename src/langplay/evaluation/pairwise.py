"""Pairwise win rate: a model and a baseline answer the same prompts, and a judge decides each pair, in both orders.

A judge is any callable `judge(instructions, answers_a, answers_b) -> replies`, one reply (text) per pair, with a
verdict in it: `[[A]]`, `[[B]]` or `[[tie]]`. The judges here:
- `llm_judge`: a local or Hub causal LM, prompted with `JUDGE_PROMPT` and decoded through langplay's Sampler;
- `http_judge`: a model behind an OpenAI-compatible endpoint (`langplay.rewards.http_judge.ChatClient`);
- `completion_judge`: any `complete(prompts) -> replies` with `JUDGE_PROMPT` (the two above are built on it);
- `reward_model_judge` / `scores_judge`: the answer that scores higher wins, a tie within `tie_margin`; its
  reply states both scores and the verdict, so every judge leaves the same kind of record.
Replies of the text judges are cached with the answers (`answers.jsonl` of the eval folder): an interrupted
evaluation continues, and a finished one run again calls no model at all.

How a prompt is scored (the combination rule). Each pair is judged twice, the model's answer shown first as A,
then as B, so that a judge who prefers a position gains nothing from it. Each order gives the model an outcome:
1 (its answer preferred), 0.5 (tie) or 0 (the baseline's preferred). The prompt's score is the mean of the two
outcomes, one of 0, 0.25, 0.5, 0.75, 1; the win rate is the mean of the prompts' scores, which is also the win
rate over all 2n judgments with ties counted half. A prompt is a win when its score is above 0.5, a tie at 0.5,
a loss below. So a judge that always picks A scores every prompt 0.5 (a tie, with the two orders disagreeing).
Parse failures: a reply with no readable verdict is a parse failure; a prompt with a failure in either order is
left out of the win rate, its counts and the consistency (scoring it from the other order alone would let that
order's position bias back in), and reported: `parse_failures` counts the replies, `excluded` the prompts.
Position consistency: the share of judged prompts whose two orders give the model the same outcome.
The judge's rates, over its 2n replies: `parse_rate` the share with a readable verdict; `decisive_rate` the share
of readable verdicts that pick an answer (A or B, not a tie); `first_position_rate` the share of those decisive
verdicts that pick the answer shown first (A): 0.5 for a judge without position bias, 1 for one that always says A.
Intervals: a percentile bootstrap over prompts (seeded), per subset and overall.
"""

from __future__ import annotations

import gc
import json
import re
from pathlib import Path
from typing import Callable, Sequence

from langplay.errors import LangplayError
from langplay.evaluation.answers import (GREEDY_TEMPERATURE, AnswerCache, Decoding, answer_cache, answer_key,  # noqa: F401
                                         generate_answers, load_eval_policy)
from langplay.evaluation.metrics import bootstrap_interval
from langplay.evaluation.report import table_text
from langplay.files import save_figure, write_json, write_jsonl

PairJudge = Callable[[list[str], list[str], list[str]], list[str]]  # (instructions, answers A, answers B) -> replies
Complete = Callable[[list[str]], list[str]]  # judge prompts -> replies

COMBINATION_RULE = ("each pair judged twice (model as A, then as B); outcome per order 1 win / 0.5 tie / 0 loss; "
                    "prompt score = mean of the two; win rate = mean prompt score; win > 0.5 > loss; a prompt with "
                    "an unreadable verdict in either order is excluded and counted")

# Ours, in the style of MT-Bench's and AlpacaEval's pairwise judges: the criteria, the two answers, a short
# reasoning first (judges decide better after it), then a verdict in a form no answer is likely to contain.
JUDGE_PROMPT = """Please act as an impartial judge and compare two AI assistants' answers to the user's instruction \
below. Choose the answer that follows the instruction better: the more helpful, correct, relevant and clear one. \
Do not let the order in which the answers appear, their length or the assistants' names sway you; a longer \
answer is better only if what it adds is useful.

[Instruction]
{instruction}

[Answer A]
{answer_a}

[Answer B]
{answer_b}

First explain your reasoning briefly, in at most 100 words. Then, on the last line, give your verdict in exactly \
one of these forms: [[A]] if answer A is better, [[B]] if answer B is better, [[tie]] if they are equally good."""

_VERDICT = re.compile(r"\[\[\s*(a|b|c|tie)\s*\]\]", re.IGNORECASE)  # [[C]]: MT-Bench's tie
_BARE_VERDICT = re.compile(r"\s*(a|b|tie)\s*\.?\s*", re.IGNORECASE)  # a whole reply of just "A", "B" or "tie"


# -- verdicts and the combination rule: pure functions ---------------------------------------------------------
def parse_verdict(reply) -> str | None:
    """"A", "B" or "tie" from a judge's reply, or None when it holds none: the last `[[A]]` / `[[B]]` / `[[tie]]`
    (`[[C]]` also means tie), else a reply that is only A, B or tie. Never raises, whatever it is given."""
    text = reply if isinstance(reply, str) else ""
    found = _VERDICT.findall(text[-20000:])  # the verdict ends the reply; a judge may quote the format before it
    if found:
        verdict = found[-1].lower()
    else:
        bare = _BARE_VERDICT.fullmatch(text) if len(text) <= 40 else None
        if bare is None:
            return None
        verdict = bare.group(1).lower()
    return {"a": "A", "b": "B", "c": "tie", "tie": "tie"}[verdict]


def model_outcome(verdict: str | None, model_shown_as: str) -> float | None:
    """The model's outcome in one order: 1 when its answer (shown as "A" or "B") is preferred, 0.5 for a tie,
    0 when the baseline's is; None for an unreadable verdict."""
    if verdict is None:
        return None
    if verdict == "tie":
        return 0.5
    return 1.0 if verdict == model_shown_as else 0.0


def combine_orders(outcome_model_as_a: float | None, outcome_model_as_b: float | None) -> float | None:
    """The prompt's score: the mean of its two orders' outcomes; None when either is unreadable."""
    if outcome_model_as_a is None or outcome_model_as_b is None:
        return None
    return (outcome_model_as_a + outcome_model_as_b) / 2


def summarize(judgments: Sequence[dict], seed: int = 0, resamples: int = 1000) -> dict:
    """Win rate, its bootstrap interval, wins / ties / losses, parse failures and position consistency of some
    prompts' judgments (records of `judge_both_orders`)."""
    judged = [j for j in judgments if j["score"] is not None]
    scores = [j["score"] for j in judged]
    low, high = bootstrap_interval(scores, resamples=resamples, seed=seed)
    verdicts = [j[key] for j in judgments for key in ("verdict_model_as_a", "verdict_model_as_b")]
    readable = [v for v in verdicts if v is not None]
    decisive = [v for v in readable if v != "tie"]
    failures = len(verdicts) - len(readable)
    return {
        "prompts": len(judgments),
        "judged": len(judged),
        "win_rate": sum(scores) / len(scores) if scores else None,
        "ci_low": low,
        "ci_high": high,
        "wins": sum(s > 0.5 for s in scores),
        "ties": sum(s == 0.5 for s in scores),
        "losses": sum(s < 0.5 for s in scores),
        "parse_failures": failures,
        "excluded": len(judgments) - len(judged),
        "position_consistency": sum(j["consistent"] for j in judged) / len(judged) if judged else None,
        "parse_rate": len(readable) / len(verdicts) if verdicts else None,
        "decisive_rate": len(decisive) / len(readable) if readable else None,
        "first_position_rate": decisive.count("A") / len(decisive) if decisive else None,
    }


def win_rate_report(judgments: Sequence[dict], seed: int = 0, resamples: int = 1000) -> dict:
    """`overall` and, when the prompts carry a subset, one summary per subset (sorted by name)."""
    report = {"overall": summarize(judgments, seed, resamples), "subsets": {}}
    names = sorted({j["subset"] for j in judgments if j.get("subset") is not None})
    for name in names:
        report["subsets"][name] = summarize([j for j in judgments if j.get("subset") == name], seed, resamples)
    return report


# -- judging ------------------------------------------------------------------------------------------------
def instruction_text(prompt) -> str:
    """What the judge is shown as the instruction: the text, or a chat's last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1]) if users else str(prompt)


def reply_texts(replies, expected: int, judge) -> list[str]:
    """The judge's replies as strings ("" for anything that is not text), checked to be one per pair."""
    if not isinstance(replies, (list, tuple)) or len(replies) != expected:
        got = len(replies) if isinstance(replies, (list, tuple)) else type(replies).__name__
        raise LangplayError(f"judge {judge_name(judge)} returned {got} replies for {expected} pairs")
    return [r if isinstance(r, str) else "" for r in replies]


def judge_name(judge) -> str:
    return getattr(judge, "__name__", type(judge).__name__)


def judge_both_orders(judge: PairJudge, prompts: Sequence, model_answers: Sequence[str],
                      baseline_answers: Sequence[str], subsets: Sequence | None = None) -> list[dict]:
    """One record per prompt: the prompt, both answers, the judge's reply and verdict with the model's answer as
    A and as B, the model's outcome in each order, the prompt's score and whether the two orders agree. The
    judge sees all 2n pairs in one call (it batches them as it likes)."""
    instructions = [instruction_text(p) for p in prompts]
    n = len(instructions)
    replies = reply_texts(judge(instructions + instructions, list(model_answers) + list(baseline_answers),
                                list(baseline_answers) + list(model_answers)), 2 * n, judge)
    records = []
    for i in range(n):
        as_a, as_b = parse_verdict(replies[i]), parse_verdict(replies[n + i])
        outcome_a, outcome_b = model_outcome(as_a, "A"), model_outcome(as_b, "B")
        score = combine_orders(outcome_a, outcome_b)
        records.append({
            "index": i, "subset": None if subsets is None else str(subsets[i]), "prompt": instructions[i],
            "model_answer": model_answers[i], "baseline_answer": baseline_answers[i],
            "reply_model_as_a": replies[i], "verdict_model_as_a": as_a, "outcome_model_as_a": outcome_a,
            "reply_model_as_b": replies[n + i], "verdict_model_as_b": as_b, "outcome_model_as_b": outcome_b,
            "score": score, "consistent": None if score is None else outcome_a == outcome_b,
        })
    return records


def judge_prompt(instruction: str, answer_a: str, answer_b: str, template: str = JUDGE_PROMPT) -> str:
    return template.format(instruction=instruction, answer_a=answer_a, answer_b=answer_b)


def completion_judge(complete: Complete, template: str = JUDGE_PROMPT, name: str = "completion_judge") -> PairJudge:
    """A pair judge from any `complete(prompts) -> replies`: each pair put into `template` ({instruction},
    {answer_a}, {answer_b})."""

    def judge(instructions, answers_a, answers_b):
        return complete([judge_prompt(q, a, b, template) for q, a, b in zip(instructions, answers_a, answers_b)])

    judge.__name__ = name
    return judge


def cached_complete(complete: Complete, cache: AnswerCache, identity: str, batch_size: int = 64,
                    progress: bool = True, label: str = "judging") -> Complete:
    """`complete` with its replies kept in `cache` under (identity, prompt): only prompts never answered reach it,
    `batch_size` at a time, each batch cached as soon as it is back."""
    from tqdm.auto import tqdm

    def run(prompts: list[str]) -> list[str]:
        keys = [answer_key(identity, p, Decoding()) for p in prompts]
        todo = {}  # key -> the first prompt with it: a prompt asked twice is sent once
        for i, key in enumerate(keys):
            if cache.get(key) is None:
                todo.setdefault(key, i)
        todo = list(todo.items())
        bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=label, disable=not progress or not todo,
                   leave=False)
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            replies = reply_texts(complete([prompts[i] for _, i in batch]), len(batch), complete)
            cache.put_many({key: [reply] for (key, _), reply in zip(batch, replies)})
            bar.update(len(batch))
        bar.close()
        return [cache.get(key)[0] for key in keys]

    return run


def llm_judge(name_or_path: str, cache: AnswerCache | None = None, template: str = JUDGE_PROMPT,
              max_new_tokens: int = 512, temperature: float = GREEDY_TEMPERATURE, backend: str | None = None,
              device: str = "auto", batch_size: int = 16, max_prompt_tokens: int = 4096,
              progress: bool = True) -> PairJudge:
    """A causal LM as judge, near-greedy through langplay's Sampler, its replies cached like answers. The model is
    loaded on the first call, so that it need not share memory with the models it judges."""
    loaded = {}
    decoding = Decoding(temperature=temperature, max_new_tokens=max_new_tokens)

    def complete(prompts: list[str]) -> list[str]:
        if "policy" not in loaded:
            loaded["policy"] = load_eval_policy(name_or_path, device=device)
        answers = generate_answers(loaded["policy"], name_or_path, prompts, decoding, cache, backend,
                                   batch_size=batch_size, progress=progress, label="judging",
                                   max_prompt_tokens=max_prompt_tokens)
        return [a[0] for a in answers]

    return completion_judge(complete, template, f"llm_judge:{name_or_path}")


def http_judge(url: str, model: str, cache: AnswerCache | None = None, template: str = JUDGE_PROMPT,
               max_tokens: int = 512, temperature: float = GREEDY_TEMPERATURE, progress: bool = True,
               **client_options) -> PairJudge:
    """A judge behind an OpenAI-compatible chat endpoint (e.g. `vllm serve MODEL`), through
    langplay.rewards.http_judge.ChatClient; `client_options`: timeout_s, retries, concurrency."""
    from langplay.rewards.http_judge import ChatClient

    client = ChatClient(url, model, max_tokens=max_tokens, temperature=temperature, **client_options)
    complete = client.complete
    if cache is not None:
        identity = json.dumps(["http", url, model, max_tokens, temperature])
        complete = cached_complete(complete, cache, identity, progress=progress)
    return completion_judge(complete, template, f"http_judge:{model}@{url}")


def scores_judge(score: Callable[[list[str], list[str]], list[float]], tie_margin: float = 1e-6,
                 name: str = "scores_judge") -> PairJudge:
    """A pair judge from a scorer `score(instructions, answers) -> floats`: the higher-scoring answer wins, a tie
    within `tie_margin`. Each distinct (instruction, answer) is scored once, so both orders see the same scores."""

    def judge(instructions, answers_a, answers_b):
        pairs = list(dict.fromkeys(list(zip(instructions, answers_a)) + list(zip(instructions, answers_b))))
        values = dict(zip(pairs, score([q for q, _ in pairs], [a for _, a in pairs])))
        replies = []
        for q, a, b in zip(instructions, answers_a, answers_b):
            sa, sb = values[(q, a)], values[(q, b)]
            verdict = "tie" if abs(sa - sb) <= tie_margin else ("A" if sa > sb else "B")
            replies.append(f"score A {sa:.6g}, score B {sb:.6g}: [[{verdict}]]")
        return replies

    judge.__name__ = name
    return judge


def reward_model_judge(name_or_path: str, tie_margin: float = 1e-6, device: str = "auto",
                       batch_size: int = 16) -> PairJudge:
    """A sequence-classification reward model as judge (RewardModelScorer), loaded on the first call."""
    loaded = {}

    def score(instructions, answers):
        if "scorer" not in loaded:
            from langplay.rewards.reward_model import RewardModelScorer

            loaded["scorer"] = RewardModelScorer(name_or_path, device=device, batch_size=batch_size)
        return loaded["scorer"](instructions, answers, raw_prompt=instructions)

    return scores_judge(score, tie_margin, f"reward_model:{name_or_path}")


# -- choosing a judge from options (the command line's, a preset's) ----------------------------------------
JUDGE_CHOICES = {"judge": ("judge",), "judge_url": ("judge_url", "judge_model"), "reward_model": ("reward_model",)}


def prefer_given_judge(options: dict, given: dict) -> dict:
    """A judge named on the command line replaces a preset's judge of another kind (the command line wins)."""
    named = [kind for kind, keys in JUDGE_CHOICES.items() if any(given.get(k) is not None for k in keys)]
    if not named:
        return options
    dropped = {k for kind, keys in JUDGE_CHOICES.items() if kind not in named for k in keys}
    return {k: v for k, v in options.items() if k not in dropped or given.get(k) is not None}


def check_judge_choice(judge: str | None, judge_url: str | None, judge_model: str | None,
                       reward_model: str | None) -> str:
    """Which kind of judge the options name ("judge", "judge_url", "reward_model"): exactly one, complete."""
    if (judge_url is None) != (judge_model is None):
        raise LangplayError("--judge-url and --judge-model go together: the endpoint's URL (e.g. http://host:8000/v1) "
                            "and the model it serves")
    named = [kind for kind, value in (("judge", judge), ("judge_url", judge_url), ("reward_model", reward_model))
             if value is not None]
    flags = {"judge": "--judge", "judge_url": "--judge-url/--judge-model", "reward_model": "--reward-model"}
    if not named:
        raise LangplayError("no judge given: set --judge MODEL, --judge-url URL with --judge-model NAME, "
                            "or --reward-model MODEL")
    if len(named) > 1:
        raise LangplayError(f"two judges given ({' and '.join(flags[k] for k in named)}): choose one")
    return named[0]


# -- the evaluation ------------------------------------------------------------------------------------------
def answer_prompts(name_or_path: str, prompts: Sequence, decoding: Decoding, cache: AnswerCache | None = None,
                   backend: str | None = None, device: str = "auto", system_prompt: str | None = None,
                   batch_size: int = 32, progress: bool = True, label: str = "answering") -> list[str]:
    """One answer per prompt from a model, loaded for this and freed after (the next model needs the memory)."""
    import torch

    policy = load_eval_policy(name_or_path, device=device)
    try:
        answers = generate_answers(policy, name_or_path, list(prompts), decoding, cache, backend, system_prompt,
                                   batch_size, progress, label)
    finally:
        del policy
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return [a[0] for a in answers]


def evaluate_win_rate(model: str, baseline: str, prompts: Sequence, judge: PairJudge,
                      subsets: Sequence | None = None, decoding: Decoding = Decoding(),
                      cache: AnswerCache | None = None, backend: str | None = None, device: str = "auto",
                      system_prompt: str | None = None, batch_size: int = 32, seed: int = 0,
                      resamples: int = 1000, progress: bool = True) -> tuple[dict, list[dict]]:
    """(report, judgments): the model and the baseline answer every prompt (cached, resumable), the judge decides
    each pair in both orders, and the report holds the win rate per subset and overall (see the module's
    docstring for the rule)."""
    if decoding.n != 1:
        raise LangplayError(f"a pairwise win rate compares one answer per prompt, not n={decoding.n}")
    model_answers = answer_prompts(model, prompts, decoding, cache, backend, device, system_prompt, batch_size,
                                   progress, "answering (model)")
    baseline_answers = answer_prompts(baseline, prompts, decoding, cache, backend, device, system_prompt,
                                      batch_size, progress, "answering (baseline)")
    judgments = judge_both_orders(judge, prompts, model_answers, baseline_answers, subsets)
    report = {"model": str(model), "baseline": str(baseline), "judge": judge_name(judge),
              "decoding": {"temperature": decoding.temperature, "max_new_tokens": decoding.max_new_tokens,
                           "top_p": decoding.top_p, "seed": decoding.seed},
              "rule": COMBINATION_RULE, "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95},
              **win_rate_report(judgments, seed, resamples)}
    return report, judgments


# -- output -------------------------------------------------------------------------------------------------
def summary_rows(report: dict) -> list[tuple[str, dict]]:
    return list(report["subsets"].items()) + [("overall", report["overall"])]


def fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def render_table(report: dict) -> str:
    header = ["subset", "prompts", "win rate", "95% CI", "wins", "ties", "losses", "consistent", "parse fail.",
              "decisive", "says A"]
    rows = [[name, str(s["prompts"]), fmt(s["win_rate"]), f"{fmt(s['ci_low'])}-{fmt(s['ci_high'])}", str(s["wins"]),
             str(s["ties"]), str(s["losses"]), fmt(s["position_consistency"], ".2f"),
             f"{s['parse_failures']} ({s['excluded']} excl.)", fmt(s.get("decisive_rate"), ".2f"),
             fmt(s.get("first_position_rate"), ".2f")] for name, s in summary_rows(report)]
    return table_text(f"win rate of {report['model']} against {report['baseline']} (judge {report['judge']})",
                      header, rows)


def plot_win_rates(report: dict, path: str | Path) -> Path:
    """Win rate per subset and overall, with 95% bootstrap intervals and the line of parity at 0.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, s) for name, s in summary_rows(report) if s["win_rate"] is not None]
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.45 * max(1, len(rows))))
    y = list(range(len(rows)))[::-1]
    rates = [s["win_rate"] for _, s in rows]
    errors = [[r - s["ci_low"] for r, (_, s) in zip(rates, rows)], [s["ci_high"] - r for r, (_, s) in zip(rates, rows)]]
    for yi, rate, low, high, (name, _) in zip(y, rates, errors[0], errors[1], rows):  # a point, so 0 still shows
        ax.errorbar(rate, yi, xerr=[[low], [high]], fmt="o", capsize=4,
                    color="black" if name == "overall" else "tab:blue")
    ax.axvline(0.5, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(y, [f"{name} ({s['judged']})" for name, s in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("win rate against the baseline (ties half), 95% bootstrap CI")
    ax.set_title(f"{Path(report['model']).name} vs {Path(report['baseline']).name}", fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def save_win_rate(report: dict, judgments: Sequence[dict], folder: str | Path) -> dict[str, Path]:
    """report.json, judgments.jsonl (every prompt's answers, raw replies and verdicts) and winrate.png."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    judged = write_jsonl(folder / "judgments.jsonl", judgments)
    return {"report": write_json(folder / "report.json", report), "judgments": judged,
            "plot": plot_win_rates(report, folder / "winrate.png")}
