"""Cost of a JEPO step against an RL step with the same number of samples, in one process.

    python benchmarks/jepo_vs_rl.py [--rounds 3] [--steps 4] [--threads 2]

Both start from tinyworld's shipped base model on the reasoning families: 16 prompts x 4 samples per step.
RL: GRPO with a leave-one-out baseline and tinyworld's 0/1 verifier (the JEPO paper's RL baseline). JEPO: the
multi-sample bound, the default rows [x | c_i, a*] (one no-grad pass for S_i, then one training pass). JEPO-generation:
the paper's update written literally, rows [x | y_i] plus rows [x, c_i | a*] (twice the training tokens).
They alternate in blocks (benchmarks/step_cost.py). Prints median step times, lengths and timing parts.

On the real model (issue 38; `--model real`: SmolLM2-135M-Instruct, real_gsm8k.py): the run in BENCHMARKS.md took
9 minutes on one core:

    taskset -c 0 python benchmarks/jepo_vs_rl.py --model real --threads 1 --rounds 2 --steps 2 \
        --json results/benchmarks/jepo_vs_rl_smollm2.json

The same three methods on GSM8K's questions (--prompts 8 x --group 4, the chat template and a system prompt that
asks for "The answer is" and the number), chains at most --tokens 128 ending at EOS (--fixed-length: all 128):
RL's verifier is numeric_match on GSM8K's "#### n", JEPO's a* is that n after the marker "The answer is"
(jepo.answer_format=gsm8k). bf16, langplay's transformers sampler (--precision, --backend vllm). Smoke run:
`--rounds 1 --steps 2 --prompts 2 --group 2 --tokens 8`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import real_gsm8k  # noqa: E402
import step_cost  # noqa: E402

FAMILIES = ["word_problem", "multiply", "spell"]
RL = ["algorithm=grpo", "grpo.group_size=4", "grpo.leave_one_out=true", "grpo.scale_rewards=none", "grpo.beta=1e-3",
      "grpo.rewards=[{kind: function, function: 'langplay.tinyworld.datasets:judge_reward'}]"]
MARKER = "The answer is"
SYSTEM = f"Solve the problem step by step. End with '{MARKER}' and the number."


def trainer_for(overrides: list[str], work: Path):
    import datasets

    from langplay.config import load_config
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.datasets import task_rows
    from langplay.trainer import Trainer

    config = load_config(ROOT / "src" / "langplay" / "presets" / "jepo_tinyworld.yaml", [
        f"model.name_or_path={base_model_path()}", "train.steps=100000", "train.prompts_per_step=16",
        f"run.output_dir={work}", "run.progress=false", "run.save_every=0", *overrides,
    ])
    return Trainer(config, dataset=datasets.Dataset.from_list(task_rows("train", 2000, 0, families=FAMILIES)))


def real_trainers(args) -> dict:
    def make(*overrides: str):
        return lambda work: real_gsm8k.real_trainer([
            *real_gsm8k.trainer_overrides(args, work), *real_gsm8k.gsm8k_overrides(args),
            f"data.system_prompt={SYSTEM}", *overrides])

    rl = ["algorithm=grpo", f"grpo.group_size={args.group}", "grpo.leave_one_out=true", "grpo.scale_rewards=none",
          "grpo.beta=1e-3", "grpo.rewards=[{kind: numeric_match, answer_column: answer}]"]
    jepo = ["algorithm=jepo", f"jepo.group_size={args.group}", "jepo.answer_column=answer", "jepo.answer_format=gsm8k",
            f"jepo.answer_marker={MARKER}", "jepo.estimator=multi"]
    return {"RL": make(*rl), "JEPO": make(*jepo), "JEPO-generation": make(*jepo, "jepo.policy_gradient=generation")}


def main(argv=None) -> int:
    trainers = {"RL": lambda work: trainer_for(RL, work), "JEPO": lambda work: trainer_for([], work),
                "JEPO-generation": lambda work: trainer_for(["jepo.policy_gradient=generation"], work)}
    return step_cost.run(argv, trainers, peer="RL", target=1.5, rounds=3, steps=4, real=real_trainers, real_target=1.5)


if __name__ == "__main__":
    sys.exit(main())
