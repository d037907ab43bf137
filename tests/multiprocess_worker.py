"""Run under torchrun: each training run of a JSON plan, in this process group. Asserts the world size the test
expects, records which ranks ran, and saves the first step's (all-reduced) gradient of every run."""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from langplay.config import load_config
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
            if _trainer.step == 0 and _trainer.is_main:  # the gradient after the all-reduce, before the update
                params = [p for g in _trainer.optimizer.param_groups for p in g["params"]]
                flat = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None]).contiguous()
                _out.mkdir(parents=True, exist_ok=True)
                save_file({"grad": flat.detach().cpu()}, str(_out / "first_gradient.safetensors"))
            return _step(*args, **kwargs)

        trainer.optimizer.step = first_step_gradient
        trainer.train()
        ranks = out / "ranks"
        ranks.mkdir(parents=True, exist_ok=True)
        (ranks / f"rank-{acc.process_index}.json").write_text(json.dumps({
            "rank": acc.process_index, "world": acc.num_processes, "pid": os.getpid(),
            "node": os.environ.get("GROUP_RANK", "0"), "distributed": str(acc.distributed_type)}))


if __name__ == "__main__":
    main(sys.argv[1])
