"""SFT: maximum likelihood of the reference completion (optionally with an entropy bonus), on completion tokens."""

from __future__ import annotations

from langplay.algorithms import DataColumns, Experience, demonstration_columns, refuse_rewards
from langplay.batch import build_batch
from langplay.data import encode_sft, sft_pair
from langplay.distributed import total


class SFT:
    name = "sft"
    needs_reference = False
    generates = False

    def __init__(self, config, policy, sampler, accelerator, rewards=None):
        refuse_rewards(self.name, rewards)
        self.config, self.policy, self.accelerator = config, policy, accelerator

    @classmethod
    def data_columns(cls, config) -> DataColumns:
        return demonstration_columns(config)

    def collect(self, rows: list[dict], seeds: list[int]) -> Experience:
        prompts, completions = self.encode(rows)
        batch = build_batch(prompts, completions, self.policy.tokenizer.pad_token_id, self.policy.device)
        tokens = total(self.accelerator, batch["completion_mask"].sum())
        return Experience(batch, counts={"num_tokens": tokens}, metrics={"tokens": tokens})

    def encode(self, rows: list[dict]) -> tuple[list[list[int]], list[list[int]]]:
        """The prompt and completion ids of the rows' demonstrations, sorted by length (IRL's expert rows too)."""
        data, sft = self.config.data, self.config.sft
        prompts, completions = [], []
        for row in rows:
            prompt, target = sft_pair(row, data)
            prompt_ids, completion_ids = encode_sft(self.policy, prompt, target, data.system_prompt, sft.max_length)
            if not sft.completion_only:  # the loss covers the prompt too (all but its first token)
                prompt_ids, completion_ids = prompt_ids[:1], prompt_ids[1:] + completion_ids
            prompts.append(prompt_ids)
            completions.append(completion_ids)
        # Sorted by length (prompt + completion: rows run packed), micro-batches hold rows of similar length and
        # carry little padding (the loss is a sum normalised by the step's token count: the order changes nothing else).
        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]) + len(completions[i]), len(prompts[i])))
        return [prompts[i] for i in order], [completions[i] for i in order]

    def loss(self, batch, counts):
        bonus = self.config.sft.entropy_bonus
        out = self.policy.logprobs(batch, with_entropy=bonus > 0)
        mask = batch["completion_mask"]
        nll = -(out.logp * mask).sum() / counts["num_tokens"]  # mean NLL per completion token over the whole step
        if not bonus:
            return nll, {"nll": nll.item()}
        entropy = (out.entropy * mask).sum() / counts["num_tokens"]  # the usual diversity baseline for IRL
        return nll - bonus * entropy, {"nll": nll.item(), "entropy": entropy.item()}
