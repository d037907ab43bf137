"""The command line: help, training, resume, evaluation, and one-line errors with exit code 2."""

import json

from typer.testing import CliRunner

from langplay.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    assert all(name in result.output for name in ("train", "eval", "demo"))


def test_bad_config_values_are_one_line_exit_2(tiny_model, prompt_file, tmp_path):
    cases = {
        "train.lrr=1": "unknown key 'train.lrr' (allowed here: steps,",
        "train.lr=abc": "train.lr: Input should be a valid number",
        "grpo.loss_aggregation=mean": "Input should be 'grpo', 'bnpo', 'dr_grpo' or 'dapo'",
        "nonsense": "is not key=value",
    }
    for override, message in cases.items():
        result = invoke("train", "grpo", f"model.name_or_path={tiny_model}", override)
        assert result.exit_code == 2, override
        assert message in result.output and result.output.count("\n") == 1, result.output


def test_unknown_algorithm_and_missing_config_file(tmp_path):
    result = invoke("train", "ppo")
    assert result.exit_code == 2 and "unknown algorithm 'ppo'" in result.output
    result = invoke("train", "grpo", "--config", tmp_path / "missing.yaml")
    assert result.exit_code == 2 and "config file not found" in result.output


def test_the_command_line_algorithm_is_never_overridden_by_the_file(tmp_path):
    """`langplay train grpo --config lsp.yaml` used to train LSP without a word."""
    from pathlib import Path

    preset = "lsp_tinyworld"  # a packaged preset, by name
    result = invoke("train", "grpo", "--config", preset, f"run.output_dir={tmp_path}/run")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "sets algorithm: lsp" in result.output and "langplay train lsp" in result.output
    assert not (tmp_path / "run").exists()
    result = invoke("train", "sft", "algorithm=irl")
    assert result.exit_code == 2 and "sets algorithm: irl" in result.output


def test_missing_model_is_a_clear_error(prompt_file):
    result = invoke("train", "grpo", f"data.path={prompt_file}")
    assert result.exit_code == 2 and "set model.name_or_path" in result.output


def test_train_from_a_yaml_file_then_resume_then_eval(tiny_model, sft_file, prompt_file, tmp_path):
    config = tmp_path / "sft.yaml"
    config.write_text(
        f"model: {{name_or_path: {tiny_model}}}\ndata: {{path: {sft_file}}}\n"
        f"train: {{steps: 3, lr: 0.003, prompts_per_step: 4}}\nrun: {{output_dir: {tmp_path}/run, progress: false}}\n"
    )
    result = invoke("train", "sft", "--config", config)
    assert result.exit_code == 0, result.output
    assert "done: 3 steps" in result.output
    result = invoke("train", "sft", "--config", config, "train.steps=5", "--resume")
    assert result.exit_code == 0, result.output
    steps = [json.loads(l)["step"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    report = tmp_path / "report.json"
    result = invoke("eval", "rewards", "--model", tmp_path / "run" / "final", f"data.path={prompt_file}", "--output", report,
                    "grpo.rewards=[{kind: exact_match}]", "sampling.max_new_tokens=4")
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["samples"] == 8


def test_resume_without_a_checkpoint_says_so(tiny_model, sft_file, tmp_path):
    result = invoke("train", "sft", f"model.name_or_path={tiny_model}", f"data.path={sft_file}",
                    f"run.output_dir={tmp_path}/empty", "--resume")
    assert result.exit_code == 2 and "nothing to resume" in result.output


def test_periodic_evaluation_runs_from_the_command_line(tiny_model, sft_file, prompt_file, tmp_path):
    """run.eval_every with data.eval_path: the config's rewards on held-out prompts (GRPO), the held-out NLL of
    demonstrations (SFT), logged as eval/*; without held-out data it is a one-line error, not silently nothing."""
    common = [f"model.name_or_path={tiny_model}", "train.steps=2", "train.prompts_per_step=2", "run.progress=false",
              "run.eval_every=1", "sampling.max_new_tokens=4"]
    result = invoke("train", "grpo", *common, f"data.path={prompt_file}", f"data.eval_path={prompt_file}",
                    "grpo.group_size=2", "grpo.rewards=[{kind: exact_match}]", f"run.output_dir={tmp_path}/grpo")
    assert result.exit_code == 0, result.output
    metrics = [json.loads(l) for l in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= m["eval/reward"] <= 1 and "eval/reward/exact_match" in m for m in metrics)
    result = invoke("train", "sft", *common, f"data.path={sft_file}", f"data.eval_path={sft_file}",
                    "train.lr=1e-2", f"run.output_dir={tmp_path}/sft")
    assert result.exit_code == 0, result.output
    nll = [json.loads(l)["eval/nll"] for l in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert len(nll) == 2 and nll[1] < nll[0]  # the held-out NLL of the demonstrations falls as SFT trains
    result = invoke("train", "sft", *common, f"data.path={sft_file}", f"run.output_dir={tmp_path}/none")
    assert result.exit_code == 2 and "run.eval_every needs held-out data" in result.output


def test_the_cli_prints_a_warning_as_one_line():
    import warnings

    from langplay import cli

    before = warnings.formatwarning
    try:
        cli.quiet_libraries()
        text = warnings.formatwarning("step 1: non-finite loss", UserWarning, "/x/trainer.py", 239, "warn(...)")
    finally:
        warnings.formatwarning = before
    assert text == "warning: step 1: non-finite loss\n"
