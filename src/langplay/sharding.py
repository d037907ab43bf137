"""train.sharding=fsdp2: the trained weights, their gradients and the optimizer state sharded over the processes
with PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`).

Each decoder layer is one FSDP unit; a small root module around the whole model is another (embeddings, final
norm, output layer). The root's forward *is* `sequence_logprobs`: the chunked log-prob code calls the decoder
and the output layer directly, so it must run inside a forward that has gathered the root's parameters. The
output layer is not a unit of its own: ranks run different numbers of chunks, and a collective per chunk would
deadlock.

`ShardedPolicy` is a `Policy` that trains the shards behind the same methods, so neither the policy nor the trainer
asks whether it is sharded. It keeps its plain model (`policy.model`), unsharded, beside the shards: everything
that does not differentiate reads it — sampling (no collective in a decoding loop, so a rank whose completions stop
early never waits for another), scoring, evaluation and saving — and it is refreshed from the shards after every
optimizer step, as a vLLM engine is. Per process this holds the full weights once more, and shards what training
adds: gradients and AdamW's two moments. The frozen reference model is sharded the same way and its full copy
dropped: the reference pass runs on its shards (`sharded_logprobs`). Only a judge that samples from the reference
(LSP's R_Q without a function or endpoint) gathers it whole, once. With LoRA the reference is the plain model with
its adapter disabled, and costs nothing.

Checkpoints stay in langplay's safetensors format, gathered with torch.distributed.checkpoint's state-dict API:
a sharded run resumes unsharded and the other way round, at the price of one process holding the full state
while it writes (a truly sharded DCP save is the next step for models beyond one host's memory).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor

from langplay.batch import micro_batch_bounds, slice_batch
from langplay.distributed import most, most_over_processes, whole
from langplay.errors import LangplayError
from langplay.logprobs import TokenLogprobs, sequence_logprobs
from langplay.models import frozen_copy
from langplay.policy import Policy


class ShardedPolicy(Policy):
    """A policy whose training runs on FSDP2 shards of its model; `model` stays whole beside them, a copy for
    everything that does not differentiate (sampling, scoring, saving), refreshed after every optimizer step.
    A frozen reference is sharded too and its whole copy dropped.

    Built like a `Policy` (`ShardedPolicy.from_config`), or from one (`ShardedPolicy.of`); either shards at once,
    a collective: every process builds it at the same point.
    """

    bf16_copies = False  # the shards run autocast over float32 (the sampler's full copy then stays float32 too)

    def __init__(self, model, tokenizer, reference=None, chunk_tokens: int = 2048):
        super().__init__(model, tokenizer, None, chunk_tokens)
        self.shards = shard(model, self.device)
        # the reference's shards, in place of a whole reference; gathered whole only for a judge that samples
        self.reference_shards = None if reference is None else shard(reference, self.device)
        self.gathered_reference = None

    @classmethod
    def of(cls, policy: Policy) -> ShardedPolicy:
        """The sharded twin of a plain policy: the same model, tokenizer and facts."""
        sharded = cls(policy.model, policy.tokenizer, policy.reference, policy.chunk_tokens)
        sharded.facts = policy.facts
        return sharded

    def add_reference(self) -> None:
        """The frozen copy, sharded at once (a collective); with LoRA the base serves, as unsharded."""
        if self.reference_shards is None and not self.uses_lora:
            self.reference_shards = shard(frozen_copy(self.model), self.device)

    # -- training ---------------------------------------------------------------------------------------------
    @property
    def trained_module(self) -> nn.Module:
        return self.shards

    def micro_batch_rounds(self, accelerator, count: int) -> int:
        """Every forward is a collective: all processes run as many micro-batch passes as the busiest one (the
        trainer repeats its last micro-batch with weight 0 for the ones it lacks)."""
        return most(accelerator, count)

    def reduce_gradients(self, accelerator, params: list[nn.Parameter]) -> None:
        """Nothing to do: FSDP2 reduces (sums) the gradients into the shards itself."""

    def after_optimizer_step(self) -> None:
        """Refresh the full model (sampling, scoring, saving) from the updated shards."""
        copy_shards_to_model(self.shards, self.model)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        return full_optimizer_state(self.shards, optimizer)

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        load_full_optimizer_state(self.shards, optimizer, state)

    def weights_loaded(self) -> None:
        """The full model's weights were replaced (a checkpoint): the shards follow."""
        copy_model_to_shards(self.model, self.shards)

    # -- log-probs --------------------------------------------------------------------------------------------
    def logprobs(self, batch: dict, temperature: float = 1.0, with_entropy: bool = False,
                 with_values: bool = False) -> TokenLogprobs:
        """Log-probs under autograd, of the shards."""
        return TokenLogprobs(*self.shards(batch, temperature, self.chunk_tokens, with_entropy, with_values))

    def reference_logprobs(self, batch: dict, temperature: float = 1.0, micro_batch_size: int = 16) -> torch.Tensor:
        """On the reference's shards (with LoRA: the full model with its adapter disabled, as unsharded)."""
        if self.reference_shards is None:
            return super().reference_logprobs(batch, temperature, micro_batch_size)
        out = self.zero_logprobs(batch)
        sharded_logprobs(self.reference_shards, batch, temperature, self.chunk_tokens, micro_batch_size, out)
        return out

    @contextlib.contextmanager
    def reference_model(self):
        """The first call gathers the reference from its shards, a collective: every process makes it at the same
        point."""
        if self.reference_shards is None:
            with super().reference_model() as reference:
                yield reference
            return
        if self.gathered_reference is None:
            self.gathered_reference = frozen_copy(self.model)
            copy_shards_to_model(self.reference_shards, self.gathered_reference, trained_only=False)
        yield self.gathered_reference


