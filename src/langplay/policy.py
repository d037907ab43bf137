"""The policy: a causal LM, its tokenizer and chat template, a frozen reference, and chunked log-probs.

Any Hugging Face causal LM loads by Hub name or local folder. With LoRA (peft) the reference model is the base
with the adapter disabled, so the weights are held once. Saved models are plain HF folders (safetensors) that
transformers and vLLM load as they are.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from langplay.config import ModelConfig
from langplay.errors import LangplayError, first_line
from langplay.files import atomic_write_text
from langplay.gguf import gguf_location, load_gguf_model, load_gguf_tokenizer
from langplay.text import encodable

Prompt = str | list[dict]  # plain text, or chat messages [{"role": ..., "content": ...}]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LangplayError("model.device=cuda but no CUDA device is visible: use model.device=cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, frozen: bool = False) -> torch.dtype:
    """auto: float32 weights for a model that is trained (speed comes from mixed precision, train.precision, not
    from storage); a `frozen` one (a reward model: never trained, so no float32 master copy is needed) is stored
    in bfloat16 on CUDA, where that is fast, and in float32 elsewhere."""
    if dtype != "auto":
        return getattr(torch, dtype)
    return torch.bfloat16 if frozen and device.type == "cuda" else torch.float32


def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products are fast here: CUDA with bf16, or a CPU with AMX or AVX512-BF16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


BF16_MIN_HIDDEN = 256  # below it a CPU bf16 step was slower (hidden 128: 0.21 s against 0.17; 256: 0.31 against 0.45)


def resolve_precision(precision: str, device: torch.device, weights: torch.dtype,
                      hidden_size: int | None = None) -> str:
    """auto: bf16 where the hardware has fast bf16, the weights are float32 and the model is not tiny (on a CPU,
    a tiny model's step is bound by overheads, which autocast adds to); otherwise fp32."""
    if precision == "auto":
        big_enough = device.type == "cuda" or (hidden_size or 0) >= BF16_MIN_HIDDEN
        return "bf16" if weights == torch.float32 and big_enough and fast_bf16(device) else "fp32"
    if precision == "bf16" and weights != torch.float32:
        raise LangplayError(f"train.precision=bf16 computes over float32 weights; model.dtype is {weights}: "
                            "use model.dtype=auto or float32, or train.precision=fp32")
    return precision


def autocast(precision: str, device: torch.device):
    """The context that runs a forward (and its backward) at `precision`: bf16 autocast, or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def bf16_weight_copies(module: torch.nn.Module, enabled: bool = True):
    """Run the forward and backward inside on one bf16 copy of each float32 weight instead of autocast's cast at
    every use (on this CPU the bf16 training pass at 95M parameters takes 0.59x the time:
    benchmarks/bf16_weight_copy.py). Autocast still keeps its float32 ops in float32. On leaving, the float32
    weights are back as the masters the optimizer steps, and the gradients come back as float32, added to any
    that were there (micro-batches accumulate in float32, not bf16)."""
    params = [p for p in module.parameters() if p.dtype == torch.float32] if enabled else []
    saved = [(p.data, p.grad) for p in params]
    for p in params:
        p.grad = None  # a float32 gradient cannot sit on a bf16 weight
    if enabled:
        bf16_parameters(module)
    try:
        yield
    finally:
        for p, (master, before) in zip(params, saved):
            new, p.grad = p.grad, None
            p.data = master
            if new is None:
                p.grad = before
            else:
                p.grad = new.float() if before is None else before + new.float()


def bf16_parameters(module: torch.nn.Module) -> None:
    """Store a module's float32 parameters in bf16 (for good: a frozen one; for a while: `bf16_weight_copies`);
    buffers stay float32 (`module.to(bfloat16)` would also round the rotary frequencies, and the log-probs
    would differ)."""
    for p in module.parameters():
        if p.dtype == torch.float32:
            p.data = p.data.to(torch.bfloat16)


def load_tokenizer(config: ModelConfig) -> PreTrainedTokenizerBase:
    require_model(config)
    source = config.tokenizer or config.name_or_path
    gguf = gguf_location(source, None if config.tokenizer else config.gguf_file, config.revision)
    if gguf is not None:  # the tokenizer and chat template stored in the GGUF file
        tokenizer = load_gguf_tokenizer(gguf)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                source, revision=config.revision, trust_remote_code=config.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise LangplayError(f"cannot load tokenizer {source!r}: {first_line(exc)}") from None
    if config.chat_template is not None:
        tokenizer.chat_template = config.chat_template
    if tokenizer.pad_token is None:  # many base models ship none; padding is always masked out
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def require_model(config: ModelConfig) -> None:
    if not config.name_or_path:
        raise LangplayError("no model given: set model.name_or_path to a Hub name, a local folder or a .gguf file")


def load_model(config: ModelConfig, device: torch.device) -> PreTrainedModel:
    require_model(config)
    gguf = gguf_location(config.name_or_path, config.gguf_file, config.revision)
    if gguf is not None:  # dequantized to model.dtype; saves like any model (langplay.gguf)
        return load_gguf_model(gguf, resolve_dtype(config.dtype, device)).to(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            config.name_or_path,
            revision=config.revision,
            dtype=resolve_dtype(config.dtype, device),
            trust_remote_code=config.trust_remote_code,
        )
    except Exception as exc:  # OSError, ValueError, safetensors' errors on a truncated file, ...
        raise LangplayError(f"cannot load model {config.name_or_path!r}: {type(exc).__name__}: "
                            f"{first_line(exc)}") from None
    return model.to(device)




def add_lora(model: PreTrainedModel, config: ModelConfig) -> PreTrainedModel:
    from peft import LoraConfig, get_peft_model

    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def with_cache(model, cache) -> dict:
    """Keyword arguments that pass a KV cache to `model`, by the name its transformers version uses."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {_cache_argument(type(base)): cache, "use_cache": True}


@functools.lru_cache
def _cache_argument(model_class) -> str:
    # transformers 5.24 renamed `past_key_values` to `cache` (the old name still works, with a warning)
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


@dataclass
class TokenLogprobs:
    logp: torch.Tensor  # (sequences, completion tokens), 0 where the mask is 0
    entropy: torch.Tensor | None  # same shape, entropy of the next-token distribution
    # with_values: soft values V(s) = logsumexp(logits / temperature) of the states that predict each token
    # (same shape, 0 off the mask), and of the state after each row's last completion token, shape (sequences,)
    values: torch.Tensor | None = None
    final_values: torch.Tensor | None = None


class Policy:
    """A trainable model with its tokenizer and frozen reference."""

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
        self.sharded = None  # train.sharding=fsdp2: the trained shards; self.model is then their full copy
        self.sharded_reference = None  # and the reference's shards, in place of self.reference
        self.gathered_reference = None  # the reference made whole again, for a judge that samples from it
        self.adapters_off = False  # a view of a LoRA model with its adapter disabled (the reference)
        self.facts: dict = {}  # how it was trained, saved beside its weights (MODEL_FACTS): e.g. IRL's irl_gamma

    # -- training: the model itself, or its FSDP2 shards (see langplay.sharding) ----------------------------
    def shard(self, device: torch.device) -> None:
        from langplay.sharding import shard

        self.sharded = shard(self.model, device)
        if self.reference is not None:  # frozen: its full copy is only needed whole to sample from
            self.sharded_reference, self.reference = shard(self.reference, device), None

    @property
    def trained_module(self) -> torch.nn.Module:
        return self.sharded if self.sharded is not None else self.model

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.trained_module.parameters() if p.requires_grad]

    def after_optimizer_step(self) -> None:
        """Under sharding, refresh the full model (sampling, scoring, saving) from the updated shards."""
        if self.sharded is not None:
            from langplay.sharding import copy_shards_to_model

            copy_shards_to_model(self.sharded, self.model)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """`optimizer.state_dict()`, whole even under sharding (a collective then: call it on every process)."""
        if self.sharded is None:
            return optimizer.state_dict()
        from langplay.sharding import full_optimizer_state

        return full_optimizer_state(self.sharded, optimizer)

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if self.sharded is None:
            optimizer.load_state_dict(state)
            return
        from langplay.sharding import load_full_optimizer_state

        load_full_optimizer_state(self.sharded, optimizer, state)

    def weights_loaded(self) -> None:
        """The full model's weights were replaced (a checkpoint): under sharding, the shards follow."""
        if self.sharded is not None:
            from langplay.sharding import copy_model_to_shards

            copy_model_to_shards(self.model, self.sharded)

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
        """Log-probs under autograd, of the model that trains (its shards under sharding)."""
        if self.sharded is not None:
            return TokenLogprobs(*self.sharded(batch, temperature, self.chunk_tokens, with_entropy, with_values))
        return sequence_logprobs(self.model, batch, temperature, self.chunk_tokens, with_entropy, with_values)

    def reference_logprobs(self, batch: dict, temperature: float = 1.0, micro_batch_size: int = 16) -> torch.Tensor:
        """Log-probs of the completion tokens under the frozen reference, micro-batch by micro-batch."""
        out = torch.zeros(batch["completion_mask"].shape, dtype=logprob_dtype(self.model),
                          device=batch["completion_mask"].device)
        if self.sharded_reference is not None:
            from langplay.sharding import sharded_logprobs

            sharded_logprobs(self.sharded_reference, batch, temperature, self.chunk_tokens, micro_batch_size, out)
            return out
        with torch.inference_mode(), self.reference_model() as reference:  # no autograd bookkeeping at all
            for start, stop in micro_batch_bounds(batch, micro_batch_size):
                logp = sequence_logprobs(reference, slice_batch(batch, start, stop), temperature, self.chunk_tokens).logp
                out[start:stop, : logp.shape[1]] = logp
        return out.clone()  # outside inference mode: an ordinary tensor, usable in the loss under autograd

    @contextlib.contextmanager
    def reference_model(self):
        """The reference as a whole model (to sample from). Under sharding the first call gathers it from its
        shards, a collective: every process makes it at the same point."""
        if self.sharded_reference is not None and self.gathered_reference is None:
            from langplay.sharding import copy_shards_to_model

            self.gathered_reference = frozen_copy(self.model)
            copy_shards_to_model(self.sharded_reference, self.gathered_reference, trained_only=False)
        reference = self.reference if self.reference is not None else self.gathered_reference
        if reference is not None:
            yield reference
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


