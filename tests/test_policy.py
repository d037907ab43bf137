import pytest
"""Policy: loading, chat formatting, chunked log-probs, LoRA reference, saving."""

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from langplay.batch import build_batch, micro_batches, slice_batch
from langplay.config import ModelConfig, LoraConfig
from langplay.logprobs import sequence_logprobs
from langplay.policy import Policy


def unchunked(model, batch):
    """Straightforward reference: full logits, log_softmax, gather."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits.float()
    width = batch["completion_mask"].shape[1]
    start = batch["input_ids"].shape[1] - width
    logp_all = F.log_softmax(logits[:, start - 1 : -1], -1)
    logp = logp_all.gather(-1, batch["input_ids"][:, start:].unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    mask = batch["completion_mask"]
    return logp * mask, entropy * mask


def a_batch(policy):
    prompts = [policy.encode(policy.format_prompt(p)) for p in ["hi", "a longer prompt here"]]
    completions = [policy.encode("abc"), policy.encode("a much longer completion!")]
    return build_batch(prompts, completions, policy.tokenizer.pad_token_id)


def test_chunked_logprobs_equal_the_unchunked_computation(tiny_model):
    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model)), with_reference=False)
    batch = a_batch(policy)
    expected_logp, expected_entropy = unchunked(policy.model, batch)
    for chunk in (1, 7, 4096):
        out = sequence_logprobs(policy.model, batch, chunk_tokens=chunk, with_entropy=True)
        assert torch.allclose(out.logp, expected_logp, atol=1e-5)
        assert torch.allclose(out.entropy, expected_entropy, atol=1e-5)
    # gradients too (the chunks are recomputed in backward)
    sequence_logprobs(policy.model, batch, chunk_tokens=5).logp.sum().backward()
    chunked_grad = [p.grad.clone() for p in policy.model.parameters()]
    policy.model.zero_grad()
    unchunked(policy.model, batch)[0].sum().backward()
    for a, p in zip(chunked_grad, policy.model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)


def test_micro_batches_trim_padding_without_changing_logprobs(tiny_model):
    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model)), with_reference=False)
    batch = a_batch(policy)
    whole = sequence_logprobs(policy.model, batch).logp
    first = next(micro_batches(batch, 1))
    assert first["completion_mask"].shape[1] == 3 and first["input_ids"].shape[1] < batch["input_ids"].shape[1]
    assert torch.allclose(sequence_logprobs(policy.model, first).logp, whole[:1, :3], atol=1e-5)


def test_chat_template_and_plain_text_prompts(tiny_model):
    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model)), with_reference=False)
    assert policy.format_prompt("hi") == "<s>Q: hi\nA: "
    assert policy.format_prompt("hi", system_prompt="be brief") == "<s>S: be brief\nQ: hi\nA: "
    policy.tokenizer.chat_template = None
    assert policy.format_prompt("hi") == "hi"


def test_reference_is_a_frozen_copy(tiny_model):
    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model)))
    batch = a_batch(policy)
    before = policy.reference_logprobs(batch)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(0.1)
    assert torch.allclose(policy.reference_logprobs(batch), before)
    assert not torch.allclose(sequence_logprobs(policy.model, batch).logp, before)


def test_lora_reference_is_the_adapter_disabled_base_and_save_merges(tiny_model, tmp_path):
    config = ModelConfig(name_or_path=str(tiny_model), lora=LoraConfig(r=4, alpha=8))
    policy = Policy.from_config(config)
    assert policy.uses_lora and policy.reference is None  # no second copy of the weights
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    batch = a_batch(policy)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert torch.allclose(policy.reference_logprobs(batch), unchunked(base, batch)[0], atol=1e-5)
    with torch.no_grad():  # move the adapter away from zero: policy and reference now differ
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)
    policy_logp = sequence_logprobs(policy.model, batch).logp
    assert not torch.allclose(policy_logp, policy.reference_logprobs(batch), atol=1e-3)
    saved = policy.save(tmp_path / "merged")
    assert (saved / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(saved)
    assert torch.allclose(unchunked(merged, batch)[0], policy_logp, atol=1e-4)


def test_save_round_trips_through_transformers(tiny_model, tmp_path):
    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model)), with_reference=False)
    path = policy.save(tmp_path / "saved")
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    again = Policy.from_config(ModelConfig(name_or_path=str(path)), with_reference=False)
    batch = a_batch(policy)
    assert torch.equal(sequence_logprobs(again.model, batch).logp, sequence_logprobs(policy.model, batch).logp)


def test_groups_sharing_a_prompt_run_it_once_with_the_same_logprobs_and_gradients(tiny_model):
    from langplay.batch import prompt_group_size

    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model)), with_reference=False)
    prompts = [policy.encode(policy.format_prompt(p)) for p in ["hi", "a longer prompt"] for _ in range(3)]
    completions = [policy.encode(c) for c in ["abc", "a much longer one", "x", "yy", "zzzz zz", "q"]]
    batch = build_batch(prompts, completions, policy.tokenizer.pad_token_id, group_size=3)
    assert prompt_group_size(batch) == 3
    assert prompt_group_size(build_batch(prompts, completions, policy.tokenizer.pad_token_id)) == 1  # undeclared
    expected, _ = unchunked(policy.model, batch)
    shared = sequence_logprobs(policy.model, batch).logp
    assert torch.allclose(shared, expected, atol=1e-5)
    shared.sum().backward()
    shared_grad = [p.grad.clone() for p in policy.model.parameters()]
    policy.model.zero_grad()
    expected.sum().backward()
    for a, p in zip(shared_grad, policy.model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)
    assert prompt_group_size(slice_batch(batch, 0, 4)) == 1  # a micro-batch that cuts a group shares nothing
    assert prompt_group_size(slice_batch(batch, 3, 6)) == 3


def test_declared_groups_are_checked_and_trailing_rows_stand_alone(tiny_model):
    from langplay.batch import prompt_group_size, prompt_groups

    assert prompt_groups(7, 2, grouped_rows=4).tolist() == [0, 0, 1, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="groups of 3"):
        prompt_groups(7, 3, grouped_rows=4)
    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model)), with_reference=False)
    prompts = [policy.encode(p) for p in ["hi", "hi", "ho", "ho"]]
    wrong = build_batch(prompts[1:] + prompts[:1], [[5]] * 4, policy.tokenizer.pad_token_id, group_size=2)
    with pytest.raises(ValueError, match="different prompts"):
        prompt_group_size(wrong)


def test_rows_run_in_full_are_packed_to_their_longest_row_without_a_mask_and_agree_row_by_row(tiny_model):
    """Left-padded prompts and right-padded completions are run packed (each row from column 0): the decoder
    sees max(prompt + completion) columns and no mask, and each row's log-probs, soft values and final value
    equal those of the row run alone, with no padding at all."""
    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model)), with_reference=False)
    prompts = [policy.encode(policy.format_prompt(p)) for p in ["a long prompt, longer than the rest", "hi", "mid one"]]
    completions = [policy.encode(c) for c in ["x", "a much longer completion than x", "abc"]]
    batch = build_batch(prompts, completions, policy.tokenizer.pad_token_id)
    seen = []
    hook = policy.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["input_ids"].shape[1], kwargs.get("attention_mask"))),
        with_kwargs=True)
    out = sequence_logprobs(policy.model, batch, with_values=True)
    hook.remove()
    assert seen == [(max(len(p) + len(c) for p, c in zip(prompts, completions)), None)]
    assert seen[0][0] < batch["input_ids"].shape[1]  # narrower than the widest prompt plus the widest completion
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        alone = sequence_logprobs(policy.model, build_batch([prompt], [completion], 0), with_values=True)
        n = len(completion)
        assert torch.allclose(out.logp[row, :n], alone.logp[0], atol=1e-5)
        assert torch.allclose(out.values[row, :n], alone.values[0], atol=1e-5)
        assert torch.allclose(out.final_values[row], alone.final_values[0], atol=1e-5)
        assert not out.logp[row, n:].any()


def test_rows_with_an_empty_prompt_or_completion_keep_their_log_probs_and_no_prompt_at_all_is_a_clear_error(tiny_model):
    from langplay.errors import LangplayError

    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model)), with_reference=False)
    prompts = [policy.encode(policy.format_prompt("a prompt")), [], policy.encode("x")]
    completions = [policy.encode("abc"), policy.encode("de"), []]
    batch = build_batch(prompts, completions, policy.tokenizer.pad_token_id)
    expected, _ = unchunked(policy.model, batch)  # the padded layout under a mask: what the empty prompt falls back to
    out = sequence_logprobs(policy.model, batch, with_values=True)
    assert torch.allclose(out.logp, expected, atol=1e-5) and not out.logp[2].any()
    with pytest.raises(LangplayError, match="at least one token"):
        sequence_logprobs(policy.model, build_batch([[], []], completions[:2], policy.tokenizer.pad_token_id))


def test_micro_batches_never_mix_grouped_rows_with_the_single_rows_after_them():
    """LSP's batch: answers in groups under short prompts, then queries under a long Box 1 prompt. A micro-batch
    holds one kind only, so the answers' rows are not widened to the queries' prompt (and sizes still hold)."""
    from langplay.batch import build_batch, micro_batch_bounds, micro_batches

    batch = build_batch([[1, 2]] * 6 + [[1] * 30] * 2, [[3, 4]] * 8, 0, group_size=3, grouped_rows=6)
    assert micro_batch_bounds(batch, 64) == [(0, 6), (6, 8)]
    assert micro_batch_bounds(batch, 4) == [(0, 4), (4, 6), (6, 8)]
    assert [mb["input_ids"].shape for mb in micro_batches(batch, 64)] == [(6, 4), (2, 32)]
    plain = build_batch([[1, 2]] * 5, [[3]] * 5, 0)  # no groups: by size alone
    assert micro_batch_bounds(plain, 2) == [(0, 2), (2, 4), (4, 5)]
    grouped = build_batch([[1, 2]] * 6, [[3]] * 6, 0, group_size=3)
    assert micro_batch_bounds(grouped, 4) == [(0, 4), (4, 6)]
