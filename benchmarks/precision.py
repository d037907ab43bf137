"""bf16 mixed precision against fp32 on this machine: an SFT step of tinyworld's base recipe by model width, and
the machine's bf16 matrix-product peak (what train.precision=auto's size threshold rests on).

    python benchmarks/precision.py [--hidden 128 256 512] [--rounds 2] [--steps 12] [--threads 2] [--json F]

For each hidden size (intermediate 3x, 4 layers, tinyworld's tokenizer and training rows, 32 rows a step) an
fp32 and a bf16 trainer take turns in blocks (benchmarks/step_cost.py); the median step is reported with the
ratio bf16 / fp32, and the model's FLOPs per step (6 x parameters x tokens) as a fraction of the bf16 peak
measured in the same run (a 4096 x 1024 x 4096 bf16 product).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import step_cost  # noqa: E402


def trainer_for(hidden: int, precision: str, work: Path):
    import datasets

    from langplay.config import load_config
    from langplay.policy import Policy
    from langplay.tinyworld.base import BASE_RECIPE, init_model, training_rows
    from langplay.trainer import Trainer

    recipe = {**BASE_RECIPE, "hidden_size": hidden, "intermediate_size": 3 * hidden}
    model, tokenizer = init_model(recipe)
    rows = datasets.Dataset.from_list(training_rows(2000, 0, recipe))
    config = load_config(overrides=[
        "algorithm=sft", "model.name_or_path=benchmark", "train.steps=100000", "train.prompts_per_step=32",
        "train.micro_batch_size=32", "train.lr=1e-3", "data.shuffle=false", f"run.output_dir={work}",
        "run.progress=false", "run.save_every=0", f"train.precision={precision}"])
    return Trainer(config, policy=Policy(model, tokenizer), dataset=rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    from langplay.console import quiet_libraries

    torch.set_num_threads(args.threads)
    quiet_libraries()
    from langplay.precision import fast_bf16

    peak, native = step_cost.bf16_peak_tflops(), fast_bf16(torch.device("cpu"))
    # without bf16 units (no AMX, no AVX512-BF16) the probe's product is emulated like every other, so its rate is
    # no ceiling: a model's step can run above it, and "fraction of the peak" means nothing there
    print(f"bf16 matrix-product peak: {peak:.2f} TFLOP/s ({args.threads} threads"
          f"{'' if native else '; no bf16 units on this CPU, so no real peak'})")
    out = {"threads": args.threads, "bf16_peak_tflops": peak, "native_bf16": native, "sizes": {}}
    for hidden in args.hidden:
        with tempfile.TemporaryDirectory() as tmp:
            built = {p: trainer_for(hidden, p, Path(tmp) / p) for p in ("fp32", "bf16")}
            params = sum(p.numel() for p in built["fp32"].policy.model.parameters())
            for trainer in built.values():
                trainer.trackers = None
            result = step_cost.compare(built, args.rounds, args.steps)
            probe = built["bf16"].train_step()
            tokens = probe["tokens_per_second"] * probe["time/step"]  # trained tokens per step, prompts included
        bf16, fp32 = result["bf16"]["median_step_s"], result["fp32"]["median_step_s"]
        fraction = 6 * params * tokens / bf16 / (peak * 1e12)
        out["sizes"][hidden] = {"parameters": params, "fp32_step_s": fp32, "bf16_step_s": bf16,
                                "ratio_bf16_over_fp32": bf16 / fp32, "tokens_per_step": tokens,
                                "bf16_fraction_of_peak": fraction}
        print(f"hidden {hidden} ({params / 1e6:.1f}M params): fp32 {fp32:.3f} s, bf16 {bf16:.3f} s, "
              f"bf16/fp32 {bf16 / fp32:.2f}, bf16 at {100 * fraction:.1f}% of the peak", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
