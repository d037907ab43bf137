"""LSP: values, advantages and both losses against a hand computation; the self-reward parser; a CLI run."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from hypothesis import given, settings, strategies as st

from langplay.algorithms.lsp import LSP
from enumeration import assert_corrected_is_on_policy, sampler_near
from langplay.batch import build_batch
from langplay.config import load_config
from langplay.policy import Policy
from langplay.rewards.self_judge import parse_score
from langplay.sampling import Samples

LSP_GAIN_BAR = 0.06  # whole-mix score gain LSP must reach in 40 steps; measured 0.582 -> 0.753 (+0.172)

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
def test_literal_losses_and_gradients_by_hand(tiny_model, reduction):
    """kl_penalty=loss: eq. 4-5 as written, beta log(pi/pi_Ref) of the sampled sequence in the loss."""
    lsp = make_lsp(tiny_model, f"lsp.logprob_reduction={reduction}", "lsp.kl_penalty=loss")
    batch, model, loss, ours = loss_and_gradients_after_a_move(lsp)
    s = hand_sequence_logprobs(model, batch, reduction)
    with torch.no_grad():
        s_ref = hand_sequence_logprobs(lsp.policy.reference, batch, reduction)
    A, beta, alpha = batch["advantages"], 0.1, 0.5
    pg = hand_policy_gradient(hand_token_logprobs(model, batch), batch["completion_mask"], A, reduction)
    per_sequence = pg + beta * (s - s_ref)
    assert_same_loss_and_gradients(loss, ours, per_sequence[:9].sum() / 9 + alpha * per_sequence[9:].sum() / 3, model)


def hand_policy_gradient(tokens, mask, A, reduction):
    """-A pi/sg(pi) token by token (the ratio is 1, the gradient -A grad log pi), summed or averaged per sequence."""
    summed = -(A.unsqueeze(1) * torch.exp(tokens - tokens.detach()) * mask).sum(1)
    return summed if reduction == "sum" else summed / mask.sum(1)


def hand_token_logprobs(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits
    width = batch["completion_mask"].shape[1]
    logp = F.log_softmax(logits[:, -width - 1 : -1].float(), -1).gather(-1, batch["input_ids"][:, -width:, None])[..., 0]
    return logp * batch["completion_mask"]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_kl_in_the_reward_by_hand(tiny_model, reduction):
    """kl_penalty=reward (the default): each token's log-prob times beta * the log-ratios from it to the end,
    divided by |a| under "mean" like the policy gradient."""
    lsp = make_lsp(tiny_model, f"lsp.logprob_reduction={reduction}")
    assert lsp.args.kl_penalty == "reward"
    batch, model, loss, ours = loss_and_gradients_after_a_move(lsp)
    tokens = hand_token_logprobs(model, batch)
    with torch.no_grad():
        ref_tokens = hand_token_logprobs(lsp.policy.reference, batch)
    A, beta, alpha, mask = batch["advantages"], 0.1, 0.5, batch["completion_mask"]
    pg = hand_policy_gradient(tokens, mask, A, reduction)
    per_sequence = []
    for row in range(len(A)):
        n = int(mask[row].sum())
        ratio = (tokens[row, :n] - ref_tokens[row, :n]).detach()
        to_go = torch.stack([ratio[t:].sum() for t in range(n)])
        kl = ((tokens[row, :n] - tokens[row, :n].detach()) * to_go).sum() + ratio.sum()
        per_sequence.append(pg[row] + beta * kl / (n if reduction == "mean" else 1))
    per_sequence = torch.stack(per_sequence)
    assert_same_loss_and_gradients(loss, ours, per_sequence[:9].sum() / 9 + alpha * per_sequence[9:].sum() / 3, model)


# -- the KL's expected gradient, by enumerating every sequence of a tiny policy -----------------------------------
VOCAB, EOS, MAX_LEN = 3, 2, 3  # tokens a, b and EOS; sequences of 1-3 tokens, cut at 3 without EOS


def all_sequences():
    out = [[EOS]]
    for length in (2, 3):
        for body in torch.cartesian_prod(*[torch.arange(2)] * (length - 1)).reshape(-1, length - 1).tolist():
            out.append(body + [EOS])
            if length == MAX_LEN:
                out += [body + [last] for last in range(2)]  # cut at the length limit
    return out


def tabular_logprobs(logits: dict, sequence: list[int]) -> torch.Tensor:
    """Per-token log-probs of a policy whose logits are a table indexed by the prefix."""
    return torch.stack([torch.log_softmax(logits[tuple(sequence[:t])], -1)[tok] for t, tok in enumerate(sequence)])


def table_lsp(reduction, kl_penalty="reward", correction="none", beta=0.3, alpha=0.7):
    """LSP with its own loss and a policy whose log-probs are given per row (`lsp.logp`)."""
    from types import SimpleNamespace

    lsp = LSP.__new__(LSP)
    lsp.args = SimpleNamespace(beta=beta, kl_penalty=kl_penalty, logprob_reduction=reduction, alpha_challenger=alpha)
    lsp.config = SimpleNamespace(sampling=SimpleNamespace(temperature=1.0, correction_cap=3.0))
    lsp.correction = correction
    lsp.policy = SimpleNamespace(logprobs=lambda batch, temperature: SimpleNamespace(logp=lsp.logp))
    return lsp


def row_loss(lsp, logp, ref_logp, role, advantage=0.0, sampler_logp=None):
    """LSP's loss of one sampled row of `role` with these per-token log-probs (sampler's: the trainer's if None)."""
    lsp.logp = logp.unsqueeze(0)
    sampler_logp = logp.detach() if sampler_logp is None else sampler_logp
    batch = {"completion_mask": torch.ones(1, len(logp), dtype=torch.float64), "ref_logp": ref_logp.unsqueeze(0),
             "advantages": torch.tensor([advantage], dtype=torch.float64), "sampler_logp": sampler_logp.unsqueeze(0),
             "is_challenger": torch.tensor([float(role == "challenger")], dtype=torch.float64)}
    counts = {"solver_sequences": 1.0, "challenger_sequences": 1.0, "num_tokens": float(len(logp))}
    return lsp.loss(batch, counts)[0]


