"""The vLLM sampler, colocated with the trainer on the same GPU (TRL's "colocate" mode).

Status: written against vLLM's offline `LLM` API but NOT yet exercised on a GPU by our test suite (CI has no
GPU). Seeds are per request (`SamplingParams(seed=...)`), so a prompt's completions do not depend on the batch,
as with the transformers sampler, though the two backends draw different completions for the same seed.
After each optimizer step `sync_weights` loads the policy's weights into the engine in place.
"""

from __future__ import annotations

import os

from langplay.config import SamplingConfig
from langplay.errors import LangplayError
from langplay.sampling import Samples


class VLLMSampler:
    def __init__(self, config: SamplingConfig, policy):
        try:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # keep the engine in this process
            from vllm import LLM
        except ImportError:
            raise LangplayError("sampling.backend=vllm needs vLLM: pip install 'langplay[vllm]' (GPU only)") from None
        self.config, self.policy = config, policy
        name = policy.model.config.name_or_path
        self.llm = LLM(
            model=name, tokenizer=name, dtype=str(next(policy.model.parameters()).dtype).removeprefix("torch."),
            gpu_memory_utilization=config.vllm_gpu_memory_utilization, enable_prefix_caching=True,
            max_model_len=config.max_prompt_tokens + config.max_new_tokens,
        )
        self.sync_weights()

    def _engine_model(self):
        executor = self.llm.llm_engine.model_executor
        worker = executor.driver_worker
        worker = getattr(worker, "worker", worker)
        return worker.model_runner.model

    def sync_weights(self) -> None:
        model = self.policy.model
        if self.policy.uses_lora:  # vLLM holds the merged weights: merge, send, unmerge
            model.merge_adapter()
            state = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                     for k, v in model.state_dict().items() if "lora_" not in k}
            self._engine_model().load_weights(state.items())
            model.unmerge_adapter()
        else:
            self._engine_model().load_weights(model.state_dict().items())
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[str], n: int, seeds: list[int], max_new_tokens: int | None = None) -> Samples:
        from vllm import SamplingParams, TokensPrompt

        cfg, tokenizer = self.config, self.policy.tokenizer
        prompt_ids = [self.policy.encode(p)[-cfg.max_prompt_tokens :] for p in prompts]
        params = [
            SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=max_new_tokens or cfg.max_new_tokens,
                           seed=seed, logprobs=0, ignore_eos=cfg.ignore_eos, skip_special_tokens=True)
            for seed in seeds
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
        samples = Samples([], [], [], [], [])
        for ids, output in zip(prompt_ids, outputs):
            for completion in output.outputs:
                tokens = list(completion.token_ids)
                samples.prompt_ids.append(ids)
                samples.completion_ids.append(tokens)
                samples.texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
                samples.logprobs.append([step[t].logprob for step, t in zip(completion.logprobs or [], tokens)])
                samples.finished.append(completion.finish_reason == "stop" and bool(tokens) and tokens[-1] == tokenizer.eos_token_id)
        return samples
