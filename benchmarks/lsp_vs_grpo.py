r"""Cost of an LSP step against a GRPO step with the same number of solver completions, in one process.

    python benchmarks/lsp_vs_grpo.py [--rounds 4] [--steps 4] [--threads 2]

Both start from tinyworld's shipped base model: GRPO on 16 training prompts x 4 completions, LSP-Zero and LSP
(tinyworld's quality judge as R_Q) on 16 challenger queries x 4 answers; same reward (the judge), same lengths.
They alternate in blocks (benchmarks/step_cost.py). Prints median step times, lengths and timing parts, and the ratios.

On the real model (issue 38; `--model real`: SmolLM2-135M-Instruct, real_gsm8k.py): the run in BENCHMARKS.md took
11 minutes on one core (more memory with --backend vllm, where each trainer holds an engine):

    taskset -c 0 python benchmarks/lsp_vs_grpo.py --model real --threads 1 --rounds 2 --steps 2 \
        --json results/benchmarks/lsp_vs_grpo_smollm2.json

GRPO on GSM8K's questions (--prompts 8 x --group 4, the chat template applied), LSP-Zero and LSP on 8
challenger queries (Box 1 asking for a grade-school math word problem, at most 64 tokens, or --tokens if fewer)
x 4 answers; answers at most --tokens 128, ending at EOS (--fixed-length: all 128); one gold-free reward for
both (real_gsm8k.ends_with_number), and LSP's R_Q from the reference reading Box 3 (`lsp.judge=digits`, one
forward pass; `--judge reply`: the paper's written judgement, at most --tokens tokens). bf16, langplay's
transformers sampler (--precision, --backend vllm). Smoke run: `--rounds 1 --steps 2 --prompts 2 --group 2
--tokens 8`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import real_gsm8k  # noqa: E402
import step_cost  # noqa: E402

TASK, TEMPLATE = "solve a grade-school math word problem", "{a one-paragraph math word problem}"
QUERY_TOKENS = 64


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


def judge_overrides(judge: str, tokens: int) -> list[str]:
    """LSP's R_Q on the real model: the reference reading Box 3's score digits (lsp.judge=digits), or writing its
    judgement (the paper's; `reply`), at most `tokens` tokens."""
    from langplay.config import LSPConfig

    if judge == "digits":
        if "judge" not in LSPConfig.model_fields:
            raise SystemExit("this langplay has no lsp.judge=digits: use --judge reply")
        return ["lsp.judge=digits"]
    return [f"lsp.judge_max_new_tokens={tokens}"]


def real_trainers(args) -> dict:
    reward = real_gsm8k.function_reward("ends_with_number")

    def grpo(work):
        return real_gsm8k.real_trainer([
            "algorithm=grpo", *real_gsm8k.trainer_overrides(args, work), *real_gsm8k.gsm8k_overrides(args),
            f"grpo.group_size={args.group}", f"grpo.rewards=[{reward}]"])

    def lsp(work, self_reward: bool):
        return real_gsm8k.real_trainer([
            "algorithm=lsp", *real_gsm8k.trainer_overrides(args, work), f"lsp.group_size={args.group}",
            f"lsp.task={TASK}", f"lsp.template='{TEMPLATE}'", f"lsp.max_query_tokens={min(QUERY_TOKENS, args.tokens)}",
            f"lsp.rewards=[{reward}]", f"lsp.self_reward={str(self_reward).lower()}",
            *(judge_overrides(args.judge, args.tokens) if self_reward else [])])

    return {"GRPO": grpo, "LSP-Zero": lambda work: lsp(work, False), "LSP": lambda work: lsp(work, True)}


def main(argv=None) -> int:
    presets = {"GRPO": "src/langplay/presets/grpo_tinyworld.yaml", "LSP-Zero": "src/langplay/presets/lsp_zero_tinyworld.yaml",
               "LSP": "src/langplay/presets/lsp_tinyworld.yaml"}
    trainers = {method: (lambda work, preset=preset: trainer_for(preset, work)) for method, preset in presets.items()}

    def judge_option(parser):
        parser.add_argument("--judge", default="digits", choices=["digits", "reply"],
                            help="on the real model: LSP's R_Q read from Box 3's score digits, or written (the paper)")

    return step_cost.run(argv, trainers, peer="GRPO", target=1.3, rounds=4, steps=4, real=real_trainers,
                         real_target=1.2, options=judge_option)


if __name__ == "__main__":
    sys.exit(main())
