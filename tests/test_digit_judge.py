"""LSP's digit judge (lsp.judge=digits): the expected Box 3 score read from the reference's next-token
probabilities of 0..7 after "<Score>", checked against a hand computation on a scripted judge model."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from langplay.algorithms.lsp import self_reward_scorer
from langplay.config import load_config
from langplay.errors import LangplayError
from langplay.logprobs import next_token_logprobs
from langplay.models import load_tokenizer
from langplay.policy import Policy
from langplay.rewards.self_judge import DigitJudge, ReferenceJudge, expected_scores, judge_prompt, score_tokens

LENGTH = f"{Path(__file__).parent / 'reward_functions.py'}:length"


def test_expected_score_renormalises_the_digits_by_hand():
    # P(0) = 0.1, P(3) = 0.1, P(7) = 0.2, the rest of the mass (0.6) on other tokens:
    # E = (0 * 0.1 + 3 * 0.1 + 7 * 0.2) / 0.4 = 4.25
    p = torch.tensor([[0.1, 1e-30, 1e-30, 0.1, 1e-30, 1e-30, 1e-30, 0.2], [1 / 8] * 8])
    scores, mass = expected_scores(p.log())
    assert scores.tolist() == pytest.approx([4.25, 3.5]) and mass.tolist() == pytest.approx([0.4, 1.0])


def test_next_token_logprobs_match_a_full_forward_pass(tiny_model):
    """Prompts of different lengths (left-padded in one batch) read the same distribution as each alone."""
    policy = Policy.from_config(load_config(overrides=[f"model.name_or_path={tiny_model}"]).model)
    prompts = [policy.encode(t) for t in ("a", "hello there", "xyz <Score>")]
    tokens = policy.encode("0123")
    got = next_token_logprobs(policy.model, prompts, tokens, policy.tokenizer.pad_token_id, micro_batch_size=2)
    for row, ids in zip(got, prompts):
        logits = policy.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        torch.testing.assert_close(row, F.log_softmax(logits, -1)[tokens], atol=1e-5, rtol=0)


class ScriptedJudgeModel(torch.nn.Module):
    """A judge whose logits after any prefix are: `good` x (count of GOOD tokens so far) on the score 7, `bad` x
    (count of BAD tokens) on the score 0, 0 elsewhere. Enough of the decoder/head interface for langplay's passes."""

    def __init__(self, vocab: int, good: int, bad: int, seven: int, zero: int):
        super().__init__()
        self.good_token, self.bad_token = good, bad
        self.head = torch.nn.Linear(2, vocab, bias=False)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[seven, 0] = 1.0
            self.head.weight[zero, 1] = 1.0

    def get_decoder(self):
        return self

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, **_):
        counts = torch.stack([(input_ids == self.good_token), (input_ids == self.bad_token)], -1).float().cumsum(1)
        return SimpleNamespace(last_hidden_state=counts)


@pytest.fixture
def scripted(tiny_model):
    tokenizer = load_tokenizer(load_config(overrides=[f"model.name_or_path={tiny_model}"]).model)
    policy = Policy.from_config(load_config(overrides=[f"model.name_or_path={tiny_model}"]).model)
    digits = score_tokens(tokenizer, policy.format_prompt("x") + "<Score>")
    [good], [bad] = policy.encode("+"), policy.encode("-")
    judge = ScriptedJudgeModel(len(tokenizer), good, bad, digits[7], digits[0])
    policy.reference = judge  # the judge is the frozen reference; the trained model is left as it is
    return policy, judge


def test_the_digit_judge_reads_the_reference_by_hand(scripted):
    """R_Q = (1+...+6 + 7 e^a) / (6 + e^a + e^b), a and b the counts of '+' and '-' in the Box 3 text the reference
    reads (its chat template and the "<Score>" that begins its reply included): it rises with '+' in the answer."""
    policy, _ = scripted
    queries, answers = ["q one", "q two", "q three"], ["+++ good", "--- bad", "plain"]
    scores, metrics = DigitJudge(policy, batch_size=2).score(["p"] * 3, answers, {"raw_prompt": queries})
    vocab = len(policy.tokenizer)
    expected, masses = [], []
    for q, a in zip(queries, answers):
        text = policy.format_prompt(judge_prompt(q, a)) + "<Score>"
        up, down = math.exp(text.count("+")), math.exp(text.count("-"))
        expected.append((21 + 7 * up) / (6 + up + down))
        masses.append((6 + up + down) / (vocab - 2 + up + down))
    assert scores == pytest.approx(expected, rel=1e-5)
    assert scores[0] > scores[2] > scores[1]  # it discriminates where the judge can
    assert metrics == {"self_reward_digit_mass": pytest.approx(sum(masses) / 3, rel=1e-5)}


def test_lsp_builds_the_judge_its_config_names(scripted, tiny_model):
    policy, _ = scripted
    base = ["algorithm=lsp", f"model.name_or_path={tiny_model}", "lsp.self_reward=true"]
    assert isinstance(self_reward_scorer(load_config(overrides=base + ["lsp.judge=digits"]), policy), DigitJudge)
    assert isinstance(self_reward_scorer(load_config(overrides=base), policy), ReferenceJudge)  # the paper's default
    with pytest.raises(LangplayError, match="judge=digits"):
        load_config(overrides=base + ["lsp.judge=digits", "lsp.self_reward_function=a:b"])


def test_a_score_that_is_not_one_token_is_one_line(tiny_model):
    tokenizer = load_tokenizer(load_config(overrides=[f"model.name_or_path={tiny_model}"]).model)

    def encode_in_pairs(text, add_special_tokens=False):  # a tokenizer that merges the digit with what precedes it
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": ids[:-2] + [ids[-2] * 1000 + ids[-1]] if text[-1].isdigit() else ids}

    with pytest.raises(LangplayError, match="score 0 as one token"):
        score_tokens(encode_in_pairs, "ctx <Score>")


def test_lsp_trains_with_the_digit_judge_from_the_cli(tmp_path, tiny_model):
    from typer.testing import CliRunner

    from langplay.cli import app

    result = CliRunner().invoke(app, [
        "train", "lsp", f"model.name_or_path={tiny_model}", "lsp.self_reward=true", "lsp.judge=digits",
        "train.steps=2", "train.prompts_per_step=2", "lsp.group_size=2", "sampling.max_new_tokens=6",
        "lsp.max_query_tokens=6", f"lsp.rewards=[{{kind: function, function: '{LENGTH}'}}]", f"run.output_dir={tmp_path}/run", "run.progress=false",
    ])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        assert m["self_reward_unreadable"] == 0 and 0 <= m["self_reward"] <= 7 and 0 < m["self_reward_digit_mass"] <= 1
