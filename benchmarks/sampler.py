"""vLLM against langplay's transformers sampler on this machine: generated tokens per second, and a GRPO step with
each backend. Needs vLLM (./dev setup installs its CPU build).

    python benchmarks/sampler.py [--sizes tiny 100m] [--rounds 3] [--threads 2] [--json F]

Models: random character-level Llamas (langplay.testing.save_tiny_model), "tiny" (hidden 64, 2 layers, heads of
32) and "100m" (hidden 1024, 10 layers, heads of 64: 1.0e8 parameters). Sampling: 8 prompts x 8 and 32 prompts x 8
completions of 64 tokens (EOS ignored), temperature 1, fp32 weights; "bf16" is the HF sampler under autocast and
vLLM with bfloat16 weights. The two take turns, `--rounds` times; medians. Then a GRPO step (8 x 8 x 64, beta
0.04, the HF backend under train.precision=bf16, vLLM with sampling.vllm_dtype=bfloat16 and the default tis
correction) alternating in blocks of 3 steps (the first a warm-up).
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
sys.path.insert(0, str(Path(__file__).parent))
SIZES = {"tiny": {"hidden": 64, "layers": 2, "heads": 2}, "100m": {"hidden": 1024, "layers": 10, "heads": 16}}


def samplers(model_dir: Path, precision: str):
    import torch

    from langplay.config import ModelConfig, SamplingConfig
    from langplay.policy import Policy
    from langplay.precision import autocast
    from langplay.sampling.hf import HFSampler
    from langplay.sampling.vllm import VLLMSampler

    policy = Policy.from_config(ModelConfig(name_or_path=str(model_dir)), with_reference=False)
    common = dict(max_new_tokens=64, max_prompt_tokens=64, ignore_eos=True)
    hf = HFSampler(SamplingConfig(**common), policy)
    vllm = VLLMSampler(SamplingConfig(backend="vllm", vllm_dtype="bfloat16" if precision == "bf16" else "auto",
                                      **common), policy)

    def with_hf(prompts, n, seeds):
        with autocast(precision, torch.device("cpu")):
            return hf.generate(prompts, n, seeds)

    return policy, {"hf": with_hf, "vllm": vllm.generate}


def tokens_per_second(model_dir: Path, precision: str, rounds: int) -> dict:
    policy, backends = samplers(model_dir, precision)
    out = {}
    for prompts in (8, 32):
        texts = [policy.format_prompt(f"Item {i:02d}: name a fruit.") for i in range(prompts)]
        times = {name: [] for name in backends}
        for name, generate in backends.items():
            generate(texts, 8, list(range(prompts)))  # warm-up
        for r in range(rounds):
            for name, generate in backends.items():
                started = time.perf_counter()
                samples = generate(texts, 8, [r * 1000 + i for i in range(prompts)])
                times[name].append(time.perf_counter() - started)
                assert sum(map(len, samples.completion_ids)) == prompts * 8 * 64
        out[f"{prompts}x8"] = {name: prompts * 8 * 64 / statistics.median(t) for name, t in times.items()}
        out[f"{prompts}x8"]["vllm_over_hf_time"] = out[f"{prompts}x8"]["hf"] / out[f"{prompts}x8"]["vllm"]
        print(f"  {precision} {prompts}x8x64: HF {out[f'{prompts}x8']['hf']:.0f} tok/s, vLLM "
              f"{out[f'{prompts}x8']['vllm']:.0f} tok/s (vLLM time / HF time "
              f"{out[f'{prompts}x8']['vllm_over_hf_time']:.2f})", flush=True)
    return out


def grpo_steps(model_dir: Path, work: Path, rounds: int) -> dict:
    import step_cost

    from langplay.config import load_config
    from langplay.trainer import Trainer

    work.mkdir(parents=True, exist_ok=True)
    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Item {i:02d}: name a fruit."}) + "\n" for i in range(16)))

    def trainer(backend: str):
        extra = ["sampling.backend=vllm", "sampling.vllm_dtype=bfloat16"] if backend == "vllm" else []
        config = load_config(overrides=[
            f"model.name_or_path={model_dir}", f"data.path={data}", "train.steps=100000", "train.prompts_per_step=8",
            "train.micro_batch_size=64", "train.lr=1e-5", "train.precision=bf16", "grpo.group_size=8",
            "sampling.max_new_tokens=64", "sampling.max_prompt_tokens=64", "sampling.ignore_eos=true",
            "run.progress=false", "run.save_every=0", f"run.output_dir={work / backend}", *extra])
        t = Trainer(config, rewards=[lambda prompts, completions, **k: [c.count("a") / 64 for c in completions]])
        t.trackers = None
        return t

    result = step_cost.compare({"hf": trainer("hf"), "vllm": trainer("vllm")}, rounds, 3)
    result["vllm_over_hf"] = result["vllm"]["median_step_s"] / result["hf"]["median_step_s"]
    print(f"  GRPO step: HF {result['hf']['median_step_s']:.2f} s, vLLM {result['vllm']['median_step_s']:.2f} s "
          f"(vLLM / HF {result['vllm_over_hf']:.2f}; target <= 0.5 at 100M)", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-grpo", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from langplay.testing import save_tiny_model

    result = {"threads": args.threads, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="sampler_") as tmp:
        for size in args.sizes:
            model_dir = save_tiny_model(Path(tmp) / size, **SIZES[size])
            params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(model_dir).parameters())
            print(f"{size}: {params / 1e6:.1f}M parameters", flush=True)
            row = {"parameters": params, **{p: tokens_per_second(model_dir, p, args.rounds) for p in ("fp32", "bf16")}}
            if not args.no_grpo:
                row["grpo"] = grpo_steps(model_dir, Path(tmp) / f"{size}-runs", max(2, args.rounds - 1))
            result["sizes"][size] = row
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
