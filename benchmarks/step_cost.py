"""Shared by the step-cost benchmarks: trainers that take turns in blocks, timed by median step.

Each trainer keeps training, so its completions change as it goes; the first step of each block is a warm-up.
Besides the step time, the medians of the per-step lengths and timing parts each algorithm logs are kept, so a
ratio can be explained (longer completions, or more passes).
"""

from __future__ import annotations

import statistics

DETAILS = ("completion_length", "answer_length", "query_length", "time/generate", "time/reference", "time/bound",
           "time/reward", "time/collect", "time/loss_backward")


def compare(trainers: dict, rounds: int, steps: int) -> dict:
    """{method: {"median_step_s": ..., "steps": ..., detail: median}} over `rounds` blocks of `steps` steps."""
    records: dict[str, list[dict]] = {m: [] for m in trainers}
    for round_ in range(rounds):
        for method, trainer in trainers.items():
            for i in range(steps):
                metrics = trainer.train_step()
                if i:
                    records[method].append(metrics)
        print(f"round {round_ + 1}: " + ", ".join(
            f"{m} {statistics.median(r['time/step'] for r in rs):.2f}s" for m, rs in records.items()), flush=True)
    out = {}
    for method, rows in records.items():
        out[method] = {"median_step_s": statistics.median(r["time/step"] for r in rows), "steps": len(rows)}
        for key in DETAILS:
            values = [r[key] for r in rows if key in r]
            if values:
                out[method][key] = statistics.median(values)
    return out


def report(result: dict, peer: str) -> None:
    for method, row in result.items():
        details = ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k not in ("median_step_s", "steps"))
        print(f"{method:9s} median step {row['median_step_s']:.3f} s over {row['steps']} steps "
              f"(x{row['median_step_s'] / result[peer]['median_step_s']:.2f} {peer}; {details})")
