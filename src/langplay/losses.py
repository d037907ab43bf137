"""Pure tensor functions shared by every algorithm: masked means, advantages, policy-gradient losses, KL, and the
implicit (soft-Q) rewards and TD targets of inverse soft-Q learning.

Shapes: per-token tensors are (sequences, tokens) with a 0/1 `mask` of the same shape; rewards and advantages
are (sequences,). Nothing here touches a model, an optimizer or a process group.
"""

from __future__ import annotations

from typing import Literal

import torch

AdvantageScale = Literal["group", "batch", "none"]
LossAggregation = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
KLEstimator = Literal["k1", "k2", "k3"]
SamplerCorrection = Literal["none", "tis", "ppo"]


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (values * mask).sum() if dim is None else (values * mask).sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the positions where mask is 1 (0 where the mask is empty, never NaN)."""
    return masked_sum(values, mask, dim) / mask.sum(dim).clamp(min=1)


def sequence_logprob(token_logp: torch.Tensor, mask: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """log pi of each sequence from its token log-probs: their sum, or their mean ("mean")."""
    summed = masked_sum(token_logp, mask, dim=1)
    return summed if reduction == "sum" else summed / mask.sum(1).clamp(min=1)


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: AdvantageScale = "group",
    leave_one_out: bool = False,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Advantages of rewards laid out as consecutive groups of `group_size` completions of one prompt.

    Mean-centred within each group (or against the mean of the *other* members when `leave_one_out`, the RLOO
    baseline), then divided by the Bessel-corrected std of the group, of the whole batch, or not at all.
    `eps` is added to the std as in TRL (verl uses 1e-6, OpenRLHF 1e-9).
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    if leave_one_out:
        if group_size < 2:
            raise ValueError("a leave-one-out baseline needs groups of at least 2")
        baseline = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    else:
        baseline = grouped.mean(1, keepdim=True)
    advantages = grouped - baseline
    if scale == "group":
        std = grouped.std(1, keepdim=True) if group_size > 1 else torch.zeros_like(baseline)
        advantages = advantages / (std + eps)
    elif scale == "batch":
        advantages = advantages / (rewards.std() + eps)
    elif scale != "none":
        raise ValueError(f"unknown advantage scale {scale!r}: use group, batch or none")
    return advantages.reshape(-1)


def leave_one_out_advantages(values: torch.Tensor) -> torch.Tensor:
    """One group's values (1-D) minus the mean of the other members (the RLOO baseline), unscaled; zeros for a
    group of one, which has no other member to compare with."""
    n = values.numel()
    return group_advantages(values, n, scale="none", leave_one_out=True) if n > 1 else torch.zeros_like(values)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1, k2, k3)."""
    log_ratio = ref_logp - logp
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.exp(log_ratio) - log_ratio - 1
    raise ValueError(f"unknown KL estimator {estimator!r}: use k1, k2 or k3")


