"""The report of experiments/irl_tinyworld.py, from its saved results: results/irl_tinyworld.md (the settings,
five tables of mean ± sd over seeds, then the written reading, irl_tinyworld_reading.md, when there is one) and
results/irl_tinyworld.png (accuracy against Self-BLEU, and the small-data NLL curves)."""

from __future__ import annotations

import statistics
from pathlib import Path

from common import cells, dig, interval_cell, mean_of, paired_gain, table
from irl_design import (ANSWER_TOKENS, K_OPEN, KINDS, METHODS, SCRATCH_LR, SCRATCH_WARMUP, SELF_BLEU_N,
                        SMALL_METHODS, SMALL_RECIPE)


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
             *paired_section(results, temps), *frontier_section(results, temps), *reward_section(results, hot),
             *training_section(results),
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
    if s["small_methods"] != list(SMALL_METHODS):
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


def paired_section(results: dict, temps: list[str]) -> list[str]:
    """Accuracy gains paired over held-out prompts (each method's per-prompt accuracy averaged over its seeds)
    against the base model and against MLE, the data baseline, at every temperature; none in results saved
    before the per-prompt accuracies were."""
    if "correct" not in results["base"]:
        return []
    header, rows = ["method", *(f"{side} T {t}" for t in temps for side in ("vs base", "vs MLE"))], []
    mle = reports_of(results, "mle")
    for method in methods_in(results["runs"]):
        row = [label(method)]
        for t in temps:
            mine = [r["correct"][t] for r in reports_of(results, method)]
            row += [interval_cell(paired_gain(mine, [results["base"]["correct"][t]])),
                    interval_cell(paired_gain(mine, [r["correct"][t] for r in mle]))
                    if mle and method != "mle" else "—"]
        rows.append(row)
    return ["", "## Accuracy gains, paired over held-out prompts (95% bootstrap intervals)", "",
            "All held-out prompts, exact and open; a prompt's accuracy is the share of its samples the checker "
            "accepts.", "", *table(header, rows)]


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
    where = (f"from scratch (character Llama, hidden {SMALL_RECIPE['hidden_size']}, "
             f"{SMALL_RECIPE['num_hidden_layers']} layers, lr {SCRATCH_LR:g}, warmup {SCRATCH_WARMUP})"
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