def tiny_tables():
    torch.manual_seed(0)
    prefixes = {tuple(seq[:t]) for seq in all_sequences() for t in range(len(seq))}
    theta = {p: (2 * torch.randn(VOCAB, dtype=torch.float64)).requires_grad_() for p in prefixes}
    ref = {p: 2 * torch.randn(VOCAB, dtype=torch.float64) for p in prefixes}
    return theta, ref


def expected_kl_gradient(reduction, kl_penalty, role):
    """(E_{a~pi}[grad of the KL part of LSP's loss for one row of `role`], beta alpha grad KL(pi || pi_Ref)), exactly."""
    theta, ref = tiny_tables()
    lsp = table_lsp(reduction, kl_penalty)
    params = list(theta.values())
    expected = [torch.zeros(VOCAB, dtype=torch.float64) for _ in params]
    kl = 0.0
    for seq in all_sequences():
        logp, ref_logp = tabular_logprobs(theta, seq), tabular_logprobs(ref, seq)
        grads = torch.autograd.grad(row_loss(lsp, logp, ref_logp, role), params, allow_unused=True, retain_graph=True)
        prob = logp.sum().exp().detach()
        for total, grad in zip(expected, grads):
            if grad is not None:
                total += prob * grad
        kl = kl + logp.sum().exp() * (logp.sum() - ref_logp.sum())
    scale = lsp.args.beta * (lsp.args.alpha_challenger if role == "challenger" else 1.0)
    true = torch.autograd.grad(scale * kl, params)
    return torch.cat(expected), torch.cat(true)


