"""Cost of an LSP step against a GRPO step with the same number of solver completions, in one process.

    python benchmarks/lsp_vs_grpo.py [--rounds 4] [--steps 4] [--threads 2]

Both start from tinyworld's shipped base model: GRPO on 16 training prompts x 4 completions, LSP-Zero and LSP
(tinyworld's quality judge as R_Q) on 16 challenger queries x 4 answers; same reward (the judge), same lengths.
They alternate in blocks (benchmarks/step_cost.py). Prints median step times, lengths and timing parts, and the ratios.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import step_cost  # noqa: E402


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
        return Trainer(config, dataset=task_dataset("train", 2000, 0), rewards=[judge_reward])
    return Trainer(config)


def main(argv=None) -> int:
    presets = {"GRPO": "src/langplay/presets/grpo_tinyworld.yaml", "LSP-Zero": "src/langplay/presets/lsp_zero_tinyworld.yaml",
               "LSP": "src/langplay/presets/lsp_tinyworld.yaml"}
    trainers = {method: (lambda work, preset=preset: trainer_for(preset, work)) for method, preset in presets.items()}
    return step_cost.run(argv, trainers, peer="GRPO", target=1.3, rounds=4, steps=4)


if __name__ == "__main__":
    sys.exit(main())
