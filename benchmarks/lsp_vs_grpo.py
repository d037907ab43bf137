"""Cost of an LSP step against a GRPO step with the same number of solver completions, in one process.

    python benchmarks/lsp_vs_grpo.py [--rounds 4] [--steps 4] [--threads 2]

Both start from tinyworld's shipped base model: GRPO on 16 training prompts x 4 completions, LSP-Zero and LSP
(tinyworld's quality judge as R_Q) on 16 challenger queries x 4 answers; same reward (the judge), same lengths.
They alternate in blocks (benchmarks/step_cost.py). Prints median step times, lengths and timing parts, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from step_cost import compare, report  # noqa: E402


def trainer_for(config_file: str, work: Path):
    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.datasets import judge_reward, task_dataset
    from langplay.trainer import Trainer

    config = load_config(ROOT / config_file, [
        f"model.name_or_path={base_model_path()}", "train.steps=100000", "train.prompts_per_step=16",
        "grpo.group_size=4", "lsp.group_size=4", f"run.output_dir={work}", "run.progress=false", "run.save_every=0",
    ])
    if config.algorithm == "grpo":
        trainer = Trainer(config, dataset=task_dataset("train", 2000, 0), rewards=[judge_reward])
    else:
        trainer = Trainer(config)
    trainer.trackers = None
    return trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from langplay.cli import quiet_libraries

    quiet_libraries()
    methods = {"GRPO": "configs/grpo_tinyworld.yaml", "LSP-Zero": "configs/lsp_zero_tinyworld.yaml",
               "LSP": "configs/lsp_tinyworld.yaml"}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {m: trainer_for(f, Path(tmp) / m) for m, f in methods.items()}
        result = compare(trainers, args.rounds, args.steps)
    report(result, "GRPO")
    result = {"threads": args.threads, "methods": result,
              "ratio_lsp_zero_over_grpo": result["LSP-Zero"]["median_step_s"] / result["GRPO"]["median_step_s"],
              "ratio_lsp_over_grpo": result["LSP"]["median_step_s"] / result["GRPO"]["median_step_s"]}
    print(f"LSP-Zero / GRPO: {result['ratio_lsp_zero_over_grpo']:.3f}; LSP / GRPO: {result['ratio_lsp_over_grpo']:.3f}"
          "  (target <= 1.3)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
