"""tinyworld's tokenizer: one token per character, with special tokens and a chat template.

It is saved as a standard Hugging Face tokenizer, so the engine loads it with `AutoTokenizer.from_pretrained`
and formats prompts with `apply_chat_template`: the generic code path is the one every test exercises.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
CHARACTERS = [c for c in string.printable if c not in "\r\x0b\x0c\t"]  # letters, digits, punctuation, ' ', '\n'

# A turn is "<role>: text" on its own lines; an assistant turn ends with EOS, which is where generation stops.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}{{ 'A: ' + m['content'] + eos_token + '\n' }}"
    "{% elif m['role'] == 'system' %}{{ 'S: ' + m['content'] + '\n' }}"
    "{% else %}{{ 'Q: ' + m['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'A: ' }}{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 1024
    return tokenizer


def save_tokenizer(path: str | Path) -> Path:
    path = Path(path)
    build_tokenizer().save_pretrained(path)
    return path
