"""Keyed randomness: counter-based hashes, so that a draw depends on its key (seed, step, slot, ...) alone, never
on batch layout, process count or RNG state. The trainer, the samplers, LSP and the evaluation all key by it."""

from __future__ import annotations

import torch

_M31 = (1 << 31) - 1


def _mix(x: torch.Tensor) -> torch.Tensor:
    """An integer hash on 31-bit values held in int64 (products stay below 2^63)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M31
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M31
    return (x >> 16) ^ x


def key_of(*parts: int) -> int:
    """One 31-bit key from several integers (a seed, an index...)."""
    h = torch.tensor(0x2545F491, dtype=torch.long)
    for part in parts:
        h = _mix((h ^ (int(part) & _M31)) + 0x3C6EF35F & _M31)
    return int(h)


def keyed_uniform(keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Uniforms in (0, 1) of shape (len(keys), vocab), a pure function of (key, step, token)."""
    row = _mix((keys ^ (step * 0x27D4EB2D & _M31)) + 0x165667B1 & _M31)
    tokens = torch.arange(vocab, device=keys.device, dtype=torch.long)
    bits = _mix((row.unsqueeze(1) ^ _mix(tokens + 0x61C88647 & _M31).unsqueeze(0)) & _M31)
    return (bits.double() + 0.5) / (1 << 31)
