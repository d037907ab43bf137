"""vLLM at real batch sizes (issue 38 item 4): a seeded batch whose prompts together are far beyond one scheduler
step (8,192 tokens) samples without crashing, keyed seeds still give the same completions alone and in the batch,
the engine's log-probs are still the policy's, and an engine error that escapes is one LangplayError.

vLLM's CPU build crashed here with "RuntimeError: CPU Generator does not use offset": a seeded request whose
prefill was split across steps has its sampled token discarded and its generator rewound, which a CPU generator
cannot do.
"""

import os

import pytest

if os.environ.get("LANGPLAY_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm")


from langplay.config import ModelConfig, SamplingConfig  # noqa: E402
from langplay.errors import LangplayError  # noqa: E402
from langplay.policy import Policy  # noqa: E402
from langplay.sampling.vllm import VLLMSampler  # noqa: E402
from langplay.testing import save_tiny_model  # noqa: E402
from test_vllm import logprob_gap  # noqa: E402

pytestmark = pytest.mark.slow  # real engines
SAMPLING = SamplingConfig(backend="vllm", max_new_tokens=8, max_prompt_tokens=200)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The tiny Llama with heads of 32 (vLLM's CPU attention has no head size 16), 512 positions."""
    model = save_tiny_model(tmp_path_factory.mktemp("vllm-batches") / "model", heads=2)
    policy = Policy.from_config(ModelConfig(name_or_path=str(model)), with_reference=False)
    return VLLMSampler(SAMPLING, policy)


def long_prompts(policy, n: int) -> list[str]:
    """n distinct chat prompts of ~140 tokens each (the tokenizer is character-level)."""
    return [policy.format_prompt(f"question {i}: " + f"{chr(97 + i % 26)}bcdefghij klmnop qrstu vwxyz " * 4)
            for i in range(n)]


def test_a_seeded_batch_far_beyond_one_scheduler_step_samples_and_keeps_keyed_seeds(engine):
    """96 prompts x 3 completions of ~140 tokens: ~40,000 prompt tokens (~13,500 distinct), 288 requests (more
    than max_num_seqs, 256, so late requests are admitted while others decode)."""
    prompts = long_prompts(engine.policy, 96)
    seeds = list(range(500, 596))
    lengths = [len(engine.policy.encode(p)) for p in prompts]
    assert min(lengths) > 120 and sum(lengths) > 8192 + 4096  # the distinct prompt tokens alone exceed one step
    big = engine.generate(prompts, 3, seeds)
    assert len(big) == 288 and all(len(c) >= 1 for c in big.completion_ids)
    for i in (0, 47, 95):  # first, middle and last prompt (the last ones admitted late): the same alone
        alone = engine.generate(prompts[i:i + 1], 3, seeds[i:i + 1])
        assert alone.completion_ids == big.completion_ids[3 * i:3 * i + 3]
        for a, b in zip(alone.logprobs, big.logprobs[3 * i:3 * i + 3]):
            assert a == pytest.approx(b, abs=1e-5)
    assert logprob_gap(engine.policy, big) <= 1e-4  # the engine's log-probs are still the policy's


def test_an_engine_error_is_one_line_naming_the_batch_and_what_to_try(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CPU Generator does not use offset\n  a second line of the engine's message")

    monkeypatch.setattr(engine.llm, "generate", broken)
    with pytest.raises(LangplayError) as caught:
        engine.generate(long_prompts(engine.policy, 5), 4, list(range(5)))
    message = str(caught.value)
    assert "\n" not in message
    assert "5 prompts x 4 completions" in message and "CPU Generator does not use offset" in message
    assert "train.prompts_per_step" in message and "sampling.max_prompt_tokens" in message
    assert isinstance(caught.value.__cause__, RuntimeError)  # the original is chained
