"""Where the time of the training forward + backward goes under bf16 autocast: torch.profiler's self time per
operator, for one pass of `sequence_logprobs` over a batch of groups sharing their prompts.

    python benchmarks/profile_training_pass.py [--hidden 1024] [--layers 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    args = parser.parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile

    from langplay.batch import build_batch
    from langplay.config import ModelConfig
    from langplay.logprobs import sequence_logprobs
    from langplay.policy import Policy
    from langplay.precision import autocast
    from langplay.testing import save_tiny_model

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_model(Path(tmp) / "model", hidden=args.hidden, layers=args.layers)
        policy = Policy.from_config(ModelConfig(name_or_path=str(model)), with_reference=False)
    batch = build_batch([[5] * 64] * 64, [[7] * 64] * 64, 0, group_size=8)  # 8 prompts x 8 completions

    def training_pass():
        with autocast(args.precision, torch.device("cpu")):
            out = sequence_logprobs(policy.model, batch, with_entropy=True)
        out.logp.sum().backward()
        policy.model.zero_grad()

    training_pass()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        training_pass()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"hidden {args.hidden}, {args.layers} layers, {args.precision}, {args.threads} threads: "
          f"{total / 1e6:.2f} s of operator time")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"  {event.key[:48]:48s} {event.self_cpu_time_total / 1e6:7.3f} s {event.self_cpu_time_total / total:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
