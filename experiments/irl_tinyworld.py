"""The IRL paper's experiment in tinyworld: MLE vs MLE + entropy bonus vs offline IRL (a lambda sweep) vs online IRL.

    python experiments/irl_tinyworld.py [--seeds 0 1 2] [--steps 40] [--per-level 6]

Demonstrations: training-split prompts of tinyworld's exact families (add, count, max, reverse: the one reference)
and open families (between, letters, sum_to: 4 different valid answers per prompt, kept in the same batch, so
there are states with several expert continuations, the case where the TD term acts). Half
the rows are exact prompts, half open ones. From the shipped base model, the same budget for every method: the
steps, lr, batch (16 rows per step) and length limit of `presets/irl_tinyworld.yaml`.
  MLE              algorithm sft
  MLE + entropy    sft.entropy_bonus 0.05 (loss = NLL - 0.05 mean token entropy)
  IRL lambda       offline IRL, irl.td_weight 0.001 / 0.01 / 0.05 / 0.2 (the preset's gamma, 0.99)
  IRL online       irl.td_weight 0.01 and irl.online_fraction 0.25 (a quarter of each batch's rows are the model's
                   own samples of the step's prompts, temperature 1)
Held-out evaluation (exact and open families, every level): k samples per prompt at each temperature; accuracy
(checker == 1) and mean checker score, against diversity: per-prompt Self-BLEU over the k samples (characters,
BLEU-2, nltk smoothing method1, 0-1, higher = less diverse) and distinct-2 (characters, per prompt); the per-token
NLL of held-out references; Spearman correlation, over the samples at temperature 1, between the extracted reward
(sum of the implicit rewards under the trained model itself, at the training gamma) and the checker's score.
Small-data regime: a few hundred demonstrations, several epochs, MLE vs IRL, held-out and training NLL over
training; from scratch (a small character Llama, tinyworld.base.init_model) by default, or from the base model.
Writes results/irl_tinyworld.{md,json} and results/irl_tinyworld.png; runs go to runs/irl_experiment/.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import (cells, dig, experiment_parser, finished, mean_of, provenance, run_folder, run_metrics,  # noqa: E402
                    saved_results, table)
CONFIG = ROOT / "src" / "langplay" / "presets" / "irl_tinyworld.yaml"
KINDS = ("exact", "open")
K_OPEN = 4  # valid answers per open-ended training prompt; also the size of a batching unit (see `demonstrations`)
EVAL_SEED = 123
PROBE_SEED = 456
SELF_BLEU_N = 2  # Self-BLEU's max n-gram order, on characters (tinyworld's answers are a few characters long)
ANSWER_TOKENS = 40  # sampling limit (evaluation and online samples): the longest reference here has 18 characters
SCRATCH_LR = 1e-3  # from scratch a higher learning rate is needed (the base model was built with 1.5e-3)
SCRATCH_WARMUP = 20
METHODS = {  # slug: (label, overrides of presets/irl_tinyworld.yaml)
    "mle": ("MLE", ["algorithm=sft"]),
    "mle-entropy": ("MLE + entropy 0.05", ["algorithm=sft", "sft.entropy_bonus=0.05"]),
    # From the base model the TD term starts large (the base's soft values V are about 11, its squared TD error
    # about 90 against an NLL of 0.5), so the sweep reaches down to lambda 1e-3, where the two are comparable.
    "irl-0.001": ("IRL λ 0.001", ["algorithm=irl", "irl.td_weight=0.001"]),
    "irl-0.01": ("IRL λ 0.01", ["algorithm=irl", "irl.td_weight=0.01"]),
    "irl-0.05": ("IRL λ 0.05", ["algorithm=irl", "irl.td_weight=0.05"]),
    "irl-0.2": ("IRL λ 0.2", ["algorithm=irl", "irl.td_weight=0.2"]),
    "irl-online": ("IRL online λ 0.01", ["algorithm=irl", "irl.td_weight=0.01", "irl.online_fraction=0.25"]),
}
TRAIN_CURVES = ("loss", "nll", "td", "value", "entropy", "value_shift", "value/sampled")


def gamma() -> float:
    """The discount the IRL runs train with (the preset's): the extracted reward is taken at the same one."""
    from langplay.config import load_config

    return load_config(CONFIG).irl.gamma


def families() -> list[str]:
    from langplay.tinyworld.tasks import FAMILIES

    return [name for name in sorted(FAMILIES) if FAMILIES[name].kind in KINDS]


# -- demonstrations ----------------------------------------------------------------------------------------------
def demonstrations(pool_rows: int, steps: int, pool_seed: int, order_seed: int):
    """The rows of `steps` training steps, in order, and their pool: about `pool_rows` demonstrations in units of
    K_OPEN rows (tinyworld.datasets.demonstration_units: an open prompt with K_OPEN valid answers, or K_OPEN exact
    prompts; half the rows of each kind), the units of a step kept whole and their rows interleaved (unit_order;
    the online variant samples for the first rows of a step: that way they are different prompts)."""
    import datasets

    from langplay.tinyworld.datasets import demonstration_units, unit_order

    size, pool = per_step(), demonstration_units(pool_rows, pool_seed, K_OPEN)
    return datasets.Dataset.from_list(unit_order(pool, steps * size, order_seed, size)), pool


def per_step() -> int:
    from langplay.config import load_config

    size = load_config(CONFIG).train.prompts_per_step
    if size % K_OPEN:
        raise SystemExit(f"train.prompts_per_step ({size}) in {CONFIG} must be a multiple of {K_OPEN}")
    return size


# -- training ----------------------------------------------------------------------------------------------------
def run_one(method: str, seed: int, steps: int, work: Path, lr: float | None = None) -> tuple[Path, float]:
    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.trainer import Trainer

    config = load_config(CONFIG, [
        f"model.name_or_path={base_model_path()}", f"train.steps={steps}", f"train.seed={seed}",
        "run.progress=false", "run.save_every=0", "data.shuffle=false",
        f"sampling.max_new_tokens={ANSWER_TOKENS}", *([f"train.lr={lr}"] if lr else []), *METHODS[method][1],
    ])
    # the data key names the demonstration set as the runs so far were keyed (pool 2000 rows, pool and order seed)
    out = run_folder(work / "main", f"{method}-seed{seed}", config, f"training_dataset(2000, {steps}, {seed})")
    if finished(out):
        return out, float("nan")
    rows, _ = demonstrations(2000, steps, seed, seed)
    started = time.time()
    Trainer(config, dataset=rows).train()
    return out, time.time() - started


def training_curves(out: Path) -> dict:
    metrics = run_metrics(out)
    curves = {key: [m.get(key) for m in metrics] for key in TRAIN_CURVES if any(key in m for m in metrics)}
    curves["seconds_per_step"] = statistics.mean(m["time/step"] for m in metrics)
    return curves


# -- evaluation --------------------------------------------------------------------------------------------------
def sample_answers(policy, tasks, k: int, temperature: float, seed: int):
    """(responses, finished, scores) of k samples per task: tinyworld's checked answers with this experiment's
    length limit, ANSWER_TOKENS (a model that lost EOS is not decoded to 96 tokens); all prompts in one batch, as
    the saved results were sampled."""
    from langplay.evaluation.tinyworld import checked_answers

    return checked_answers(policy, tasks, k, temperature, seed, max_new_tokens=ANSWER_TOKENS, batch_prompts=len(tasks))


def evaluate(model, per_level: int, k: int, temperatures: list[float]) -> dict:
    """The held-out protocol: reference NLL; at each temperature, quality and diversity of k samples per prompt by
    kind; at temperature 1 (or the highest), the extracted reward against the checker, and a few examples."""
    from langplay.evaluation.tinyworld import (held_out_tasks, load_policy, pool_stats_by_kind,
                                               pooled_reward_agreement, reference_nll, reference_pairs)

    policy = load_policy(model)
    tasks = held_out_tasks(per_level, seed=EVAL_SEED, families=families())
    report = {"reference_nll": reference_nll(policy, *reference_pairs(tasks, K_OPEN)), "temperatures": {}}
    reward_temperature = 1.0 if 1.0 in temperatures else max(temperatures)
    for temperature in temperatures:
        pools, finished, scores = sample_answers(policy, tasks, k, temperature, EVAL_SEED)
        report["temperatures"][f"{temperature:g}"] = pool_stats_by_kind(tasks, pools, scores, finished, SELF_BLEU_N)
        if temperature == reward_temperature:  # the extracted reward (at the training gamma) against the checker
            report["rewards"] = {"temperature": temperature,
                                 **pooled_reward_agreement(policy, tasks, pools, finished, scores, gamma())}
            report["examples"] = [{"prompt": tasks[i].prompt, "samples": pools[i], "scores": scores[i]}
                                  for i in range(0, len(tasks), max(1, len(tasks) // 8))]
    return report


# -- small-data regime -------------------------------------------------------------------------------------------
def small_probe(pool: list[list[dict]], probe_per_level: int):
    """The trainer's evaluate hook: per-token NLL of held-out references (by kind) and of the first 64 training
    demonstrations, so over-fitting shows as the gap between the two."""
    from langplay.evaluation.tinyworld import held_out_tasks, reference_nll, reference_pairs
    from langplay.tinyworld.tasks import FAMILIES

    tasks = held_out_tasks(probe_per_level, seed=PROBE_SEED, families=families())
    held_out = reference_pairs(tasks, K_OPEN)
    first = [r for unit in pool for r in unit][:64]
    seen = ([r["prompt"] for r in first], [r["reference"] for r in first], [FAMILIES[r["family"]].kind for r in first])

    def probe(policy, step: int) -> dict:
        nll = reference_nll(policy, *held_out)
        return {"heldout_nll": nll["all"], **{f"heldout_nll_{k}": nll[k] for k in KINDS if k in nll},
                "train_nll": reference_nll(policy, *seen)["all"]}

    return probe, tasks


def run_small(method: str, seed: int, args) -> dict:
    from langplay.config import load_config
    from langplay.evaluation.tinyworld import EVAL_TEMPERATURE, load_policy
    from langplay.policy import Policy
    from langplay.tinyworld.base import BASE_RECIPE, base_model_path, init_model
    from langplay.trainer import Trainer

    rows, pool = demonstrations(args.small_demos, args.small_steps, 10_000 + seed, seed)
    probe, tasks = small_probe(pool, args.small_probe_per_level)
    overrides = [f"train.steps={args.small_steps}", f"train.seed={seed}",
                 f"sampling.max_new_tokens={ANSWER_TOKENS}",
                 "run.progress=false", "run.save_every=0", "data.shuffle=false",
                 f"run.eval_every={args.small_eval_every}", *METHODS[method][1]]
    if args.small_init == "scratch":
        recipe = {**BASE_RECIPE, **SMALL_RECIPE, "seed": seed}
        model, tokenizer = init_model(recipe)
        policy = Policy(model, tokenizer)
        overrides += ["model.name_or_path=tinyworld-scratch", f"train.lr={SCRATCH_LR}",
                      f"train.warmup_steps={SCRATCH_WARMUP}"]
    else:
        policy = load_policy(base_model_path())
        overrides += [f"model.name_or_path={base_model_path()}"]
    start = probe(policy, 0)
    trained = float("nan")
    config = load_config(CONFIG, overrides)
    out = run_folder(args.work / "small", f"{method}-{args.small_init}-seed{seed}", config,
                     f"small: {args.small_demos} demos, {args.small_probe_per_level} probe, {SMALL_RECIPE}")
    if not finished(out):
        started = time.time()
        Trainer(config, policy=policy, dataset=rows, evaluate=probe).train()
        trained = time.time() - started
    metrics = run_metrics(out)
    logged = [m for m in metrics if "eval/heldout_nll" in m]
    curve = {"step": [0] + [m["step"] for m in logged]}
    for key in start:
        curve[key] = [start[key]] + [m[f"eval/{key}"] for m in logged]
    final = load_policy(out / "final")
    scores = [score for score, in sample_answers(final, tasks, 1, EVAL_TEMPERATURE, PROBE_SEED)[2]]
    return {"method": method, "seed": seed, "init": args.small_init, "demos": sum(len(u) for u in pool),
            "train_seconds": trained, **curve,
            "accuracy": statistics.mean(float(s == 1.0) for s in scores), "score": statistics.mean(scores)}


SMALL_RECIPE = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2, "num_attention_heads": 4}


# -- the experiment ----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = experiment_parser("irl_experiment", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps of every main run (16 rows each)")
    parser.add_argument("--per-level", type=int, default=6, help="held-out prompts per family and level")
    parser.add_argument("--lr", type=float, default=None, help="every main run's lr (default: the preset's)")
    parser.add_argument("--k", type=int, default=4, help="samples per held-out prompt (Self-BLEU pool)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--small-demos", type=int, default=300, help="demonstrations in the small-data regime")
    parser.add_argument("--small-steps", type=int, default=240, help="small-data training steps (16 rows each)")
    parser.add_argument("--small-eval-every", type=int, default=20)
    parser.add_argument("--small-probe-per-level", type=int, default=3)
    parser.add_argument("--small-init", choices=["scratch", "base"], default="scratch")
    parser.add_argument("--small-methods", nargs="*", default=["mle", "irl-0.2"], choices=list(METHODS))
    args = parser.parse_args(argv)
    path = args.results / "irl_tinyworld.json"
    results = saved_results(args, path)
    if results is None:
        from langplay.tinyworld.base import base_model_path

        settings = {key: value for key, value in vars(args).items() if key not in ("work", "results", "report_only")}
        settings["gamma"] = gamma()
        started = time.time()
        results = {"provenance": provenance(), "settings": settings, "base": evaluate(base_model_path(), args.per_level, args.k, args.temperatures),
                   "runs": [], "small": []}
        results["base_eval_seconds"] = time.time() - started
        path.write_text(json.dumps(results, indent=2))
        for seed in args.seeds:
            for method in args.methods:
                started = time.time()
                out, trained = run_one(method, seed, args.steps, args.work, args.lr)
                evaluated = time.time()
                report = evaluate(out / "final", args.per_level, args.k, args.temperatures)
                run = {"method": method, "seed": seed, "train_seconds": trained,
                       "eval_seconds": time.time() - evaluated,
                       "minutes": (time.time() - started) / 60, "train": training_curves(out), **report}
                results["runs"].append(run)
                hot = report["temperatures"][f"{max(args.temperatures):g}"]
                print(f"{method:12s} seed {seed}: T {max(args.temperatures):g} accuracy exact "
                      f"{hot['exact']['accuracy']:.3f} open {hot['open']['accuracy']:.3f}, Self-BLEU open "
                      f"{hot['open']['self_bleu']:.3f}, rho {report['rewards']['all']['spearman_reward']:.3f}; "
                      f"train {trained:.0f} s, {run['minutes']:.1f} min", flush=True)
                path.write_text(json.dumps(results, indent=2))
        for seed in args.seeds:
            for method in args.small_methods:
                started = time.time()
                run = run_small(method, seed, args)
                run["minutes"] = (time.time() - started) / 60
                results["small"].append(run)
                print(f"small {method:8s} seed {seed}: held-out NLL {run['heldout_nll'][0]:.3f} -> min "
                      f"{min(run['heldout_nll']):.3f} -> {run['heldout_nll'][-1]:.3f}, train NLL "
                      f"{run['train_nll'][-1]:.3f}; {run['minutes']:.1f} min", flush=True)
                path.write_text(json.dumps(results, indent=2))
    write_markdown(results, args.results)
    plot(results, args.results)
    return 0


# -- report ------------------------------------------------------------------------------------------------------


def label(method: str) -> str:
    if method == "base":
        return "base model"
    return METHODS[method][0] if method in METHODS else method


def methods_in(runs: list[dict]) -> list[str]:
    return [m for m in METHODS if any(r["method"] == m for r in runs)]


def reports_of(results: dict, method: str) -> list[dict]:
    """The base model's report for "base", else the runs of `method` (one per seed)."""
    return [results["base"]] if method == "base" else [r for r in results["runs"] if r["method"] == method]


def tail_mean(values, n: int = 5) -> float:
    values = [v for v in (values or []) if v is not None]
    return statistics.mean(values[-n:]) if values else float("nan")


def write_markdown(results: dict, folder: Path) -> None:
    temps = [f"{t:g}" for t in results["settings"]["temperatures"]]
    hot = temps[-1] if "1" not in temps else "1"
    lines = [*introduction(results["settings"], temps), *held_out_section(results, hot),
             *frontier_section(results, temps), *reward_section(results, hot), *training_section(results),
             *small_data_section(results),
             "", "Plot: `irl_tinyworld.png` (accuracy against Self-BLEU, one point per method and temperature, "
             "exact and open families; small-data NLL curves, held-out solid, training dashed).", ""]
    reading = folder / "irl_tinyworld_reading.md"
    if reading.is_file():  # the written reading of the numbers, kept apart so the tables can be regenerated
        lines += [reading.read_text()]
    (folder / "irl_tinyworld.md").write_text("\n".join(lines))


def regenerate_command(s: dict, temps: list[str]) -> str:
    """The command line that reproduces the results; options at their defaults are left out."""
    command = (f"python experiments/irl_tinyworld.py --seeds {' '.join(map(str, s['seeds']))} --steps {s['steps']} "
               f"--per-level {s['per_level']} --k {s['k']} --temperatures {' '.join(temps)} "
               f"--small-demos {s['small_demos']} --small-steps {s['small_steps']} "
               f"--small-eval-every {s['small_eval_every']} --small-init {s['small_init']}")
    if s["methods"] != list(METHODS):
        command += f" --methods {' '.join(s['methods'])}"
    if s["small_methods"] != ["mle", "irl-0.2"]:
        command += f" --small-methods {' '.join(s['small_methods'])}"
    if s.get("lr"):
        command += f" --lr {s['lr']:g}"
    return command


def introduction(s: dict, temps: list[str]) -> list[str]:
    lr_note = f" except lr {s['lr']:g}" if s.get("lr") else ""
    return [
        "# IRL in tinyworld: MLE vs MLE + entropy vs offline IRL (λ sweep) vs online IRL", "",
        f"Regenerate: `{regenerate_command(s, temps)}` (tables and plot alone: add `--report-only`). From the shipped "
        "base model; demonstrations from the training split, families of kind exact (add, count, max, reverse: one "
        f"reference) and open (between, letters, sum_to: {K_OPEN} different valid answers per prompt, in the same "
        f"batch), half the rows each. Every method: {s['steps']} steps of 16 rows, the lr and length limit of "
        f"`presets/irl_tinyworld.yaml`{lr_note}, gamma {s.get('gamma', 1.0):g}; online IRL: a quarter of each batch's "
        f"rows are the model's own samples of the step's prompts (temperature 1, at most {ANSWER_TOKENS} tokens). "
        "Held-out prompts: "
        f"{s['per_level']} per family and level ({s['per_level'] * 28} prompts), {s['k']} samples each at "
        f"temperatures {', '.join(temps)}. Accuracy: checker == 1, over all samples; score: mean checker score. "
        f"Self-BLEU: per prompt over its {s['k']} samples (pool = the other samples), BLEU-{SELF_BLEU_N} on "
        "characters, nltk smoothing method1, 0-1, higher = less diverse; distinct-2: distinct character bigrams / "
        "all, per prompt then averaged (0 for one-character answers); distinct answers: distinct samples / k. "
        f"Samples are cut at {ANSWER_TOKENS} tokens (the longest reference has 18 characters; \"cut at limit\": "
        "the share of samples without EOS, a sign of a model that lost its stopping); token entropy: the model's "
        "mean next-token entropy on its own samples. "
        "Reference NLL: per-token NLL of held-out references (open prompts: "
        f"{K_OPEN} valid answers each). Mean ± standard deviation over seeds.",
    ]


# The tables, from data (common.cells): header -> where a report holds the value, a path ("{T}": the table's
# temperature) or a function of (report, T); a cell is the mean ± sd over a method's reports (one per seed).
HELD_OUT = {"acc exact": "temperatures/{T}/exact/accuracy", "acc open": "temperatures/{T}/open/accuracy",
            "score open": "temperatures/{T}/open/score", "Self-BLEU exact": "temperatures/{T}/exact/self_bleu",
            "Self-BLEU open": "temperatures/{T}/open/self_bleu", "distinct-2 open": "temperatures/{T}/open/distinct_2",
            "distinct answers open": "temperatures/{T}/open/distinct_answers",
            "ref NLL exact": "reference_nll/exact", "ref NLL open": "reference_nll/open",
            "token entropy": "rewards/all/token_entropy",
            "cut at limit": lambda r, t: mean_of([dig(r, f"temperatures/{t}/{k}/truncated") for k in KINDS])}
FRONTIER = {"acc exact": "temperatures/{T}/exact/accuracy", "Self-BLEU exact": "temperatures/{T}/exact/self_bleu",
            "distinct answers exact": "temperatures/{T}/exact/distinct_answers",
            "acc open": "temperatures/{T}/open/accuracy", "score open": "temperatures/{T}/open/score",
            "Self-BLEU open": "temperatures/{T}/open/self_bleu", "distinct-2 open": "temperatures/{T}/open/distinct_2"}
REWARD = {"ρ reward, all": "rewards/all/spearman_reward", "ρ reward, exact": "rewards/exact/spearman_reward",
          "ρ reward, open": "rewards/open/spearman_reward", "ρ log-lik, all": "rewards/all/spearman_loglik",
          "ρ log-lik, open": "rewards/open/spearman_loglik"}
TRAINING = {**{h: (lambda r, t, key=key: tail_mean(r["train"].get(key)))
               for h, key in {"NLL": "nll", "TD term": "td", "mean V": "value", "entropy": "entropy"}.items()},
            "s/step": "train/seconds_per_step", "train s/run": "train_seconds"}
SMALL = {"held-out NLL start": "heldout_nll/0", "min (step)": lambda r, t: r["heldout_nll"][best_step(r)],
         "final": "heldout_nll/-1", "final − min": lambda r, t: r["heldout_nll"][-1] - r["heldout_nll"][best_step(r)],
         "train NLL final": "train_nll/-1", "accuracy": "accuracy", "score": "score"}


def method_table(results: dict, methods: list[str], columns: dict, t: str = "") -> list[str]:
    return table(["method", *columns], [[label(m), *cells(reports_of(results, m), columns, t)] for m in methods])


def best_step(run: dict) -> int:
    """The index of the small-data run's lowest held-out NLL (the first, on ties)."""
    return min(range(len(run["heldout_nll"])), key=run["heldout_nll"].__getitem__)


def held_out_section(results: dict, hot: str) -> list[str]:
    """Accuracy, diversity, reference NLL and the share cut at the limit, at temperature `hot` (1, or the last
    one), mean ± sd over seeds."""
    return ["", f"## Held-out results at temperature {hot}", "",
            *method_table(results, ["base", *methods_in(results["runs"])], HELD_OUT, hot)]


def frontier_section(results: dict, temps: list[str]) -> list[str]:
    """Accuracy against diversity at every sampling temperature, means over seeds."""
    mean = lambda values: f"{mean_of(values):.3f}"  # noqa: E731
    rows = [[label(method), t, *cells(reports_of(results, method), FRONTIER, t, mean)]
            for method in ["base", *methods_in(results["runs"])] for t in temps]
    return ["", "## Accuracy–diversity frontier (means over seeds)", "", *table(["method", "T", *FRONTIER], rows)]


def reward_section(results: dict, hot: str) -> list[str]:
    """Spearman of the extracted reward (and of log pi alone) with the checker's score."""
    s = results["settings"]
    rt = float(results["base"].get("rewards", {}).get("temperature", hot))
    return ["", f"## Extracted reward vs checker score (Spearman, samples at temperature {rt:g})", "",
            "Extracted reward: sum over the response of r_t = log pi(a_t|s_t) + V(s_t) - gamma V(s_t+1) under the "
            f"trained model itself (gamma {s.get('gamma', 1.0):g}; EOS: terminal; at gamma 1 it equals log pi(y|x) + "
            f"V(s_0)); pooled over all {s['k']} samples of every held-out prompt. For comparison, log pi(y|x) alone.",
            "", *method_table(results, ["base", *methods_in(results["runs"])], REWARD)]


def training_section(results: dict) -> list[str]:
    return ["", "## Training (mean of the last 5 steps)", "",
            "The TD term (mean squared implicit reward on demonstration tokens) and V (mean soft value on them) "
            "are logged apart: V is a free shift of the logits.", "",
            *method_table(results, methods_in(results["runs"]), TRAINING)]


def small_data_section(results: dict) -> list[str]:
    """Held-out NLL at the start, at its minimum (and the step of each seed's) and at the end (over-fitting shows as
    final − min); none without small-data runs."""
    s, small = results["settings"], results.get("small", [])
    if not small:
        return []
    rows = []
    for method in methods_in(small):
        mine = [r for r in small if r["method"] == method]
        row = [label(method), *cells(mine, SMALL)]
        row[2] += f" ({', '.join(str(r['step'][best_step(r)]) for r in mine)})"
        rows.append(row)
    where = (f"from scratch (character Llama, hidden 128, 2 layers, lr {SCRATCH_LR:g}, warmup {SCRATCH_WARMUP})"
             if small[0]["init"] == "scratch" else "from the shipped base model (lr of the preset)")
    epochs = s["small_steps"] * 16 / max(1, small[0]["demos"])
    return ["", "## Small-data regime", "",
            f"{small[0]['demos']} demonstrations (the same mix), {s['small_steps']} steps of 16 rows (about "
            f"{epochs:.0f} epochs), {where}; the same settings for both methods. NLL: per token, of held-out "
            f"references ({s['small_probe_per_level']} prompts per family and level) and of the first 64 "
            f"training demonstrations, every {s['small_eval_every']} steps. Accuracy: near-greedy, the "
            "held-out probe prompts, at the end.", "", *table(["method", *SMALL], rows)]


def plot(results: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, small = results["runs"], results.get("small", [])
    temps = [f"{t:g}" for t in results["settings"]["temperatures"]]
    markers = ["o", "s", "^", "D", "v"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colours = {m: f"C{i}" for i, m in enumerate(["base", *METHODS])}
    for ax, kind in zip(axes[:2], KINDS):
        for method in ["base"] + methods_in(runs):
            reports = reports_of(results, method)
            xs = [mean_of([r["temperatures"][t][kind]["self_bleu"] for r in reports]) for t in temps]
            ys = [mean_of([r["temperatures"][t][kind]["accuracy"] for r in reports]) for t in temps]
            ax.plot(xs, ys, "-", color=colours[method], alpha=0.5)
            for i, (x, y) in enumerate(zip(xs, ys)):
                ax.scatter([x], [y], color=colours[method], marker=markers[i % len(markers)],
                           label=label(method) if i == 0 else None)
        ax.set(title=f"{kind} families: accuracy vs diversity", xlabel=f"per-prompt Self-BLEU (lower = more diverse)",
               ylabel="accuracy (checker == 1)")
        ax.grid(alpha=0.3)
    for i, t in enumerate(temps):  # marker key: one marker per sampling temperature
        axes[0].scatter([], [], color="grey", marker=markers[i % len(markers)], label=f"T = {t}")
    axes[0].legend(fontsize=7)
    ax = axes[2]
    for method in methods_in(small):
        mine = [r for r in small if r["method"] == method]
        steps = mine[0]["step"]
        for key, style in (("heldout_nll", "-"), ("train_nll", "--")):
            curve = [mean_of([r[key][i] for r in mine if i < len(r[key])]) for i in range(len(steps))]
            ax.plot(steps, curve, style, color=colours[method],
                    label=f"{label(method)}, {'held-out' if key == 'heldout_nll' else 'train'}")
    if small:
        ax.set(title=f"small data ({small[0]['demos']} demos, {small[0]['init']}): NLL per token", xlabel="step",
               ylabel="NLL (nats / token)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    else:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(folder / "irl_tinyworld.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