MODEL_FACTS = "langplay.json"  # beside a saved model's weights: how langplay trained it (`Policy.facts`)


def write_model_facts(facts: dict, path: Path) -> None:
    """`facts` as JSON in the model folder `path` (atomically); none: no file, and a stale one is removed."""
    file = Path(path) / MODEL_FACTS
    if facts:
        atomic_write_text(file, json.dumps(facts, indent=2))
    else:
        file.unlink(missing_ok=True)


def model_facts(name_or_path: str | Path) -> dict:
    """The facts a langplay run saved with a model (a local folder, or a Hub repo holding MODEL_FACTS); {}: none."""
    path = Path(name_or_path) / MODEL_FACTS
    if not Path(name_or_path).is_dir():
        try:
            from transformers.utils import cached_file

            found = cached_file(str(name_or_path), MODEL_FACTS, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
        except (OSError, ValueError):  # not a Hub repo either: the model's own loading reports that
            found = None
        if found is None:
            return {}
        path = Path(found)
    if not path.is_file():
        return {}
    try:
        facts = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LangplayError(f"cannot read {path}: {first_line(exc)}") from None
    if not isinstance(facts, dict):
        raise LangplayError(f"cannot read {path}: expected a JSON object")
    return facts


def frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


def sequence_logprobs(
    model: PreTrainedModel,
    batch: dict,
    temperature: float = 1.0,
    chunk_tokens: int = 2048,
    with_entropy: bool = False,
    with_values: bool = False,
) -> TokenLogprobs:
    """Log-probs (and entropies) of the completion tokens of `batch`, computed in chunks of tokens.

    `batch` holds `input_ids` and `attention_mask` (sequences, prompt + completion) with prompts left-padded
    to one width, and `completion_mask` (sequences, completion width) marking the real completion tokens, which
    start right after the prompt width. Rows that share a prompt run it once (see `completion_states`). Only
    completion positions go through the output layer, `chunk_tokens` at a time, and under autograd each chunk is recomputed in the backward pass: memory does not grow with
    sequence length x vocabulary.

    `with_values` adds the soft values logsumexp(logits / temperature) of the same states (inverse soft-Q
    learning reads the logits as Q-values), and of the state after each row's last completion token (one more
    position of the decoder), which a sequence cut without EOS needs to bootstrap its last TD target.
    """
    input_ids, attention_mask, mask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    width = mask.shape[1]
    states = completion_states(model, input_ids, attention_mask, width, one_more=with_values,
                               group=prompt_group_size(batch))
    targets = input_ids[:, input_ids.shape[1] - width :]
    where = mask.bool()
    flat_states, flat_targets = states[:, :width][where], targets[where]
    head = model.get_output_embeddings()
    dtype = logprob_dtype(model)

    def chunk_fn(h: torch.Tensor, y: torch.Tensor):
        logits = head(h).to(dtype) / temperature
        logp_all = F.log_softmax(logits, dim=-1)
        logp = logp_all.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else torch.zeros_like(logp)
        value = logits.logsumexp(-1) if with_values else torch.zeros_like(logp)
        return logp, entropy, value

    def value_fn(h: torch.Tensor) -> torch.Tensor:
        return (head(h).to(dtype) / temperature).logsumexp(-1)

    def run(fn, *args):  # under autograd the chunk's logits are recomputed in the backward pass, not kept
        return checkpoint(fn, *args, use_reentrant=False) if torch.is_grad_enabled() else fn(*args)

    logps, entropies, chunk_values = [], [], []
    for start in range(0, flat_targets.numel(), chunk_tokens):
        h, y = flat_states[start : start + chunk_tokens], flat_targets[start : start + chunk_tokens]
        lp, ent, val = run(chunk_fn, h, y)
        logps.append(lp)
        entropies.append(ent)
        chunk_values.append(val)
    logp = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    entropy, values = torch.zeros_like(logp), torch.zeros_like(logp)
    if logps:
        logp = logp.masked_scatter(where, torch.cat(logps))
        entropy = entropy.masked_scatter(where, torch.cat(entropies))
        values = values.masked_scatter(where, torch.cat(chunk_values)) if with_values else values
    if not with_values:
        return TokenLogprobs(logp, entropy if with_entropy else None)
    final_states = states[torch.arange(len(states), device=states.device), final_positions(mask)]
    final_values = torch.cat([run(value_fn, final_states[s : s + chunk_tokens])
                              for s in range(0, len(final_states), chunk_tokens)])
    return TokenLogprobs(logp, entropy if with_entropy else None, values, final_values)


def logprob_dtype(model) -> torch.dtype:
    """Log-probs are float32 at least (bf16 and fp16 models, autocast), float64 for a float64 model."""
    return torch.promote_types(next(model.parameters()).dtype, torch.float32)


def final_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of the state after each row's last completion token: one past its last masked position (0 if none)."""
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (mask.bool() * positions).amax(1)


def prompt_group_size(batch: dict) -> int:
    """g when the batch declares its rows as consecutive groups of g answers to one prompt (g > 1), else 1.

    `build_batch(..., group_size=g)` declares the groups in `prompt_group` (the prompt's index per row); a
    micro-batch that cuts a group in two, or a batch without the column, shares nothing.
    """
    groups = batch.get("prompt_group")
    if groups is None or groups.numel() < 2:
        return 1
    _, sizes = torch.unique_consecutive(groups, return_counts=True)
    g = int(sizes[0])
    if g == 1 or not bool((sizes == g).all()):
        return 1
    width = batch["input_ids"].shape[1] - batch["completion_mask"].shape[1]
    prompts = torch.cat([batch["input_ids"][:, :width], batch["attention_mask"][:, :width]], 1)
    if not torch.equal(prompts, prompts[::g].repeat_interleave(g, 0)):
        raise ValueError(f"rows declared as groups of {g} answers to one prompt hold different prompts")
    return g


def completion_states(model, input_ids, attention_mask, width: int, one_more: bool = False,
                      group: int = 1) -> torch.Tensor:
    """Final hidden states that predict each completion token: position prompt_width-1+k predicts token k.

    `one_more` also returns the state after the last column (width + 1 states), the one that would predict a
    token after the completion.

    Rows in consecutive groups of `group` answers to one prompt run the prompt once into a KV cache that the group's completions share
    (gradients flow through the shared cache); otherwise (or under gradient checkpointing, which forbids a
    cache) the decoder runs over every row in full, packed (`packed_states`). Right padding needs no mask
    (attention is causal and padded positions carry no loss), so without left padding no mask is built at all.
    """
    decoder = model.get_decoder()
    prompt_width = input_ids.shape[1] - width
    if group == 1 or getattr(decoder, "gradient_checkpointing", False) or prompt_width < 1:
        return packed_states(decoder, input_ids, attention_mask, width, one_more)
    positions = token_positions(attention_mask)
    mask = None if bool(attention_mask[:, :prompt_width].all()) else attention_mask
    cache = DynamicCache()
    prompt_out = decoder(input_ids=input_ids[::group, :prompt_width],
                         attention_mask=None if mask is None else mask[::group, :prompt_width],
                         position_ids=positions[::group, :prompt_width], **with_cache(decoder, cache))
    cache.batch_repeat_interleave(group)
    completion_out = decoder(input_ids=input_ids[:, prompt_width:], attention_mask=mask,
                             position_ids=positions[:, prompt_width:], **with_cache(decoder, cache))
    last_prompt_state = prompt_out.last_hidden_state[:, -1:].repeat_interleave(group, 0)
    return torch.cat([last_prompt_state, completion_out.last_hidden_state[:, : width - 1 + one_more]], 1)


def token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each token's position within its row, left padding not counted (padding itself gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def packed_states(decoder, input_ids, attention_mask, width: int, one_more: bool = False) -> torch.Tensor:
    """`completion_states` of rows run in full: each row's prompt and completion moved to column 0 and
    right-padded to the longest row, so the decoder runs max(prompt + completion) columns, not the widest
    prompt plus the widest completion, and with no mask at all (causal attention, padding after the tokens),
    which SDPA runs on its causal path. On tinyworld's base recipe the training pass takes 0.76x the time in
    passes of 15 rows, 0.82x in one of 45 (benchmarks/packed_rows.py).
    Identical to the padded layout when no prompt is left-padded; a row with no prompt token keeps that layout.
    """
    prompt_width = input_ids.shape[1] - width
    if prompt_width < 1:  # no state would predict the first completion token
        raise LangplayError("every row needs a prompt of at least one token (a BOS token or a chat template)")
    prompt_lengths = attention_mask[:, :prompt_width].sum(1)
    padded = not bool(attention_mask[:, :prompt_width].all())
    if padded and not bool((prompt_lengths > 0).all()):
        positions = token_positions(attention_mask)
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                         use_cache=False).last_hidden_state
        return hidden[:, prompt_width - 1 : prompt_width - 1 + width + one_more]
    columns = torch.arange(input_ids.shape[1], device=input_ids.device)
    if padded:  # shift each row left by its padding; what lands after its last token is padding, never attended
        source = (columns + (prompt_width - prompt_lengths)[:, None]).clamp(max=input_ids.shape[1] - 1)
        input_ids = input_ids.gather(1, source)[:, : int(attention_mask.sum(1).max())]
    hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state
    # the state that predicts completion token k sits at column prompt_length - 1 + k
    index = (prompt_lengths[:, None] - 1 + columns[: width + one_more]).clamp(max=hidden.shape[1] - 1)
    return hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def build_batch(
    prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int, device: torch.device | str = "cpu",
    group_size: int = 1, grouped_rows: int | None = None,
) -> dict:
    """Tensors for `sequence_logprobs`: prompts left-padded, completions right-padded, masks.

    `group_size` g > 1 declares the first `grouped_rows` rows (all by default) as consecutive groups of g
    completions of one prompt, which then run their prompt once; later rows stand alone. `prompt_group` holds
    the prompt's index per row.
    """
    prompt_width = max(len(p) for p in prompt_ids)
    width = max(1, max(len(c) for c in completion_ids))
    rows, attention, completion_mask = [], [], []
    for prompt, completion in zip(prompt_ids, completion_ids):
        left, right = prompt_width - len(prompt), width - len(completion)
        rows.append([pad_id] * left + list(prompt) + list(completion) + [pad_id] * right)
        attention.append([0] * left + [1] * (len(prompt) + len(completion)) + [0] * right)
        completion_mask.append([1] * len(completion) + [0] * right)
    return {
        "input_ids": torch.tensor(rows, dtype=torch.long, device=device),
        "attention_mask": torch.tensor(attention, dtype=torch.long, device=device),
        "completion_mask": torch.tensor(completion_mask, dtype=torch.float, device=device),
        "prompt_group": prompt_groups(len(rows), group_size, grouped_rows, device),
    }


