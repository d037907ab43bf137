import json
import os

import pytest
import torch

from langplay.testing import save_tiny_model


# Threads set explicitly: oversubscribed cores slowed the learning tests 13-26x in a loaded run.
torch.set_num_threads(int(os.environ.get("LANGPLAY_TEST_THREADS", "2")))


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
