"""The paper presets mirror their papers, and the papers' prompts keep every instruction they give."""

import json
from pathlib import Path

import pytest

from langplay.config import evaluation_command, load_config

CONFIGS = Path(__file__).parents[1] / "src" / "langplay" / "presets"
MATH_SUBJECTS = {"algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus"}


TRAINING = [p for p in sorted(CONFIGS.glob("*.yaml")) if evaluation_command(p) is None]
EVALUATIONS = [p for p in sorted(CONFIGS.glob("*.yaml")) if evaluation_command(p) is not None]


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.name)
def test_every_preset_validates(path):
    load_config(path)  # training presets; evaluation presets (`command:`) are read by eval_preset, tested with theirs


def eval_options(command: str) -> dict:
    """Every option of `langplay eval COMMAND` (but --preset), unset, as the CLI hands them to eval_preset."""
    import inspect

    from langplay import cli

    function = {"accuracy": cli.eval_accuracy, "likelihood": cli.eval_likelihood, "diversity": cli.eval_diversity,
                "winrate": cli.eval_winrate}
    return {name: None for name in inspect.signature(function[command]).parameters if name != "preset"}


@pytest.mark.parametrize("path", EVALUATIONS, ids=lambda p: p.name)
def test_every_evaluation_preset_loads_for_its_command(path):
    from langplay.evaluation.answers import eval_preset

    command = evaluation_command(path)
    options = eval_preset(path.stem, command, eval_options(command))
    assert options and set(options) <= set(eval_options(command))


def test_the_eval_commands_options_are_their_functions_arguments():
    import inspect

    from langplay.evaluation.accuracy import evaluate_accuracy
    from langplay.evaluation.frontier import evaluate_diversity
    from langplay.evaluation.likelihood import evaluate_likelihood

    for command, function in [("accuracy", evaluate_accuracy), ("likelihood", evaluate_likelihood),
                              ("diversity", evaluate_diversity)]:
        assert set(eval_options(command)) <= set(inspect.signature(function).parameters), command


def test_jepo_math_evaluation_mirrors_the_papers_protocol():
    from langplay.evaluation.answers import eval_preset

    accuracy = eval_preset("eval_jepo_math", "accuracy", eval_options("accuracy"))
    jepo = load_config(CONFIGS / "jepo_math_paper.yaml")
    assert (accuracy["data"], accuracy["split"], accuracy["prompt_column"], accuracy["answer_column"]) == \
        ("HuggingFaceH4/MATH-500", "test", "problem", "answer")
    assert accuracy["verifier"] == "math" and (accuracy["samples"], accuracy["temperature"]) == (4, 1.0)
    assert accuracy["model"] == f"{jepo.run.output_dir}/final" and accuracy["system_prompt"] == jepo.data.system_prompt
    likelihood = eval_preset("eval_jepo_math_likelihood", "likelihood", eval_options("likelihood"))
    assert likelihood["samples"] == jepo.jepo.group_size == 4 and likelihood["marker"] == jepo.jepo.answer_marker
    assert likelihood["data"] == accuracy["data"] and likelihood["model"] == accuracy["model"]


def test_jepo_math_preset_is_two_stages_on_every_subject():
    warmup, jepo = load_config(CONFIGS / "jepo_math_sft_warmup.yaml"), load_config(CONFIGS / "jepo_math_paper.yaml")
    assert warmup.algorithm == "sft" and jepo.algorithm == "jepo"
    assert set(warmup.data.subset) == set(jepo.data.subset) == MATH_SUBJECTS  # all 7,500 training problems
    assert jepo.model.name_or_path == f"{warmup.run.output_dir}/final"  # JEPO starts from the warm-up
    assert (jepo.jepo.group_size, jepo.train.prompts_per_step, jepo.sampling.temperature) == (4, 64, 1.0)
    assert (jepo.jepo.beta, jepo.jepo.beta_sup, jepo.jepo.format_penalty) == (1e-3, 0.01, 10.0)
    assert jepo.jepo.answer_suffix_eos is False  # S = log pi(a*|x, c), the paper's


def test_jepo_proofs_preset_keeps_only_proofs():
    proofs = load_config(CONFIGS / "jepo_proofs_paper.yaml")
    assert proofs.data.where == {"question_type": "proof"} and proofs.jepo.beta_sup == 1.0


def test_lsp_presets_follow_table_1():
    rows = {name: load_config(CONFIGS / f"{name}.yaml") for name in ("lsp_grpo_baseline_paper", "lsp_zero_paper",
                                                                     "lsp_paper")}
    assert rows["lsp_grpo_baseline_paper"].algorithm == "grpo"
    assert rows["lsp_grpo_baseline_paper"].grpo.beta == 0.05 and rows["lsp_grpo_baseline_paper"].train.lr == 1e-6
    assert rows["lsp_grpo_baseline_paper"].data.path == "tatsu-lab/alpaca"
    for name in ("lsp_zero_paper", "lsp_paper"):
        config = rows[name]
        assert (config.train.prompts_per_step, config.lsp.beta, config.train.lr) == (8, 0.05, 3e-6)
        assert config.lsp.kl_penalty == "reward"  # a KL that regularises (tests/test_lsp.py)
    assert rows["lsp_paper"].lsp.self_reward and not rows["lsp_zero_paper"].lsp.self_reward


