import json

import pytest

from langplay.testing import save_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def prompt_file(tmp_path):
    """Prompts asking for a letter; the answer column says which."""
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"say {c}", "answer": c} for c in "abcdefgh"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def sft_file(tmp_path):
    path = tmp_path / "sft.jsonl"
    rows = [{"prompt": f"say {c}", "completion": c * 3} for c in "abcdefgh"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
