"""The tinyworld tokenizer called directly takes any str (issue 37): a lone surrogate, which its Rust backend
refuses with a TypeError, is encoded as U+FFFD (one <unk>); a folder it saves is a plain HF tokenizer's."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from langplay.text import encodable
from langplay.tinyworld.tokenizer import UNK, build_tokenizer

TOKENIZER = build_tokenizer()


def test_a_lone_surrogate_is_encoded_as_one_unknown_character():
    ids = TOKENIZER("abc\ud800", add_special_tokens=False)["input_ids"]
    assert ids == TOKENIZER("abc\ufffd", add_special_tokens=False)["input_ids"]
    assert len(ids) == 4 and ids[-1] == TOKENIZER.unk_token_id  # still one token per character
    assert TOKENIZER.encode("a\udfffb") == TOKENIZER.encode("a\ufffdb")
    assert TOKENIZER.tokenize("a\ud800") == ["a", UNK]


def test_batches_pairs_and_the_chat_template_take_lone_surrogates():
    assert TOKENIZER(["a\ud800", "b"])["input_ids"] == TOKENIZER(["a\ufffd", "b"])["input_ids"]
    assert TOKENIZER("x", "a\ud800")["input_ids"] == TOKENIZER("x", "a\ufffd")["input_ids"]
    assert TOKENIZER(["a", "\ud800"], is_split_into_words=True)["input_ids"] == \
        TOKENIZER(["a", "\ufffd"], is_split_into_words=True)["input_ids"]
    chat = [TOKENIZER.apply_chat_template([{"role": "user", "content": f"hi{c}"}], add_generation_prompt=True)
            for c in ("\ud800", "\ufffd")]
    assert chat[0]["input_ids"] == chat[1]["input_ids"]


def code_points(low, high):
    return st.characters(codec=None, min_codepoint=low, max_codepoint=high, exclude_categories=())


@settings(max_examples=200, deadline=None)
@given(text=st.text(code_points(0, 0x10FFFF), max_size=40), surrogate=code_points(0xD800, 0xDFFF),
       at=st.integers(0, 40))
def test_any_text_with_a_lone_surrogate_encodes_as_its_encodable_form(text, surrogate, at):
    text = text[:at] + surrogate + text[at:]
    assert TOKENIZER(text)["input_ids"] == TOKENIZER.backend_tokenizer.encode(encodable(text)).ids


def test_a_saved_folder_names_the_generic_class_and_loads_with_autotokenizer(tmp_path):
    TOKENIZER.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == PreTrainedTokenizerFast.__name__  # no langplay class needed to load it
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("Q: 12 + 3?")["input_ids"] == TOKENIZER("Q: 12 + 3?")["input_ids"]
