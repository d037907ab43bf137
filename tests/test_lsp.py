"""LSP: values, advantages and both losses against a hand computation; the self-reward parser; a CLI run."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from hypothesis import given, settings, strategies as st

from langplay.algorithms.lsp import LSP
from langplay.config import load_config
from langplay.policy import Policy, build_batch
from langplay.rewards.self_judge import parse_score
from langplay.sampling import Samples

QUERIES = ["add 1 and 2", "", "reverse abc"]  # an empty query is answered and scored like any other
ANSWERS = {"add 1 and 2": ["3", "12", "33"], "": ["x", "", "yy"], "reverse abc": ["cba", "abc", "c"]}


def length_reward(prompts, completions, raw_prompt, **_):
    return [float(len(c)) for c in completions]


def query_quality(prompts, completions, raw_prompt, **_):
    return [float(len(q) > 0) + 0.5 * (c == "3") for q, c in zip(raw_prompt, completions)]


class ScriptedSampler:
    """Returns fixed queries and answers (the policy still scores them: log-probs are real)."""

    def __init__(self, policy, challenger_text):
        self.policy, self.challenger_text = policy, challenger_text

    def generate(self, prompts, n, seeds, max_new_tokens=None):
        encode, eos = self.policy.encode, self.policy.tokenizer.eos_token_id
        if prompts[0] == self.challenger_text:
            texts = QUERIES[: len(prompts)]
            prompt_ids = [encode(p) for p in prompts]
        else:
            texts = [a for p in prompts for a in ANSWERS[next(q for q in QUERIES if self.policy.format_prompt(q) == p)]]
            prompt_ids = [encode(p) for p in prompts for _ in range(n)]
        ids = [encode(t) + [eos] for t in texts]
        return Samples(prompt_ids, ids, texts, [[-1.0] * len(i) for i in ids], [True] * len(ids))


def make_lsp(tiny_model, *more):
    config = load_config(overrides=[
        "algorithm=lsp", f"model.name_or_path={tiny_model}", "lsp.group_size=3", "lsp.beta=0.1",
        "lsp.alpha_challenger=0.5", "train.prompts_per_step=3", "lsp.challenger_prompt=Write a task.", *more,
    ])
    policy = Policy.from_config(config.model)
    lsp = LSP(config, policy, None, Accelerator(cpu=True), rewards=[length_reward])
    lsp.sampler = ScriptedSampler(policy, lsp.challenger_text)
    return lsp


def hand_sequence_logprobs(model, batch, reduction):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits
    width = batch["completion_mask"].shape[1]
    logp = F.log_softmax(logits[:, -width - 1 : -1].float(), -1).gather(-1, batch["input_ids"][:, -width:, None])[..., 0]
    summed = (logp * batch["completion_mask"]).sum(1)
    return summed if reduction == "sum" else summed / batch["completion_mask"].sum(1)


@pytest.mark.parametrize("self_reward", [False, True])
def test_values_and_advantages_by_hand(tiny_model, self_reward):
    more = ["lsp.self_reward=true", "lsp.self_reward_function=test_lsp:query_quality"] if self_reward else []
    lsp = make_lsp(tiny_model, *more)
    exp = lsp.collect([{}] * 3, [1, 2, 3])
    R = torch.tensor([[1.0, 2, 2], [1, 0, 2], [3, 3, 1]])  # answer lengths
    RQ = torch.tensor([[1.5, 1, 1], [0, 0, 0], [1, 1, 1]]) if self_reward else torch.zeros(3, 3)
    V, VQ = R.mean(1), RQ.mean(1)
    solver = (R + RQ - (R + RQ).mean(1, keepdim=True)).reshape(-1)
    challenger = (-V + VQ) - (-V + VQ).mean()  # LSP-Zero: Vbar - V(q_i)
    assert torch.allclose(exp.batch["advantages"], torch.cat([solver, challenger]), atol=1e-6)
    assert exp.batch["is_challenger"].tolist() == [0.0] * 9 + [1.0] * 3
    if not self_reward:
        assert torch.allclose(challenger, V.mean() - V)
    assert exp.metrics["value_spread"] == pytest.approx(V.std().item(), abs=1e-6)
    assert exp.metrics["reward"] == pytest.approx(R.mean().item())


def loss_and_gradients_after_a_move(lsp):
    """Collect a step, move the policy off the reference (so the KL term is not zero), then take our loss and grads."""
    exp = lsp.collect([{}] * 3, [1, 2, 3])
    model = lsp.policy.model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    loss, _ = lsp.loss(exp.batch, exp.counts)
    loss.backward()
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return exp.batch, model, loss, ours


def assert_same_loss_and_gradients(loss, ours, hand, model):
    assert loss.item() == pytest.approx(hand.item(), abs=1e-5)
    hand.backward()
    for a, p in zip(ours, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_losses_and_gradients_by_hand(tiny_model, reduction):
    lsp = make_lsp(tiny_model, f"lsp.logprob_reduction={reduction}")
    batch, model, loss, ours = loss_and_gradients_after_a_move(lsp)
    s = hand_sequence_logprobs(model, batch, reduction)
    with torch.no_grad():
        s_ref = hand_sequence_logprobs(lsp.policy.reference, batch, reduction)
    A, beta, alpha = batch["advantages"], 0.1, 0.5
    solver, challenger = slice(0, 9), slice(9, 12)
    L_sol = -(1 / 9) * (A[solver] * torch.exp(s[solver] - s[solver].detach()) - beta * (s[solver] - s_ref[solver])).sum()
    L_ch = -(1 / 3) * (A[challenger] * torch.exp(s[challenger] - s[challenger].detach())
                       - beta * (s[challenger] - s_ref[challenger])).sum()
    assert_same_loss_and_gradients(loss, ours, L_sol + alpha * L_ch, model)


def test_kl_as_a_reward_penalty_by_hand(tiny_model):
    """kl_penalty=reward: -(1/NG) sum ratio * (A - beta sg(log pi/pi_Ref)), and alpha_Ch times the challenger's twin."""
    lsp = make_lsp(tiny_model, "lsp.kl_penalty=reward")
    batch, model, loss, ours = loss_and_gradients_after_a_move(lsp)
    s = hand_sequence_logprobs(model, batch, "mean")
    with torch.no_grad():
        s_ref = hand_sequence_logprobs(lsp.policy.reference, batch, "mean")
    A, beta, alpha = batch["advantages"], 0.1, 0.5
    shaped = A - beta * (s - s_ref).detach()
    per_sequence = -torch.exp(s - s.detach()) * shaped
    assert_same_loss_and_gradients(loss, ours, per_sequence[:9].sum() / 9 + alpha * per_sequence[9:].sum() / 3, model)


