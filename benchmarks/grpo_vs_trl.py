"""langplay's GRPO step against TRL's GRPOTrainer, on the same tiny model, in one process, on CPU.

    python benchmarks/grpo_vs_trl.py            # needs `pip install trl` (the benchmark's only extra)

Both train the same randomly initialised character-level Llama (langplay.testing.save_tiny_model) with the same
settings: 8 prompts x 8 completions x 64 new tokens per step (EOS cannot end a completion: langplay's
sampling.ignore_eos, TRL's generation_kwargs min_new_tokens), temperature 1, beta 0.04 (k3 KL, a reference
pass each step), one update per batch, "dapo" loss aggregation, AdamW at the same constant lr, gradient clipping
at 1, no gradient checkpointing, float32, the whole batch in one forward/backward. The reward is a trivial Python
function (the fraction of 'a' characters), the same for both. The two alternate: each round runs `--steps`
langplay steps, then a fresh TRL trainer for `--steps` steps; the first step of every block is a warm-up and is
not timed. A step is everything from taking the prompts to the optimizer step (sampling, rewards, reference
pass, loss, backward, update); TRL's is timed by a callback from on_step_begin to on_step_end.

It prints the median step time of each, their ratio (langplay / TRL) and the generated tokens per step.
`--prompt-tokens N` lengthens every prompt to N tokens (langplay runs a prompt once per group, TRL once per
completion, so the ratio falls as prompts grow); `--profile N` afterwards splits N steps of each by kind of
operator (matrix products, attention, copies, the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import step_cost  # noqa: E402  (the bf16 peak, shared with precision.py)

# All the same length, so neither side pads prompts and both process the same number of tokens per step.
PROMPTS = [f"Item {i:02d}: name a fruit." for i in range(16)]
# Put before each prompt to lengthen it (--prompt-tokens): a word problem's worth of text.
CONTEXT = ("A farmer has 3 fields. Each field has 12 rows of apple trees and every row holds 9 trees. "
           "In autumn each tree gives 40 apples, and the farmer sells them in boxes of 24 apples. ") * 8


def prompts_of_length(tokens: int, tokenizer) -> list[str]:
    """PROMPTS, each lengthened with the start of CONTEXT to `tokens` tokens once the chat template is applied."""
    def length(text: str) -> int:
        return len(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=True)["input_ids"])

    shortest = length(PROMPTS[0])
    extra = tokens - shortest
    if extra < 0 or extra > len(CONTEXT):
        raise SystemExit(f"--prompt-tokens must be between {shortest} and {shortest + len(CONTEXT)}")
    prompts = [CONTEXT[:extra] + p for p in PROMPTS]
    assert all(length(p) == tokens for p in prompts), "the tokenizer is character-level: one character, one token"
    return prompts


def fraction_of_a(prompts, completions, **kwargs) -> list[float]:
    """The reward of both: the fraction of 'a' characters in the completion."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]  # TRL passes chat messages
    return [t.count("a") / max(len(t), 1) for t in texts]


def build_langplay(args, model_dir: Path, data_path: Path, work: Path):
    from langplay.config import load_config
    from langplay.trainer import Trainer

    config = load_config(overrides=[
        f"model.name_or_path={model_dir}", "model.device=cpu", "model.dtype=float32", f"train.precision={args.precision}",
        f"data.path={data_path}",
        "train.steps=100000", f"train.prompts_per_step={args.prompts}", f"train.micro_batch_size={args.prompts * args.group}",
        f"train.lr={args.lr}", "train.max_grad_norm=1.0",
        f"grpo.group_size={args.group}", f"grpo.beta={args.beta}", f"grpo.loss_aggregation={args.loss}",
        f"sampling.max_new_tokens={args.tokens}", "sampling.ignore_eos=true", "sampling.temperature=1.0",
        f"sampling.backend={args.backend}", *(["sampling.vllm_dtype=bfloat16"] if args.precision == "bf16" else []),
        f"run.output_dir={work / 'langplay'}", "run.progress=false", "run.save_every=0",
    ])
    trainer = Trainer(config, rewards=[fraction_of_a])
    trainer.trackers = None  # no metrics.jsonl / samples.jsonl: only the step itself is timed
    return trainer