def token_rows(values: list[list[float]], completion_mask: torch.Tensor) -> torch.Tensor:
    """Per-token values (e.g. the sampler's log-probs) as a tensor shaped like the completion mask, 0-padded."""
    out = torch.zeros(completion_mask.shape, dtype=torch.float32, device=completion_mask.device)
    for row, row_values in enumerate(values):
        out[row, : len(row_values)] = torch.tensor(row_values[: out.shape[1]], dtype=torch.float32)
    return out


def prompt_groups(rows: int, group_size: int, grouped_rows: int | None = None, device="cpu") -> torch.Tensor:
    """The prompt's index per row: groups of `group_size` over the first `grouped_rows` rows, then one per row."""
    grouped = rows if grouped_rows is None else grouped_rows
    if grouped % group_size or grouped > rows:
        raise ValueError(f"{grouped} rows do not split into groups of {group_size}")
    return torch.cat([torch.arange(grouped, device=device) // group_size,
                      grouped // group_size + torch.arange(rows - grouped, device=device)])


def slice_batch(batch: dict, start: int, stop: int) -> dict:
    """Rows start:stop of a batch, with columns that are padding in every kept row trimmed away."""
    part = {key: value[start:stop] for key, value in batch.items()}
    width = part["completion_mask"].shape[1]
    keep_right = int(part["completion_mask"].sum(0).nonzero().max()) + 1 if part["completion_mask"].any() else 1
    prompt_width = part["input_ids"].shape[1] - width
    # Left padding of prompts: drop columns where no kept row has a token (keep at least one prompt column).
    first = int(part["attention_mask"][:, :prompt_width].sum(0).nonzero().min()) if prompt_width else 0
    first = min(first, prompt_width - 1)
    for key, value in part.items():
        if key in ("input_ids", "attention_mask"):
            part[key] = value[:, first : prompt_width + keep_right]
        elif value.dim() == 2 and value.shape[1] == width:
            part[key] = value[:, :keep_right]
    return part


def micro_batch_bounds(batch: dict, size: int) -> list[tuple[int, int]]:
    """(start, stop) of micro-batches of at most `size` rows that never mix the rows grouped under shared prompts
    with the rows that stand alone after them (`build_batch`'s grouped_rows): LSP's answers and its challenger's
    queries, whose long Box 1 prompt would otherwise widen every answer's row to its own width."""
    rows = batch["input_ids"].shape[0]
    groups = batch.get("prompt_group")
    grouped = rows
    if groups is not None and groups.numel() > 1:
        _, sizes = torch.unique_consecutive(groups, return_counts=True)
        alone = (sizes == 1).nonzero()
        if len(alone) and bool((sizes[: int(alone[0])] > 1).all()):  # grouped rows first, then single rows
            grouped = int(sizes[: int(alone[0])].sum())
    return [(start, min(start + size, end)) for begin, end in ((0, grouped), (grouped, rows))
            for start in range(begin, end, size)]


def micro_batches(batch: dict, size: int):
    for start, stop in micro_batch_bounds(batch, size):
        yield slice_batch(batch, start, stop)


@torch.no_grad()
def next_token_logprobs(model, prompt_ids: list[list[int]], tokens: list[int], pad_id: int,
                        micro_batch_size: int = 16) -> torch.Tensor:
    """log pi(t | prompt) of each token t in `tokens` right after each prompt, shape (prompts, len(tokens)): one
    forward pass over the prompts, the output layer on their last states only."""
    device = next(model.parameters()).device
    head, rows = model.get_output_embeddings(), []
    for start in range(0, len(prompt_ids), micro_batch_size):
        prompts = prompt_ids[start : start + micro_batch_size]
        batch = build_batch(prompts, [[tokens[0]]] * len(prompts), pad_id, device)  # a stand-in completion token
        last = completion_states(model, batch["input_ids"], batch["attention_mask"], width=1)[:, 0]
        rows.append(F.log_softmax(head(last).to(logprob_dtype(model)), dim=-1)[:, tokens])
    return torch.cat(rows)


@torch.no_grad()
def completion_logprob_sums(model, prompt_ids, completion_ids, pad_id: int, micro_batch_size: int = 64,
                            chunk_tokens: int = 2048, temperature: float = 1.0) -> list[float]:
    """log pi(completion | prompt), summed over the completion's tokens, for many pairs (teacher forcing). Numbers
    out, no autograd graph: one kept for a micro-batch of 64 real-length rows (SmolLM2, GSM8K solutions) took 24 GB."""
    device = next(model.parameters()).device
    sums: list[float] = []
    for start in range(0, len(prompt_ids), micro_batch_size):
        batch = build_batch(prompt_ids[start : start + micro_batch_size],
                            completion_ids[start : start + micro_batch_size], pad_id, device)
        logp = sequence_logprobs(model, batch, temperature, chunk_tokens=chunk_tokens).logp
        sums += (logp * batch["completion_mask"]).sum(1).tolist()
    return sums
