"""The trainer's bf16 training pass on one bf16 copy of the weights (`bf16_weight_copies`, #17) against autocast's
cast per use. Both run the bf16 training forward + backward of `sequence_logprobs` under autocast (groups sharing
their prompt); `copy` does it inside `bf16_weight_copies`, as the trainer does for each micro-batch. Alternating rounds, median times, and each as a share of the bf16 peak measured in the same run
(6 x parameters x the tokens the pass runs: each group's prompt once, every completion).

    python benchmarks/bf16_weight_copy.py [--hidden 1024] [--layers 10] [--threads 2] [--rounds 3] [--compile]

`--compile` then puts each decoder layer under torch.compile and times `copy` again (and the compiling).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64, help="prompt and completion length")
    parser.add_argument("--compile", action="store_true", help="then time `copy` with compiled decoder layers")
    args = parser.parse_args(argv)

    import torch

    import step_cost
    from langplay.batch import build_batch
    from langplay.config import ModelConfig
    from langplay.logprobs import sequence_logprobs
    from langplay.policy import Policy
    from langplay.precision import autocast, bf16_weight_copies
    from langplay.testing import save_tiny_model

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_model(Path(tmp) / "model", hidden=args.hidden, layers=args.layers)
        model = Policy.from_config(ModelConfig(name_or_path=str(model_dir)), with_reference=False).model
    params = list(model.parameters())
    rows = args.prompts * args.group
    batch = build_batch([[5] * args.tokens] * rows, [[7] * args.tokens] * rows, 0, group_size=args.group)
    tokens = args.prompts * args.tokens + rows * args.tokens

    def training_pass(copies: bool):
        with bf16_weight_copies(model, copies):
            with autocast("bf16", torch.device("cpu")):
                out = sequence_logprobs(model, batch, with_entropy=True)
            out.logp.sum().backward()
        model.zero_grad(set_to_none=True)

    passes = {"autocast": lambda: training_pass(False), "copy": lambda: training_pass(True)}
    for run in passes.values():  # warm-up: kernels picked, memory allocated
        run()
    times: dict[str, list[float]] = {name: [] for name in passes}
    def seconds(run) -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    for _ in range(args.rounds):
        for name, run in passes.items():
            times[name].append(seconds(run))
    if args.compile:
        started = time.perf_counter()
        for layer in model.get_decoder().layers:
            layer.compile(dynamic=False)
        passes["copy"](), passes["copy"]()  # compiles the forward and the backward, then runs compiled
        print(f"compiling the layers: {time.perf_counter() - started:.0f} s")
        times["compiled"] = [seconds(passes["copy"]) for _ in range(args.rounds)]
    peak = step_cost.bf16_peak_tflops() * 1e12
    n = sum(p.numel() for p in params)
    print(f"hidden {args.hidden}, layers {args.layers}: {n / 1e6:.1f}M parameters, {tokens} tokens per pass, "
          f"bf16 peak {peak / 1e12:.2f} TFLOP/s, {args.threads} threads")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:9s} {median:.3f} s  share of the bf16 peak {6 * n * tokens / median / peak:.1%}")
    print(f"copy / autocast: {statistics.median(times['copy']) / statistics.median(times['autocast']):.2f}")
    if args.compile:
        print(f"compiled / copy: {statistics.median(times['compiled']) / statistics.median(times['copy']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
