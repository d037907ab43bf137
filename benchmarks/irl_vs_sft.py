"""Cost of an offline IRL update against an SFT update on the same demonstrations, in one process.

    python benchmarks/irl_vs_sft.py [--rounds 3] [--steps 6] [--threads 2]

Both start from tinyworld's shipped base model with `presets/irl_tinyworld.yaml` (16 demonstrations per step):
SFT, and IRL at the preset's lambda (the cost does not depend on it: the TD term needs the soft values, a
logsumexp over the vocabulary at each position, and one more position for bootstrapping). They alternate in
blocks (benchmarks/step_cost.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import step_cost  # noqa: E402


def trainer_for(algorithm: str, work: Path):
    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.datasets import task_dataset
    from langplay.trainer import Trainer

    config = load_config(ROOT / "src" / "langplay" / "presets" / "irl_tinyworld.yaml", [
        f"algorithm={algorithm}", f"model.name_or_path={base_model_path()}", "train.steps=100000",
        f"run.output_dir={work}", "run.progress=false", "run.save_every=0",
    ])
    return Trainer(config, dataset=task_dataset("train", 4000, 1))


def main(argv=None) -> int:
    trainers = {"SFT": lambda work: trainer_for("sft", work), "IRL": lambda work: trainer_for("irl", work)}
    return step_cost.run(argv, trainers, peer="SFT", target=1.1, rounds=3, steps=6)


if __name__ == "__main__":
    sys.exit(main())
