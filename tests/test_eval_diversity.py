"""`langplay eval diversity`: IRL's frontier, the task metric against Self-BLEU / distinct-n per prompt as the
temperature moves; points on hand-computed pools, a scripted model whose samples spread with temperature."""

import json

import pytest
from typer.testing import CliRunner

from langplay.cli import app
from langplay.errors import LangplayError
from langplay.evaluation.frontier import evaluate_diversity, frontier_point, parse_temperatures
from test_eval_accuracy import ScriptedSampler


def test_temperature_lists():
    assert parse_temperatures("0.5, 0.7,1.0") == [0.5, 0.7, 1.0] and parse_temperatures([1, 0.3]) == [1.0, 0.3]
    for bad in ["", "0.5,abc", "0.5,0", "-1", "1,1", "nan", "inf", "0.5,,1"]:
        with pytest.raises(LangplayError, match="--temperatures"):
            parse_temperatures(bad)


def test_a_point_on_hand_computed_pools():
    pools = [["a b", "a b"], ["a b", "c d"]]  # one prompt answered twice alike, one twice apart
    point = frontier_point(pools, [[1.0, 0.0], [1.0, 1.0]], max_n=2)
    assert point["self_bleu"] == pytest.approx((1.0 + 0.0) / 2)  # per prompt, then averaged
    assert point["distinct_1"] == pytest.approx((2 / 4 + 4 / 4) / 2)
    assert point["distinct_2"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert point["score"] == 0.75
    assert "score" not in frontier_point(pools, max_n=2)


def test_samples_spread_with_temperature_on_the_frontier(tiny_model, tmp_path, monkeypatch):
    data = tmp_path / "letters.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {c}", "answer": f"it is {c}"}) + "\n" for c in "abc"))

    def answer(prompt, j, temperature):  # cold: the right answer every time; hot: right once, else apart
        right = "it is " + prompt.split("say ")[1][0]
        return right if temperature < 1 or j == 0 else f"w{j} z{j}"

    script = ScriptedSampler(monkeypatch, answer)
    report = evaluate_diversity(str(tiny_model), str(data), "0.5,1.0", samples=4, verifier="exact_match", max_n=2,
                                output=tmp_path / "div", progress=False)
    cold, hot = report["points"]
    assert (cold["temperature"], cold["score"], cold["self_bleu"], cold["distinct_2"]) == (0.5, 1.0, 1.0, 0.25)
    assert (hot["temperature"], hot["score"], hot["self_bleu"], hot["distinct_2"]) == (1.0, 0.25, 0.0, 1.0)
    assert (tmp_path / "div" / "frontier.png").stat().st_size > 0 and "Self-BLEU" in report_text(tmp_path / "div")
    calls = script.calls
    evaluate_diversity(str(tiny_model), str(data), "0.5,1.0", samples=4, verifier="exact_match", max_n=2,
                       output=tmp_path / "div", progress=False)
    assert script.calls == calls == 2  # one call a temperature; run again in its folder, nothing is sampled


def report_text(folder):
    return (folder / "report.txt").read_text()


def test_diversity_needs_two_samples_and_a_known_tokenizer(tiny_model, prompt_file, tmp_path):
    with pytest.raises(LangplayError, match="--samples must be >= 2"):
        evaluate_diversity(str(tiny_model), str(prompt_file), samples=1, output=tmp_path)
    with pytest.raises(LangplayError, match="unknown tokenizer 'bpe'"):
        evaluate_diversity(str(tiny_model), str(prompt_file), tokenizer="bpe", output=tmp_path)


def test_cli_diversity_on_a_tiny_model(tiny_model, prompt_file, tmp_path):
    out = tmp_path / "div"
    result = CliRunner().invoke(app, ["eval", "diversity", "--model", str(tiny_model), "--data", str(prompt_file),
                                      "--temperatures", "0.7,1.0", "--samples", "2", "--verifier", "exact_match",
                                      "--tokenizer", "characters", "--max-new-tokens", "4", "--limit", "2",
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [p["temperature"] for p in report["points"]] == [0.7, 1.0] and report["prompts"] == 2
    assert "Self-BLEU" in result.output and (out / "frontier.png").is_file()
