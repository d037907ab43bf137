"""Loading a model and its tokenizer (a Hub name, a local folder or a GGUF file), LoRA adapters, frozen copies, and
the facts langplay saves beside a model's weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from langplay.config import ModelConfig
from langplay.errors import LangplayError, first_line
from langplay.files import atomic_write_text
from langplay.gguf import gguf_location, load_gguf_model, load_gguf_tokenizer
from langplay.precision import resolve_dtype


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