def test_challenger_reference_is_taken_under_the_challenger_prompt(tiny_model):
    lsp = make_lsp(tiny_model)
    exp = lsp.collect([{}] * 3, [1, 2, 3])
    prompt = lsp.policy.encode(lsp.challenger_text)
    row = exp.batch["input_ids"][9]
    width = exp.batch["completion_mask"].shape[1]
    assert row[: -width].tolist()[-len(prompt):] == prompt
    alone = build_batch([prompt], [lsp.policy.encode("add 1 and 2") + [lsp.policy.tokenizer.eos_token_id]], 0)
    expected = lsp.policy.reference_logprobs(alone)[0]
    assert torch.allclose(exp.batch["ref_logp"][9, : expected.numel()], expected, atol=1e-5)


def test_query_prefix_starts_every_query_and_stays_out_of_the_challengers_tokens(tiny_model):
    from langplay.sampling.hf import HFSampler

    lsp = make_lsp(tiny_model, "lsp.query_prefix=What is", "sampling.max_new_tokens=6")
    lsp.sampler = HFSampler(lsp.config.sampling, lsp.policy)
    queries = lsp.sample_queries([1, 2, 3])
    encode = lsp.policy.encode
    for query in queries:
        assert query.text.startswith("What is")
        assert query.prompt_ids == encode(lsp.challenger_text + "What is")  # the prefix is part of the prompt
        assert lsp.policy.tokenizer.decode(query.ids, skip_special_tokens=True) == query.text[len("What is"):]


