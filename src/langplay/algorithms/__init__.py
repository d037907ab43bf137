"""Algorithms: each is where its experience comes from, how it is scored, and which loss it minimises.

The trainer asks an algorithm for two things per step:
    experience = algorithm.collect(rows, seeds)     # no gradient: sampling, scoring, reference log-probs
    loss, metrics = algorithm.loss(micro_batch, experience.counts)
Losses are normalised by counts over the *whole* step (all micro-batches, all processes), so the gradients of
the micro-batches add up to the gradient of the whole batch however it is split. The metrics `loss` returns are
normalised the same way: the trainer adds them up over micro-batches and processes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol

import torch

from langplay.config import ALGORITHMS


@dataclass
class Experience:
    batch: dict[str, torch.Tensor]  # this process's sequences: input_ids, attention_mask, completion_mask, ...
    counts: dict[str, float] = field(default_factory=dict)  # global normalisers for the loss
    metrics: dict[str, float] = field(default_factory=dict)  # step metrics, already global
    samples: list[dict] = field(default_factory=list)  # a few prompts/completions/rewards for samples.jsonl


@dataclass(frozen=True)
class DataColumns:
    """What an algorithm needs of its dataset: columns that must exist, and those that must hold text (or chat
    messages) in every row."""

    required: list[str]
    text: list[str]


class Algorithm(Protocol):
    """The contract. One constructor for all: (config, policy, sampler, accelerator, rewards=None)."""

    name: str
    needs_reference: bool  # a frozen reference model (KL, judging); set once constructed
    generates: bool  # samples from the policy during training (its lengths must fit the model's context)

    @classmethod
    def data_columns(cls, config) -> DataColumns | None: ...  # None: the algorithm uses no dataset

    def collect(self, rows: list[dict], seeds: list[int]) -> Experience: ...

    def loss(self, batch: dict[str, torch.Tensor], counts: dict[str, float]) -> tuple[torch.Tensor, dict]: ...


def algorithm_class(name: str) -> type:
    """The class NAME of langplay/algorithms/name.py (config.ALGORITHMS lists them), imported on demand."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return getattr(importlib.import_module(f"langplay.algorithms.{name}"), name.upper())


def make_algorithm(config, policy, sampler, accelerator, rewards=None) -> Algorithm:
    return algorithm_class(config.algorithm)(config, policy, sampler, accelerator, rewards)


def refuse_rewards(name: str, rewards) -> None:
    """Algorithms that learn from demonstrations take no reward: passing one is a mistake, never ignored."""
    if rewards:
        from langplay.errors import LangplayError

        raise LangplayError(f"{name} learns from demonstrations and takes no rewards; pass rewards= to grpo, lsp or jepo")


def sampler_correction(config) -> str:
    """sampling.correction with auto resolved: tis where an engine apart from the trainer samples (vLLM), whose
    probabilities differ from the trainer's; none where the trainer's own weights and kernels sample."""
    setting = config.sampling.correction
    return ("tis" if config.sampling.backend == "vllm" else "none") if setting == "auto" else setting


def demonstration_columns(config) -> DataColumns:
    data = config.data
    columns = [data.messages_column] if data.messages_column else [data.prompt_column, data.completion_column]
    return DataColumns(columns, columns)
