"""Losses against independent references: TRL's parity fixture and hand computations."""

import math

import pytest
import torch

from langplay.losses import (aggregate, clipped_policy_loss, group_advantages, kl_penalty,
                             leave_one_out_advantages, masked_mean)

# ../shared/reference/rl-frameworks.md, values computed with TRL's own loss function.
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.float)
LOGP = torch.tensor([[-1.0, -0.5, -2.0, -0.1], [-0.3, -1.2, -9, -9], [-0.7, -0.2, -1.5, -9], [-2.5, -9, -9, -9]])
OLD = torch.tensor([[-1.1, -0.4, -2.2, -0.1], [-0.3, -1.0, -9, -9], [-0.9, -0.2, -1.0, -9], [-2.0, -9, -9, -9]])
REF = torch.tensor([[-1.0, -0.6, -2.1, -0.2], [-0.4, -1.1, -9, -9], [-0.8, -0.3, -1.4, -9], [-2.2, -9, -9, -9]])
TRL = {
    0.0: {"grpo": -0.060318, "bnpo": -0.380795, "dr_grpo": -0.237997, "dapo": -0.380795},
    0.04: {"grpo": -0.059684, "bnpo": -0.380439, "dr_grpo": -0.237774, "dapo": -0.380439},
}


def test_advantages_match_trl_fixture():
    adv = group_advantages(torch.tensor([1.0, 0, 1, 0]), group_size=4, scale="group")
    assert torch.allclose(adv, torch.tensor([0.865875, -0.865875, 0.865875, -0.865875]), atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("how", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_loss_matches_trl_fixture(beta, how):
    adv = group_advantages(torch.tensor([1.0, 0, 1, 0]), group_size=4)
    per_token = clipped_policy_loss(LOGP, OLD, adv, eps_low=0.2) + beta * kl_penalty(LOGP, REF, "k3")
    loss = aggregate(per_token, MASK, how, max_completion_length=4)
    assert loss.item() == pytest.approx(TRL[beta][how], abs=1e-5)


@pytest.mark.parametrize("how", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_micro_batches_add_up_to_the_whole_batch(how):
    adv = group_advantages(torch.tensor([1.0, 0, 1, 0]), group_size=4)
    per_token = clipped_policy_loss(LOGP, OLD, adv)
    whole = aggregate(per_token, MASK, how, max_completion_length=4)
    counts = dict(num_sequences=4, num_tokens=MASK.sum(), max_completion_length=4)
    parts = sum(aggregate(per_token[i : i + 1], MASK[i : i + 1], how, **counts) for i in range(4))
    assert parts.item() == pytest.approx(whole.item(), abs=1e-7)


def test_advantage_scales_and_leave_one_out_by_hand():
    r = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    none = group_advantages(r, 3, scale="none")
    assert torch.allclose(none, torch.tensor([-2.0, -1.0, 3.0, -1.0, -1.0, 2.0]))
    batch = group_advantages(r, 3, scale="batch", eps=0.0)
    assert torch.allclose(batch, none / r.std())
    group = group_advantages(r, 3, scale="group", eps=0.0)
    assert group[0].item() == pytest.approx(-2.0 / math.sqrt(7.0))  # std of [1,2,6] (n-1) is sqrt(7)
    loo = group_advantages(r, 3, scale="none", leave_one_out=True)
    assert torch.allclose(loo, torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0.0]))


def test_leave_one_out_advantages_of_one_group_by_hand():
    r = torch.tensor([1.0, 2.0, 6.0, 3.0], dtype=torch.float64)  # the others' means: 11/3, 10/3, 2, 3
    expected = torch.tensor([1 - 11 / 3, 2 - 10 / 3, 6 - 2.0, 3 - 3.0], dtype=torch.float64)
    assert torch.allclose(leave_one_out_advantages(r), expected)
    assert torch.equal(leave_one_out_advantages(torch.tensor([5.0])), torch.zeros(1))  # no other member


def test_zero_variance_group_has_zero_advantage():
    adv = group_advantages(torch.tensor([1.0, 1.0, 0.5, 0.5]), 2)
    assert torch.equal(adv, torch.zeros(4))


def test_bad_group_size_is_a_clear_error():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.zeros(4), 3)


def test_kl_estimators_against_exact_kl_on_a_small_vocabulary():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(5), 0)
    q = torch.softmax(torch.randn(5), 0)
    exact = (p * (p.log() - q.log())).sum()
    logp, logq = p.log(), q.log()
    k1 = (p * kl_penalty(logp, logq, "k1")).sum()  # expectation under p, enumerated
    k3 = (p * kl_penalty(logp, logq, "k3")).sum()
    assert k1.item() == pytest.approx(exact.item(), abs=1e-6)
    assert k3.item() == pytest.approx(exact.item(), abs=1e-6)  # k3 is unbiased too
    k2 = kl_penalty(torch.tensor([-1.0]), torch.tensor([-1.5]), "k2")
    assert k2.item() == pytest.approx(0.5 * 0.25)
    assert (kl_penalty(LOGP, REF, "k3") >= 0).all()


