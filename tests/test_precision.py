"""bf16 mixed precision: autocast over float32 weights and optimizer state; a bf16 step's loss and gradient agree
with fp32 within bf16's rounding, log-probs stay float32, and training still learns."""

import pytest
import torch

from langplay.config import load_config
from langplay.precision import resolve_precision
from langplay.trainer import Trainer


def first_step(tiny_model, data, tmp_path, precision, *more):
    config = load_config(overrides=[f"model.name_or_path={tiny_model}", f"data.path={data}", "train.steps=1",
                                    f"run.output_dir={tmp_path}/{precision}", "run.progress=false",
                                    f"train.precision={precision}", "train.prompts_per_step=8", *more])
    trainer = Trainer(config)
    captured = {}
    step = trainer.optimizer.step

    def capture(*args, **kwargs):
        params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
        captured["grad"] = torch.cat([p.grad.reshape(-1) for p in params]).clone()
        captured["dtypes"] = {p.dtype for p in params} | {v.dtype for s in trainer.optimizer.state.values()
                                                            for v in s.values() if torch.is_tensor(v)}
        return step(*args, **kwargs)

    trainer.optimizer.step = capture
    history = trainer.train()
    return history[0], captured, trainer


@pytest.mark.parametrize("algorithm", ["sft", "grpo"])
def test_a_bf16_step_agrees_with_fp32(tiny_model, sft_file, prompt_file, tmp_path, algorithm):
    data = sft_file if algorithm == "sft" else prompt_file
    more = [f"algorithm={algorithm}", "sampling.max_new_tokens=6", "grpo.group_size=4",
            f"grpo.rewards=[{{kind: function, function: 'tests/reward_functions.py:count_a'}}]"]
    fp32, g32, _ = first_step(tiny_model, data, tmp_path, "fp32", *more)
    bf16, g16, trainer = first_step(tiny_model, data, tmp_path, "bf16", *more)
    assert trainer.precision == "bf16" and g16["dtypes"] == {torch.float32}  # float32 master weights and moments
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.03, abs=1e-3)
    cosine = torch.nn.functional.cosine_similarity(g32["grad"], g16["grad"], dim=0).item()
    assert cosine > 0.99 and (g16["grad"].norm() / g32["grad"].norm()).item() == pytest.approx(1.0, abs=0.05)
    assert g16["grad"].abs().max() > 0  # stated tolerance: loss within 3%, gradient direction within cos 0.99


def test_bf16_training_still_learns(tiny_model, sft_file, tmp_path):
    config = load_config(overrides=[f"model.name_or_path={tiny_model}", f"data.path={sft_file}", "algorithm=sft",
                                    f"run.output_dir={tmp_path}/run", "train.lr=3e-3", "train.steps=40",
                                    "train.prompts_per_step=8", "run.progress=false", "train.precision=bf16"])
    trainer = Trainer(config)
    history = trainer.train()
    assert trainer.precision == "bf16" and history[-1]["nll"] < 0.3 * history[0]["nll"]


def test_log_probs_stay_float32_under_autocast(tiny_model):
    from langplay.batch import build_batch
    from langplay.config import ModelConfig
    from langplay.policy import Policy
    from langplay.precision import autocast

    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model), device="cpu"), with_reference=False)
    batch = build_batch([policy.encode("say a")], [policy.encode("aaa")], 0)
    with autocast("bf16", torch.device("cpu")):
        out = policy.logprobs(batch, with_entropy=True)
    assert out.logp.dtype == torch.float32 and out.entropy.dtype == torch.float32


def test_auto_precision_follows_the_hardware_and_the_model_size(monkeypatch):
    import langplay.precision as precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "fast_bf16", lambda device: True)
    assert resolve_precision("auto", cpu, torch.float32, hidden_size=1024) == "bf16"
    assert resolve_precision("auto", cpu, torch.float32, hidden_size=128) == "fp32"  # tiny: overheads dominate
    assert resolve_precision("auto", cpu, torch.float64, hidden_size=1024) == "fp32"  # exact comparisons
    monkeypatch.setattr(precision, "fast_bf16", lambda device: False)
    assert resolve_precision("auto", cpu, torch.float32, hidden_size=1024) == "fp32"
    assert resolve_precision("bf16", cpu, torch.float32) == "bf16"


def test_bf16_weight_copies_give_autocasts_gradient_and_hand_back_the_float32_masters(tiny_model):
    """Inside, every float32 weight is a bf16 copy; after, the same float32 tensors are back and the gradients are
    float32, added to those already there. They agree with autocast's within bf16 rounding, not exactly: with bf16
    weights the embeddings and the residual stream are bf16 too (as under FSDP's param_dtype=bf16)."""
    from langplay.batch import build_batch
    from langplay.config import ModelConfig
    from langplay.policy import Policy
    from langplay.precision import autocast, bf16_weight_copies

    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model), device="cpu"), with_reference=False)
    model, cpu = policy.model, torch.device("cpu")
    batch = build_batch([policy.encode("say a")] * 2, [policy.encode("aaa"), policy.encode("ab")], 0)
    params = list(model.parameters())

    def gradient(copies: bool) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        with bf16_weight_copies(model, copies):
            assert {p.dtype for p in params} == ({torch.bfloat16} if copies else {torch.float32})
            with autocast("bf16", cpu):
                loss = -policy.logprobs(batch).logp.sum()
            loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in params])

    masters = [p.data.data_ptr() for p in params]
    expected, got = gradient(False), gradient(True)
    assert [p.data.data_ptr() for p in params] == masters and {p.grad.dtype for p in params} == {torch.float32}
    cosine = torch.nn.functional.cosine_similarity(got, expected, dim=0).item()
    assert got.abs().max() > 0 and cosine > 0.999 and (got.norm() / expected.norm()).item() == pytest.approx(1, abs=0.01)
    with bf16_weight_copies(model):  # a second micro-batch adds to the first's gradient
        with autocast("bf16", cpu):
            (-policy.logprobs(batch).logp.sum()).backward()
    assert torch.allclose(torch.cat([p.grad.reshape(-1) for p in params]), 2 * got, rtol=1e-5, atol=1e-6)


