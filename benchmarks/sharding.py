"""Two processes on this CPU (torchrun, gloo): the per-step cost of FSDP2 sharding against the default explicit
all-reduce, on one model and one SFT batch.

    python benchmarks/sharding.py [--hidden 512] [--layers 8] [--rounds 2] [--steps 6] [--json F]

Each round launches the same SFT run twice through the CLI, `train.sharding=none` then `fsdp2`, 2 processes of 1
thread each; a step's time is `time/step` in metrics.jsonl, the first step of every launch a warm-up. It reports
the median step of each, their ratio, and the time after the backward pass (the default mode's all-reduce of
every gradient, clipping, AdamW; under FSDP2 the gradients are reduce-scattered during the backward pass, and
the full copy is refreshed after AdamW).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, model: Path, data: Path, out: Path, sharding: str) -> list[dict]:
    overrides = [f"model.name_or_path={model}", "model.device=cpu", f"data.path={data}",
                 f"train.steps={args.steps}", f"train.prompts_per_step={args.rows}",
                 f"train.micro_batch_size={args.rows}", "train.lr=1e-5", f"train.precision={args.precision}",
                 f"train.sharding={sharding}", "run.progress=false", "run.save_every=0", f"run.output_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "-m", "langplay", "train", "sft", *overrides]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    facts = json.loads((out / "run.json").read_text())
    assert facts["processes"] == 2, facts
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rows", type=int, default=16, help="SFT rows per step (8 per process)")
    parser.add_argument("--length", type=int, default=128, help="characters per completion")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="per launch; the first is a warm-up")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from langplay.testing import save_tiny_model

    times: dict[str, list[float]] = {"none": [], "fsdp2": []}
    updates: dict[str, list[float]] = {"none": [], "fsdp2": []}
    with tempfile.TemporaryDirectory(prefix="sharding_") as tmp:
        work = Path(tmp)
        model = save_tiny_model(work / "model", hidden=args.hidden, layers=args.layers)
        params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(model).parameters())
        data = work / "sft.jsonl"
        data.write_text("".join(json.dumps({"prompt": f"Item {i:02d}: say it.", "completion": "ab" * (args.length // 2)})
                                + "\n" for i in range(64)))
        for r in range(args.rounds):
            for sharding in ("none", "fsdp2"):
                metrics = launch(args, model, data, work / f"{sharding}-{r}", sharding)[1:]
                times[sharding] += [m["time/step"] for m in metrics]
                updates[sharding] += [m["time/step"] - m["time/loss_backward"] - m["time/collect"] for m in metrics]
                print(f"round {r + 1}: {sharding:5s} " + ", ".join(f"{m['time/step']:.2f}" for m in metrics), flush=True)
    result = {"parameters": params, "hidden": args.hidden, "layers": args.layers, "rows": args.rows,
              "precision": args.precision, "processes": 2, "threads_per_process": 1,
              **{f"median_step_s_{k}": statistics.median(v) for k, v in times.items()},
              **{f"median_exchange_and_update_s_{k}": statistics.median(v) for k, v in updates.items()},
              "steps": times}
    result["ratio_fsdp2_over_none"] = result["median_step_s_fsdp2"] / result["median_step_s_none"]
    print(f"\n{params / 1e6:.1f}M parameters, {args.rows} rows x ~{args.length} tokens a step, 2 processes x 1 thread, "
          f"{args.precision}")
    for k in times:
        print(f"  {k:5s}: median step {result[f'median_step_s_{k}']:.3f} s; after the backward pass (gradient "
              f"exchange, clip, AdamW, refresh) {result[f'median_exchange_and_update_s_{k}']:.3f} s")
    print(f"  fsdp2 / none: {result['ratio_fsdp2_over_none']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