def test_clipping_stops_the_gradient_outside_the_trust_region():
    logp = torch.tensor([[0.5]], requires_grad=True)  # ratio e^0.5 > 1.2 with positive advantage: clipped
    loss = clipped_policy_loss(logp, torch.zeros(1, 1), torch.tensor([1.0])).sum()
    loss.backward()
    assert logp.grad.item() == 0.0
    logp = torch.tensor([[0.0]], requires_grad=True)  # ratio 1: gradient is -A
    clipped_policy_loss(logp, logp.detach(), torch.tensor([2.0])).sum().backward()
    assert logp.grad.item() == pytest.approx(-2.0)


def test_masked_mean_of_empty_mask_is_zero():
    assert masked_mean(torch.ones(2, 3), torch.zeros(2, 3), dim=1).tolist() == [0.0, 0.0]


# -- sampler/trainer mismatch (sampling.correction, shared by every algorithm that samples) ---------------------------
def test_truncated_importance_weights_by_hand():
    from langplay.losses import sampler_mismatch, truncated_importance_weights

    logp = torch.log(torch.tensor([[0.5, 0.2, 0.3]])).requires_grad_()
    sampler = torch.log(torch.tensor([[0.25, 0.4, 0.3]]))
    weights = truncated_importance_weights(logp, sampler, cap=1.5)
    assert torch.allclose(weights, torch.tensor([[1.5, 0.5, 1.0]]))  # ratios 2 (capped), 0.5, 1
    assert not weights.requires_grad
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert sampler_mismatch(logp, sampler, mask).item() == pytest.approx(math.log(2) + math.log(2))


@pytest.mark.parametrize("mode", ["tis", "ppo"])
def test_sampler_correction_recovers_the_on_policy_gradient_by_enumeration(mode):
    """Tokens drawn from a sampler q != pi: E_q[loss] with the correction has the gradient of the on-policy
    objective E_pi[A grad log pi]; without it, E_q's gradient differs."""
    from langplay.losses import clipped_policy_loss, truncated_importance_weights

    theta = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)  # the sampler's probabilities
    advantage = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)

    def expected_gradient(correction: str) -> torch.Tensor:
        logp = torch.log_softmax(theta, 0).view(3, 1)  # one one-token "sequence" per action
        old = q.log().view(3, 1) if correction == "ppo" else logp.detach()
        per_token = clipped_policy_loss(logp, old, advantage, eps_low=10.0)  # a clip wide enough not to act
        if correction == "tis":
            per_token = per_token * truncated_importance_weights(logp, q.log().view(3, 1), cap=100.0)
        loss = (q.view(3, 1) * per_token).sum()  # the expectation over the sampler's draws
        return torch.autograd.grad(loss, theta)[0]

    pi = torch.softmax(theta, 0).detach()
    logp = torch.log_softmax(theta, 0)
    on_policy = torch.autograd.grad(-(pi * advantage * logp).sum(), theta)[0]
    assert torch.allclose(expected_gradient(mode), on_policy, atol=1e-12)
    assert not torch.allclose(expected_gradient("none"), on_policy, atol=1e-3)


def test_implicit_rewards_telescope_when_terminal_and_bootstrap_when_truncated():
    """r_t = log pi + V(s_t) - gamma V(s_{t+1}) by hand: at gamma 1 a terminal row sums to log pi(y|x) + V(s_0), a
    truncated one to log pi(y|x) + V(s_0) - V(after its last token); padding gets 0; EOS decides which is which."""
    from langplay.losses import ends_with_eos, implicit_token_rewards, next_state_values

    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -2.0, -9.0]])
    values = torch.tensor([[5.0, 4.0, 3.0], [5.0, 4.0, 9.0]])
    final_values, mask = torch.tensor([7.0, 7.0]), torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    eos = 2
    batch = {"input_ids": torch.tensor([[9, 9, 5, 6, eos], [9, 9, 5, eos + 1, 0]]), "completion_mask": mask}
    terminal = ends_with_eos(batch, eos)
    assert terminal.tolist() == [True, False]
    assert next_state_values(values, final_values, mask, terminal).tolist() == [[4.0, 3.0, 0.0], [4.0, 7.0, 0.0]]
    rewards = implicit_token_rewards(logp, values, final_values, mask, terminal, gamma=1.0)
    assert rewards.sum(1).tolist() == [-6.0 + 5.0, -3.0 + 5.0 - 7.0] and rewards[1, 2] == 0
    half = implicit_token_rewards(logp, values, final_values, mask, terminal, gamma=0.5)
    assert half[0].tolist() == [-1.0 + 5.0 - 2.0, -2.0 + 4.0 - 1.5, -3.0 + 3.0]