def test_lsp_grpo_baseline_prompts_keep_alpacas_input(tiny_model, tmp_path):
    """The preset's prompts on Alpaca-shaped rows (a local file, no network) hold the instruction and its input."""
    from langplay.trainer import Trainer

    data = tmp_path / "alpaca.jsonl"
    rows = [{"instruction": "Summarize the following text.", "input": f"Text {i}.", "output": "."} for i in range(2)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preset = load_config(CONFIGS / "lsp_grpo_baseline_paper.yaml").data
    seen = []

    def record(prompts, completions, raw_prompt, **columns):
        seen.extend(raw_prompt)
        return [0.0] * len(completions)

    config = load_config(overrides=[
        f"model.name_or_path={tiny_model}", f"data.path={data}", f"data.prompt_column={preset.prompt_column}",
        f"run.output_dir={tmp_path / 'run'}", "train.steps=1", "train.prompts_per_step=2", "grpo.group_size=2",
        "sampling.max_new_tokens=2", "run.progress=false"])
    Trainer(config, rewards=[record]).train()
    assert set(seen) == {"Summarize the following text.\n\nText 0.", "Summarize the following text.\n\nText 1."}


# Box 1 and Box 3 of the LSP paper: each instruction an implementation must keep (Kuba et al. 2025, Boxes 1 and 3)
CHALLENGER_INSTRUCTIONS = [
    "(input, output) tuple", "For example, for the task", "'{task}'", "MUST be a valid input", "easy, intermediate, hard, or simply noisy",
    "stress-test", "think outside the box", "only a single example", "without those tags", "placeholders in curly braces",
    "{ice cream flavor}", "do not generate an output or a response", "hints", "leaks", "a language agent cannot do",
    "stop as soon as the template is fulfilled", "must NOT contain the [Start Generation] and [End Generation] tags",
    "Follow the template strictly", "both empty", "best judgment", "[Start Generation] '{template}' [End Generation]",
]
JUDGE_INSTRUCTIONS = [
    "additive 7-point integer scoring system", "The base score is 0", "Add 1 point for each", "0 points for each",
    "task is clearly identifiable", "clear, specific and well-structured", "able to understand the response",
    "significant portion of the question, not necessarily completely", "comprehensively answers the core elements",
    "clearly written, concise, well-organised and helpful", "most likely like the form and style",
    "<Instruction>{instruction}</Instruction>", "<Response>{response}</Response>", "at most 100 words",
    "remembering the score of each criterion", "between <Calculation> and", "1+0+1+0+1+1+0=4",
    "make sure the sum is correct", "from 0 to 7, between <Score> and </Score>", "The format is crucial",
]


def test_challenger_prompt_keeps_every_instruction_of_box_1():
    from langplay.algorithms.lsp import CHALLENGER_PROMPT

    rendered = CHALLENGER_PROMPT.format(task="{task}", template="{template}")
    missing = [text for text in CHALLENGER_INSTRUCTIONS if text not in rendered]
    assert not missing
    filled = CHALLENGER_PROMPT.format(task="Pure & Applied Mathematics", template="Solve {an equation}.")
    assert "'Pure & Applied Mathematics'" in filled and "[Start Generation] 'Solve {an equation}.' [End Generation]" in filled


def test_judge_prompt_keeps_every_instruction_of_box_3():
    from langplay.rewards.self_judge import JUDGE_PROMPT

    rendered = JUDGE_PROMPT.format(instruction="{instruction}", response="{response}")
    assert not [text for text in JUDGE_INSTRUCTIONS if text not in rendered]
    assert all(f"{k}. " in rendered for k in range(1, 8))  # the seven criteria


def test_dataset_subsets_concatenate_and_where_filters(tmp_path, monkeypatch):
    import datasets

    from langplay.data import load_rows
    from langplay.errors import LangplayError

    parts = {"a": [{"q": "1", "kind": "proof"}, {"q": "2", "kind": "number"}], "b": [{"q": "3", "kind": "proof"}]}
    monkeypatch.setattr(datasets, "load_dataset", lambda path, subset, split: datasets.Dataset.from_list(parts[subset]))
    rows = load_rows("hub/name", ["a", "b"], where={"kind": "proof"})
    assert rows["q"] == ["1", "3"]
    assert load_rows("hub/name", ["a", "b"])["q"] == ["1", "2", "3"]
    with pytest.raises(LangplayError, match="no row matches"):
        load_rows("hub/name", "a", where={"kind": "essay"})
    with pytest.raises(LangplayError, match="no column 'type'"):
        load_rows("hub/name", "a", where={"type": "proof"})


def test_every_config_key_explains_itself():
    from langplay.config import describe_config

    rows = describe_config(load_config())
    assert len(rows) > 80
    assert not [key for key, _, _, description in rows if not description.strip()]


def test_config_show_prints_defaults_values_and_descriptions():
    from typer.testing import CliRunner

    from langplay.cli import app

    result = CliRunner().invoke(app, ["config", "show", "--algorithm", "lsp", "lsp.beta=0.1"])
    assert result.exit_code == 0, result.output
    assert "lsp.beta = 0.1  (set)\n    default 0.05. KL(pi || pi_Ref) of whole sequences" in result.output
    assert "grpo.beta" not in result.output and "train.lr = 1e-06" in result.output
    bad = CliRunner().invoke(app, ["config", "show", "--algorithm", "ppo"])
    assert bad.exit_code == 2 and "unknown algorithm 'ppo'" in bad.output
