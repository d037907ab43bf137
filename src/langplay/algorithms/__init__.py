"""Algorithms: each is where its experience comes from, how it is scored, and which loss it minimises.

The trainer asks an algorithm for two things per step:
    experience = algorithm.collect(rows, seeds)     # no gradient: sampling, scoring, reference log-probs
    loss, metrics = algorithm.loss(micro_batch, experience.counts)
Losses are normalised by counts over the *whole* step (all micro-batches, all processes), so the gradients of
the micro-batches add up to the gradient of the whole batch however it is split. The metrics `loss` returns are
normalised the same way: the trainer adds them up over micro-batches and processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class Experience:
    batch: dict[str, torch.Tensor]  # this process's sequences: input_ids, attention_mask, completion_mask, ...
    counts: dict[str, float] = field(default_factory=dict)  # global normalisers for the loss
    metrics: dict[str, float] = field(default_factory=dict)  # step metrics, already global
    samples: list[dict] = field(default_factory=list)  # a few prompts/completions/rewards for samples.jsonl


class Algorithm(Protocol):
    name: str
    needs_reference: bool

    def collect(self, rows: list[dict], seeds: list[int]) -> Experience: ...

    def loss(self, batch: dict[str, torch.Tensor], counts: dict[str, float]) -> tuple[torch.Tensor, dict]: ...


def gather_sum(accelerator, value: float | torch.Tensor) -> float:
    """Sum of a number over all processes."""
    tensor = torch.as_tensor(value, dtype=torch.float64, device=accelerator.device).reshape(1)
    return float(accelerator.gather(tensor).sum()) if accelerator.num_processes > 1 else float(tensor)


def make_algorithm(config, policy, sampler, accelerator, rewards=None) -> Algorithm:
    if rewards and config.algorithm in ("sft", "irl"):
        from langplay.errors import LangplayError

        raise LangplayError(f"{config.algorithm} learns from demonstrations and takes no rewards; pass rewards= to "
                            "grpo, lsp or jepo")
    if config.algorithm == "sft":
        from langplay.algorithms.sft import SFT

        return SFT(config, policy, accelerator)
    if config.algorithm == "grpo":
        from langplay.algorithms.grpo import GRPO

        return GRPO(config, policy, sampler, accelerator, rewards)
    if config.algorithm == "lsp":
        from langplay.algorithms.lsp import LSP

        return LSP(config, policy, sampler, accelerator, rewards)
    if config.algorithm == "jepo":
        from langplay.algorithms.jepo import JEPO

        return JEPO(config, policy, sampler, accelerator, rewards)
    if config.algorithm == "irl":
        from langplay.algorithms.irl import IRL

        return IRL(config, policy, sampler, accelerator)
    raise ValueError(f"unknown algorithm {config.algorithm!r}")
