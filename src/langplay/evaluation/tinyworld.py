"""Evaluation in tinyworld: test instances of every family and level, never training instances (tasks.split_of).

Reports, per family and level: mean checker score and exact accuracy; the pairwise win rate against a baseline
model (the judge scores both answers to each prompt; ties count half); diversity on the open-ended families
(k samples per prompt at temperature 1: distinct answers, distinct-n and Self-BLEU on characters, n <= 2);
and the likelihood of the reference answer: log pi(a*|x) for plain families, and for reasoning families the
multi-sample bound log (1/n) sum_i pi(a*|x, c_i) over n sampled chains of thought c_i (JEPO's proxy NLL).
For k checked samples per prompt (`checked_answers`): their quality and diversity by family kind
(`pool_stats_by_kind`) and how an IRL model's extracted reward ranks them (`pooled_reward_agreement`).
"""

from __future__ import annotations

import json
import statistics
import zlib
from collections import defaultdict
from pathlib import Path

from langplay.evaluation.answers import Decoding, generate_answers, load_eval_policy
from langplay.evaluation.likelihood import answer_logliks, target_logliks
from langplay.evaluation.metrics import bootstrap_interval, characters, pool_stats, reward_agreement, win_rate
from langplay.evaluation.report import table_text
from langplay.files import atomic_write_text, save_figure, write_json
from langplay.policy import Policy
from langplay.sampling.hf import HFSampler
from langplay.sampling.keys import key_of
from langplay.tinyworld.datasets import valid_answers
from langplay.tinyworld.judges import score as judge_score
from langplay.tinyworld.tasks import ANSWER_MARKER, FAMILIES, Task, check, sample_tasks

EVAL_TEMPERATURE = 0.01  # near-greedy, as in the LSP paper's evaluation
MAX_NEW_TOKENS = 96
DEVICE = "cpu"  # tinyworld's models are evaluated on CPU on any machine (the demo trains there too): the recorded
# numbers (README, results/) reproduce to the last digit only on the device they were measured on