class LogprobModule(nn.Module):
    """The FSDP root: its forward is the policy's log-prob computation, returned as a tuple (FSDP hooks the
    backward pass through the tensors of its output)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, temperature: float, chunk_tokens: int, with_entropy: bool, with_values: bool):
        out = sequence_logprobs(self.model, batch, temperature, chunk_tokens, with_entropy, with_values)
        return out.logp, out.entropy, out.values, out.final_values


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(model.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise LangplayError(f"train.sharding=fsdp2 needs a decoder with a `layers` list; {type(model).__name__} has none")
    return layers


def shard(model: nn.Module, device: torch.device) -> LogprobModule:
    """A sharded twin of `model` (which is left as it is): fully_shard per decoder layer, then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not torch.distributed.is_initialized():
        raise LangplayError("train.sharding=fsdp2 needs a process group: launch with torchrun (one process is fine)")
    root = LogprobModule(copy.deepcopy(model))
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    for layer in decoder_layers(root.model):
        fully_shard(layer, mesh=mesh)
    fully_shard(root, mesh=mesh)
    for unit in root.modules():  # gradients are summed, not averaged: losses are normalised by global counts
        if hasattr(unit, "set_gradient_divide_factor"):
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)
    return root


def trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in module.named_parameters() if p.requires_grad]


@torch.no_grad()
def copy_shards_to_model(root: LogprobModule, model: nn.Module, trained_only: bool = True) -> None:
    """Refresh the plain model from the trained shards (after an optimizer step), or from every shard."""
    plain = dict(model.named_parameters())
    for name, p in trainable(root.model) if trained_only else root.model.named_parameters():
        plain[name].copy_(whole(p))


@torch.no_grad()
def sharded_logprobs(root: LogprobModule, batch: dict, temperature: float, chunk_tokens: int,
                     micro_batch_size: int, out: torch.Tensor) -> None:
    """Log-probs of `batch` under a sharded frozen model (the reference), micro-batch by micro-batch, into `out`.

    Each forward gathers the root's and every layer's weights, a collective: every process runs as many
    forwards as the process with the most micro-batches, repeating its first row for the ones it lacks."""
    if out.shape[0] == 0:
        raise LangplayError("a sharded reference pass got no rows on this process: give every process a share")
    bounds = micro_batch_bounds(batch, micro_batch_size)
    for round_ in range(most_over_processes(len(bounds), out.device)):
        if round_ >= len(bounds):  # no rows left here: a forward for the other processes' collectives only
            root(slice_batch(batch, 0, 1), temperature, chunk_tokens, False, False)
            continue
        start, stop = bounds[round_]
        logp = root(slice_batch(batch, start, stop), temperature, chunk_tokens, False, False)[0]
        out[start:stop, : logp.shape[1]] = logp
    root.reshard()  # FSDP keeps the root's weights whole after a forward, for a backward that never comes here


@torch.no_grad()
def copy_model_to_shards(model: nn.Module, root: LogprobModule) -> None:
    """Load the plain model's weights into the shards (after a checkpoint was loaded into it)."""
    plain = dict(model.named_parameters())
    for name, p in root.model.named_parameters():
        if isinstance(p, DTensor):
            p.copy_(distribute_tensor(plain[name].detach().to(p.dtype), p.device_mesh, p.placements))
        else:
            p.copy_(plain[name])


# -- the optimizer state, in the index-keyed layout of an unsharded torch optimizer ------------------------------
OPTIONS = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_optimizer_state(root: LogprobModule, optimizer: torch.optim.Optimizer) -> dict:
    """The whole optimizer state (on the main process; a collective), keyed as `optimizer.state_dict()` of an
    unsharded run keys it: by the index of each trained parameter."""
    by_name = get_optimizer_state_dict(root, optimizer, options=OPTIONS)
    if not by_name:  # the other processes get nothing (cpu_offload gathers to the main one)
        return {}
    index = {name: i for i, (name, _) in enumerate(trainable(root))}
    state = {index[name]: values for name, values in by_name["state"].items()}
    groups = [{**group, "params": [index[name] for name in group["params"]]} for group in by_name["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_full_optimizer_state(root: LogprobModule, optimizer: torch.optim.Optimizer, state: dict) -> None:
    names = [name for name, _ in trainable(root)]
    by_name = {"state": {names[int(i)]: values for i, values in state["state"].items()},
               "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]}
                                for group in state["param_groups"]]}
    set_optimizer_state_dict(root, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
