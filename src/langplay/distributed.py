"""What the algorithms and the trainer need of the process group, written once: the sum of a number over all
processes, all processes' rows of a tensor, this process's share of a global batch, and the gradient sum.

On one process each is the identity; on N processes every process holds whole prompt groups, in process order,
so gathered tensors line up with the global batch and the sums are the one-process values.
"""

from __future__ import annotations

import torch


def total(accelerator, value: float | torch.Tensor) -> float:
    """The sum of a number over all processes, in float64."""
    tensor = torch.as_tensor(value, dtype=torch.float64, device=accelerator.device).reshape(1)
    if accelerator.num_processes == 1:
        return float(tensor)
    torch.distributed.all_reduce(tensor)
    return float(tensor)


def most(accelerator, value: int) -> int:
    """The largest of an integer over all processes."""
    return value if accelerator.num_processes == 1 else most_over_processes(value, accelerator.device)


def most_over_processes(value: int, device: torch.device) -> int:
    """`most` for code that holds no accelerator (the process group of torchrun; the identity without one)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return int(tensor)


def gather(accelerator, tensor: torch.Tensor) -> torch.Tensor:
    """Every process's rows of `tensor`, concatenated in process order, on the tensor's own device."""
    if accelerator.num_processes == 1:
        return tensor
    return accelerator.gather(tensor.to(accelerator.device)).to(tensor.device)


def local_slice(accelerator, per_process: int) -> slice:
    """This process's rows of a global batch laid out `per_process` rows per process, in process order."""
    start = accelerator.process_index * per_process
    return slice(start, start + per_process)


def sum_gradients(accelerator, params: list[torch.Tensor]) -> None:
    """Sum the gradients over processes in place (losses are normalised by global counts: the sum is the
    gradient of the global batch). One flat all-reduce."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 shard (a DTensor; a collective: every process calls it in the same order), or
    the tensor itself."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def gradient_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip the gradients to `max_norm` and return their total norm, whole even over FSDP2 shards."""
    return whole(torch.nn.utils.clip_grad_norm_(params, max_norm))
