"""Cost of an offline IRL update against an SFT update on the same demonstrations, in one process.

    python benchmarks/irl_vs_sft.py [--rounds 3] [--steps 6] [--threads 2]

Both start from tinyworld's shipped base model with `configs/irl_tinyworld.yaml` (16 demonstrations per step):
SFT, and IRL at the preset's lambda (the cost does not depend on it: the TD term needs the soft values, a
logsumexp over the vocabulary at each position, and one more position for bootstrapping). They alternate in
blocks (benchmarks/step_cost.py).
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


def trainer_for(algorithm: str, work: Path):
    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.datasets import task_dataset
    from langplay.trainer import Trainer

    config = load_config(ROOT / "configs" / "irl_tinyworld.yaml", [
        f"algorithm={algorithm}", f"model.name_or_path={base_model_path()}", "train.steps=100000",
        f"run.output_dir={work}", "run.progress=false", "run.save_every=0",
    ])
    trainer = Trainer(config, dataset=task_dataset("train", 4000, 1))
    trainer.trackers = None
    return trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from langplay.cli import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {"SFT": trainer_for("sft", Path(tmp) / "sft"), "IRL": trainer_for("irl", Path(tmp) / "irl")}
        result = compare(trainers, args.rounds, args.steps)
    report(result, "SFT")
    ratio = result["IRL"]["median_step_s"] / result["SFT"]["median_step_s"]
    print(f"IRL / SFT: {ratio:.3f}  (target <= 1.1)")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "methods": result, "ratio_irl_over_sft": ratio},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