@pytest.mark.parametrize("role", ["solver", "challenger"])
def test_the_default_kl_has_the_gradient_of_the_kl(role):
    """Summed over every sequence a ~ pi, the KL part's gradient under "sum" (eq. 4-5's log pi) is beta grad
    KL(pi || pi_Ref), to float64 precision, for each role (alpha_Ch scales the challenger's)."""
    expected, true = expected_kl_gradient("sum", "reward", role)
    assert true.abs().max() > 0.01  # the policy is far from the reference: there is something to pull
    assert torch.allclose(expected, true, atol=1e-12), (expected - true).abs().max()


def part_gradients(lsp, theta, ref, seq, role):
    """(grad of the policy-gradient part, grad of the KL part) of LSP's loss for one sampled row."""
    params = list(theta.values())
    logp, ref_logp = tabular_logprobs(theta, seq), tabular_logprobs(ref, seq)
    beta = lsp.args.beta
    lsp.args.beta = 0.0
    pg = torch.autograd.grad(row_loss(lsp, logp, ref_logp, role, advantage=1.3), params, allow_unused=True,
                             retain_graph=True)
    lsp.args.beta = beta
    kl = torch.autograd.grad(row_loss(lsp, logp, ref_logp, role), params, allow_unused=True)
    flat = lambda grads: torch.cat([torch.zeros(VOCAB, dtype=torch.float64) if g is None else g for g in grads])  # noqa: E731
    return flat(pg), flat(kl)


@pytest.mark.parametrize("role", ["solver", "challenger"])
def test_the_kl_weighs_against_the_policy_gradient_alike_under_either_reduction(role):
    """For every sequence of the tiny policy, "mean" divides the policy gradient and the KL alike by |a|, so the
    KL's weight relative to the learning signal is eq. 4-5's under either reduction (a KL left summed under "mean"
    weighs |a| times too much); summed over a ~ pi, "mean"'s KL gradient is E[grad of the KL bracket / |a|]."""
    theta, ref = tiny_tables()
    by_mean, by_sum = table_lsp("mean"), table_lsp("sum")
    lengths = set()
    for seq in all_sequences():
        pg_mean, kl_mean = part_gradients(by_mean, theta, ref, seq, role)
        pg_sum, kl_sum = part_gradients(by_sum, theta, ref, seq, role)
        assert kl_sum.abs().max() > 1e-3 and pg_sum.abs().max() > 1e-3
        assert torch.allclose(pg_mean * len(seq), pg_sum, atol=1e-12)
        assert torch.allclose(kl_mean * len(seq), kl_sum, atol=1e-12), (len(seq), kl_mean, kl_sum)
        lengths.add(len(seq))
    assert lengths == {1, 2, 3}


def test_the_literal_kl_of_eq_4_5_does_not_regularise():
    """Why it is not the default: its expected gradient is 0 under "sum" and beta grad E[1/|a|] under "mean"."""
    expected, true = expected_kl_gradient("sum", "loss", "solver")
    assert expected.abs().max() < 1e-12 < true.abs().max()
    expected, true = expected_kl_gradient("mean", "loss", "solver")
    assert not torch.allclose(expected, true, atol=1e-3)


@pytest.mark.parametrize("role", ["solver", "challenger"])
@pytest.mark.parametrize("term", ["policy_gradient", "kl"])
@pytest.mark.parametrize("correction", ["tis", "ppo"])
def test_sampler_correction_recovers_the_on_policy_gradient_by_enumeration(correction, term, role):
    """One-token queries or answers drawn by a sampler q != pi: the expectation over q of the corrected loss's
    gradient is the on-policy one (E over pi, uncorrected), for each role and each of the policy-gradient and
    KL terms; without the correction it is not. (q stays within ppo's clip range of pi, so the clip never acts.)"""
    torch.manual_seed(1)
    theta = (0.5 * torch.randn(VOCAB, dtype=torch.float64)).requires_grad_()
    ref = torch.randn(VOCAB, dtype=torch.float64).log_softmax(0)
    pi = torch.softmax(theta, 0).detach()
    q = sampler_near(pi)
    advantages = [1.0, -0.5, 2.0] if term == "policy_gradient" else [0.0] * VOCAB
    beta = 0.0 if term == "policy_gradient" else 0.3

    def expected_gradient(correction: str, weights: torch.Tensor, sampler: torch.Tensor) -> torch.Tensor:
        lsp = table_lsp("sum", correction=correction, beta=beta)
        loss = sum(weights[a] * row_loss(lsp, torch.log_softmax(theta, 0)[a : a + 1], ref[a : a + 1], role,
                                         advantages[a], sampler[a : a + 1].log()) for a in range(VOCAB))
        return torch.autograd.grad(loss, theta)[0]

    assert_corrected_is_on_policy(expected_gradient, correction, pi, q)