def build_trl(args, model_dir: Path, dataset, steps: int, work: Path, times: list):
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepTimer(TrainerCallback):
        def on_step_begin(self, targs, state, control, **kw):
            self.started = time.perf_counter()

        def on_step_end(self, targs, state, control, **kw):
            times.append(time.perf_counter() - self.started)

    config = GRPOConfig(
        output_dir=str(work / "trl"), report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
        use_cpu=True, bf16=args.precision == "bf16", fp16=False, gradient_checkpointing=False,
        max_steps=steps, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0, seed=0,
        per_device_train_batch_size=args.prompts * args.group, gradient_accumulation_steps=1,  # one step = one batch
        num_generations=args.group, num_iterations=1, steps_per_generation=1,
        max_completion_length=args.tokens, temperature=1.0, top_p=1.0, top_k=0,
        generation_kwargs={"min_new_tokens": args.tokens},  # EOS cannot end a completion early
        beta=args.beta, loss_type=args.loss, scale_rewards="group", epsilon=0.2,
        use_vllm=False, log_completions=False, dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = GRPOTrainer(model=model, reward_funcs=[fraction_of_a], args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[StepTimer()])
    trainer.remove_callback(PrinterCallback)  # its per-step log lines; the logs stay in trainer.state.log_history
    return trainer


# Where a step's CPU time goes, by the kind of operator (torch.profiler's self time of aten ops).
OP_KINDS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention": ("scaled_dot_product",),
    "cat and copies": ("aten::cat", "aten::copy_", "aten::index_select", "aten::repeat_interleave"),
}


OTHER_OPS = "elementwise and other"


def op_kind(name: str) -> str:
    return next((kind for kind, ops in OP_KINDS.items() if any(op in name for op in ops)), OTHER_OPS)