def test_a_bf16_step_in_micro_batches_equals_one_micro_batch(tiny_model, sft_file, tmp_path):
    """The weight copies are made per micro-batch: their float32 gradients must add up to the whole batch's."""
    whole, g_whole, _ = first_step(tiny_model, sft_file, tmp_path / "whole", "bf16", "algorithm=sft")
    parts, g_parts, _ = first_step(tiny_model, sft_file, tmp_path / "parts", "bf16", "algorithm=sft",
                                   "train.micro_batch_size=2")
    assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-2)
    cosine = torch.nn.functional.cosine_similarity(g_parts["grad"], g_whole["grad"], dim=0).item()
    ratio = (g_parts["grad"].norm() / g_whole["grad"].norm()).item()
    assert cosine > 0.999 and ratio == pytest.approx(1, abs=0.01), (cosine, ratio)  # a lost micro-batch: ratio < 0.9


def test_in_bf16_the_frozen_reference_is_stored_in_bf16_and_starts_at_kl_zero(tiny_model, prompt_file, tmp_path):
    """The reference needs no float32 master: stored in bf16 it takes half the memory and its pass runs on the
    same bf16 weights as the policy's, so the first step's KL is exactly 0 (a float32 reference under autocast
    gave 5e-7 here, and one cast whole with `.to(bfloat16)` 1.6e-7: its rotary frequencies were rounded too)."""
    more = ["algorithm=grpo", "sampling.max_new_tokens=6", "grpo.group_size=4", "grpo.beta=0.1",
            "grpo.rewards=[{kind: function, function: 'tests/reward_functions.py:count_a'}]"]
    metrics, _, trainer = first_step(tiny_model, prompt_file, tmp_path, "bf16", *more)
    assert {p.dtype for p in trainer.policy.reference.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in trainer.policy.model.parameters()} == {torch.float32}  # the trained masters stay
    assert metrics["kl"] == 0.0 and metrics["entropy"] > 0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_in_bf16_sampling_runs_on_one_bf16_copy_of_the_weights(tiny_model, prompt_file, tmp_path, precision):
    """The collect pass (sampling, rewards, reference) runs on the same bf16 copy the training pass uses, not
    autocast's casts at every decoding step (0.84x the sampling time at 95M on this CPU); the float32 masters
    come back untouched for the update."""
    more = ["algorithm=grpo", "sampling.max_new_tokens=6", "grpo.group_size=4",
            "grpo.rewards=[{kind: function, function: 'tests/reward_functions.py:count_a'}]"]
    config = load_config(overrides=[f"model.name_or_path={tiny_model}", f"data.path={prompt_file}", "train.steps=1",
                                    f"run.output_dir={tmp_path}/run", "run.progress=false",
                                    f"train.precision={precision}", "train.prompts_per_step=8", *more])
    trainer = Trainer(config)
    model, generate, seen = trainer.policy.model, trainer.sampler.generate, []
    masters = [p.data_ptr() for p in model.parameters()]

    def recording(*args, **kwargs):
        seen.append({p.dtype for p in model.parameters()})
        return generate(*args, **kwargs)

    trainer.sampler.generate = recording
    trainer.train()
    assert seen == [{torch.bfloat16 if precision == "bf16" else torch.float32}]
    assert [p.data_ptr() for p in model.parameters()] == masters
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.slow
def test_under_fsdp2_bf16_samples_on_the_float32_full_copy(tiny_model, prompt_file, tmp_path):
    """FSDP2's training pass runs autocast over float32 shards, so its sampler keeps the float32 full copy (a bf16
    copy there would set the sampler's log-probs apart from the trainer's), and the sharded reference stays
    float32. torchrun with one process: FSDP2 needs a process group, not two ranks."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    here = Path(__file__).parent
    overrides = [f"model.name_or_path={tiny_model}", f"data.path={prompt_file}", "train.steps=1",
                 f"run.output_dir={tmp_path}/run", "run.progress=false", "train.precision=bf16",
                 "train.prompts_per_step=2", "train.sharding=fsdp2", "algorithm=grpo", "sampling.max_new_tokens=4",
                 "grpo.group_size=2", "grpo.rewards=[{kind: function, function: 'tests/reward_functions.py:count_a'}]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(here.parent / "src")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr",
                           "127.0.0.1", "--master_port", str(port), str(here / "bf16_sampling_worker.py"),
                           str(tmp_path), *overrides], env=env, capture_output=True, text=True, timeout=300,
                          cwd=here.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == {"precision": "bf16", "sharded": True, "sampling": [["torch.float32"]],
                    "reference": ["torch.float32"]}, seen
