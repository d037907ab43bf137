"""`langplay eval likelihood`: the plain log pi(a*|x) and JEPO's multi-sample bound log (1/n) sum_i pi(a*|x, c_i)
on a file, checked by hand on a tiny model and against tinyworld's own bound (reference_loglik)."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from langplay.cli import app
from langplay.evaluation.answers import load_eval_policy
from langplay.evaluation.likelihood import answer_logliks, evaluate_likelihood, marker_rate, nll_summary
from langplay.text import after_marker, chain_through_marker

MARKER = "The final answer is"


def direct_loglik(policy, context: str, target: str, eos: bool = False) -> float:
    """log pi(target | context) from one forward pass, summed over the target's tokens."""
    x = policy.encode(policy.format_prompt(context[0])) + policy.encode(context[1])
    y = policy.encode(target) + ([policy.tokenizer.eos_token_id] if eos else [])
    with torch.no_grad():
        logp = policy.model(input_ids=torch.tensor([x + y])).logits[0, len(x) - 1 : -1].log_softmax(-1)
    return logp.gather(1, torch.tensor(y)[:, None]).sum().item()


def test_chains_are_cut_at_their_last_marker_or_given_one():
    assert chain_through_marker("2+2. The final answer is 3. No: the final answer is 4.", MARKER) == \
        "2+2. The final answer is 3. No: the final answer is"
    assert chain_through_marker("2+2 makes 4  ", MARKER) == "2+2 makes 4 The final answer is"
    assert after_marker("4") == " 4" and after_marker(" 4") == " 4"
    assert marker_rate([["a. The final answer is 1", "b"], ["c", "THE FINAL ANSWER IS 2"]], MARKER) == 0.5


def test_nll_is_per_answer_and_pooled_per_token():
    assert nll_summary([-2.0, -4.0], [1, 3]) == {"nll": 3.0, "nll_per_token": 1.5}


def test_plain_and_bound_against_direct_forward_passes(tiny_model):
    policy = load_eval_policy(str(tiny_model), device="cpu")
    x = policy.encode(policy.format_prompt("add 2 and 2"))
    chains = ["2 and 2 is 4. The final answer is 4. Done", "I guess"]
    logliks, tokens = answer_logliks(policy, [x, x], ["4", "4"], [None, chains], MARKER, eos=False)
    plain = direct_loglik(policy, ("add 2 and 2", ""), "4")
    s1 = direct_loglik(policy, ("add 2 and 2", "2 and 2 is 4. The final answer is"), " 4")
    s2 = direct_loglik(policy, ("add 2 and 2", "I guess The final answer is"), " 4")
    assert logliks[0] == pytest.approx(plain, abs=1e-5)
    assert logliks[1] == pytest.approx(math.log((math.exp(s1) + math.exp(s2)) / 2), abs=1e-5)
    assert tokens == [1, 2]  # one character a token; after the marker a* has its space
    with_eos, eos_tokens = answer_logliks(policy, [x], ["4"], [None], MARKER, eos=True)
    assert with_eos[0] == pytest.approx(direct_loglik(policy, ("add 2 and 2", ""), "4", eos=True), abs=1e-5)
    assert eos_tokens == [2]


def test_likelihoods_are_computed_without_an_autograd_graph(tiny_model):
    """Scoring keeps no graph: with one, `langplay eval likelihood` on 200 GSM8K solutions with SmolLM2 held a
    micro-batch's activations for backward (24 GB) and was killed."""
    policy = load_eval_policy(str(tiny_model), device="cpu")
    seen = []
    hook = policy.model.get_decoder().register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
    try:
        x = policy.encode(policy.format_prompt("add 2 and 2"))
        answer_logliks(policy, [x, x], ["4", "5"], [None, ["2 and 2 is 4. The final answer is 4."]], MARKER)
    finally:
        hook.remove()
    assert seen and not any(seen) and torch.is_grad_enabled()


def test_the_file_based_bound_is_tinyworlds_reference_loglik(tmp_path):
    from langplay.evaluation.tinyworld import (MAX_NEW_TOKENS, held_out_tasks, load_policy, reference_loglik,
                                               split_reference, stable_id)
    from langplay.sampling.keys import key_of
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.tasks import ANSWER_MARKER, FAMILIES

    seed, n = 5, 3
    tasks = held_out_tasks(per_level=1, families=["max", "multiply", "spell", "word_problem"], levels=[1, 3])
    reasoning = [FAMILIES[t.family].kind == "reasoning" for t in tasks]
    expected = reference_loglik(load_policy(base_model_path()), tasks, n=n, seed=seed)

    # the tasks as a user's file: the prompt text, and the reference answer after the marker
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps({"prompt": t.prompt, "answer": split_reference(t)[1]}) + "\n" for t in tasks))
    # tinyworld keys each task's chains by (seed + 1, task seed, family), where a file's rows are keyed by position
    keys = [key_of(seed + 1, t.seed, stable_id(t.family)) for t in tasks]
    report = evaluate_likelihood(str(base_model_path()), str(data), samples=n, marker=ANSWER_MARKER, answer_eos=True,
                                 max_new_tokens=MAX_NEW_TOKENS, output=tmp_path / "eval", progress=False,
                                 batch_size=64, noise_keys=keys)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "rows.jsonl").read_text().splitlines()]
    assert sum(reasoning) >= 4 and not all(reasoning)
    assert [r["bound"] for r, chain in zip(rows, reasoning) if chain] == \
        pytest.approx([e for e, chain in zip(expected, reasoning) if chain], abs=1e-5)
    assert report["bound"]["samples"] == n and report["prompts"] == len(tasks)

    # the plain families: tinyworld scores the whole reference after the prompt, as the plain likelihood does
    plain_file = tmp_path / "plain.jsonl"
    plain_file.write_text("".join(json.dumps({"prompt": t.prompt, "answer": t.reference}) + "\n"
                                  for t, chain in zip(tasks, reasoning) if not chain))
    evaluate_likelihood(str(base_model_path()), str(plain_file), samples=0, answer_eos=True,
                        output=tmp_path / "plain", progress=False)
    plain = [json.loads(line)["plain"] for line in (tmp_path / "plain" / "rows.jsonl").read_text().splitlines()]
    assert plain == pytest.approx([e for e, chain in zip(expected, reasoning) if not chain], abs=1e-5)


def test_cli_reports_both_and_a_second_run_samples_nothing(tiny_model, prompt_file, tmp_path, monkeypatch):
    out = tmp_path / "lik"
    args = ["eval", "likelihood", "--model", str(tiny_model), "--data", str(prompt_file), "--answer-column", "answer",
            "--question-column", "prompt", "--samples", "2", "--max-new-tokens", "4", "--limit", "3", "--output",
            str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["prompts"] == 3 and report["bound"]["samples"] == 2
    assert report["plain"]["nll"] > 0 and report["bound"]["nll"] > 0
    assert "NLL / token" in result.output and (out / "report.txt").is_file()
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]  # per row: sums and tokens
    for kind in ("plain", "bound"):
        assert -sum(r[kind] for r in rows) / sum(r[f"{kind}_tokens"] for r in rows) == \
            pytest.approx(report[kind]["nll_per_token"])

    import langplay.sampling as sampling

    monkeypatch.setattr(sampling, "make_sampler", lambda *a: pytest.fail("sampled again: the cache was not used"))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "report.json").read_text()) == report
