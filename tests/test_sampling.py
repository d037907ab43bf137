"""The transformers sampler: keyed determinism, the right distribution, top-p, EOS and sampler log-probs."""

import math

import torch

from langplay.batch import build_batch
from langplay.config import ModelConfig, SamplingConfig
from langplay.logprobs import sequence_logprobs
from langplay.policy import Policy
from langplay.sampling.hf import HFSampler, pick_tokens, top_p_filter
from langplay.sampling.keys import keyed_uniform


def policy_and_sampler(tiny_model, **sampling):
    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model)), with_reference=False)
    return policy, HFSampler(SamplingConfig(**{"max_new_tokens": 16, **sampling}), policy)


def test_same_seed_same_completions_whatever_the_batch(tiny_model):
    policy, sampler = policy_and_sampler(tiny_model)
    prompts = [policy.format_prompt("add 1 and 2"), policy.format_prompt("a much longer prompt to pad")]
    both = sampler.generate(prompts, 3, [11, 12])
    alone = sampler.generate(prompts[1:], 3, [12])
    assert both.completion_ids[3:] == alone.completion_ids
    other_seed = sampler.generate(prompts[1:], 3, [13])
    assert other_seed.completion_ids != alone.completion_ids
    assert len(set(map(tuple, alone.completion_ids))) == 3  # n different completions of one prompt


def test_sampler_logprobs_match_the_policy_and_finished_flags(tiny_model):
    policy, sampler = policy_and_sampler(tiny_model, max_new_tokens=40)
    eos = policy.tokenizer.eos_token_id
    out = sampler.generate([policy.format_prompt("hello")], 12, [5])
    for ids, done in zip(out.completion_ids, out.finished):
        assert done == (ids[-1] == eos) and (done or len(ids) == 40) and eos not in ids[:-1]
    batch = build_batch(out.prompt_ids, out.completion_ids, policy.tokenizer.pad_token_id)
    logp = sequence_logprobs(policy.model, batch).logp[batch["completion_mask"].bool()]
    assert torch.allclose(logp, torch.tensor([x for row in out.logprobs for x in row]), atol=1e-4)


def test_ignore_eos_always_fills_max_new_tokens(tiny_model):
    policy, sampler = policy_and_sampler(tiny_model, max_new_tokens=30, ignore_eos=True)
    out = sampler.generate([policy.format_prompt("x")], 8, [1])
    assert all(len(ids) == 30 for ids in out.completion_ids) and not any(out.finished)


def test_keyed_sampling_follows_the_softmax_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]])
    draws = 20000
    keys = torch.arange(draws, dtype=torch.long)
    tokens, _ = pick_tokens(logits.expand(draws, -1), keys, step=3, temperature=0.7, top_p=1.0)
    freq = torch.bincount(tokens, minlength=5).double() / draws
    probs = torch.softmax(logits[0] / 0.7, -1).double()
    # chi-square against the exact probabilities: 4 degrees of freedom, 99.9% quantile is 18.5
    chi2 = ((freq - probs) ** 2 / probs).sum() * draws
    assert chi2 < 18.5


def test_keyed_uniforms_are_uniform_and_independent_of_batch():
    u = keyed_uniform(torch.arange(2000), step=0, vocab=50)
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.002
    assert torch.equal(keyed_uniform(torch.tensor([7]), 0, 50), keyed_uniform(torch.tensor([3, 7]), 0, 50)[1:])
    assert not torch.equal(keyed_uniform(torch.tensor([7]), 0, 50), keyed_uniform(torch.tensor([7]), 1, 50))


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))[0].tolist()
    assert kept == [True, True, False, False]
    kept = torch.isfinite(top_p_filter(logits, 0.85))[0].tolist()
    assert kept == [True, True, True, False]
    tokens, logp = pick_tokens(logits.expand(500, -1), torch.arange(500), 0, 1.0, 0.7)
    assert set(tokens.tolist()) <= {0, 1}
    assert math.isclose(logp[tokens == 0][0].item(), math.log(0.5 / 0.8), rel_tol=1e-5)
