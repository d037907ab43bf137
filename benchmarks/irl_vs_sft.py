"""Cost of an offline IRL update against an SFT update on the same demonstrations, in one process.

    python benchmarks/irl_vs_sft.py [--rounds 3] [--steps 6] [--threads 2]

Both start from tinyworld's shipped base model with `presets/irl_tinyworld.yaml` (16 demonstrations per step):
SFT, and IRL at the preset's lambda (the cost does not depend on it: the TD term needs the soft values, a
logsumexp over the vocabulary at each position, and one more position for bootstrapping). They alternate in
blocks (benchmarks/step_cost.py).

On the real model (issue 38; `--model real`: SmolLM2-135M-Instruct, real_gsm8k.py), 2 threads, the machine
otherwise idle (about 5-10 minutes, estimated from smoke runs):

    python benchmarks/irl_vs_sft.py --model real --rounds 3 --steps 4 --json results/benchmarks/irl_vs_sft_smollm2.json

SFT and offline IRL (the preset's gamma 0.99 and lambda 0.01) on GSM8K's solutions as demonstrations (--prompts 16
a step: question with the chat template -> solution and EOS), over SmolLM2's 49,152-token vocabulary; bf16
(--precision). Smoke run: `--rounds 1 --steps 2 --prompts 2`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import real_gsm8k  # noqa: E402
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


def real_trainers(args) -> dict:
    def make(algorithm: str):
        return lambda work: real_gsm8k.real_trainer([
            f"algorithm={algorithm}", *real_gsm8k.trainer_overrides(args, work), *real_gsm8k.gsm8k_overrides(args),
            "data.completion_column=answer", "sft.max_length=1024", "irl.gamma=0.99", "irl.td_weight=0.01",
            "irl.online_fraction=0.0"])

    return {"SFT": make("sft"), "IRL": make("irl")}


def main(argv=None) -> int:
    trainers = {"SFT": lambda work: trainer_for("sft", work), "IRL": lambda work: trainer_for("irl", work)}
    return step_cost.run(argv, trainers, peer="SFT", target=1.1, rounds=3, steps=6, real=real_trainers, real_target=1.1,
                         real_defaults={"prompts": 16})


if __name__ == "__main__":
    sys.exit(main())
