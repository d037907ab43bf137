"""GRPO: group-relative policy gradient on a prompt dataset with rewards.

For each prompt: sample G completions, score them, advantage = reward minus the group mean (optionally scaled
by the std, or a leave-one-out baseline), then minimise the clipped policy-gradient loss plus beta * KL to the
reference model. One update per batch, so old log-probs equal the current ones (ratio 1, gradient A grad log pi).
"""

from __future__ import annotations

import time

import torch

from langplay.algorithms import DataColumns, Experience, sampler_correction
from langplay.distributed import gather, local_slice, total
from langplay.losses import (
    aggregate,
    corrected_policy_loss,
    group_advantages,
    kl_penalty,
    masked_sum,
    sampler_mismatch,
)
from langplay.batch import build_batch, token_rows
from langplay.rewards import answer_columns, build_scorer, repeated_columns


class GRPO:
    name = "grpo"
    generates = True

    def __init__(self, config, policy, sampler, accelerator, rewards=None):
        self.config, self.policy, self.sampler, self.accelerator = config, policy, sampler, accelerator
        self.args = config.grpo
        self.scorer = build_scorer(self.args.rewards, rewards, config.http_judge)
        self.needs_reference = self.args.beta > 0
        self.correction = sampler_correction(config)

    @classmethod
    def data_columns(cls, config) -> DataColumns:
        prompt = config.data.prompt_column
        return DataColumns(list(dict.fromkeys([prompt, *answer_columns(config.grpo.rewards)])), [prompt])

    def score(self, rows: list[dict], prompts: list[str], samples) -> tuple[torch.Tensor, dict]:
        """Rewards of completions laid out prompt-major (each row's columns repeated G times, and each completion's
        `finished` flag), and their metrics."""
        g = self.args.group_size
        columns = {**repeated_columns(rows, g, self.config.data.prompt_column), "finished": list(samples.finished)}
        values, metrics = self.scorer.score([p for p in prompts for _ in range(g)], samples.texts, columns)
        return torch.tensor(values, dtype=torch.float32), metrics

    def collect(self, rows: list[dict], seeds: list[int]) -> Experience:
        cfg, g, acc = self.config, self.args.group_size, self.accelerator
        prompts = [self.policy.format_prompt(row[cfg.data.prompt_column], cfg.data.system_prompt) for row in rows]
        started = time.perf_counter()
        samples = self.sampler.generate(prompts, g, seeds)
        generated = time.perf_counter()
        rewards, reward_metrics = self.score(rows, prompts, samples)
        rewards = rewards.to(acc.device)
        scored = time.perf_counter()

        # Advantages over the global batch: every process holds whole groups, in process order.
        all_rewards = gather(acc, rewards)
        advantages = group_advantages(all_rewards, g, self.args.scale_rewards, self.args.leave_one_out)
        mine = local_slice(acc, len(rewards))

        batch = build_batch(samples.prompt_ids, samples.completion_ids, self.policy.tokenizer.pad_token_id, acc.device,
                            group_size=g)
        batch["advantages"] = advantages[mine]
        batch["sampler_logp"] = token_rows(samples.logprobs, batch["completion_mask"])
        if self.needs_reference:
            batch["ref_logp"] = self.policy.reference_logprobs(
                batch, cfg.sampling.temperature, cfg.train.micro_batch_size
            )
        lengths = batch["completion_mask"].sum(1)
        counts = {
            "num_sequences": float(len(all_rewards)),
            "num_tokens": total(acc, lengths.sum()),
            "max_completion_length": float(cfg.sampling.max_new_tokens),
        }
        metrics = {
            "reward": all_rewards.mean().item(),
            "reward_std": all_rewards.std().item() if len(all_rewards) > 1 else 0.0,
            "completion_length": counts["num_tokens"] / counts["num_sequences"],
            "truncated": total(acc, sum(not f for f in samples.finished)) / counts["num_sequences"],
            **reward_metrics,
            "time/generate": generated - started,
            "time/reward": scored - generated,
            "time/reference": time.perf_counter() - scored,
        }
        shown = [
            {"prompt": prompts[i // g], "completion": samples.texts[i], "reward": rewards[i].item(),
             "advantage": batch["advantages"][i].item()}
            for i in range(min(cfg.run.samples_per_step, len(samples)))
        ]
        return Experience(batch, counts, metrics, shown)

    def loss(self, batch, counts):
        args = self.args
        out = self.policy.logprobs(batch, self.config.sampling.temperature, with_entropy=True)
        mask = batch["completion_mask"]
        sampler_logp = batch["sampler_logp"]
        # One update per batch: the old policy is the current one (ratio 1), unless the sampler's log-probs
        # stand in for it (ppo); tis weighs each token by the truncated ratio instead.
        per_token = corrected_policy_loss(out.logp, sampler_logp, batch["advantages"], self.correction,
                                          self.config.sampling.correction_cap, args.epsilon, args.epsilon_high)
        tokens = counts["num_tokens"]  # metrics: this micro-batch's share of the step's token means
        metrics = {"entropy": masked_sum(out.entropy, mask).item() / tokens,
                   "sampler_mismatch": sampler_mismatch(out.logp, sampler_logp, mask).item() / tokens}
        if self.needs_reference:
            kl = kl_penalty(out.logp, batch["ref_logp"], args.kl_estimator)
            per_token = per_token + args.beta * kl
            metrics["kl"] = masked_sum(kl.detach(), mask).item() / tokens
        loss = aggregate(
            per_token, mask, args.loss_aggregation,
            num_sequences=counts["num_sequences"], num_tokens=counts["num_tokens"],
            max_completion_length=int(counts["max_completion_length"]),
        )
        return loss, metrics
