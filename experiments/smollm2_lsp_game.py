"""The papers' game on a small real model (issue 38, item 5): can SmolLM2-135M-Instruct play LSP's two roles and its
judge? Nothing is trained: the model as `./dev setup` installs it writes Box 1 queries, answers them, and judges.

    python experiments/smollm2_lsp_game.py [--queries 64] [--pairs 48]   # ~10 min on 2 CPU threads
    python experiments/smollm2_lsp_game.py --report-only                 # re-render results/smollm2_lsp_game.md

1. The challenger (Box 1, temperature 1, 128 tokens at most, as lsp's defaults) under three fillings of Box 1's
   {task} / {template}: empty (the paper's LSP-Zero prompt), an request for a short text, a math word problem.
   Per filling: the share of queries that are one self-contained instruction (langplay.algorithms.lsp's
   `well_formed_queries`: no tags or {placeholders}, no answer given, one input) and not cut at 128 tokens.
2. The judge on the queries of the two filled prompts, each answered once by the model (temperature 1, 256
   tokens): Box 3 written and parsed (lsp.judge=reply, the paper's; near-greedy, 256 tokens), its readable rate and
   parse outcomes; and Box 3 read from the digits' next-token probabilities (lsp.judge=digits), their mass.
3. Whether either judge discriminates: GSM8K test questions (../shared/data/gsm8k), each judged with its reference
   solution, with the next question's solution, and with the reference's words shuffled (nonsense); the mean score
   of each, and the paired difference (reference minus the other) with its 95% bootstrap interval.
The model runs in bfloat16 (vLLM samples, transformers reads the digits); seeds are the query / pair indices.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from pathlib import Path

from common import ROOT, cpu_model, experiment_parser, interval_cell, measured, table

FILLINGS = {  # name -> (task, template) of Box 1; a template's {placeholders} are what the challenger fills
    "empty (paper's LSP-Zero)": ("", ""),
    "short text": ("write a short text on a topic", "Write a {kind of short text} about {topic}."),
    "math word problem": ("solve a grade-school math word problem",
                          "{name} has {number} {things}. {an event that changes how many}. How many {things} does "
                          "{name} have now?"),
}
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
MODEL = Path.home() / ".cache" / "langplay" / "models" / "SmolLM2-135M-Instruct"


def main() -> None:
    parser = experiment_parser("smollm2_lsp_game", __doc__)
    parser.add_argument("--queries", type=int, default=64, help="challenger queries per filling")
    parser.add_argument("--pairs", type=int, default=48, help="GSM8K questions judged three ways")
    parser.add_argument("--model", type=Path, default=MODEL)
    args = parser.parse_args()
    measured(args, args.results / "smollm2_lsp_game.json", lambda: measure(args), write_markdown)


def measure(args) -> dict:
    import torch

    from langplay.algorithms.lsp import CHALLENGER_PROMPT, well_formed_queries
    from langplay.config import ModelConfig, SamplingConfig
    from langplay.models import load_model, load_tokenizer
    from langplay.policy import Policy
    from langplay.rewards.self_judge import DigitJudge, ReferenceJudge
    from langplay.sampling import make_sampler

    config = ModelConfig(name_or_path=str(args.model), device="cpu", dtype="bfloat16")
    model = load_model(config, torch.device("cpu"))
    policy = Policy(model, load_tokenizer(config), reference=model)  # untrained: the policy is its own reference
    sampling = SamplingConfig(backend="vllm", temperature=1.0, max_new_tokens=256, max_prompt_tokens=2048)
    sampler = make_sampler(sampling, policy)
    judges = {"reply": ReferenceJudge(policy, batch_size=64, sampling=sampling),  # near-greedy, 256 tokens
              "digits": DigitJudge(policy)}

    challenger = {}
    for name, (task, template) in FILLINGS.items():
        text = policy.format_prompt(CHALLENGER_PROMPT.format(task=task, template=template))
        samples = sampler.generate([text] * args.queries, 1, list(range(args.queries)), 128)
        well_formed = well_formed_queries(samples.texts)
        challenger[name] = {
            "queries": samples.texts, "finished": samples.finished, "well_formed": well_formed,
            "valid": statistics.mean(w and f for w, f in zip(well_formed, samples.finished)),
            "well_formed_share": statistics.mean(well_formed), "truncated": 1 - statistics.mean(samples.finished),
            "tokens": statistics.mean(map(len, samples.completion_ids))}
        print(name, {k: v for k, v in challenger[name].items() if not isinstance(v, list)}, file=sys.stderr)

    judged = {}
    for name in list(FILLINGS)[1:]:
        queries = challenger[name]["queries"]
        answers = sampler.generate([policy.format_prompt(q) for q in queries], 1,
                                   [10_000 + i for i in range(len(queries))]).texts
        judged[name] = {"answers": answers}
        for kind, judge in judges.items():
            scores, metrics = judge.score(queries, answers, {"raw_prompt": queries})
            judged[name][kind] = {"scores": scores, "metrics": metrics}

    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[: args.pairs]]
    questions = [r["question"] for r in rows]
    variants = {"reference": [r["answer"] for r in rows],
                "another question's solution": [rows[(i + 1) % len(rows)]["answer"] for i in range(len(rows))],
                "shuffled words": [shuffled(r["answer"], i) for i, r in enumerate(rows)]}
    discrimination = {kind: {variant: judge.score(questions, answers, {"raw_prompt": questions})[0]
                             for variant, answers in variants.items()} for kind, judge in judges.items()}
    return {"model": str(args.model), "dtype": "bfloat16", "queries": args.queries, "pairs": args.pairs,
            "fillings": {name: list(pair) for name, pair in FILLINGS.items()}, "challenger": challenger,
            "judged": judged, "discrimination": discrimination, "cpu": cpu_model()}


def shuffled(text: str, seed: int) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


def paired(report_scores: dict, other: str) -> dict:
    """Reference minus `other` per question, over the questions both scores read (the reply judge's NaN left out)."""
    from langplay.evaluation.metrics import bootstrap_interval

    pairs = [(a, b) for a, b in zip(report_scores["reference"], report_scores[other]) if a == a and b == b]
    differences = [a - b for a, b in pairs]
    if not differences:
        return {"gain": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "wins": 0, "losses": 0}
    low, high = bootstrap_interval(differences)
    return {"gain": statistics.mean(differences), "ci_low": low, "ci_high": high, "n": len(differences),
            "wins": sum(d > 0 for d in differences), "losses": sum(d < 0 for d in differences)}


def readable(scores: list[float]) -> float:
    return sum(s == s for s in scores) / len(scores)


def mean_readable(scores: list[float]) -> str:
    values = [s for s in scores if s == s]
    return f"{statistics.mean(values):.2f}" if values else "—"


def write_markdown(report: dict, path: Path) -> None:
    lines = ["# The papers' game on SmolLM2-135M-Instruct (no training)", "",
             f"Model: {report['model']} ({report['dtype']}); {report['queries']} queries per Box 1 filling; "
             f"{report['pairs']} GSM8K test questions for the judges' discrimination. CPU: {report['cpu']}. "
             f"Regenerate: `python experiments/smollm2_lsp_game.py`. Provenance at the end.", "",
             "## 1. The challenger: Box 1 queries (temperature 1, at most 128 tokens)", ""]
    rows = []
    for name, c in report["challenger"].items():
        task, template = report["fillings"][name]
        rows.append([name, f"`{task}`" if task else "—", f"`{template}`" if template else "—",
                     f"**{c['valid']:.2f}**", f"{c['well_formed_share']:.2f}", f"{c['truncated']:.2f}",
                     f"{c['tokens']:.0f}"])
    lines += table(["Box 1 filling", "task", "template", "valid (one instruction, not cut)", "well-formed",
                    "cut at 128 tokens", "mean tokens"], rows)
    lines += ["", "The first three queries of each filling, as written:", ""]
    for name, c in report["challenger"].items():
        for query, ok, finished in list(zip(c["queries"], c["well_formed"], c["finished"]))[:3]:
            shown = query.strip().replace("\n", " ⏎ ")
            shown = shown[:200] + ("…" if len(shown) > 200 else "")
            lines.append(f"- *{name}*, {'valid' if ok and finished else 'not valid'}: {shown}")
    lines += ["", "## 2. The judge on the model's own answers to those queries", ""]
    rows = []
    for name, j in report["judged"].items():
        reply, digits = j["reply"], j["digits"]
        outcomes = ", ".join(f"{k.split('/')[-1]} {int(v)}" for k, v in sorted(reply["metrics"].items()))
        rows.append([name, f"**{readable(reply['scores']):.2f}** ({outcomes})", mean_readable(reply["scores"]),
                     "1.00", f"{statistics.mean(digits['scores']):.2f}",
                     f"{digits['metrics']['self_reward_digit_mass']:.2f}"])
    lines += table(["queries of", "reply judge: readable (parse outcomes)", "its mean score", "digit judge: readable",
                    "its mean expected score", "its mass on 0-7"], rows)
    lines += ["", "## 3. Does the judge discriminate? GSM8K questions with three answers", ""]
    rows = []
    for kind, scores in report["discrimination"].items():
        for other in ("another question's solution", "shuffled words"):
            p = paired(scores, other)
            rows.append([kind, other, mean_readable(scores["reference"]), mean_readable(scores[other]),
                         interval_cell(p) if p["n"] else "—", f"{p['wins']} / {p['losses']} of {p['n']}"])
    lines += table(["judge", "the reference solution against", "mean score, reference", "mean score, other",
                    "reference − other [95% CI]", "reference wins / loses"], rows)
    reading = path.with_name(path.stem + "_reading.md")
    if reading.is_file():
        lines += ["", reading.read_text().strip()]
    lines += ["", "## Provenance", "", "```", json.dumps(report.get("provenance", {}), indent=1), "```", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
