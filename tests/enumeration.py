"""Shared by the sampler-correction tests of every algorithm: a sampler near the policy, and the check that the
corrected gradient, in expectation over the sampler's draws, is the on-policy one."""

import torch


def sampler_near(pi: torch.Tensor, tilt=(1.15, 0.9, 1.0)) -> torch.Tensor:
    """A sampler's distribution that differs from pi by a few tens of percent (within ppo's clip range)."""
    q = pi * torch.tensor(tilt, dtype=pi.dtype)
    return q / q.sum()


def assert_corrected_is_on_policy(expected_gradient, correction: str, pi: torch.Tensor, q: torch.Tensor) -> None:
    """`expected_gradient(correction, weights, sampler)`: the gradient of the loss summed over one-token draws with
    these weights and these sampler probabilities. Drawn by q and corrected, it equals the gradient of drawing
    from pi itself; uncorrected, it does not."""
    on_policy = expected_gradient("none", pi, pi)
    assert on_policy.abs().max() > 1e-3
    assert torch.allclose(expected_gradient(correction, q, q), on_policy, atol=1e-12)
    assert not torch.allclose(expected_gradient("none", q, q), on_policy, atol=1e-4)
