"""GGUF files as a model source, and `langplay model import FILE.gguf OUT/`.

`model.name_or_path` may name a `.gguf` file (or a folder or Hub repo, with `model.gguf_file` naming the file in
it). It loads through transformers' GGUF support (the `gguf` package reads the file), dequantized to
`model.dtype`, with the tokenizer and chat template stored in the same file. The loaded model is an ordinary
PyTorch model: the GGUF "quantizer" transformers attaches (which makes `save_pretrained` refuse: "quantized with
GGUF, not serializable") is dropped at load, so every path that saves it (Policy.save, checkpoints, the copy
vLLM's engine is built from) works.

A file is checked before transformers reads it, so that each way it can be wrong is one line naming the file and
the fix: not there, not GGUF at all, truncated or damaged, an architecture transformers cannot read from GGUF, or
the `gguf` package missing.
"""

from __future__ import annotations

import functools
from pathlib import Path

from langplay.errors import LangplayError, first_line
from langplay.files import replaced

MAGIC = b"GGUF"  # a GGUF file's first four bytes
INSTALL = "pip install 'gguf>=0.19'"
IMPORT_DTYPES = ("float32", "bfloat16")
# llama.cpp's architecture names that transformers reads under another name (see its load_gguf_checkpoint)
ARCHITECTURE_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
                        "minimax-m2": "minimax_m2"}


def names_gguf(name_or_path: str | None) -> bool:
    return bool(name_or_path) and str(name_or_path).lower().endswith(".gguf")


def gguf_location(name_or_path: str, gguf_file: str | None = None, revision: str | None = None) -> Path | None:
    """The local, checked GGUF file a model source names (fetched when it is a Hub repo's); None: not GGUF.

    `name_or_path` ending in .gguf is the file itself; with `gguf_file` it is the folder or Hub repo holding it."""
    if gguf_file is None:
        if not names_gguf(name_or_path):
            return None
        path = Path(name_or_path).expanduser()
    else:
        folder = Path(name_or_path).expanduser()
        local = folder.exists() or name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
        path = folder / gguf_file if local else hub_file(name_or_path, gguf_file, revision)
    check_gguf(path)
    return path


def hub_file(repo: str, filename: str, revision: str | None) -> Path:
    from transformers.utils import cached_file

    try:
        return Path(cached_file(repo, filename, revision=revision))
    except Exception as exc:  # OSError (not found, offline), ValueError, huggingface_hub's errors
        raise LangplayError(f"cannot fetch GGUF file {filename!r} from {repo!r}: {first_line(exc)}") from None


def check_gguf(path: Path) -> None:
    """One line naming the file and the fix when it is not a GGUF file transformers can load a model from."""
    path = Path(path)
    if not path.exists():
        raise LangplayError(f"GGUF file not found: {path}")
    if path.is_dir():
        raise LangplayError(f"{path} is a folder, not a GGUF file: give the .gguf file, or the folder with "
                            "model.gguf_file=NAME")
    try:
        with open(path, "rb") as file:
            magic = file.read(len(MAGIC))
    except OSError as exc:
        raise LangplayError(f"cannot read GGUF file {path}: {first_line(exc)}") from None
    if magic != MAGIC:
        raise LangplayError(f"{path} is not a GGUF file (it does not start with {MAGIC.decode()}'s magic bytes): "
                            "give a .gguf model file, or a Hugging Face model folder")
    stat = path.stat()
    _check_contents(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _check_contents(path: Path, size: int, mtime_ns: int) -> None:
    """The header parses, every tensor's data lies within the file, and transformers reads the architecture.
    Cached per file version: the tokenizer and the model of one source are loaded from the same file."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise LangplayError(f"{path} is a GGUF file, and reading GGUF needs the gguf package: {INSTALL}") from None
    damaged = f"{path} is a truncated or damaged GGUF file"
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # ValueError on a cut file (a tensor cannot be reshaped), struct errors, ...
        raise LangplayError(f"{damaged} ({first_line(exc)}): download or convert it again") from None
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise LangplayError(f"{damaged} (its tensors need {end} bytes, it has {size}): download or convert it again")
    if not reader.tensors:
        raise LangplayError(f"{path} holds no tensors: it is not a model (a GGUF vocabulary-only file?)")
    architecture = read_string(reader, "general.architecture")
    supported = supported_architectures()
    if supported and architecture not in supported and ARCHITECTURE_ALIASES.get(architecture) not in supported:
        raise LangplayError(unsupported(path, architecture, supported))


def read_string(reader, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def supported_architectures() -> list[str]:
    """The GGUF architectures this transformers reads (empty when it does not say: then it decides at load)."""
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:
        return []
    return [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]


def unsupported(path: Path, architecture: str | None, supported: list[str]) -> str:
    return (f"{path}: transformers cannot load architecture {architecture!r} from GGUF (it reads "
            f"{', '.join(supported)}): use a model of one of those, or its Hugging Face (safetensors) folder")


# -- loading ------------------------------------------------------------------------------------------------------
def load_gguf_tokenizer(path: Path):
    """The tokenizer and chat template stored in a (checked) GGUF file."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:
        raise LangplayError(f"cannot load the tokenizer stored in {path}: {type(exc).__name__}: "
                            f"{first_line(exc)}") from None


def load_gguf_model(path: Path, dtype):
    """A causal LM from a (checked) GGUF file, dequantized to `dtype`, that saves as a plain model."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    except Exception as exc:
        if isinstance(exc, ValueError) and "not supported" in str(exc) and "architecture" in str(exc):
            raise LangplayError(unsupported(path, None, supported_architectures())) from None
        raise LangplayError(f"cannot load a model from GGUF file {path}: {type(exc).__name__}: "
                            f"{first_line(exc)}") from None
    return dequantized(model, path)


def dequantized(model, path: Path):
    """Forget that the weights came from a quantized file (they are dequantized already): transformers then saves
    the model like any other. Its name becomes the file's, so vLLM's engine is built from a saved copy."""
    model.hf_quantizer = None
    if "quantization_config" in model.config.__dict__:
        del model.config.quantization_config
    model.is_quantized = False
    model.config.name_or_path = str(path)
    return model


# -- langplay model import ----------------------------------------------------------------------------------------
def import_gguf(file: str | Path, output: str | Path, dtype: str = "float32", overwrite: bool = False):
    """Write the model in a GGUF file as a plain Hugging Face folder: config, safetensors weights in `dtype`,
    tokenizer and chat template. The folder is written beside `output` and renamed, so an interrupted import
    leaves no half-written folder under that name. Returns the model (for its summary)."""
    import torch

    if dtype not in IMPORT_DTYPES:
        raise LangplayError(f"--dtype {dtype!r}: choose one of {', '.join(IMPORT_DTYPES)}")
    path = Path(file).expanduser()
    out = Path(output).expanduser()
    if out.exists():
        if not out.is_dir():
            raise LangplayError(f"{out} is a file: give a folder to write the model to")
        if any(out.iterdir()) and not overwrite:
            raise LangplayError(f"{out} exists and is not empty: choose another folder, or pass --overwrite to "
                                "replace it")
    check_gguf(path)
    tokenizer = load_gguf_tokenizer(path)
    model = load_gguf_model(path, getattr(torch, dtype))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with replaced(out) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    except OSError as exc:
        raise LangplayError(f"cannot write {out}: {first_line(exc)}") from None
    return model