ADVERSARIAL = {
    "<Score>5</Score>": (5.0, "score"),
    "blah <Score> 3 </Score> then <Score>6</Score>": (6.0, "score"),  # several: the last
    "<score>9</score>": (7.0, "score+clamped"),
    "<Score>-2</Score>": (0.0, "score+clamped"),
    "<Calculation>1+0+1+1=3</Calculation> no score tag": (3.0, "calculation"),
    "I give it a 5": (0.0, "fallback"),
    "": (0.0, "fallback"),
    "<Score>five</Score>": (0.0, "fallback"),
    "<Score>4.5</Score>": (4.5, "score"),
}


def test_self_reward_parser_on_adversarial_strings():
    for text, expected in ADVERSARIAL.items():
        assert parse_score(text) == expected, text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_self_reward_parser_never_raises(text):
    value, how = parse_score(text)
    assert 0 <= value <= 7 and how.split("+")[0] in ("score", "calculation", "fallback")


def test_lsp_runs_from_the_cli_in_tinyworld_with_its_metrics(tmp_path):
    """LSP in tinyworld with no data, from the CLI preset. (Whether it beats the base model is the experiment's
    question, not asserted here: a 12-step run measured a win rate of 0.45 against the base.)"""
    from typer.testing import CliRunner

    from langplay.cli import app
    from langplay.tinyworld.base import base_model_path

    result = CliRunner().invoke(app, [
        "train", "lsp", "--config", str(Path(__file__).parents[1] / "configs" / "lsp_tinyworld.yaml"),
        f"model.name_or_path={base_model_path()}", "train.steps=3", f"run.output_dir={tmp_path}/run",
        "run.progress=false",
    ])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3
    for m in metrics:
        assert 0 <= m["valid_queries"] <= 1 and 0 <= m["self_reward"] <= 7 and m["query_length"] > 0
        assert {"kl/solver", "kl/challenger", "solver/reward", "challenger/reward", "value_spread"} <= set(m)
    samples = [json.loads(l) for l in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert {"query", "answer", "reward", "quality", "query_advantage"} <= set(samples[0])
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_lsp_steered_to_one_family_raises_its_held_out_score(tmp_path):
    """Self-play in tinyworld learns when the challenger is steered to one family (the demo's preset: the reply
    starts with "What is the largest of", alpha_Ch 0.03, lr 1e-4): 60 steps raised the held-out `max` score
    (512 prompts, near-greedy) from 0.519 to 0.548 with this seed, 69 wins against 57 losses (seeds 1 and 2:
    +0.017, +0.059; results/lsp_steered.md). Unsteered self-play over all families does not beat the base model."""
    from langplay.evaluation.tinyworld import family_comparison
    from langplay.tinyworld.base import base_model_path
    from langplay.trainer import Trainer

    preset = Path(__file__).parents[1] / "src" / "langplay" / "tinyworld" / "lsp_demo.yaml"
    config = load_config(preset, [f"model.name_or_path={base_model_path()}", f"run.output_dir={tmp_path}",
                                  "run.progress=false", "run.save_every=0", "train.seed=0"])
    assert config.train.steps == 60
    Trainer(config).train()
    result = family_comparison(tmp_path / "final", base_model_path(), "max", per_level=128, seed=123)
    assert result["score"] >= result["baseline_score"] + 0.015, result
    assert result["wins"] > result["losses"]
