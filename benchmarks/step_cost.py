"""Shared by the step-cost benchmarks: trainers that take turns in blocks, timed by median step.

Each trainer keeps training, so its completions change as it goes; the first step of each block is a warm-up.
Besides the step time, the medians of the per-step lengths and timing parts each algorithm logs are kept, so a
ratio can be explained (longer completions, or more passes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

DETAILS = ("completion_length", "answer_length", "query_length", "formatted", "truncated", "time/generate",
           "time/reference", "time/bound", "time/reward", "time/collect", "time/loss_backward")


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


def run(argv, trainers: dict[str, Callable[[Path], object]], peer: str, target: float, rounds: int, steps: int,
        real: Callable[[argparse.Namespace], dict[str, Callable[[Path], object]]] | None = None,
        real_target: float | None = None, real_defaults: dict | None = None,
        options: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """The benchmarks' command line: build each trainer (a function of its work folder), compare them against
    `peer`, print the ratios against `target`, and write them as JSON with --json. With --model, `real(args)`
    gives the trainers instead: the same methods on that model (`real`: SmolLM2-135M-Instruct) and GSM8K, with
    --data, --prompts, --group, --tokens, --precision, --backend and --fixed-length (real_gsm8k.trainer_overrides),
    against `real_target`; `real_defaults` sets a script's own defaults for those, `options` adds its own."""
    import real_gsm8k

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    if real is not None:
        real_gsm8k.add_real_model_options(parser, real_defaults)
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    # vLLM (--backend vllm) warns of every float32 tensor pushed into a bfloat16 engine: hundreds of lines a step
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    import torch

    from langplay.console import quiet_libraries

    torch.set_num_threads(args.threads)
    quiet_libraries()
    if getattr(args, "model", None):
        trainers, target = real(args), real_target or target
    with tempfile.TemporaryDirectory() as tmp:
        built = {method: make(Path(tmp) / method) for method, make in trainers.items()}
        for trainer in built.values():
            trainer.trackers = None
        result = compare(built, args.rounds, args.steps)
    report(result, peer)
    print(f"peak memory {real_gsm8k.peak_rss_gb():.1f} GB")
    ratios = {}
    for method in result:
        if method != peer:
            ratio = result[method]["median_step_s"] / result[peer]["median_step_s"]
            ratios[f"ratio_{method.lower().replace('-', '_')}_over_{peer.lower()}"] = ratio
            print(f"{method} / {peer}: {ratio:.3f}  (target <= {target:g})")
    if args.json:
        out = {"provenance": real_gsm8k.provenance(args), "threads": args.threads, "target": target,
               "methods": result, **ratios}
        if getattr(args, "model", None):  # what --model real and the default --data resolved to
            out["model"] = str(real_gsm8k.model_path(args.model))
            out["data"] = str(real_gsm8k.gsm8k_path(args.data))
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def bf16_peak_tflops(budget_s: float = 2.0) -> float:
    """The machine's bf16 matrix-product rate (`matmul_peak_tflops`)."""
    import torch

    return matmul_peak_tflops(torch.bfloat16, budget_s)


def matmul_peak_tflops(dtype, budget_s: float = 2.0) -> float:
    """The machine's matrix-product rate in `dtype`: the median time of a 4096 x 1024 x 4096 product, repeated as
    often as fits in `budget_s` (at least 3 times). A machine without bf16 units (no AMX, no AVX512-BF16) runs a
    bf16 product hundreds of times slower, so a small probe first picks the size that fits the budget there too."""
    import torch

    def product_times(m: int, k: int, n: int, repeats: int) -> list[float]:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b  # the first call picks and compiles the kernel
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        return times

    probe = statistics.median(product_times(512, 512, 512, 3))
    m, k, n = (4096, 1024, 4096) if probe * 128 < budget_s / 3 else (512, 512, 512)
    once = probe * (m * k * n) / 512**3
    times = product_times(m, k, n, max(3, min(20, int(budget_s / max(once, 1e-9)))))
    return 2 * m * k * n / statistics.median(times) / 1e12
