"""Datasets, the prompt stream, SFT encoding, and the built-in verifiers on real GSM8K text."""

import json
from pathlib import Path

import pytest

from langplay.config import DataConfig, ModelConfig, RewardSpec
from langplay.data import PromptStream, encode_sft, load_rows, sft_pair
from langplay.errors import LangplayError
from langplay.policy import Policy
from langplay.rewards import WeightedSum, build_scorer, import_function
from langplay.rewards.verifiers import exact_match, last_number, math_match, numeric_match

GSM8K = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"


def test_local_jsonl_and_parquet_load_alike(tmp_path):
    rows = load_rows(str(GSM8K))
    assert len(rows) == 50 and rows.column_names == ["question", "answer"]
    rows.to_parquet(tmp_path / "g.parquet")
    again = load_rows(str(tmp_path / "g.parquet"), max_samples=5)
    assert len(again) == 5 and again[0] == rows[0]


def test_alpaca_rows_gain_a_prompt_of_the_instruction_and_its_input(tmp_path):
    """Alpaca's format: the instruction, then its input after a blank line where there is one; "Summarize the
    following text." is nothing without its text."""
    path = tmp_path / "alpaca.jsonl"
    rows = [{"instruction": "Summarize the following text.", "input": "Cats sleep a lot.", "output": "Cats nap."},
            {"instruction": "Name a colour.", "input": "", "output": "Red."},
            {"instruction": "Say hi.", "input": None, "output": "Hi."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_rows(str(path))
    assert loaded["prompt"] == ["Summarize the following text.\n\nCats sleep a lot.", "Name a colour.", "Say hi."]
    assert loaded["instruction"] == [r["instruction"] for r in rows] and loaded["input"] == [r["input"] for r in rows]
    for other in ({"prompt": "mine", "instruction": "i", "input": "x"}, {"instruction": "i", "output": "o"}):
        path.write_text(json.dumps(other) + "\n")
        assert load_rows(str(path))[0] == other  # a prompt of its own, or no input: as it is


def test_unknown_hub_dataset_is_one_clear_line(monkeypatch):
    import datasets.config

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import: set it where it is used
    with pytest.raises(LangplayError, match="cannot load dataset 'nobody/nothing'") as info:
        load_rows("nobody/nothing")
    assert "\n" not in str(info.value)


def test_prompt_stream_is_seeded_reshuffled_and_resumable():
    rows = [{"i": i} for i in range(5)]
    stream = PromptStream(rows, seed=3)
    first = [r["i"] for r in stream.take(5)]
    second = [r["i"] for r in stream.take(5)]
    assert sorted(first) == sorted(second) == list(range(5)) and first != second
    resumed = PromptStream(rows, seed=3, position=7)
    assert [r["i"] for r in resumed.take(3)] == second[2:]


def test_sft_encoding_puts_the_loss_on_the_completion_only(tiny_model):
    policy = Policy.from_config(ModelConfig(name_or_path=str(tiny_model)), with_reference=False)
    prompt_ids, completion_ids = encode_sft(policy, "say a", "aaa", None, 1024)
    assert policy.tokenizer.decode(prompt_ids) == "<s>Q: say a\nA: "
    assert policy.tokenizer.decode(completion_ids) == "aaa</s>"
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    prompt, target = sft_pair(chat, DataConfig(messages_column="messages"))
    assert target == "yo" and prompt == chat["messages"][:1]
    short_prompt, short_completion = encode_sft(policy, "x" * 50, "abc", None, 20)
    assert len(short_prompt) + len(short_completion) == 20 and policy.tokenizer.decode(short_completion) == "abc</s>"


def test_gsm8k_gold_answers_score_one_with_numeric_and_math_match():
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    gold = [row["answer"].split("####")[-1].strip() for row in rows]
    solutions = [row["answer"].replace("####", "The answer is") for row in rows]
    assert all(numeric_match(s, g) == 1.0 for s, g in zip(solutions, gold))
    assert all(math_match(f"The answer is ${g}$", g) == 1.0 for g in gold[:10])
    assert numeric_match(solutions[0], str(int(gold[0]) + 1)) == 0.0
    assert math_match("The answer is $\\frac{1}{2}$", "0.5") == 1.0
    assert math_match("no idea", "3") == 0.0


def test_math_match_reads_bare_latex_gold_answers():
    """MATH's answer column (and a \\boxed{} extracted from a solution) is LaTeX without delimiters, which
    math-verify parses to nothing unless it is wrapped."""
    cases = [("(3, \\frac{\\pi}{2})", "The final answer is $\\left( 3, \\frac{\\pi}{2} \\right)$"),
             ("\\text{Evelyn}", "The final answer is \\boxed{\\text{Evelyn}}"),
             ("p - q", "The final answer is $p-q$"), ("\\frac{14}{3}", "The final answer is \\frac{14}{3}.")]
    assert [math_match(completion, gold) for gold, completion in cases] == [1.0] * 4
    assert math_match("The final answer is $p+q$", "p - q") == 0.0


def test_verifier_helpers():
    assert last_number("it costs 1,234.5 dollars") == 1234.5 and last_number("none") is None
    assert exact_match("  Paris. ", "paris") == 1.0 and exact_match("Lyon", "Paris") == 0.0


def test_weighted_rewards_and_column_errors():
    specs = [RewardSpec(kind="exact_match", weight=2.0), RewardSpec(kind="numeric_match", answer_column="n")]
    scorer = build_scorer(specs, extra=[lambda prompts, completions, **_: [0.5] * len(completions)])
    values, metrics = scorer.score(["p", "p"], ["7", "x"], {"answer": ["7", "7"], "n": ["7", "7"]})
    assert values == [2.0 + 1.0 + 0.5, 0.5]
    assert isinstance(scorer, WeightedSum) and metrics["reward/exact_match"] == 0.5  # returned with the rewards
    assert metrics["reward/numeric_match"] == 0.5 and metrics["reward/<lambda>"] == 0.5
    assert not hasattr(scorer, "last_parts")
    with pytest.raises(LangplayError, match="column 'answer'"):
        build_scorer([RewardSpec(kind="exact_match")]).score(["p"], ["c"], {"other": ["x"]})


def test_reward_function_import_errors_are_clear(tmp_path):
    with pytest.raises(LangplayError, match="module:name"):
        import_function("nocolon")
    with pytest.raises(LangplayError, match="cannot import reward module"):
        import_function("no_such_module_xyz:f")
    path = tmp_path / "r.py"
    path.write_text("def f(prompts, completions, **kw):\n    return [1.0] * len(completions)\n")
    assert import_function(f"{path}:f")(["p"], ["c"]) == [1.0]
    with pytest.raises(LangplayError, match="has no callable 'g'"):
        import_function(f"{path}:g")


def test_a_reward_returning_the_wrong_shape_or_type_is_named():
    def short(prompts, completions, **_):
        return [1.0]

    def texty(prompts, completions, **_):
        return ["good"] * len(completions)

    with pytest.raises(LangplayError, match="'short' returned 1 values for 2"):
        WeightedSum([short]).score(["p", "p"], ["a", "b"], {})
    with pytest.raises(LangplayError, match="'texty' returned 'good'"):
        WeightedSum([texty]).score(["p"], ["a"], {})


def test_tinyworld_is_a_named_data_source_and_a_name_it_does_not_know_is_one_line(tmp_path):
    """data.path: tinyworld:train (tune, test) is tinyworld's task rows, nothing exported first: instances of that
    split only, with the columns the presets use; data.where keeps families. A name it does not know is one line
    naming those it knows, and exit code 2 from the command line, before anything is written."""
    from typer.testing import CliRunner

    from langplay.cli import app
    from langplay.data import TINYWORLD_ROWS
    from langplay.tinyworld.tasks import parse, split_of

    rows = load_rows("tinyworld:test", max_samples=50)
    assert len(rows) == 50 and {"prompt", "reference", "answer", "final", "family", "level"} <= set(rows.column_names)
    assert {split_of(task.family, task.params) for task in map(parse, rows["prompt"])} == {"test"}
    assert len(load_rows("tinyworld:train")) == TINYWORLD_ROWS
    assert set(load_rows("tinyworld:train", where={"family": ["spell", "multiply"]})["family"]) == {"spell", "multiply"}
    with pytest.raises(LangplayError, match=r"unknown tinyworld data source 'tinyworld:trian': data.path takes "
                                            r"tinyworld:train, tinyworld:tune, tinyworld:test$"):
        load_rows("tinyworld:trian")
    result = CliRunner().invoke(app, ["train", "grpo", "--config", "grpo_tinyworld", "data.path=tinyworld:tset",
                                      f"run.output_dir={tmp_path / 'run'}", "run.progress=false"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "'tinyworld:tset'" in result.output and not (tmp_path / "run").exists()
