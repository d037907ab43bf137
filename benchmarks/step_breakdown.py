"""Where langplay's GRPO step spends its time, phase by phase, on grpo_vs_trl.py's model and settings.

    python benchmarks/step_breakdown.py [--backend hf|vllm] [--precision bf16|fp32] [--hidden 1024 --layers 10]

Builds the same trainer as benchmarks/grpo_vs_trl.py (8 prompts of 64 tokens x 8 completions x 64 tokens, beta
0.04, dapo) and prints, for each step, its time and that of sampling, the reference pass, the rewards, the rest of
collecting (advantages, the batch, the bf16 copy of the weights), the loss and backward, and what follows
(optimizer step, weight sync). The first step is a warm-up. For before/after comparisons of one
change on the same machine; TRL does not run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import grpo_vs_trl  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import transformers

    from langplay.testing import save_tiny_model

    transformers.logging.set_verbosity_error()
    settings = argparse.Namespace(hidden=args.hidden, layers=args.layers, prompts=8, group=8, tokens=64,
                                  prompt_tokens=64, beta=0.04, lr=1e-5, loss="dapo", precision=args.precision,
                                  backend=args.backend)
    with tempfile.TemporaryDirectory(prefix="step_breakdown_") as tmp:
        work = Path(tmp)
        model_dir = save_tiny_model(work / "model", hidden=args.hidden, layers=args.layers)
        prompts = grpo_vs_trl.prompts_of_length(64, transformers.AutoTokenizer.from_pretrained(model_dir))
        (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        trainer = grpo_vs_trl.build_langplay(settings, model_dir, work / "prompts.jsonl", work)
        print(f"precision {trainer.precision}, backend {args.backend}, {args.threads} threads")
        for step in range(args.steps):
            m = trainer.train_step()
            # collect's own work besides its three phases: advantages, the batch, the bf16 copy of the weights
            other = m["time/collect"] - m["time/generate"] - m["time/reference"] - m["time/reward"]
            rest = m["time/step"] - m["time/collect"] - m["time/loss_backward"]
            print(f"step {step + 1}{' (warm-up)' if step == 0 else ''}: {m['time/step']:.2f} s = sampling "
                  f"{m['time/generate']:.2f} + reference {m['time/reference']:.2f} + rewards {m['time/reward']:.2f} "
                  f"+ other collect {other:.2f} + loss and backward {m['time/loss_backward']:.2f} "
                  f"+ optimizer, weight sync and the rest {rest:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
