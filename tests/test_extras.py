"""Reward models, LoRA training with resume, and trackers."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from langplay.config import load_config
from langplay.rewards.reward_model import RewardModelScorer
from langplay.testing import tiny_llama_config
from langplay.tinyworld.tokenizer import build_tokenizer
from langplay.trainer import Trainer

from test_trainer import count_a, grpo_config, read_metrics


def test_sequence_classification_reward_model_scores_chats(tmp_path):
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = tiny_llama_config(len(tokenizer))
    config.num_labels = 1
    model = LlamaForSequenceClassification(config)
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    scorer = RewardModelScorer(str(tmp_path / "rm"), device="cpu", batch_size=2)
    scores = scorer(["p1", "p2", "p3"], ["aaa", "b", "aaa"], raw_prompt=["hi", "yo", "hi"])
    assert len(scores) == 3 and scores[0] == pytest.approx(scores[2], abs=1e-5) and scores[0] != scores[1]
    # the model sees the chat [user: raw prompt, assistant: completion]
    text = scorer._text("hi", "aaa")
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    assert model(**enc).logits[0, 0].item() == pytest.approx(scores[0], abs=1e-5)
    assert scorer.model.dtype == torch.float32  # dtype auto on a CPU


def test_dtype_auto_stores_a_frozen_scorer_in_bf16_on_cuda_only():
    from langplay.precision import resolve_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_dtype("auto", cuda, frozen=True) == torch.bfloat16
    assert resolve_dtype("auto", cpu, frozen=True) == torch.float32
    assert resolve_dtype("auto", cuda) == torch.float32  # a trained policy keeps float32 weights
    assert resolve_dtype("float16", cpu, frozen=True) == torch.float16  # an explicit dtype is taken as it is


def test_lora_grpo_trains_only_the_adapter_and_resumes_exactly(tiny_model, prompt_file, tmp_path):
    lora = ["model.lora.r=8", "model.lora.alpha=16", "train.lr=1e-2", "grpo.beta=0.1"]
    straight = Trainer(grpo_config(tiny_model, prompt_file, tmp_path / "a", "train.steps=4", "run.save_every=0", *lora),
                       rewards=[count_a])
    frozen_before = {n: p.clone() for n, p in straight.policy.model.named_parameters() if not p.requires_grad}
    history = straight.train()
    assert straight.policy.reference is None  # the reference is the adapter-disabled base
    assert all(torch.equal(p, frozen_before[n]) for n, p in straight.policy.model.named_parameters() if n in frozen_before)
    assert history[-1]["kl"] > 0

    first = Trainer(grpo_config(tiny_model, prompt_file, tmp_path / "b", "train.steps=2", "run.save_every=2", *lora),
                    rewards=[count_a])
    first.train()
    assert (tmp_path / "b/run/checkpoints/step-000002/model/adapter_model.safetensors").is_file()
    Trainer(grpo_config(tiny_model, prompt_file, tmp_path / "b", "train.steps=4", "run.save_every=2", *lora),
            rewards=[count_a]).train(resume=True)
    for a, b in zip(read_metrics(tmp_path / "a/run"), read_metrics(tmp_path / "b/run")):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6) and b["kl"] == pytest.approx(a["kl"], abs=1e-6)


def test_tensorboard_tracker_writes_events(tiny_model, prompt_file, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = Trainer(grpo_config(tiny_model, prompt_file, tmp_path, "train.steps=2", "run.trackers=[tensorboard]"),
                      rewards=[count_a]).train()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    losses = events.Scalars("loss")  # what the file holds, read back: each step's loss, at its step
    assert [e.step for e in losses] == [1, 2]
    assert [e.value for e in losses] == pytest.approx([h["loss"] for h in history], rel=1e-6, abs=1e-7)
