"""Batch layout: prompts and completions as padded tensors with their masks, rows grouped under shared prompts,
and micro-batches cut from a batch."""

from __future__ import annotations

import torch


def build_batch(
    prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int, device: torch.device | str = "cpu",
    group_size: int = 1, grouped_rows: int | None = None,
) -> dict:
    """Tensors for `sequence_logprobs`: prompts left-padded, completions right-padded, masks.

    `group_size` g > 1 declares the first `grouped_rows` rows (all by default) as consecutive groups of g
    completions of one prompt, which then run their prompt once; later rows stand alone. `prompt_group` holds
    the prompt's index per row.
    """
    prompt_width = max(len(p) for p in prompt_ids)
    width = max(1, max(len(c) for c in completion_ids))
    rows, attention, completion_mask = [], [], []
    for prompt, completion in zip(prompt_ids, completion_ids):
        left, right = prompt_width - len(prompt), width - len(completion)
        rows.append([pad_id] * left + list(prompt) + list(completion) + [pad_id] * right)
        attention.append([0] * left + [1] * (len(prompt) + len(completion)) + [0] * right)
        completion_mask.append([1] * len(completion) + [0] * right)
    return {
        "input_ids": torch.tensor(rows, dtype=torch.long, device=device),
        "attention_mask": torch.tensor(attention, dtype=torch.long, device=device),
        "completion_mask": torch.tensor(completion_mask, dtype=torch.float, device=device),
        "prompt_group": prompt_groups(len(rows), group_size, grouped_rows, device),
    }


def token_rows(values: list[list[float]], completion_mask: torch.Tensor) -> torch.Tensor:
    """Per-token values (e.g. the sampler's log-probs) as a tensor shaped like the completion mask, 0-padded."""
    out = torch.zeros(completion_mask.shape, dtype=torch.float32, device=completion_mask.device)
    for row, row_values in enumerate(values):
        out[row, : len(row_values)] = torch.tensor(row_values[: out.shape[1]], dtype=torch.float32)
    return out


def prompt_groups(rows: int, group_size: int, grouped_rows: int | None = None, device="cpu") -> torch.Tensor:
    """The prompt's index per row: groups of `group_size` over the first `grouped_rows` rows, then one per row."""
    grouped = rows if grouped_rows is None else grouped_rows
    if grouped % group_size or grouped > rows:
        raise ValueError(f"{grouped} rows do not split into groups of {group_size}")
    return torch.cat([torch.arange(grouped, device=device) // group_size,
                      grouped // group_size + torch.arange(rows - grouped, device=device)])


def prompt_group_size(batch: dict) -> int:
    """g when the batch declares its rows as consecutive groups of g answers to one prompt (g > 1), else 1.

    `build_batch(..., group_size=g)` declares the groups in `prompt_group` (the prompt's index per row); a
    micro-batch that cuts a group in two, or a batch without the column, shares nothing.
    """
    groups = batch.get("prompt_group")
    if groups is None or groups.numel() < 2:
        return 1
    _, sizes = torch.unique_consecutive(groups, return_counts=True)
    g = int(sizes[0])
    if g == 1 or not bool((sizes == g).all()):
        return 1
    width = batch["input_ids"].shape[1] - batch["completion_mask"].shape[1]
    prompts = torch.cat([batch["input_ids"][:, :width], batch["attention_mask"][:, :width]], 1)
    if not torch.equal(prompts, prompts[::g].repeat_interleave(g, 0)):
        raise ValueError(f"rows declared as groups of {g} answers to one prompt hold different prompts")
    return g


def slice_batch(batch: dict, start: int, stop: int) -> dict:
    """Rows start:stop of a batch, with columns that are padding in every kept row trimmed away."""
    part = {key: value[start:stop] for key, value in batch.items()}
    width = part["completion_mask"].shape[1]
    keep_right = int(part["completion_mask"].sum(0).nonzero().max()) + 1 if part["completion_mask"].any() else 1
    prompt_width = part["input_ids"].shape[1] - width
    # Left padding of prompts: drop columns where no kept row has a token (keep at least one prompt column).
    first = int(part["attention_mask"][:, :prompt_width].sum(0).nonzero().min()) if prompt_width else 0
    first = min(first, prompt_width - 1)
    for key, value in part.items():
        if key in ("input_ids", "attention_mask"):
            part[key] = value[:, first : prompt_width + keep_right]
        elif value.dim() == 2 and value.shape[1] == width:
            part[key] = value[:, :keep_right]
    return part


def micro_batch_bounds(batch: dict, size: int) -> list[tuple[int, int]]:
    """(start, stop) of micro-batches of at most `size` rows that never mix the rows grouped under shared prompts
    with the rows that stand alone after them (`build_batch`'s grouped_rows): LSP's answers and its challenger's
    queries, whose long Box 1 prompt would otherwise widen every answer's row to its own width."""
    rows = batch["input_ids"].shape[0]
    groups = batch.get("prompt_group")
    grouped = rows
    if groups is not None and groups.numel() > 1:
        _, sizes = torch.unique_consecutive(groups, return_counts=True)
        alone = (sizes == 1).nonzero()
        if len(alone) and bool((sizes[: int(alone[0])] > 1).all()):  # grouped rows first, then single rows
            grouped = int(sizes[: int(alone[0])].sum())
    return [(start, min(start + size, end)) for begin, end in ((0, grouped), (grouped, rows))
            for start in range(begin, end, size)]


def micro_batches(batch: dict, size: int):
    for start, stop in micro_batch_bounds(batch, size):
        yield slice_batch(batch, start, stop)
