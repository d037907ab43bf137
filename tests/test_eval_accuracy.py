"""`langplay eval accuracy`: pass@k against exact enumeration, the metrics on hand-computed scores, and real
answer extraction on GSM8K rows (their reference solutions as the model's answers)."""

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from langplay.cli import app
from langplay.errors import LangplayError
from langplay.evaluation.accuracy import accuracy_metrics, evaluate_accuracy, pass_at_k, per_subset, reported_ks
from langplay.sampling import Samples

GSM8K = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"


def enumerated_pass_at_k(n: int, correct: int, k: int) -> float:
    """The share of the k-subsets of n samples (the first `correct` right) holding a right one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < correct for i in subset) for subset in subsets) / len(subsets)


def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample():
    for n in range(1, 8):
        for correct in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, correct, k) == pytest.approx(enumerated_pass_at_k(n, correct, k), abs=1e-12)
    assert pass_at_k(4, 1, 2) == 0.5 and pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 0, 5) == 0.0 and pass_at_k(5, 1, 5) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)  # k beyond the samples drawn: not estimable


def test_metrics_on_hand_computed_scores():
    assert reported_ks(4) == [1, 2, 4] and reported_ks(6) == [1, 2, 4, 6] and reported_ks(1) == [1]
    greedy = [1.0, 0.0, 1.0]
    sampled = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    metrics = accuracy_metrics(greedy, sampled)
    assert metrics["prompts"] == 3 and metrics["greedy"] == pytest.approx(2 / 3)
    assert metrics["pass@1"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert metrics["pass@2"] == pytest.approx((0.5 + 1 + 0) / 3)  # 1 - C(3,2)/C(4,2) = 1/2 for the first
    assert metrics["pass@4"] == pytest.approx(2 / 3)
    subsets = per_subset(["hard", "easy", "hard"], greedy, sampled)
    assert list(subsets) == ["easy", "hard"]
    assert subsets["easy"] == {"prompts": 1, "greedy": 0.0, "pass@1": 1.0, "pass@2": 1.0, "pass@4": 1.0}
    assert subsets["hard"]["greedy"] == 1.0 and subsets["hard"]["pass@1"] == pytest.approx(0.125)


class ScriptedSampler:
    """Answers from a script instead of the model: answer(prompt text, sample index, temperature) -> text."""

    def __init__(self, monkeypatch, answer):
        import langplay.sampling as sampling

        self.calls = 0
        outer = self

        class Scripted:
            def __init__(self, config):
                self.temperature = config.temperature

            def generate(self, prompts, n, seeds, max_new_tokens=None):
                outer.calls += 1
                texts = [answer(p, j, self.temperature) for p in prompts for j in range(n)]
                return Samples([[0]] * len(texts), [[0]] * len(texts), texts, [[0.0]] * len(texts),
                               [True] * len(texts))

        monkeypatch.setattr(sampling, "make_sampler", lambda config, policy: Scripted(config))


def gsm8k_rows(count=20):
    return [json.loads(line) for line in GSM8K.read_text().splitlines()][:count]


def test_gsm8k_reference_solutions_score_one_and_shuffled_ones_about_zero(tiny_model, tmp_path, monkeypatch):
    rows = gsm8k_rows()
    solution_of = {row["question"]: row["answer"] for row in rows}
    shuffled_of = {row["question"]: rows[(i + 1) % len(rows)]["answer"] for i, row in enumerate(rows)}

    def solution(table):  # the formatted prompt holds its question
        return lambda prompt, j, temperature: next(s for q, s in table.items() if q in prompt)

    common = dict(model=str(tiny_model), data=str(GSM8K), verifier="numeric_match", answer_column="answer",
                  prompt_column="question", answer_format="gsm8k", samples=3, limit=20, progress=False)
    ScriptedSampler(monkeypatch, solution(solution_of))
    right = evaluate_accuracy(**common, output=tmp_path / "right")["overall"]
    assert right == {"prompts": 20, "greedy": 1.0, "pass@1": 1.0, "pass@2": 1.0, "pass@3": 1.0}
    ScriptedSampler(monkeypatch, solution(shuffled_of))
    wrong = evaluate_accuracy(**common, output=tmp_path / "wrong")["overall"]
    assert wrong["greedy"] <= 0.1 and wrong["pass@3"] <= 0.1
    golds = [json.loads(line)["gold"] for line in (tmp_path / "right" / "rows.jsonl").read_text().splitlines()]
    assert golds[:3] == ["18", "3", "70000"]  # "#### 18" read as GSM8K's final answer


def test_subsets_and_the_answer_cache(tiny_model, tmp_path, monkeypatch):
    data = tmp_path / "letters.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {c}", "answer": c, "level": 1 + i % 2}) + "\n"
                            for i, c in enumerate("abcd")))
    # prompts "say a" and "say c" (level 1) are always answered right; "say b" and "say d" once in 4 samples
    def answer(prompt, j, temperature):
        letter = prompt.split("say ")[1][0]
        return letter if letter in "ac" or j == 1 else "?"

    script = ScriptedSampler(monkeypatch, answer)
    report = evaluate_accuracy(tiny_model, data, "exact_match", samples=4, subset_column="level",  # paths work
                               output=tmp_path / "out", progress=False)
    assert script.calls == 2  # greedy, then the samples
    assert report["subsets"]["1"]["pass@1"] == 1.0 and report["subsets"]["2"]["greedy"] == 0.0
    assert report["subsets"]["2"]["pass@1"] == 0.25 and report["subsets"]["2"]["pass@2"] == 0.5
    assert report["overall"]["pass@4"] == 1.0
    again = evaluate_accuracy(str(tiny_model), str(data), "exact_match", samples=4, subset_column="level",
                              output=tmp_path / "out", progress=False)
    assert script.calls == 2 and again == report  # all served from the folder's answer cache


def test_bad_options_are_named(tiny_model, prompt_file, tmp_path):
    with pytest.raises(LangplayError, match="unknown verifier 'regex'"):
        evaluate_accuracy(str(tiny_model), str(prompt_file), "regex", output=tmp_path)
    with pytest.raises(LangplayError, match="no column 'level'"):
        evaluate_accuracy(str(tiny_model), str(prompt_file), "exact_match", subset_column="level", output=tmp_path)
    with pytest.raises(LangplayError, match="temperature must be > 0"):
        evaluate_accuracy(str(tiny_model), str(prompt_file), "exact_match", samples=2, temperature=0, output=tmp_path)


def test_cli_accuracy_on_a_tiny_model(tiny_model, prompt_file, tmp_path):
    out = tmp_path / "acc"
    result = CliRunner().invoke(app, ["eval", "accuracy", "--model", str(tiny_model), "--data", str(prompt_file),
                                      "--verifier", "exact_match", "--samples", "2", "--max-new-tokens", "3",
                                      "--limit", "3", "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["prompts"] == 3 and set(report["overall"]) == {"prompts", "greedy", "pass@1", "pass@2"}
    assert "pass@2" in result.output and (out / "answers.jsonl").is_file() and (out / "rows.jsonl").is_file()