def stable_id(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF  # str hash() changes between processes


def held_out_tasks(per_level: int = 12, seed: int = 0, families: list[str] | None = None,
                   levels: list[int] | None = None, split: str = "test") -> list[Task]:
    """`per_level` instances of each family and level (all levels, or `levels`), from the test split (or
    "tune", to choose hyper-parameters): never a training instance. A level's instances do not depend on
    which other levels are asked for."""
    tasks = []
    for name in families or sorted(FAMILIES):
        for level in levels or range(1, FAMILIES[name].levels + 1):
            tasks += sample_tasks(split, per_level, seed=key_of(seed, level, stable_id(name)), families=[name],
                                  levels=[level])
    return tasks


def load_policy(model: str | Path | Policy, device: str = DEVICE) -> Policy:
    """A model to evaluate (answers.load_eval_policy), on `device`; a Policy is used as it is."""
    return model if isinstance(model, Policy) else load_eval_policy(str(model), device=device)


def noise_keys(tasks: list[Task], seed: int) -> list[int]:
    """Each task's sampling key: it depends on (seed, task) alone, not on the other tasks or the batching."""
    return [key_of(seed, t.seed, stable_id(t.family)) for t in tasks]


def answer(policy: Policy, tasks: list[Task], n: int = 1, temperature: float = EVAL_TEMPERATURE, seed: int = 0,
           batch_prompts: int = 64, max_new_tokens: int = MAX_NEW_TOKENS,
           with_finished: bool = False) -> list[list[str]] | tuple[list[list[str]], list[list[bool]]]:
    """n responses per task, at most `max_new_tokens` tokens each (answers.generate_answers with the HF sampler and
    each task's `noise_keys`). `with_finished`: (responses, finished), finished[i][j] telling whether response j
    of task i ended with EOS (False: it was cut at the limit)."""
    decoding = Decoding(temperature, n, max_new_tokens, seed=seed)
    return generate_answers(policy, None, [t.prompt for t in tasks], decoding, backend="hf", batch_size=batch_prompts,
                            progress=False, noise_keys=noise_keys(tasks, seed), with_finished=with_finished)


def checked_answers(policy: Policy, tasks: list[Task], n: int, temperature: float, seed: int = 0,
                    max_new_tokens: int = MAX_NEW_TOKENS,
                    batch_prompts: int = 64) -> tuple[list[list[str]], list[list[bool]], list[list[float]]]:
    """`answer`'s n responses per task with whether each ended with EOS, and the checker's score of each:
    (responses, finished, scores), each indexed [task][sample]."""
    pools, finished = answer(policy, tasks, n=n, temperature=temperature, seed=seed, batch_prompts=batch_prompts,
                             max_new_tokens=max_new_tokens, with_finished=True)
    return pools, finished, [[check(task, r) for r in pool] for task, pool in zip(tasks, pools)]


def kinds_of(tasks: list[Task]) -> list[str]:
    """Each task's family kind (exact, open, reasoning, ...), the groups the by-kind reports pool over."""
    return [FAMILIES[t.family].kind for t in tasks]


def pool_stats_by_kind(tasks: list[Task], pools: list[list[str]], scores: list[list[float]],
                       finished: list[list[bool]], max_n: int = 2) -> dict[str, dict]:
    """metrics.pool_stats (on characters, Self-BLEU of order `max_n`) over the tasks of each family kind, by kind."""
    kinds = kinds_of(tasks)
    out = {}
    for kind in sorted(set(kinds)):
        index = [i for i, k in enumerate(kinds) if k == kind]
        out[kind] = pool_stats(*([part[i] for i in index] for part in (pools, scores, finished)),
                               max_n=max_n, tokenize=characters)
    return out


def pooled_reward_agreement(policy: Policy, tasks: list[Task], pools: list[list[str]], finished: list[list[bool]],
                            scores: list[list[float]], gamma: float) -> dict[str, dict[str, float]]:
    """metrics.reward_agreement over every sample of every task (pools[i]: task i's samples), grouped by
    the task's family kind: how the extracted reward at `gamma` ranks the samples as the checker does."""
    owners = [t for t, pool in zip(tasks, pools) for _ in pool]
    flat = lambda per_task: [x for row in per_task for x in row]  # noqa: E731
    return reward_agreement(policy, [policy.format_prompt(t.prompt) for t in owners], flat(pools), flat(finished),
                            flat(scores), kinds_of(owners), gamma=gamma)


def task_scores(model, tasks: list[Task], n: int = 1, temperature: float = EVAL_TEMPERATURE,
                seed: int = 0, exact: bool = False) -> list[float]:
    """Per task, the mean checker score of n answers: near-greedy by default; at temperature 1, of the policy
    that RL trains. `exact`: the share of answers that are fully right (accuracy) instead of partial credit."""
    pools = answer(load_policy(model), tasks, n=n, temperature=temperature, seed=seed)
    grade = (lambda task, r: float(check(task, r) == 1.0)) if exact else check
    return [statistics.mean(grade(task, r) for r in responses) for task, responses in zip(tasks, pools)]


def family_comparison(model, baseline, family: str | None, per_level: int = 32, seed: int = 0) -> dict:
    """One family's held-out score (near-greedy, the checker), or the whole mix's (family None), model against
    baseline: both means, the pairwise win rate and the paired bootstrap 95% interval of the gain."""
    tasks = held_out_tasks(per_level, seed, families=None if family is None else [family])
    mine, theirs = task_scores(model, tasks), task_scores(baseline, tasks)
    low, high = bootstrap_interval([a - b for a, b in zip(mine, theirs)])
    return {"family": family or "all", "prompts": len(tasks), "score": statistics.mean(mine),
            "baseline_score": statistics.mean(theirs), "gain_interval": [low, high], **win_rate(mine, theirs)}


def split_reference(task: Task) -> tuple[str, str]:
    """(chain of thought up to and including the marker, answer after it) of a reasoning family's reference."""
    cut = task.reference.rfind(ANSWER_MARKER) + len(ANSWER_MARKER)
    return task.reference[:cut], task.reference[cut:]


def reference_nll(policy: Policy, prompts: list[str], targets: list[str], groups: list[str]) -> dict[str, float]:
    """Per-token NLL (nats, EOS included) of each target after its (raw) prompt: over all pairs ("all") and over
    the pairs of each group (groups[i]: pair i's, e.g. its family's kind), pooled by tokens. Sets eval mode."""
    policy.model.eval()
    sums, lengths = target_logliks(policy, [policy.encode(policy.format_prompt(p)) for p in prompts], targets)
    out = {}
    for group in ("all", *sorted(set(groups))):
        index = [i for i, g in enumerate(groups) if group in ("all", g)]
        if index:
            out[group] = -sum(sums[i] for i in index) / sum(lengths[i] for i in index)
    return out


def reference_pairs(tasks: list[Task], k: int) -> tuple[list[str], list[str], list[str]]:
    """The (prompts, targets, kinds) columns whose likelihood `reference_nll` measures: an open task's k valid
    answers (tinyworld.datasets.valid_answers), any other task's one reference; kinds: the tasks' family kinds."""
    pairs = [(t.prompt, target, kind) for t, kind in zip(tasks, kinds_of(tasks)) for target in valid_answers(t, k)]
    return [p for p, _, _ in pairs], [target for _, target, _ in pairs], [kind for _, _, kind in pairs]


def reference_loglik(policy: Policy, tasks: list[Task], n: int = 4, seed: int = 0) -> list[float]:
    """Per task: log pi(reference + EOS | x), or for reasoning families the n-sample bound over sampled chains,
    each cut at its last marker (likelihood.answer_logliks, as `langplay eval likelihood` scores a file)."""
    reasoning = [t for t in tasks if FAMILIES[t.family].kind == "reasoning"]
    chains = answer(policy, reasoning, n=n, temperature=1.0, seed=seed + 1) if reasoning else []
    chain_of = dict(zip((id(t) for t in reasoning), chains))
    prompt_ids = [policy.encode(policy.format_prompt(t.prompt)) for t in tasks]
    targets = [split_reference(t)[1] if id(t) in chain_of else t.reference for t in tasks]
    logliks, _ = answer_logliks(policy, prompt_ids, targets, [chain_of.get(id(t)) for t in tasks], ANSWER_MARKER,
                                eos=True)
    return logliks


DIVERSITY = {"distinct_answers": "distinct_answers", "valid": "accuracy", "distinct_2": "distinct_2",
             "self_bleu": "self_bleu"}  # the report's name: metrics.pool_stats' name


def diversity(policy: Policy, tasks: list[Task], k: int = 8, seed: int = 0) -> dict:
    """Per open family, k samples per prompt at temperature 1: metrics.pool_stats on characters (Self-BLEU of
    order 2), its distinct answers, share valid (its accuracy), distinct-2 and Self-BLEU."""
    open_tasks = [t for t in tasks if FAMILIES[t.family].kind == "open"]
    if not open_tasks:
        return {}
    pools, finished, scores = checked_answers(policy, open_tasks, n=k, temperature=1.0, seed=seed + 2)
    out = {}
    for family in dict.fromkeys(t.family for t in open_tasks):
        index = [i for i, t in enumerate(open_tasks) if t.family == family]
        stats = pool_stats(*([part[i] for i in index] for part in (pools, scores, finished)), max_n=2,
                           tokenize=characters)
        out[family] = {key: stats[name] for key, name in DIVERSITY.items()}
    return out


def evaluate_world(model, baseline=None, per_level: int = 12, k: int = 8, n_bound: int = 4, seed: int = 0) -> dict:
    policy = load_policy(model)
    tasks = held_out_tasks(per_level, seed)
    responses = [r[0] for r in answer(policy, tasks, seed=seed)]
    scores = [check(t, r) for t, r in zip(tasks, responses)]
    loglik = reference_loglik(policy, tasks, n_bound, seed)
    cells: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for task, s, ll in zip(tasks, scores, loglik):
        cell = cells[(task.family, task.level)]
        cell["score"].append(s)
        cell["accuracy"].append(float(s == 1.0))
        cell["nll"].append(-ll)
    report = {
        "model": str(model if not isinstance(model, Policy) else "policy"),
        "per_level": per_level,
        "score": statistics.mean(scores),
        "accuracy": statistics.mean(float(s == 1.0) for s in scores),
        "scores": scores,  # per prompt, in held_out_tasks' order: paired comparisons between models use these
        "nll": statistics.mean(-x for x in loglik),
        "table": [
            {"family": f, "level": l, "kind": FAMILIES[f].kind, "verifiable": FAMILIES[f].verifiable,
             **{key: statistics.mean(values) for key, values in cell.items()}}
            for (f, l), cell in sorted(cells.items())
        ],
        "diversity": diversity(policy, tasks, k, seed),
        "examples": [{"prompt": t.prompt, "response": r, "score": s} for t, r, s in list(zip(tasks, responses, scores))[::37]],
    }
    if baseline is not None:
        base_policy = load_policy(baseline)
        base_responses = [r[0] for r in answer(base_policy, tasks, seed=seed)]
        mine = [judge_score(t.prompt, r) for t, r in zip(tasks, responses)]
        theirs = [judge_score(t.prompt, r) for t, r in zip(tasks, base_responses)]
        report["baseline"] = str(baseline)
        report["baseline_score"] = statistics.mean(check(t, r) for t, r in zip(tasks, base_responses))
        report["versus_baseline"] = win_rate(mine, theirs)
        for row in report["table"]:
            index = [i for i, t in enumerate(tasks) if (t.family, t.level) == (row["family"], row["level"])]
            row["win_rate"] = win_rate([mine[i] for i in index], [theirs[i] for i in index])["win_rate"]
            row["baseline_score"] = statistics.mean(check(tasks[i], base_responses[i]) for i in index)
    return report


def render_table(report: dict) -> str:
    has_base = "versus_baseline" in report
    header = ["family", "lvl", "score", "acc", "NLL"] + (["base score", "win rate"] if has_base else [])
    rows = []
    for row in report["table"]:
        family = row["family"] + ("" if row["verifiable"] else " (unverif.)")
        cells = [family, str(row["level"]), f"{row['score']:.3f}", f"{row['accuracy']:.2f}", f"{row['nll']:.2f}"]
        rows.append(cells + ([f"{row['baseline_score']:.3f}", f"{row['win_rate']:.2f}"] if has_base else []))
    notes = [f"overall: score {report['score']:.3f}, accuracy {report['accuracy']:.3f}, NLL {report['nll']:.3f}"]
    if has_base:
        v = report["versus_baseline"]
        notes.append(f"versus baseline (score {report['baseline_score']:.3f}): win rate {v['win_rate']:.3f} "
                     f"({v['wins']} wins, {v['ties']} ties, {v['losses']} losses)")
    notes += [f"diversity {family}: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items())
              for family, stats in report["diversity"].items()]
    return table_text(f"tinyworld held-out evaluation ({report['per_level']} prompts per cell)", header, rows, notes,
                      width=110)


def plot_report(report: dict, path: str | Path, before: dict | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["table"]
    labels = [f"{r['family']}{r['level']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.3), 4))
    x = range(len(rows))
    if "versus_baseline" in report:
        ax.bar([i - 0.2 for i in x], [r["baseline_score"] for r in rows], width=0.4, label="baseline")
        ax.bar([i + 0.2 for i in x], [r["score"] for r in rows], width=0.4, label="model")
        ax.legend()
    else:
        ax.bar(list(x), [r["score"] for r in rows])
    ax.set_xticks(list(x), labels, rotation=90, fontsize=7)
    ax.set_ylabel("mean checker score")
    ax.set_ylim(0, 1.05)
    ax.set_title("tinyworld held-out score by family and level")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def save_report(report: dict, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "eval.json", report)
    atomic_write_text(folder / "eval.txt", render_table(report))
    plot_report(report, folder / "eval.png")
    return folder


def challenger_queries(policy: Policy, prompts: int = 64, per_prompt: int = 32, seed: int = 100) -> dict:
    """The share of the challenger's queries that parse as a task, with a 95% normal interval (2048 queries:
    +- 0.016 near 0.85; 256 cannot tell 0.80 from 0.85)."""
    from langplay.config import load_config
    from langplay.tinyworld.tasks import CHALLENGER_PROMPT, parse

    sampler = HFSampler(load_config("lsp_tinyworld").sampling, policy)
    queries = sampler.generate([policy.format_prompt(CHALLENGER_PROMPT)] * prompts, per_prompt,
                               [key_of(seed, i) for i in range(prompts)]).texts
    tasks = [t for t in map(parse, queries) if t is not None]
    share = len(tasks) / len(queries)
    half = 1.96 * (share * (1 - share) / len(queries)) ** 0.5
    return {"queries": len(queries), "parsed": share, "interval": [share - half, share + half],
            "families": len({t.family for t in tasks}), "distinct": len(set(queries)) / len(queries)}


def query_mix(samples_path: Path, steps: range) -> dict:
    """The challenger's queries in samples.jsonl over some steps: the valid fraction, the distinct fraction (how
    diverse the queries stay), the level and family mix."""
    from collections import Counter

    from langplay.tinyworld.tasks import parse

    rows = [json.loads(line) for line in Path(samples_path).read_text().splitlines()]
    queries = [row["query"] for row in rows if row.get("step") in steps and "query" in row]
    valid = [t for t in (parse(q) for q in queries) if t is not None]
    levels = Counter(t.level for t in valid)
    return {"queries": len(queries), "valid": len(valid) / max(1, len(queries)),
            "distinct": len(set(queries)) / max(1, len(queries)),
            "levels": {str(level): levels[level] / max(1, len(valid)) for level in sorted(levels)},
            "families": dict(Counter(t.family for t in valid).most_common())}

