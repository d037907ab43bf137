"""Samplers turn prompts into completions. Every backend returns the same `Samples`.

Randomness is keyed, not stateful: completion j of a prompt with seed s draws its noise from (s, j, position,
token) alone. The same prompt with the same seed gives the same completion whatever else is in the batch, on one
process or many, before or after a resume.
"""

from __future__ import annotations

from langplay.config import SamplingConfig
from langplay.sampling.base import Sampler, Samples  # noqa: F401  (the samplers' shared types, from their module)


def make_sampler(config: SamplingConfig, policy, adapter: bool = True) -> Sampler:
    """The configured backend's sampler over the policy's weights. adapter=False: a vLLM engine holds a LoRA
    policy's base alone (its reference); the transformers sampler runs the model as it is when called (the caller
    disables the adapter, as under `Policy.reference_model()`)."""
    if config.backend == "vllm":
        from langplay.sampling.vllm import VLLMSampler

        return VLLMSampler(config, policy, adapter)
    from langplay.sampling.hf import HFSampler

    return HFSampler(config, policy)