def test_kl_metrics_come_from_the_trainer_not_the_sampler(tiny_model):
    """At the first step policy == reference, so each role's KL is 0, however far the sampler's log-probs are
    (the scripted sampler reports -1 a token); the gap is logged as sampler_mismatch instead."""
    lsp = make_lsp(tiny_model)
    exp = lsp.collect([{}] * 3, [1, 2, 3])
    _, metrics = lsp.loss(exp.batch, exp.counts)
    assert metrics["kl/solver"] == 0.0 and metrics["kl/challenger"] == 0.0
    logp = lsp.policy.logprobs(exp.batch, 1.0).logp.detach()
    mask = exp.batch["completion_mask"]
    gap = ((logp + 1.0).abs() * mask).sum() / mask.sum()
    assert metrics["sampler_mismatch"] == pytest.approx(gap.item(), rel=1e-5) and gap > 0.1


def test_unreadable_judge_scores_are_left_out_of_the_quality_reward():
    from langplay.algorithms.lsp import lsp_advantages

    nan = float("nan")
    R = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 1.0]])
    RQ = torch.tensor([[4.0, nan], [nan, nan], [6.0, 4.0]])
    out = lsp_advantages(R, RQ, weight=1.0)
    assert out["VQ"].tolist() == [4.0, 4.5, 5.0]  # the readable ones; none readable: the others' mean
    assert torch.allclose(out["solver"], torch.tensor([0.5, -0.5, 0.0, 0.0, 1.5, -1.5]))  # NaN: no quality advantage
    challenger = torch.tensor([-0.5 + 4, 0 + 4.5, -1.5 + 5])
    assert torch.allclose(out["challenger"], challenger - challenger.mean())
    assert not any(torch.isnan(v).any() for v in out.values())


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
    "<score>9</score>": (0.0, "out_of_range"),  # out of 0..7: unreadable, not clamped
    "<Score>-2</Score>": (0.0, "out_of_range"),
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
    assert 0 <= value <= 7 and how in ("score", "calculation", "out_of_range", "fallback")


