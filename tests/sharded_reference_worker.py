"""Run under torchrun, 2 processes: the reference pass on the frozen reference's FSDP2 shards equals the plain
model's, although the ranks hold different numbers of rows (so run different numbers of micro-batches: the one
with fewer must still join every forward's collectives). Writes OUT/rank-R.json."""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from langplay.batch import build_batch
from langplay.logprobs import sequence_logprobs
from langplay.models import frozen_copy
from langplay.sharding import ShardedPolicy


def main(model_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = ShardedPolicy(model, tokenizer, reference=frozen_copy(model))
    rows = 3 if rank == 0 else 1
    batch = build_batch([policy.encode(f"say {c}") for c in "abc"[:rows]],
                        [policy.encode("xyz"[: i + 1] * (i + 1)) for i in range(rows)], tokenizer.pad_token_id)
    sharded = policy.reference_logprobs(batch, temperature=1.0, micro_batch_size=1)
    with torch.no_grad():
        plain = sequence_logprobs(model, batch, 1.0, policy.chunk_tokens).logp
    mask = batch["completion_mask"].bool()
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank-{rank}.json").write_text(json.dumps({
        "rank": rank, "rows": rows, "plain_copy": policy.reference is not None,
        "max_difference": (sharded - plain)[mask].abs().max().item(), "max_logp": plain[mask].abs().max().item()}))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
