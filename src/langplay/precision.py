"""Where and at which precision a model runs: the device, the weights' dtype, the training precision (bf16 autocast
or fp32), and bf16 copies of float32 weights for the passes that run in bf16."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from langplay.errors import LangplayError


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
