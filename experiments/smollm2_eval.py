"""Evaluation on the real model (issue 38, item 6): SmolLM2-135M-Instruct as `./dev setup` installs it, measured
with langplay's evaluation (the library functions behind `langplay eval accuracy / likelihood / diversity /
winrate`), answers sampled by vLLM (its CPU build), 2 threads, fp32, the model's own chat template (default
system prompt), no training.

    python experiments/smollm2_eval.py [--questions 200] [--likelihood-rows 200] [--pool 32] [--pairs 32]  # ~8 min
    python experiments/smollm2_eval.py --report-only                                # re-render the markdown

On GSM8K's test split (../shared/data/gsm8k/test.jsonl, its first --questions; MIT):
1. accuracy: near-greedy answers (T = 0.01, at most --tokens tokens), numeric_match of the answer's last number
   against the number after "####"; the mean with its 95% interval (bootstrap over questions, and Wilson's); the
   share of answers cut at the limit, and a strict reading (the number after the answer's own "####", if any).
2. likelihood of the reference solutions on the first --likelihood-rows questions (a forward pass over each prompt
   and solution, twice: 1.4 min per 100 rows here): log pi(solution | prompt), the whole GSM8K
   solution as written (calculator annotations and "#### n" included), in nats per token; and of the final number
   alone.
3. diversity of 8 samples per prompt at T = 1 on the first --pool questions: Self-BLEU (per prompt, words),
   distinct-1 / distinct-2; and from the same samples, pass@1 and pass@8.
4. win rate with SmolLM2 as the position-swapped judge (pairwise.JUDGE_PROMPT, near-greedy, at most
   --judge-tokens tokens) on the first --pairs questions: a sampled answer (the first of the 8) against the
   near-greedy one, and the reference solution against the near-greedy answer. The judge's parse rate, decisive
   rate (verdicts that pick an answer) and first-position rate (decisive verdicts that pick the answer shown first)
   come with each; a win rate is over the prompts whose two verdicts are both readable.
Answers and judge replies are cached in --work (runs/smollm2_eval): a stopped run continues where it stopped.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from pathlib import Path

from common import ROOT, cpu_model, experiment_parser, measured, table

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
MODEL = Path.home() / ".cache" / "langplay" / "models" / "SmolLM2-135M-Instruct"
DEFAULTS = {"questions": 200, "likelihood_rows": 200, "pool": 32, "pairs": 32, "tokens": 256, "judge_tokens": 128,
            "seed": 0}


def main() -> None:
    parser = experiment_parser("smollm2_eval", __doc__)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--data", type=Path, default=GSM8K)
    parser.add_argument("--questions", type=int, default=DEFAULTS["questions"], help="GSM8K questions: accuracy")
    parser.add_argument("--likelihood-rows", type=int, default=DEFAULTS["likelihood_rows"],
                        help="questions whose reference solutions are scored")
    parser.add_argument("--pool", type=int, default=DEFAULTS["pool"], help="questions with 8 samples each: diversity")
    parser.add_argument("--pairs", type=int, default=DEFAULTS["pairs"], help="questions judged pairwise")
    parser.add_argument("--tokens", type=int, default=DEFAULTS["tokens"], help="longest answer")
    parser.add_argument("--judge-tokens", type=int, default=DEFAULTS["judge_tokens"], help="longest judge reply")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="keys the sampling noise")
    args = parser.parse_args()
    measured(args, args.results / "smollm2_eval.json", lambda: measure(args), write_markdown)


def regenerate_line(options: dict) -> str:
    """The command that measures these results: the options away from their defaults."""
    away = [f"--{key.replace('_', '-')} {value}" for key, value in options.items() if DEFAULTS.get(key) != value]
    return " ".join(["python experiments/smollm2_eval.py", *away])


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's 95% score interval of a proportion (sound at 0 successes, where the bootstrap collapses to a point)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def strict_answer(text: str) -> str | None:
    """The number after the answer's own last "####", if it wrote one (GSM8K's format)."""
    if "####" not in text:
        return None
    found = re.findall(r"-?[\d,]*\.?\d+", text.rsplit("####", 1)[1])
    return found[0].replace(",", "") if found else None


def same_number(a: str | None, b: str) -> bool:
    try:
        return a is not None and float(a) == float(b)
    except ValueError:
        return False


def measure(args) -> dict:
    import torch

    from langplay.evaluation import pairwise
    from langplay.evaluation.accuracy import accuracy_metrics, evaluate_accuracy
    from langplay.evaluation.answers import Decoding, answer_cache, generate_answers, load_eval_policy
    from langplay.evaluation.frontier import evaluate_diversity
    from langplay.evaluation.likelihood import evaluate_likelihood
    from langplay.evaluation.metrics import bootstrap_interval
    from langplay.rewards.verifiers import gsm8k_answer, numeric_match

    model, data, work = str(args.model), str(args.data), args.work
    work.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in args.data.read_text().splitlines()[: args.questions]]
    common = dict(prompt_column="question", answer_column="answer", seed=args.seed, backend="vllm", progress=False)
    timings, report = {}, {"model": model, "data": data, "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
                           "options": {k: getattr(args, k) for k in DEFAULTS},
                           "regenerate": regenerate_line({k: getattr(args, k) for k in DEFAULTS})}
    commands = []

    # 1. accuracy, near-greedy
    started = time.perf_counter()
    evaluate_accuracy(model, data, "numeric_match", answer_format="gsm8k", max_new_tokens=args.tokens,
                      limit=args.questions, output=work / "accuracy", **common)
    timings["accuracy"] = time.perf_counter() - started
    commands.append(f"langplay eval accuracy --model {model} --data {data} --question-column question --answer-format "
                    f"gsm8k --verifier numeric_match --limit {args.questions} --max-new-tokens {args.tokens} "
                    f"--backend vllm --seed {args.seed}")
    per_row = [json.loads(line) for line in (work / "accuracy" / "rows.jsonl").read_text().splitlines()]
    policy = load_eval_policy(model, device="cpu")
    scores = [r["greedy_score"] for r in per_row]
    lengths = [len(policy.encode(r["greedy_answer"])) for r in per_row]
    strict = [float(same_number(strict_answer(r["greedy_answer"]), r["gold"])) for r in per_row]
    low, high = bootstrap_interval(scores, seed=args.seed)
    report["accuracy"] = {
        "questions": len(per_row), "greedy": statistics.fmean(scores), "ci_low": low, "ci_high": high,
        "wilson": wilson(int(sum(scores)), len(scores)), "strict": statistics.fmean(strict),
        "wrote_hashes": statistics.fmean("####" in r["greedy_answer"] for r in per_row),
        "cut_at_limit": statistics.fmean(n >= args.tokens for n in lengths),
        "mean_tokens": statistics.fmean(lengths),
        "right": [r["index"] for r in per_row if r["greedy_score"] == 1.0],
        "examples": [{"gold": r["gold"], "answer": r["greedy_answer"], "score": r["greedy_score"]}
                     for r in per_row[:3]]}

    # 2. likelihood of the reference solutions, and of the final number alone
    started = time.perf_counter()
    report["likelihood"] = {}
    for name, answer_format in [("solution", "plain"), ("final number", "gsm8k")]:
        folder = work / f"likelihood-{answer_format}"
        out = evaluate_likelihood(model, data, samples=0, answer_format=answer_format, limit=args.likelihood_rows,
                                  output=folder, **common)
        lines = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
        per_token = [-r["plain"] / r["plain_tokens"] for r in lines]
        low, high = bootstrap_interval(per_token, seed=args.seed)
        report["likelihood"][name] = {"rows": len(lines), "nll_per_token": out["plain"]["nll_per_token"],
                                      "nll": out["plain"]["nll"],
                                      "mean_tokens": statistics.fmean(r["plain_tokens"] for r in lines),
                                      "row_mean_per_token": statistics.fmean(per_token), "ci_low": low, "ci_high": high}
        commands.append(f"langplay eval likelihood --model {model} --data {data} --question-column question "
                        f"--answer-format {answer_format} --samples 0 --limit {args.likelihood_rows}")
    timings["likelihood"] = time.perf_counter() - started

    # 3. diversity of 8 samples per prompt at T = 1, and pass@k from them
    started = time.perf_counter()
    diversity = evaluate_diversity(model, data, temperatures="1.0", samples=8, verifier="numeric_match",
                                   answer_format="gsm8k", max_new_tokens=args.tokens, limit=args.pool,
                                   output=work / "diversity", **common)
    timings["diversity"] = time.perf_counter() - started
    commands.append(f"langplay eval diversity --model {model} --data {data} --question-column question --temperatures "
                    f"1.0 --samples 8 --verifier numeric_match --answer-format gsm8k --limit {args.pool} "
                    f"--max-new-tokens {args.tokens} --backend vllm --seed {args.seed}")
    prompts = [r["question"] for r in rows]
    sampled = Decoding(1.0, 8, args.tokens, seed=args.seed)
    pools = generate_answers(policy, model, prompts[: args.pool], sampled, answer_cache(work / "diversity"), "vllm",
                             progress=False)  # the samples diversity drew, from its cache
    golds = [gsm8k_answer(r["answer"]) for r in rows]
    sampled_scores = [[numeric_match(s, gold) for s in pool] for pool, gold in zip(pools, golds)]
    point = diversity["points"][0]
    report["diversity"] = {"prompts": args.pool, "samples": 8, "temperature": 1.0,
                           **{k: point[k] for k in ("self_bleu", "distinct_1", "distinct_2", "score")},
                           "distinct_answers": statistics.fmean(len({s.strip() for s in p}) / len(p) for p in pools),
                           **{k: v for k, v in accuracy_metrics(None, sampled_scores).items() if k != "prompts"},
                           "greedy_same_prompts": statistics.fmean(scores[: args.pool])}

    # 4. win rates, SmolLM2 as the position-swapped judge
    started = time.perf_counter()
    cache = answer_cache(work / "winrate")
    judge = pairwise.llm_judge(model, cache, max_new_tokens=args.judge_tokens, backend="vllm", device="cpu",
                               progress=False)
    greedy = [r["greedy_answer"] for r in per_row[: args.pairs]]
    instructions = prompts[: args.pairs]
    report["winrate"] = {}
    for name, answers in [("sampled (T = 1) vs near-greedy", [p[0] for p in pools[: args.pairs]]),
                          ("reference solution vs near-greedy", [r["answer"] for r in rows[: args.pairs]])]:
        if len(answers) < args.pairs:
            raise SystemExit(f"--pairs {args.pairs} needs --pool >= {args.pairs}")
        judgments = pairwise.judge_both_orders(judge, instructions, answers, greedy)
        summary = pairwise.summarize(judgments, seed=args.seed)
        report["winrate"][name] = {**summary, "replies": [j["reply_model_as_a"] for j in judgments[:3]]}
    timings["winrate"] = time.perf_counter() - started
    commands.append(f"(library) pairwise.llm_judge({model}, max_new_tokens={args.judge_tokens}, backend='vllm') on "
                    f"pairwise.judge_both_orders; the CLI's `langplay eval winrate --judge MODEL --backend vllm` "
                    f"compares two models at one temperature")
    report["commands"], report["seconds"] = commands, timings
    report["judge_prompt_tokens"] = statistics.fmean(
        len(policy.encode(policy.format_prompt(pairwise.judge_prompt(q, a, b))))
        for q, a, b in zip(instructions, greedy, [r["answer"] for r in rows[: args.pairs]]))
    return report


def cell(value, spec=".3f") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def write_markdown(report: dict, path: Path) -> None:
    a, o = report["accuracy"], report["options"]
    lines = ["# SmolLM2-135M-Instruct, evaluated (no training)", "",
             f"Model: {report['model']} (fp32, its chat template with the default system prompt), answers sampled by "
             f"vLLM (CPU build), {report['torch_threads']} torch threads; CPU: {report['cpu']}. Data: the first "
             f"{o['questions']} GSM8K test questions. Seed {o['seed']}. Regenerate: `{report['regenerate']}`. "
             f"Commands and provenance at the end.", "",
             f"## 1. GSM8K accuracy, near-greedy (T = 0.01, at most {o['tokens']} tokens)", ""]
    lines += table(["questions", "accuracy (numeric match)", "95% bootstrap", "95% Wilson",
                    "strict (after its own ####)", "wrote ####", f"cut at {o['tokens']} tokens", "mean tokens"],
                   [[str(a["questions"]), f"**{a['greedy']:.3f}**", f"[{cell(a['ci_low'])}, {cell(a['ci_high'])}]",
                     f"[{cell(a['wilson'][0])}, {cell(a['wilson'][1])}]", f"{a['strict']:.3f}",
                     f"{a['wrote_hashes']:.2f}", f"{a['cut_at_limit']:.2f}", f"{a['mean_tokens']:.0f}"]])
    lines += ["", f"Right: questions {', '.join(map(str, a['right'])) or 'none'} (0-based). The first answer, as "
              f"written (gold {a['examples'][0]['gold']}, scored {a['examples'][0]['score']:.0f}):", "",
              "> " + a["examples"][0]["answer"].strip().replace("\n", "\n> "), "",
              "## 2. Likelihood of the reference solutions (teacher forcing after the chat template's prompt)", ""]
    rows = [[name, str(v["rows"]), f"**{v['nll_per_token']:.3f}**",
             f"{v['row_mean_per_token']:.3f} [{cell(v['ci_low'])}, {cell(v['ci_high'])}]", f"{v['nll']:.2f}",
             f"{v['mean_tokens']:.1f}"] for name, v in report["likelihood"].items()]
    lines += table(["answer scored", "questions", "NLL per token, pooled (all NLL / all tokens)",
                    "NLL per token, mean of rows [95% bootstrap]", "NLL per answer", "tokens per answer"], rows)
    d = report["diversity"]
    lines += ["", f"## 3. Diversity: {d['samples']} samples per prompt at T = {d['temperature']:g}, "
              f"{d['prompts']} questions", ""]
    lines += table(["Self-BLEU (per prompt, lower = more diverse)", "distinct-1", "distinct-2", "distinct answers",
                    "pass@1", "pass@8", "near-greedy on the same questions"],
                   [[f"{d['self_bleu']:.3f}", f"{d['distinct_1']:.3f}", f"{d['distinct_2']:.3f}",
                     f"{d['distinct_answers']:.2f}", f"{d['pass@1']:.3f}", f"{d['pass@8']:.3f}",
                     f"{d['greedy_same_prompts']:.3f}"]])
    lines += ["", f"## 4. Win rate, SmolLM2 as the position-swapped judge ({o['pairs']} questions, replies of at most "
              f"{o['judge_tokens']} tokens; judge prompts {report['judge_prompt_tokens']:.0f} tokens on average)", ""]
    rows = []
    for name, s in report["winrate"].items():
        rows.append([name, f"{s['parse_rate']:.2f} ({s['parse_failures']} of {2 * s['prompts']} unreadable)",
                     cell(s["decisive_rate"], ".2f"), cell(s["first_position_rate"], ".2f"),
                     f"{s['judged']} of {s['prompts']}", cell(s["win_rate"]),
                     f"[{cell(s['ci_low'])}, {cell(s['ci_high'])}]" if s["win_rate"] is not None else "—",
                     cell(s["position_consistency"], ".2f")])
    lines += table(["first answer vs second", "parse rate", "decisive rate", "first-position rate",
                    "prompts judged", "win rate of the first", "95% bootstrap", "position consistency"], rows)
    first = next(iter(report["winrate"].values()))
    lines += ["", "The judge's first reply (first answer shown as A), its last 300 characters:", "",
              "> " + first["replies"][0][-300:].strip().replace("\n", "\n> ")]
    reading = path.with_name(path.stem + "_reading.md")
    if reading.is_file():
        lines += ["", reading.read_text().strip()]
    seconds = ", ".join(f"{k} {v / 60:.1f} min" for k, v in report["seconds"].items())
    lines += ["", "## How it was measured", "", f"Time: {seconds}. The same numbers from the command line:", ""]
    lines += [f"    {c}" for c in report["commands"]]
    lines += ["", "```json", json.dumps(report["provenance"], indent=1), "```", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
