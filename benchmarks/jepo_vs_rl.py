"""Cost of a JEPO step against an RL step with the same number of samples, in one process.

    python benchmarks/jepo_vs_rl.py [--rounds 3] [--steps 4] [--threads 2]

Both start from tinyworld's shipped base model on the reasoning families: 16 prompts x 4 samples per step.
RL: GRPO with a leave-one-out baseline and tinyworld's 0/1 verifier (the JEPO paper's RL baseline). JEPO: the
multi-sample bound (one extra teacher-forced pass on [x, c_i, a*], forward without and then with gradient).
They alternate in blocks (benchmarks/step_cost.py). Prints median step times, lengths and timing parts.
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

FAMILIES = ["word_problem", "multiply", "spell"]
RL = ["algorithm=grpo", "grpo.group_size=4", "grpo.leave_one_out=true", "grpo.scale_rewards=none", "grpo.beta=1e-3",
      "grpo.rewards=[{kind: function, function: 'langplay.tinyworld.datasets:judge_reward'}]"]


def trainer_for(overrides: list[str], work: Path):
    import datasets

    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.datasets import task_rows
    from langplay.trainer import Trainer

    config = load_config(ROOT / "configs" / "jepo_tinyworld.yaml", [
        f"model.name_or_path={base_model_path()}", "train.steps=100000", "train.prompts_per_step=16",
        f"run.output_dir={work}", "run.progress=false", "run.save_every=0", *overrides,
    ])
    trainer = Trainer(config, dataset=datasets.Dataset.from_list(task_rows("train", 2000, 0, families=FAMILIES)))
    trainer.trackers = None
    return trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from langplay.cli import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {"RL": trainer_for(RL, Path(tmp) / "rl"), "JEPO": trainer_for([], Path(tmp) / "jepo")}
        result = compare(trainers, args.rounds, args.steps)
    report(result, "RL")
    ratio = result["JEPO"]["median_step_s"] / result["RL"]["median_step_s"]
    print(f"JEPO / RL: {ratio:.3f}  (target <= 1.5)")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "methods": result, "ratio_jepo_over_rl": ratio},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
