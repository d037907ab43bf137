"""IRL: inverse soft-Q learning on demonstrations, written as MLE plus a temporal-difference regulariser.

Wulfmeier et al., "Imitating Language via Scalable Inverse Reinforcement Learning" (NeurIPS 2024), built on
IQ-Learn (Garg et al. 2021; reference code Div99/IQ-Learn, iq_learn/iq.py, `iq_loss`).

Token MDP: s_t = (x, y_<t), a_t = y_t. The logits are the Q-values, Q(s, .) = logits(s); V(s) = logsumexp Q(s, .);
pi = softmax Q. After EOS the state is terminal (V = 0); a demonstration cut at sft.max_length without EOS is
truncated, and its last V(s_{T+1}) is bootstrapped from the model.

Per step, on demonstrations (IQ-Learn's method.loss=value_expert, method.chi=True, phi = identity):
    r_t = Q(s_t, a_t) - gamma V(s_{t+1}) = log pi(a_t|s_t) + V(s_t) - gamma V(s_{t+1})      implicit reward
    L   = -E_expert[r_t] + E_expert[V(s_t) - gamma V(s_{t+1})] + 1/(4 alpha) E_expert[r_t^2]
        =  E_expert[-log pi(a_t|s_t)]  +  lambda E_expert[r_t^2]                         (lambda = 1/(4 alpha))
i.e. MLE plus a squared TD error; lambda = 0 is SFT exactly. Gradients flow through V(s') (no target network).

Online (irl.online_fraction > 0, IQ-Learn's method.loss=value): some rows of the batch are the model's own
samples for the same prompts. They only define which states are visited (no REINFORCE gradient): the value term
becomes E_mixture[V(s) - gamma V(s')], which pushes values down on model-visited prefixes, and with irl.online_td
the chi-squared term covers the mixture too (IQ-Learn's method.regularize=True in place of method.chi). Samples
drawn by a sampler other than the trainer (vLLM, bf16) are corrected as GRPO's are (`sampling.correction`): each
sampled transition's terms are weighed by min(pi / pi_sampler, cap).

Where the paper is silent, the defaults (config.IRLConfig) are:
- gamma = 0.99, IQ-Learn's default. With gamma = 1 the value term sum_t V(s_t) - V(s_t+1) telescopes to V(s_0),
  the prompt's state, the same for demonstrations and samples: online IRL's gradient then vanishes at every
  visited intermediate state, and the summed reward is log pi(y|x) + V(s_0). gamma = 1 is refused online
  unless irl.online_td puts the chi-squared term on the visited states; offline it is allowed (episodes end at
  EOS or the length limit, so values stay finite);
- lambda = 0.5: IQ-Learn's default alpha = 0.5 (lambda = 1/(4 alpha)); the paper's grid is not published. It
  suits training from scratch, where values start near 0. Fine-tuning a model trained without the TD term, r^2
  starts large (tinyworld's base: V about 11 nats, r^2 about 90 per token against an NLL about 1.3), so lambda
  >= 0.05 swamps the NLL and wrecks the model; results/irl_tinyworld.md measured 0.001-0.01 as the usable range;
- every expectation is a mean over completion tokens (IQ-Learn averages over transitions in a batch), taken over
  the whole step so micro-batches add up; prompt and padding positions are not transitions and carry no loss.
"""

from __future__ import annotations

import math

import torch

from langplay.algorithms import DataColumns, Experience, demonstration_columns, refuse_rewards, sampler_correction
from langplay.algorithms.sft import SFT
from langplay.batch import build_batch, token_rows
from langplay.data import sft_pair
from langplay.distributed import total
from langplay.losses import (correction_weights, drawn_logprobs, ends_with_eos, masked_sum, next_state_values,
                             sampler_mismatch)
from langplay.rewards.implicit import GAMMA_FACT


