"""Rows run packed against the padded layout: the training forward + backward of an SFT step on tinyworld's
base recipe (45 rows of its training mix, the shipped base model), in micro-batches as the SFT trainer makes
them. `padded` is the layout the trainer used until 2026-12-04: prompts left-padded to the widest, completions
right-padded, an attention mask, rows sorted by (prompt, completion) length. `packed` is `packed_states`: each row
from column 0, right-padded to the longest row, no mask, rows sorted by total length. Both use the same output
layer and loss; alternating rounds, medians.

    python benchmarks/packed_rows.py [--micro 45 15] [--rounds 5] [--threads 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def padded_states(decoder, batch):
    """The former `completion_states` for rows run in full: the batch as `build_batch` lays it out, under a mask."""
    input_ids, attention, width = batch["input_ids"], batch["attention_mask"], batch["completion_mask"].shape[1]
    prompt_width = input_ids.shape[1] - width
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    mask = None if bool(attention[:, :prompt_width].all()) else attention
    hidden = decoder(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
    return hidden[:, prompt_width - 1 : prompt_width - 1 + width], input_ids.shape[1]


def packed(decoder, batch):
    from langplay.logprobs import packed_states

    states = packed_states(decoder, batch["input_ids"], batch["attention_mask"], batch["completion_mask"].shape[1])
    return states, int(batch["attention_mask"].sum(1).max())


def micro_batches(pairs, size, key, pad_id):
    from langplay.batch import build_batch

    pairs = sorted(pairs, key=key)
    return [build_batch([p for p, _ in pairs[i : i + size]], [c for _, c in pairs[i : i + size]], pad_id)
            for i in range(0, len(pairs), size)]


def nll(model, batch, states):
    import torch.nn.functional as F

    where = batch["completion_mask"].bool()
    targets = batch["input_ids"][:, -where.shape[1] :][where]
    logits = model.get_output_embeddings()(states[where]).float()
    return -F.log_softmax(logits, -1).gather(-1, targets[:, None]).sum()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--micro", type=int, nargs="+", default=[45, 15])
    parser.add_argument("--rows", type=int, default=45, help="rows per step (the base recipe's batch)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps' rows timed per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from langplay.data import encode_sft
    from langplay.evaluation.tinyworld import load_policy
    from langplay.tinyworld.base import base_model_path, training_rows

    torch.set_num_threads(args.threads)
    policy = load_policy(base_model_path())
    model, decoder, pad = policy.model, policy.model.get_decoder(), policy.tokenizer.pad_token_id
    model.train()
    steps = [[encode_sft(policy, r["prompt"], r["completion"], None, 1024)
              for r in training_rows(args.rows * (step + 1), seed=step)[-args.rows :]] for step in range(args.steps)]
    layouts = {"padded": (padded_states, lambda pc: (len(pc[0]), len(pc[1]))),
               "packed": (packed, lambda pc: (len(pc[0]) + len(pc[1]), len(pc[0])))}
    results = {}
    for size in args.micro:
        batches = {name: [micro_batches(rows, size, key, pad) for rows in steps] for name, (_, key) in layouts.items()}
        columns = {name: sum(layouts[name][0](decoder, b)[1] * len(b["input_ids"]) for step in batches[name]
                             for b in step) / args.steps for name in layouts}
        with torch.no_grad():  # the two layouts compute the same loss
            losses = {name: sum(nll(model, b, layouts[name][0](decoder, b)[0]).item() for b in batches[name][0])
                      for name in layouts}
        times = {name: [] for name in layouts}
        for round_ in range(args.rounds + 1):  # the first round warms up and is not kept
            for name, (states_of, _) in layouts.items():
                started = time.perf_counter()
                for step in batches[name]:
                    for b in step:
                        nll(model, b, states_of(decoder, b)[0]).backward()
                model.zero_grad(set_to_none=True)
                if round_:
                    times[name].append((time.perf_counter() - started) / args.steps)
        medians = {name: statistics.median(v) for name, v in times.items()}
        results[size] = {"median_s": medians, "times_s": times, "token_columns_per_step": columns,
                         "loss_first_step": losses, "packed_over_padded": medians["packed"] / medians["padded"]}
        print(f"micro-batch {size}: padded {medians['padded']:.3f} s, packed {medians['packed']:.3f} s a step "
              f"(packed / padded {results[size]['packed_over_padded']:.2f}); token columns a step "
              f"{columns['padded']:.0f} -> {columns['packed']:.0f}; loss {losses['padded']:.4f} / {losses['packed']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": args.rows, "rounds": args.rounds,
                                         "steps": args.steps, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
