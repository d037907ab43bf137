"""tinyworld's tokenizer: one token per character, with special tokens and a chat template.

It is saved as a standard Hugging Face tokenizer, so the engine loads it with `AutoTokenizer.from_pretrained`
and formats prompts with `apply_chat_template`: the generic code path is the one every test exercises.

The built tokenizer takes any str: a lone surrogate ("abc\\ud800", which the Rust backend refuses with a
TypeError) is encoded as U+FFFD, one <unk> like any character outside the vocabulary, so the text keeps one token
per character. A folder it saved loads as the generic class, which has no such guard (langplay encodes through
`Policy.encode`, which has).
"""

from __future__ import annotations

import copy
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from langplay.text import encodable

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


class TinyworldTokenizer(PreTrainedTokenizerFast):
    """The fast tokenizer, with every text made encodable before it reaches the backend."""

    def _encode_plus(self, text, text_pair=None, *args, **kwargs):
        # transformers 5: the one path to the backend (a call, encode, tokenize; batches, pairs)
        return super()._encode_plus(encodable_input(text), encodable_input(text_pair), *args, **kwargs)

    def save_pretrained(self, *args, **kwargs):
        # saved under the generic class's name, so any AutoTokenizer loads the folder without langplay
        plain = copy.copy(self)
        plain.__class__ = PreTrainedTokenizerFast
        return plain.save_pretrained(*args, **kwargs)


def encodable_input(text):
    """A text, a batch of texts or pre-split words (lists, tuples, nested), each str made encodable."""
    if isinstance(text, str):
        return encodable(text)
    if isinstance(text, (list, tuple)):
        return type(text)(map(encodable_input, text))
    return text


def build_tokenizer() -> TinyworldTokenizer:
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = TinyworldTokenizer(
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