def test_lsp_runs_from_the_cli_in_tinyworld_with_its_metrics(tmp_path):
    """LSP in tinyworld with no data, from the CLI preset. (Whether it beats the base model is the experiment's
    question, not asserted here: a 12-step run measured a win rate of 0.45 against the base.)"""
    from typer.testing import CliRunner

    from langplay.cli import app
    from langplay.tinyworld.base import base_model_path

    result = CliRunner().invoke(app, [
        "train", "lsp", "--config", "lsp_tinyworld",
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


def test_the_demo_preset_is_the_measured_lsp_preset():
    """The demo's numbers are results/lsp_tinyworld.md's LSP row: the same settings but where samples go."""
    demo, measured = (load_config(name).model_dump() for name in ("lsp_demo", "lsp_tinyworld"))
    assert {k: v for k, v in demo.items() if k != "run"} == {k: v for k, v in measured.items() if k != "run"}
    assert demo["lsp"]["query_prefix"] == ""  # not steered: the challenger writes tasks of every family


@pytest.mark.slow
def test_lsp_raises_the_held_out_score_of_the_whole_mix_without_data(tmp_path):
    """Self-play over every family learns in tinyworld v2 (the demo's preset, 40 steps, no data): the near-greedy
    score of the whole test mix rises, paired per prompt, with the interval above 0. Measured 0.582 -> 0.753 on
    320 test prompts with the shipped base v2h-s1 (fails with a bar of 1.0, on purpose once)."""
    from langplay.evaluation.tinyworld import family_comparison
    from langplay.tinyworld.base import base_model_path
    from langplay.trainer import Trainer

    config = load_config("lsp_demo", [f"model.name_or_path={base_model_path()}", f"run.output_dir={tmp_path}",
                                      "run.progress=false", "run.save_every=0", "train.seed=0"])
    assert config.train.steps == 40
    Trainer(config).train()
    result = family_comparison(tmp_path / "final", base_model_path(), None, per_level=8, seed=123)
    low, _ = result["gain_interval"]
    assert result["score"] >= result["baseline_score"] + LSP_GAIN_BAR and low > 0, result
    assert result["wins"] > result["losses"]


def test_reference_judge_writes_through_a_sampler_and_leaves_unreadable_replies_out(tiny_model):
    """The self-judge prompts the frozen reference with Box 3 through the Sampler protocol, parses each reply,
    and returns its parse outcomes with the scores: NaN (left out of R_Q) where no score can be read."""
    from langplay.rewards.self_judge import JUDGE_PROMPT, ReferenceJudge
    from langplay.sampling import Samples

    policy = Policy.from_config(load_config(overrides=[f"model.name_or_path={tiny_model}"]).model)
    replies = iter(["fine. <Calculation>1+1+1+1+0+0+0=4</Calculation> <Score>4</Score>", "no idea", "<Score>9</Score>"])
    seen = {}

    class Scripted:
        def __init__(self, sampling, judge):
            seen["model"], seen["temperature"] = judge.model, sampling.temperature

        def generate(self, prompts, n, seeds, max_new_tokens=None):
            seen.setdefault("prompts", []).extend(prompts)
            texts = [next(replies) for _ in prompts]
            return Samples([[0]] * len(texts), [[0]] * len(texts), texts, [[0.0]] * len(texts), [True] * len(texts))

    judge = ReferenceJudge(policy, make_sampler=Scripted)
    scores, metrics = judge.score(["p"] * 3, ["a1", "a2", "a3"], {"raw_prompt": ["q1", "q2", "q3"]})
    assert scores[0] == 4.0 and math.isnan(scores[1]) and math.isnan(scores[2])  # 9: out of range, left out
    assert metrics == {"self_reward_parse/score": 1.0, "self_reward_parse/fallback": 1.0,
                       "self_reward_parse/out_of_range": 1.0}
    assert seen["model"] is policy.reference and seen["temperature"] == 0.01  # the frozen reference, near-greedy
    assert seen["prompts"][0] == policy.format_prompt(JUDGE_PROMPT.format(instruction="q1", response="a1"))
    real = ReferenceJudge(policy, max_new_tokens=8).score(["p"], ["a"], {"raw_prompt": ["q"]})  # the HF sampler
    assert len(real[0]) == 1 and sum(real[1].values()) == 1.0


def test_well_formed_queries_flag_what_box_1_forbids():
    """One self-contained instruction passes; Box 1's tags, unfilled placeholders, markup, an answer given with the
    query, a second input, an echo of Box 1's wording and a fragment do not."""
    from langplay.algorithms.lsp import well_formed_queries

    good = ["Write a haiku about autumn leaves.", "Sam has 3 apples and buys 5 more. How many apples does he have?"]
    bad = ["[Start Generation] Write a poem", "Write a {kind of short text} about cats.", "<Score>3</Score> fine",
           "What is 2 + 2?\nAnswer: 4", "Input 1: hello\nInput 2: bye", "A language task is an (input, output) tuple.",
           "Paris"]
    assert well_formed_queries(good + bad) == [True] * len(good) + [False] * len(bad)