def iq_loss(logp, values, final_values, mask, terminal, is_expert, counts, gamma=1.0, td_weight=0.5,
            online_td=False, weights=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IQ-Learn's chi-squared objective on token transitions, normalised by the step's token counts.

    logp, values, mask: (sequences, tokens) from `sequence_logprobs(..., with_values=True)`, final_values and
    terminal: (sequences,), is_expert: (sequences,) 1 for demonstrations, 0 for the model's samples. counts:
    expert_tokens, mixture_tokens (all rows) and td_tokens (the rows the chi-squared term covers), global.
    Returns the loss and its monitored parts (detached; each this micro-batch's share of the step's mean): nll,
    td (the mean squared TD error r^2), value (mean V) and implicit_reward (mean r) on demonstration tokens;
    online also value_shift (loss = nll + td_weight * td + value_shift) and value/sampled (mean V on samples).
    weights: per token (no gradient), a sampler correction's for the sampled transitions (1 on demonstrations).
    """
    n_expert, n_mixture = counts["expert_tokens"], counts["mixture_tokens"]
    expert = mask * is_expert.unsqueeze(1)
    target = gamma * next_state_values(values, final_values, mask, terminal)  # y = (1 - done) gamma V(s')
    reward = (logp + values - target) * mask  # r = Q(s, a) - y
    value_step = (values - target) * mask  # V(s) - y
    # -E_expert[Q - y] + E_expert[V - y] = E_expert[-log pi]: written as the NLL itself, so lambda = 0 is SFT exactly
    weights = torch.ones_like(logp) if weights is None else weights
    nll = -masked_sum(logp, expert) / n_expert
    td = masked_sum(weights * reward**2, mask if online_td else expert) / counts["td_tokens"]
    loss = nll + td_weight * td
    parts = {"nll": nll, "td": td, "value": masked_sum(values, expert) / n_expert,
             "implicit_reward": masked_sum(reward, expert) / n_expert}
    if n_mixture > n_expert:  # online: the value term is a mean over the mixture, not over the experts only
        value_shift = masked_sum(weights * value_step, mask) / n_mixture - masked_sum(value_step, expert) / n_expert
        loss = loss + value_shift
        parts["value_shift"] = value_shift
        parts["value/sampled"] = masked_sum(values, mask - expert) / (n_mixture - n_expert)
    return loss, {key: value.detach() for key, value in parts.items()}


class IRL:
    name = "irl"
    needs_reference = False

    def __init__(self, config, policy, sampler, accelerator, rewards=None):
        refuse_rewards(self.name, rewards)
        self.config, self.policy, self.sampler, self.accelerator = config, policy, sampler, accelerator
        self.args = config.irl
        policy.facts[GAMMA_FACT] = self.args.gamma  # saved with every model: the irl reward's default gamma
        self.generates = self.args.online_fraction > 0
        # The trainer's log-probs are at temperature 1 (the Q-values): a sampler at another temperature is a
        # different distribution by choice, not a mismatch to correct (IQ-Learn's terms hold under any visited-state
        # distribution, as with its replay buffer), so the correction acts only when the sampler's is 1 too.
        self.correction = sampler_correction(config) if config.sampling.temperature == 1 else "none"
        self.demonstrations = SFT(config, policy, None, accelerator)  # expert rows are encoded exactly as for SFT

    @classmethod
    def data_columns(cls, config) -> DataColumns:
        return demonstration_columns(config)

    def collect(self, rows: list[dict], seeds: list[int]) -> Experience:
        prompt_ids, completion_ids = self.demonstrations.encode(rows)
        experts, samples, sampler_logp = len(prompt_ids), [], []
        if self.args.online_fraction > 0:  # the model's own rows after the experts'
            sampled_prompts, sampled, sampler_logp, samples = self.model_samples(rows, seeds)
            prompt_ids, completion_ids = prompt_ids + sampled_prompts, completion_ids + sampled
        batch = build_batch(prompt_ids, completion_ids, self.policy.tokenizer.pad_token_id, self.policy.device)
        if samples:
            batch["sampler_logp"] = token_rows([[]] * experts + sampler_logp, batch["completion_mask"])
        eos = self.policy.tokenizer.eos_token_id
        is_expert = [1.0] * experts + [0.0] * len(samples)
        batch["is_expert"] = torch.tensor(is_expert, device=batch["input_ids"].device)
        batch["terminal"] = ends_with_eos(batch, eos).float()  # EOS: terminal; cut at the length limit: bootstrap
        mask = batch["completion_mask"]
        expert_tokens = total(self.accelerator, (mask * batch["is_expert"].unsqueeze(1)).sum())
        mixture_tokens = total(self.accelerator, mask.sum())
        counts = {"expert_tokens": expert_tokens, "mixture_tokens": mixture_tokens,
                  "td_tokens": mixture_tokens if self.args.online_td else expert_tokens}
        metrics = {"tokens": expert_tokens,
                   "truncated": total(self.accelerator, (1 - batch["terminal"]) @ batch["is_expert"])
                   / total(self.accelerator, len(rows))}
        if samples:
            metrics["sampled_tokens"] = mixture_tokens - expert_tokens
        return Experience(batch, counts, metrics, samples[: self.config.run.samples_per_step])

    def online_sample_count(self, rows: int) -> int:
        """Samples to add to `rows` demonstrations so they make up online_fraction of the batch's rows."""
        fraction = self.args.online_fraction
        return max(1, round(fraction * rows / (1 - fraction)))

    @torch.no_grad()
    def model_samples(self, rows: list[dict], seeds: list[int]) -> tuple[list, list, list, list[dict]]:
        """The model's own completions of the same prompts (online_sample_count of them): their prompt ids,
        completion ids and sampler log-probs, and how samples.jsonl shows them."""
        data, count = self.config.data, self.online_sample_count(len(rows))
        per_prompt = math.ceil(count / len(rows))
        used = math.ceil(count / per_prompt)
        prompts = [self.policy.format_prompt(sft_pair(row, data)[0], data.system_prompt) for row in rows[:used]]
        drawn = self.sampler.generate(prompts, per_prompt, seeds[:used])
        shown = [{"prompt": prompts[i // per_prompt], "completion": drawn.texts[i], "source": "model"}
                 for i in range(count)]
        return drawn.prompt_ids[:count], drawn.completion_ids[:count], drawn.logprobs[:count], shown

    def loss(self, batch, counts):
        # Temperature 1: the logits themselves are the Q-values (sampling.temperature only shapes online samples).
        out = self.policy.logprobs(batch, with_values=True)
        args, mask = self.args, batch["completion_mask"]
        weights, metrics = None, {}
        if "sampler_logp" in batch and self.config.sampling.temperature == 1:  # online: sampled transitions
            sampled = (1 - batch["is_expert"]).unsqueeze(1) * mask
            drawn = drawn_logprobs(out.logp, batch["sampler_logp"], sampled)  # demonstrations: weight 1
            weights = correction_weights(out.logp, drawn, self.correction, self.config.sampling.correction_cap)
            metrics["sampler_mismatch"] = (sampler_mismatch(out.logp, drawn, sampled).item()
                                           / max(counts["mixture_tokens"] - counts["expert_tokens"], 1.0))
        loss, parts = iq_loss(out.logp, out.values, out.final_values, mask, batch["terminal"], batch["is_expert"],
                              counts, args.gamma, args.td_weight, args.online_td, weights)
        # V is a free shift of the logits that leaves pi unchanged: td and value are logged apart.
        return loss, {**{key: value.item() for key, value in parts.items()}, **metrics}