def profile_steps(run_steps, steps: int) -> dict:
    """Self CPU seconds per step by kind of operator, over `steps` steps run by `run_steps(start, stop)`."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    run_steps(prof.start, prof.stop)
    totals: dict[str, float] = {kind: 0.0 for kind in [*OP_KINDS, OTHER_OPS]}
    for event in prof.key_averages():
        if event.key.startswith("aten::"):  # Python-level and profiler frames are not operators
            totals[op_kind(event.key)] += event.self_cpu_time_total / 1e6 / steps
    return totals


def profile_both(args, lp, model_dir, dataset, work) -> dict:
    """Profile `args.profile` steps of each (after a warm-up step) and split their CPU time by kind of operator."""
    from transformers import TrainerCallback

    def langplay_steps(start, stop):
        lp.train_step()
        start()
        for _ in range(args.profile):
            lp.train_step()
        stop()

    def trl_steps(start, stop):
        class Window(TrainerCallback):
            def on_step_begin(self, targs, state, control, **kw):
                if state.global_step == 1:
                    start()

            def on_train_end(self, targs, state, control, **kw):
                stop()

        trainer = build_trl(args, model_dir, dataset, args.profile + 1, work, [])
        trainer.add_callback(Window())
        trainer.train()

    return {"langplay": profile_steps(langplay_steps, args.profile), "trl": profile_steps(trl_steps, args.profile)}


def print_profile(profile: dict) -> None:
    lp, trl = profile["langplay"], profile["trl"]
    print("\nCPU time per step by kind of operator (torch.profiler, self time; the profiler adds its own overhead):")
    print(f"  {'kind':<24}{'langplay':>10}{'TRL':>10}{'ratio':>8}")
    for kind in [*lp, "all operators"]:
        a, b = (sum(lp.values()), sum(trl.values())) if kind == "all operators" else (lp[kind], trl[kind])
        print(f"  {kind:<24}{a:>9.3f}s{b:>9.3f}s{a / b:>8.2f}")


def versions() -> dict:
    import accelerate
    import transformers
    import trl

    import langplay

    return {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "accelerate": accelerate.__version__, "trl": trl.__version__,
        "langplay": getattr(langplay, "__version__", "?"),
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="steps per block; the first of each is not timed")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=30,
                        help="prompt length after the chat template (30: the bare prompts; more: text put before them)")
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--loss", default="dapo", choices=["dapo", "bnpo", "dr_grpo", "grpo"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both (1: steadiest on a shared machine; see BENCHMARKS.md)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="afterwards, profile N steps of each and split their time by kind of operator")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="both: langplay's train.precision, TRL's bf16=True (autocast over float32 weights)")
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"],
                        help="langplay's sampler (sampling.backend; vllm: bfloat16 weights in bf16 runs); TRL "
                             "generates with transformers (use_vllm=False) either way")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step of each block is a warm-up)")

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    from langplay.testing import save_tiny_model

    with tempfile.TemporaryDirectory(prefix="grpo_vs_trl_") as tmp:
        work = Path(tmp)
        model_dir = save_tiny_model(work / "model", hidden=args.hidden, layers=args.layers)
        data_path = work / "prompts.jsonl"
        prompts = prompts_of_length(args.prompt_tokens, transformers.AutoTokenizer.from_pretrained(model_dir))
        data_path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        # TRL gets the same prompts as chat messages, so both apply the tokenizer's chat template the same way.
        dataset = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
        n_params = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(model_dir).parameters())

        lp = build_langplay(args, model_dir, data_path, work)
        lp_times, lp_collect, lp_lengths, trl_times, trl_lengths, trl_tokens = [], [], [], [], [], []
        lp_update, peaks = [], {"bf16": [], "fp32": []}
        for r in range(args.rounds):
            for i in range(args.steps):
                m = lp.train_step()
                lp_lengths.append(m["completion_length"])
                if i:  # the block's first step is a warm-up
                    lp_times.append(m["time/step"])
                    lp_collect.append(m["time/collect"])
                    lp_update.append(m["time/loss_backward"])
            times: list[float] = []
            trainer = build_trl(args, model_dir, dataset, args.steps, work, times)
            trainer.train()
            trl_times += times[1:]
            logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
            trl_lengths += [h["completions/mean_length"] for h in logs]
            trl_tokens += [b["num_tokens"] - a["num_tokens"] for a, b in zip([{"num_tokens": 0}] + logs, logs)]
            # The peaks are probed after every round: on a shared machine a matrix product's rate moves by several
            # times within an hour (seen here: bf16 0.55-2.56 TFLOP/s), and the best rate seen is the ceiling.
            peaks["bf16"].append(step_cost.bf16_peak_tflops(budget_s=1.0))
            peaks["fp32"].append(step_cost.matmul_peak_tflops(torch.float32, budget_s=1.0))
            print(f"round {r + 1}/{args.rounds}: langplay {', '.join(f'{t:.2f}' for t in lp_times[-(args.steps - 1):])} s"
                  f"  |  TRL {', '.join(f'{t:.2f}' for t in times[1:])} s", flush=True)
            del trainer
        profile = profile_both(args, lp, model_dir, dataset, work) if args.profile else None
        peak, fp32_peak = max(peaks["bf16"]), max(peaks["fp32"])

    prompt_tokens = len(lp.policy.encode(lp.policy.format_prompt(prompts[0])))
    lp_seq_tokens = args.prompts * args.group * (prompt_tokens + args.tokens)
    # Tokens each pass (sampling, reference, training) runs through the model: langplay runs a prompt once for
    # its group, TRL once per completion. Their ratio is the ratio of the two steps' model arithmetic.
    model_tokens = {"langplay": args.prompts * (prompt_tokens + args.group * args.tokens), "trl": lp_seq_tokens}
    lp_median, trl_median = statistics.median(lp_times), statistics.median(trl_times)
    tokens_per_step = args.prompts * args.group * args.tokens
    result = {
        "machine": machine(), "threads": args.threads, "versions": versions(),
        "model": {"hidden": args.hidden, "layers": args.layers, "parameters": n_params},
        "settings": {k: getattr(args, k) for k in ("rounds", "steps", "prompts", "group", "tokens", "prompt_tokens",
                                                   "beta", "lr", "loss")},
        "langplay": {"median_step_s": lp_median, "timed_steps": len(lp_times), "steps_s": lp_times,
                     "median_collect_s": statistics.median(lp_collect),
                     "mean_completion_length": statistics.mean(lp_lengths)},
        "trl": {"median_step_s": trl_median, "timed_steps": len(trl_times), "steps_s": trl_times,
                "mean_completion_length": statistics.mean(trl_lengths)},
        "ratio_langplay_over_trl": lp_median / trl_median,
        "generated_tokens_per_step": tokens_per_step,
        "sequence_tokens_per_step": {"langplay": lp_seq_tokens, "trl": statistics.median(trl_tokens)},
        "model_tokens_per_pass": model_tokens,
        "model_token_ratio": model_tokens["langplay"] / model_tokens["trl"],
        "precision": args.precision, "langplay_backend": args.backend,
        "langplay_precision": lp.precision,  # what the trainer resolved: the run compares what it says
    }
    # The training forward + backward as a fraction of the machine's bf16 matrix-product peak, as GPU people
    # report MFU: 6 x parameters x the tokens the training pass runs, over its median time.
    update = statistics.median(lp_update)
    train_tflops = 6 * n_params * model_tokens["langplay"] / update / 1e12
    # Without bf16 units the bf16 probe is emulated and no ceiling; the peak of the precision trained in is
    # what MFU means there (and, for an fp32 run, everywhere).
    from langplay.policy import fast_bf16

    result["training_pass"] = {"median_s": update, "tflops": train_tflops, "bf16_peak_tflops": peak,
                               "fraction_of_bf16_peak": train_tflops / peak, "native_bf16": fast_bf16(torch.device("cpu")),
                               "fp32_peak_tflops": fp32_peak, "fraction_of_fp32_peak": train_tflops / fp32_peak,
                               "peak_probes_tflops": peaks}
    v = result["versions"]
    print()
    print(f"machine: {result['machine']}; torch threads: {args.threads}")
    print(f"versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    print(f"model: Llama, hidden {args.hidden}, {args.layers} layers, {n_params / 1e6:.2f}M parameters, float32 "
          f"weights, {args.precision}, CPU")
    print(f"step: {args.prompts} prompts of {prompt_tokens} tokens x {args.group} completions x {args.tokens} tokens, "
          f"beta {args.beta}, loss {args.loss}, lr {args.lr}")
    print(f"mean completion length: langplay {result['langplay']['mean_completion_length']:.2f}, "
          f"TRL {result['trl']['mean_completion_length']:.2f} (of {args.tokens})")
    print(f"tokens per step (prompt + completion): langplay {lp_seq_tokens}, TRL {statistics.median(trl_tokens):.0f}")
    print(f"tokens through the model per pass: langplay {model_tokens['langplay']}, TRL {model_tokens['trl']} "
          f"(ratio {result['model_token_ratio']:.3f}: the ratio of their model arithmetic)")
    print(f"langplay: median step {lp_median:.3f} s over {len(lp_times)} steps "
          f"({tokens_per_step / lp_median:.0f} generated tokens/s; sampling+rewards+reference "
          f"{result['langplay']['median_collect_s']:.3f} s, update {lp_median - result['langplay']['median_collect_s']:.3f} s)")
    print(f"TRL:      median step {trl_median:.3f} s over {len(trl_times)} steps "
          f"({tokens_per_step / trl_median:.0f} generated tokens/s)")
    print(f"ratio langplay / TRL: {result['ratio_langplay_over_trl']:.3f}  (targets: 0.7 at first, 0.33 since the scale-out issue)")
    t = result["training_pass"]
    print(f"training forward+backward: {t['median_s']:.3f} s, {t['tflops']:.3f} TFLOP/s = "
          f"{t['fraction_of_bf16_peak']:.1%} of this machine's bf16 matmul peak ({t['bf16_peak_tflops']:.2f} TFLOP/s"
          f"{'' if t['native_bf16'] else '; no bf16 units here: emulated, no ceiling'}), "
          f"{t['fraction_of_fp32_peak']:.1%} of its fp32 peak ({t['fp32_peak_tflops']:.2f} TFLOP/s); the peaks are "
          f"the best of a probe after each round (bf16 {min(peaks['bf16']):.2f}-{peak:.2f}, fp32 "
          f"{min(peaks['fp32']):.2f}-{fp32_peak:.2f} TFLOP/s)")
    if profile:
        result["profile_s_per_step"] = {"steps": args.profile, **profile}
        print_profile(profile)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
