"""Run under torchrun: one bf16 GRPO step with the overrides given, recording the dtypes of the full model's weights
while the sampler runs and of the reference's parameters; rank 0 writes them to OUT/seen.json."""

import json
import sys
from pathlib import Path

import torch

from langplay.config import load_config
from langplay.sharding import ShardedPolicy
from langplay.trainer import Trainer


def main(out: str, *overrides: str) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(load_config(overrides=list(overrides)))
    model, generate, seen = trainer.policy.model, trainer.sampler.generate, []

    def recording(*args, **kwargs):
        seen.append(sorted({str(p.dtype) for p in model.parameters()}))
        return generate(*args, **kwargs)

    trainer.sampler.generate = recording
    trainer.train()
    sharded = isinstance(trainer.policy, ShardedPolicy)
    reference = trainer.policy.reference_shards if sharded else trainer.policy.reference
    if trainer.is_main:
        Path(out, "seen.json").write_text(json.dumps({
            "precision": trainer.precision, "sharded": sharded, "sampling": seen,
            "reference": sorted({str(p.dtype) for p in reference.parameters()})}))


if __name__ == "__main__":
    main(*sys.argv[1:])
