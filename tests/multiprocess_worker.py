"""Run under torchrun: each training run of a JSON plan, in this process group. Asserts the world size the test
expects, records which ranks ran (and the rows and longest completion of each of their batches), and saves the
first step's (all-reduced) gradient of every run. A run with "resume_from" resumes that checkpoint."""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from langplay.config import load_config
from langplay.distributed import whole
from langplay.sharding import ShardedPolicy
from langplay.trainer import Trainer


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    expected = int(os.environ["LANGPLAY_EXPECT_WORLD_SIZE"])
    torch.set_num_threads(1)
    for run in plan["runs"]:
        trainer = Trainer(load_config(overrides=run["overrides"]))
        acc = trainer.accelerator
        assert acc.num_processes == expected, f"world size {acc.num_processes}, expected {expected}"
        if expected > 1:
            assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == expected
        out = Path(run["out"])
        step = trainer.optimizer.step

        def first_step_gradient(*args, _step=step, _trainer=trainer, _out=out, **kwargs):
            if _trainer.step == 0:  # the gradient after the all-reduce, before the update
                params = [p for g in _trainer.optimizer.param_groups for p in g["params"]]
                grads = [whole(p.grad) for p in params if p.grad is not None]  # every rank: a collective if sharded
                if not _trainer.is_main:
                    return _step(*args, **kwargs)
                flat = torch.cat([g.reshape(-1) for g in grads]).contiguous()
                _out.mkdir(parents=True, exist_ok=True)
                save_file({"grad": flat.detach().cpu()}, str(_out / "first_gradient.safetensors"))
            return _step(*args, **kwargs)

        trainer.optimizer.step = first_step_gradient
        widths, rows, collect = [], [], trainer.algorithm.collect

        def recorded(*args, _collect=collect, **kwargs):  # this rank's batch: how many rows, how long
            experience = _collect(*args, **kwargs)
            widths.append(int(experience.batch["completion_mask"].sum(1).max()))
            rows.append(int(experience.batch["completion_mask"].shape[0]))
            return experience

        trainer.algorithm.collect = recorded
        trainer.train(resume=run.get("resume_from", False))
        ranks = out / "ranks"
        ranks.mkdir(parents=True, exist_ok=True)
        (ranks / f"rank-{acc.process_index}.json").write_text(json.dumps({
            "rank": acc.process_index, "world": acc.num_processes, "pid": os.getpid(),
            "node": os.environ.get("GROUP_RANK", "0"), "distributed": str(acc.distributed_type),
            "sharded": isinstance(trainer.policy, ShardedPolicy), "reference": reference_elements(trainer.policy),
            "widths": widths, "rows": rows}))


def reference_elements(policy) -> dict | None:
    """How much of the sharded reference this rank holds (its local shards) of the whole; None if unsharded."""
    if not isinstance(policy, ShardedPolicy) or policy.reference_shards is None:
        return None
    from torch.distributed.tensor import DTensor

    params = list(policy.reference_shards.parameters())
    shards = [p for p in params if isinstance(p, DTensor)]  # a plain tensor here: weights left whole after a pass
    return {"local": sum(p.to_local().numel() for p in shards), "full": sum(p.numel() for p in params),
            "whole_tensors": len(params) - len(shards), "plain_copy": policy.reference is not None,
            "gathered": policy.gathered_reference is not None}


if __name__ == "__main__":
    main(sys.argv[1])
