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
Writes results/irl_tinyworld.{md,json} and results/irl_tinyworld.png (the report: experiments/irl_report.py);
runs go to runs/irl_experiment/.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import experiment_parser, finished, provenance, run_folder, run_metrics, saved_results  # noqa: E402
from irl_design import (ANSWER_TOKENS, CONFIG, EVAL_SEED, K_OPEN, KINDS, METHODS, PROBE_SEED, SCRATCH_LR,  # noqa: E402
                        SCRATCH_WARMUP, SELF_BLEU_N, SMALL_METHODS, SMALL_RECIPE)
from irl_report import plot, write_markdown  # noqa: E402

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
        # per prompt, the share of its k samples the checker accepts: what the paired intervals pair
        report.setdefault("correct", {})[f"{temperature:g}"] = [statistics.mean(float(x == 1.0) for x in row)
                                                                for row in scores]
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
    """One small-data run: train on a few hundred demonstrations with the probe every few steps, then score the
    final model near-greedily on the probe's held-out prompts."""
    from langplay.config import load_config
    from langplay.evaluation.tinyworld import EVAL_TEMPERATURE, load_policy
    from langplay.trainer import Trainer

    rows, pool = demonstrations(args.small_demos, args.small_steps, 10_000 + seed, seed)
    probe, tasks = small_probe(pool, args.small_probe_per_level)
    policy, start_overrides = small_start(args.small_init, seed)
    start = probe(policy, 0)
    trained = float("nan")
    config = load_config(CONFIG, [f"train.steps={args.small_steps}", f"train.seed={seed}",
                                  f"sampling.max_new_tokens={ANSWER_TOKENS}",
                                  "run.progress=false", "run.save_every=0", "data.shuffle=false",
                                  f"run.eval_every={args.small_eval_every}", *METHODS[method][1], *start_overrides])
    out = run_folder(args.work / "small", f"{method}-{args.small_init}-seed{seed}", config,
                     f"small: {args.small_demos} demos, {args.small_probe_per_level} probe, {SMALL_RECIPE}")
    if not finished(out):
        started = time.time()
        Trainer(config, policy=policy, dataset=rows, evaluate=probe).train()
        trained = time.time() - started
    scores = [score for score, in sample_answers(load_policy(out / "final"), tasks, 1, EVAL_TEMPERATURE, PROBE_SEED)[2]]
    return {"method": method, "seed": seed, "init": args.small_init, "demos": sum(len(u) for u in pool),
            "train_seconds": trained, **probe_curve(out, start),
            "accuracy": statistics.mean(float(s == 1.0) for s in scores), "score": statistics.mean(scores)}


def small_start(init: str, seed: int):
    """The small-data regime's starting policy and its config overrides: a fresh small character Llama
    (SMALL_RECIPE, lr SCRATCH_LR, warm-up SCRATCH_WARMUP) for "scratch", else the shipped base model."""
    from langplay.evaluation.tinyworld import load_policy
    from langplay.policy import Policy
    from langplay.tinyworld.base import BASE_RECIPE, base_model_path, init_model

    if init == "scratch":
        model, tokenizer = init_model({**BASE_RECIPE, **SMALL_RECIPE, "seed": seed})
        return Policy(model, tokenizer), ["model.name_or_path=tinyworld-scratch", f"train.lr={SCRATCH_LR}",
                                          f"train.warmup_steps={SCRATCH_WARMUP}"]
    return load_policy(base_model_path()), [f"model.name_or_path={base_model_path()}"]


def probe_curve(out: Path, start: dict) -> dict:
    """The probe's values over training: "step" and each value's list, from `start` (step 0, before training)
    then every evaluation the run logged."""
    logged = [m for m in run_metrics(out) if "eval/heldout_nll" in m]
    return {"step": [0] + [m["step"] for m in logged],
            **{key: [start[key]] + [m[f"eval/{key}"] for m in logged] for key in start}}


# -- the experiment ----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    """The base model's evaluation, every method and seed of the main comparison, then the small-data regime (the
    JSON saved after each run); then the report (irl_report), which --report-only rewrites alone."""
    args = parse_args(argv)
    path = args.results / "irl_tinyworld.json"
    results = saved_results(args, path)
    if results is None:
        results = base_results(args)
        save(results, path)
        for seed in args.seeds:
            for method in args.methods:
                results["runs"].append(main_run(method, seed, args))
                save(results, path)
        for seed in args.seeds:
            for method in args.small_methods:
                results["small"].append(small_data_run(method, seed, args))
                save(results, path)
    write_markdown(results, args.results)
    plot(results, args.results)
    return 0


def parse_args(argv=None):
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
    parser.add_argument("--small-methods", nargs="*", default=list(SMALL_METHODS), choices=list(METHODS))
    return parser.parse_args(argv)


def base_results(args) -> dict:
    """A fresh results dict: provenance, the settings (the options, and gamma) and the base model's evaluation."""
    from langplay.tinyworld.base import base_model_path

    settings = {key: value for key, value in vars(args).items() if key not in ("work", "results", "report_only")}
    settings["gamma"] = gamma()
    started = time.time()
    results = {"provenance": provenance(), "settings": settings,
               "base": evaluate(base_model_path(), args.per_level, args.k, args.temperatures), "runs": [], "small": []}
    results["base_eval_seconds"] = time.time() - started
    return results


def main_run(method: str, seed: int, args) -> dict:
    """One method and seed of the main comparison: trained from the base model, evaluated held out."""
    started = time.time()
    out, trained = run_one(method, seed, args.steps, args.work, args.lr)
    evaluated = time.time()
    report = evaluate(out / "final", args.per_level, args.k, args.temperatures)
    run = {"method": method, "seed": seed, "train_seconds": trained, "eval_seconds": time.time() - evaluated,
           "minutes": (time.time() - started) / 60, "train": training_curves(out), **report}
    hot = report["temperatures"][f"{max(args.temperatures):g}"]
    print(f"{method:12s} seed {seed}: T {max(args.temperatures):g} accuracy exact "
          f"{hot['exact']['accuracy']:.3f} open {hot['open']['accuracy']:.3f}, Self-BLEU open "
          f"{hot['open']['self_bleu']:.3f}, rho {report['rewards']['all']['spearman_reward']:.3f}; "
          f"train {trained:.0f} s, {run['minutes']:.1f} min", flush=True)
    return run


def small_data_run(method: str, seed: int, args) -> dict:
    """One method and seed of the small-data regime (run_small), timed."""
    started = time.time()
    run = run_small(method, seed, args)
    run["minutes"] = (time.time() - started) / 60
    print(f"small {method:8s} seed {seed}: held-out NLL {run['heldout_nll'][0]:.3f} -> min "
          f"{min(run['heldout_nll']):.3f} -> {run['heldout_nll'][-1]:.3f}, train NLL "
          f"{run['train_nll'][-1]:.3f}; {run['minutes']:.1f} min", flush=True)
    return run


def save(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
