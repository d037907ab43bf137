"""The policy: a causal LM, its tokenizer and chat template, a frozen reference, and its log-probs.

Any Hugging Face causal LM loads by Hub name or local folder (`langplay.models`). With LoRA (peft) the reference
model is the base with the adapter disabled, so the weights are held once. Saved models are plain HF folders
(safetensors) that transformers and vLLM load as they are. Under train.sharding=fsdp2 the trainer uses
`langplay.sharding.ShardedPolicy`, which trains FSDP2 shards behind the same methods.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langplay.batch import micro_batch_bounds, slice_batch
from langplay.config import ModelConfig
from langplay.distributed import sum_gradients
from langplay.errors import LangplayError
from langplay.logprobs import TokenLogprobs, logprob_dtype, sequence_logprobs
from langplay.models import add_lora, frozen_copy, load_model, load_tokenizer, write_model_facts
from langplay.precision import resolve_device
from langplay.text import encodable

Prompt = str | list[dict]  # plain text, or chat messages [{"role": ..., "content": ...}]


class Policy:
    """A trainable model with its tokenizer and frozen reference."""

    # Whether a bf16 pass may run on a bf16 copy of the trained weights (`precision.bf16_weight_copies`).
    bf16_copies = True

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        reference: PreTrainedModel | None = None,
        chunk_tokens: int = 2048,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.reference = reference  # None with LoRA: the reference is the base with the adapter disabled
        self.chunk_tokens = chunk_tokens
        self.facts: dict = {}  # how it was trained, saved beside its weights (MODEL_FACTS): e.g. IRL's irl_gamma

    @classmethod
    def from_config(cls, config: ModelConfig, with_reference: bool = True, device: torch.device | None = None) -> Policy:
        device = device or resolve_device(config.device)
        tokenizer = load_tokenizer(config)
        model = load_model(config, device)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        reference = None
        if config.lora is not None:
            model = add_lora(model, config)
        elif with_reference:
            reference = frozen_copy(model)
        return cls(model, tokenizer, reference, config.logprob_chunk_tokens)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def uses_lora(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    def add_reference(self) -> None:
        """Keep a frozen copy of the current weights as the reference, unless there is one (with LoRA: the base)."""
        if self.reference is None and not self.uses_lora:
            self.reference = frozen_copy(self.model)

    # -- training: what the optimizer steps, and what happens around its step -------------------------------
    @property
    def trained_module(self) -> torch.nn.Module:
        return self.model

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.trained_module.parameters() if p.requires_grad]

    def micro_batch_rounds(self, accelerator, count: int) -> int:
        """How many micro-batch passes this process runs when it holds `count`: its own."""
        return count

    def reduce_gradients(self, accelerator, params: list[torch.nn.Parameter]) -> None:
        """Make every process's gradients their sum over the processes."""
        sum_gradients(accelerator, params)

    def after_optimizer_step(self) -> None:
        """Whatever must follow the trained weights after an optimizer step (nothing: they are the model's own)."""

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """`optimizer.state_dict()`, whole (a sharded policy gathers it: call it on every process)."""
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)

    def weights_loaded(self) -> None:
        """The model's weights were replaced (a checkpoint): whatever holds a copy of them follows (nothing here)."""

    # -- text --------------------------------------------------------------------------------------------
    def format_prompt(self, prompt: Prompt, system_prompt: str | None = None) -> str:
        """The text the model continues: the chat template with a generation prompt, or the raw text."""
        if self.tokenizer.chat_template is None:
            if isinstance(prompt, str):
                return prompt if system_prompt is None else f"{system_prompt}\n\n{prompt}"
            return "\n".join(m["content"] for m in prompt)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if system_prompt is not None and messages[0].get("role") != "system":
            messages = [{"role": "system", "content": system_prompt}] + messages
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(encodable(text), add_special_tokens=False)["input_ids"]

    # -- log-probs ---------------------------------------------------------------------------------------
    def logprobs(self, batch: dict, temperature: float = 1.0, with_entropy: bool = False,
                 with_values: bool = False) -> TokenLogprobs:
        """Log-probs under autograd, of the model that trains."""
        return sequence_logprobs(self.model, batch, temperature, self.chunk_tokens, with_entropy, with_values)

    def reference_logprobs(self, batch: dict, temperature: float = 1.0, micro_batch_size: int = 16) -> torch.Tensor:
        """Log-probs of the completion tokens under the frozen reference, micro-batch by micro-batch."""
        out = self.zero_logprobs(batch)
        with torch.inference_mode(), self.reference_model() as reference:  # no autograd bookkeeping at all
            for start, stop in micro_batch_bounds(batch, micro_batch_size):
                logp = sequence_logprobs(reference, slice_batch(batch, start, stop), temperature, self.chunk_tokens).logp
                out[start:stop, : logp.shape[1]] = logp
        return out.clone()  # outside inference mode: an ordinary tensor, usable in the loss under autograd

    def zero_logprobs(self, batch: dict) -> torch.Tensor:
        """Zeros shaped like the batch's completion mask, in the dtype of the model's log-probs."""
        mask = batch["completion_mask"]
        return torch.zeros(mask.shape, dtype=logprob_dtype(self.model), device=mask.device)

    @contextlib.contextmanager
    def reference_model(self):
        """The reference as a whole model (to sample from)."""
        if self.reference is not None:
            yield self.reference
        elif self.uses_lora:
            with self.model.disable_adapter():
                yield self.model
        else:
            raise LangplayError("this policy has no reference model (load it with with_reference=True)")

    # -- saving ------------------------------------------------------------------------------------------
    def save(self, path: str | Path, merge_lora: bool = True) -> Path:
        """An HF folder with safetensors weights and the tokenizer; LoRA is merged so vLLM loads it as is."""
        path = Path(path)
        model = self.model
        if self.uses_lora and merge_lora:
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        write_model_facts(self.facts, path)
        return path