def kl_reward_to_go(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per sequence, a surrogate of KL(pi || pi_ref) over whole sequences sampled from pi: its gradient, in
    expectation, is exactly grad KL(pi || pi_ref) (tested by enumeration), and its value is the sampled
    log-ratio log pi(a)/pi_ref(a), the KL's usual estimate.

    The KL as a per-token penalty in the reward, with REINFORCE's reward-to-go: token t's score function
    grad log pi(a_t|s_t) is weighted by sg(sum_{u >= t} log pi(a_u|s_u)/pi_ref(a_u|s_u)) (the log-ratios before t
    do not depend on a_t, and dropping them only lowers the variance). The log-ratio of a sampled sequence
    placed in the loss as it is has the gradient grad log pi(a): zero in expectation, it regularises nothing.
    `weights` (per token, no gradient): a sampler correction's, for tokens drawn by a sampler other than pi.
    """
    log_ratio = ((logp - ref_logp) * mask).detach()
    to_go = log_ratio.flip(1).cumsum(1).flip(1)
    score = (logp - logp.detach()) * to_go
    if weights is not None:
        score = score * weights
    return masked_sum(score, mask, dim=1) + log_ratio.sum(1)


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float | None = None,
) -> torch.Tensor:
    """Per-token PPO-clip loss -min(r A, clip(r) A), with r = exp(logp - old_logp) and A per sequence.

    With one update per batch, pass old_logp = logp.detach(): r = 1 and the gradient is A * grad log pi.
    """
    eps_high = eps_low if eps_high is None else eps_high
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    adv = advantages.unsqueeze(-1)
    return -torch.min(ratio * adv, clipped * adv)


def truncated_importance_weights(logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token min(pi / pi_sampler, cap), without gradient: truncated importance sampling (TIS), which
    corrects a policy gradient for tokens drawn by a sampler whose probabilities differ from the trainer's."""
    return torch.exp(logp.detach() - sampler_logp).clamp(max=cap)


def sampler_mismatch(logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The token sum of |log pi - log pi_sampler| (divide by the token count for the mean)."""
    return masked_sum((logp.detach() - sampler_logp).abs(), mask)


PPO_CLIP = 0.2  # ppo's clip range for the algorithms without one of their own (LSP, JEPO): PPO's default


def corrected_policy_loss(
    logp: torch.Tensor,
    sampler_logp: torch.Tensor,
    advantages: torch.Tensor,
    correction: SamplerCorrection = "none",
    cap: float = 3.0,
    eps_low: float = PPO_CLIP,
    eps_high: float | None = None,
) -> torch.Tensor:
    """Per-token policy-gradient loss (gradient -A grad log pi at ratio 1) of tokens drawn by a sampler, one update
    per batch: none takes them as the trainer's own draws; tis weighs each token by the truncated ratio
    min(pi / pi_sampler, cap); ppo takes the sampler as the old policy of the clipped ratio.

    Token-level, as TRL's token_truncate and verl's token mode: exact for one-token draws (tested by enumeration);
    over longer sequences the prefix each token follows was still drawn by the sampler, so it removes most of the
    bias, not all of it (a review measured ~87% of the policy gradient's bias removed on a tabular policy)."""
    old = sampler_logp if correction == "ppo" else logp.detach()
    per_token = clipped_policy_loss(logp, old, advantages, eps_low, eps_high)
    if correction == "tis":
        per_token = per_token * truncated_importance_weights(logp, sampler_logp, cap)
    return per_token


def correction_weights(logp: torch.Tensor, sampler_logp: torch.Tensor, correction: SamplerCorrection = "none",
                       cap: float = 3.0) -> torch.Tensor | None:
    """Per-token weights of the score-function terms other than a clipped policy gradient (a KL's reward-to-go,
    IRL's sampled transitions) for tokens drawn by a sampler: tis's truncated ratio under tis and ppo (these terms
    have no clip for ppo's ratio to act through), None (unweighted) under none. Token-level: a KL's reward-to-go
    also sums log-ratios of later tokens the sampler drew, so this corrects it less fully than a policy gradient
    (exact for one-token draws; a review measured ~36% of the bias removed on a tabular policy)."""
    return None if correction == "none" else truncated_importance_weights(logp, sampler_logp, cap)


def drawn_logprobs(logp: torch.Tensor, sampler_logp: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """The sampler's log-probs where it drew the token (`drawn` > 0), the trainer's elsewhere: tokens it did not
    draw (a demonstration's, a re-encoded marker's) weigh 1, nothing to correct."""
    return torch.where(drawn > 0, sampler_logp, logp.detach())


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    how: LossAggregation = "grpo",
    num_sequences: int | None = None,
    num_tokens: int | float | None = None,
    max_completion_length: int | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss to a scalar as TRL's loss types do.

    grpo:    mean over sequences of each sequence's token mean;
    bnpo/dapo: token sum / number of completion tokens;
    dr_grpo: token sum / (sequences * max_completion_length).
    The counts default to those of this batch. When a batch is split into micro-batches (or processes), pass the
    counts of the *whole* batch: the micro-batch losses then add up exactly to the whole-batch loss, whatever
    the split. (TRL's bnpo normalises per micro-batch and its dapo over the generation batch; with whole-batch
    counts the two coincide.)
    """
    num_sequences = per_token.shape[0] if num_sequences is None else num_sequences
    if how == "grpo":
        return masked_mean(per_token, mask, dim=1).sum() / num_sequences
    token_sum = masked_sum(per_token, mask)
    if how in ("bnpo", "dapo"):
        num_tokens = mask.sum() if num_tokens is None else num_tokens
        return token_sum / max(float(num_tokens), 1.0)
    if how == "dr_grpo":
        max_completion_length = per_token.shape[1] if max_completion_length is None else max_completion_length
        return token_sum / (num_sequences * max_completion_length)
    raise ValueError(f"unknown loss aggregation {how!r}: use grpo, bnpo, dr_grpo or dapo")


# -- inverse soft-Q learning: the model's logits read as soft Q-values (rewards.implicit, algorithms.irl) ---------
# Token MDP: Q(s_t, a) = logits, V(s_t) = logsumexp_a Q(s_t, a), and the implicit reward
# r_t = log pi(a_t|s_t) + V(s_t) - gamma V(s_{t+1}); after EOS the state is terminal (V = 0), a completion cut at
# the length limit is truncated (the value after it is bootstrapped).
def ends_with_eos(batch: dict, eos_id: int) -> torch.Tensor:
    """(sequences,) bool: the last completion token is EOS, i.e. the episode ended (terminal, V after it = 0)."""
    mask = batch["completion_mask"]
    width = mask.shape[1]
    last = ((mask > 0) * torch.arange(1, width + 1, device=mask.device)).amax(1) - 1  # -1: empty completion
    completion = batch["input_ids"][:, -width:]
    last_token = completion.gather(1, last.clamp(min=0).unsqueeze(1)).squeeze(1)
    return (last >= 0) & (last_token == eos_id)


def next_state_values(values: torch.Tensor, final_values: torch.Tensor, mask: torch.Tensor,
                      terminal: torch.Tensor) -> torch.Tensor:
    """V(s_{t+1}) at each completion position: the next position's value inside the completion; after the last
    token 0 when the row is terminal (EOS) and the bootstrapped value of the state after it when truncated."""
    inside = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros_like(values[:, :1])], 1)
    is_last = mask * torch.cat([1 - mask[:, 1:], torch.ones_like(mask[:, :1])], 1)  # prefix masks: one per row
    bootstrap = final_values * (1 - terminal.to(values.dtype))
    return inside + is_last * bootstrap.unsqueeze(1)


def implicit_token_rewards(logp: torch.Tensor, values: torch.Tensor, final_values: torch.Tensor, mask: torch.Tensor,
                           terminal: torch.Tensor, gamma: float) -> torch.Tensor:
    """r_t = log pi(a_t|s_t) + V(s_t) - gamma V(s_{t+1}) at completion positions, 0 elsewhere."""
    target = gamma * next_state_values(values, final_values, mask, terminal)
    return (logp + values - target) * mask
