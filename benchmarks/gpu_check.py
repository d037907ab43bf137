"""The prepared GPU check: when a device is lent, one command of a few minutes runs every algorithm for a few steps
on CUDA in bf16 on a randomly initialised ~0.5B-shaped Llama (Qwen2.5-0.5B's widths), and reports step time,
tokens/s and peak memory per algorithm, and TRL's GRPO step on the same model and settings when trl is there.

    python benchmarks/gpu_check.py [--device cuda] [--shape 0.5b] [--steps 3] [--json F]

On the device (no network), the missing wheels travel with the tree: `bash benchmarks/gpu_wheels.sh` here fills
.whl/, and the command there starts with the install line of the device tool's README (see BENCHMARKS.md). On a
CPU, `--device cpu --shape tiny` runs the same code in seconds (the test suite does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHAPES = {  # Qwen2.5-0.5B: hidden 896, 24 layers, 14 heads of 64, 2 KV heads, intermediate 4864
    "0.5b": {"hidden": 896, "layers": 24, "heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864},
    "tiny": {"hidden": 64, "layers": 2, "heads": 2},
}

def count_a(prompts, completions, **columns):
    return [c.count("a") / max(1, len(c)) for c in completions]


def write_data(folder: Path) -> dict:
    prompts = folder / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Item {i:02d}: name a fruit.", "answer": "a"}) + "\n"
                               for i in range(64)))
    sft = folder / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": f"Item {i:02d}: name a fruit.", "completion": "banana " * 8})
                           + "\n" for i in range(64)))
    return {"prompts": prompts, "sft": sft}


def plans(files: dict) -> dict[str, list[str]]:
    return {
        "grpo": ["algorithm=grpo", f"data.path={files['prompts']}", "grpo.group_size=8"],
        "lsp": ["algorithm=lsp", "lsp.group_size=4", "lsp.challenger_prompt=Write a short task.",
                "lsp.max_query_tokens=32", "lsp.self_reward=true", "lsp.judge_max_new_tokens=16"],
        "jepo": ["algorithm=jepo", f"data.path={files['prompts']}", "jepo.group_size=4", "jepo.answer_marker=a"],
        "irl": ["algorithm=irl", f"data.path={files['sft']}", "irl.online_fraction=0.25"],
        "sft": ["algorithm=sft", f"data.path={files['sft']}"],
    }


def run_algorithm(name: str, more: list[str], model: Path, args, work: Path) -> dict:
    import torch

    from langplay.config import load_config
    from langplay.trainer import Trainer

    config = load_config(overrides=[
        f"model.name_or_path={model}", f"model.device={args.device}", f"train.precision={args.precision}",
        f"train.steps={args.steps}", "train.prompts_per_step=8", "train.micro_batch_size=16", "train.lr=1e-5",
        f"sampling.max_new_tokens={args.tokens}", "sampling.max_prompt_tokens=64", "run.progress=false",
        "run.save_every=0", f"run.output_dir={work / name}", *more])
    rewards = [count_a] if name in ("grpo", "lsp") else None  # LSP: the task reward beside its self-judge
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(config, rewards=rewards)
    history = trainer.train()
    timed = history[1:] or history  # the first step compiles kernels and warms caches
    row = {"median_step_s": statistics.median(h["time/step"] for h in timed),
           "tokens_per_second": statistics.median(h["tokens_per_second"] for h in timed),
           "precision": trainer.precision, "steps": len(history)}
    if args.device == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def trl_grpo(model: Path, files: dict, args, work: Path) -> dict | None:
    try:
        import trl  # noqa: F401
    except ImportError:
        return None
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.started = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.started)

    rows = [json.loads(line) for line in files["prompts"].read_text().splitlines()]
    dataset = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])
    config = GRPOConfig(output_dir=str(work / "trl"), report_to="none", save_strategy="no", disable_tqdm=True,
                        use_cpu=args.device == "cpu", bf16=args.precision == "bf16", max_steps=args.steps,
                        learning_rate=1e-5, per_device_train_batch_size=64, num_generations=8,
                        max_completion_length=args.tokens, beta=0.04, loss_type="dapo", logging_steps=1)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
                          reward_funcs=[count_a], args=config, train_dataset=dataset,
                          processing_class=AutoTokenizer.from_pretrained(model), callbacks=[StepTimer()])
    trainer.train()
    return {"median_step_s": statistics.median(times[1:] or times)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--shape", default="0.5b", choices=list(SHAPES))
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per completion")
    parser.add_argument("--algorithms", nargs="+", default=["grpo", "lsp", "jepo", "irl", "sft"])
    parser.add_argument("--no-trl", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    from langplay.testing import save_tiny_model

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --shape tiny to check the script itself")
    result = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
              "shape": args.shape, "precision": args.precision, "steps": args.steps, "tokens": args.tokens,
              "algorithms": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        shape = dict(SHAPES[args.shape])
        model = save_tiny_model(work / "model", hidden=shape.pop("hidden"), layers=shape.pop("layers"),
                                heads=shape.pop("heads"), **shape)
        from transformers import AutoModelForCausalLM

        result["parameters"] = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters())
        print(f"{result['device']}: {result['parameters'] / 1e6:.0f}M parameters, {args.precision}", flush=True)
        files = write_data(work)
        for name in args.algorithms:
            started = time.perf_counter()
            row = run_algorithm(name, plans(files)[name], model, args, work)
            result["algorithms"][name] = row
            print(f"  {name:5s} step {row['median_step_s']:.3f} s, {row['tokens_per_second']:.0f} tokens/s"
                  + (f", peak {row['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in row else "")
                  + f" ({time.perf_counter() - started:.0f} s in all)", flush=True)
        if not args.no_trl and "grpo" in args.algorithms:
            trl = trl_grpo(model, files, args, work)
            if trl:
                result["trl_grpo"] = trl
                ratio = result["algorithms"]["grpo"]["median_step_s"] / trl["median_step_s"]
                result["grpo_over_trl"] = ratio
                print(f"  TRL GRPO step {trl['median_step_s']:.3f} s: langplay / TRL {ratio:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
