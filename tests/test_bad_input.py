"""The bad-input matrix: each case through the CLI exits 2 with one line on stderr, no traceback, naming what to
fix; where the run folder already held a run, it is byte for byte unchanged."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from langplay.cli import app
from test_http_judge import closed_port
from test_run_folder import snapshot

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    """Files for every case, and a finished run (with a checkpoint) that no bad command may touch."""
    root = tmp_path_factory.mktemp("bad")
    files = {}

    def write(name, text, mode="w"):
        path = root / name
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        files[name] = path
        return path

    write("prompts.jsonl", "".join(json.dumps({"prompt": f"say {c}", "answer": c}) + "\n" for c in "abcd"))
    write("sft.jsonl", "".join(json.dumps({"prompt": f"say {c}", "completion": c * 3}) + "\n" for c in "abcd"))
    write("empty.jsonl", "")
    write("broken.jsonl", '{"prompt": "a"}\n{"prompt": "b"\n{"prompt": "c"}\n')
    write("list.jsonl", '[1, 2]\n')
    write("int_prompts.jsonl", "".join(json.dumps({"prompt": i, "answer": "x"}) + "\n" for i in range(4)))
    write("null_prompts.jsonl", '{"prompt": "a", "answer": "x"}\n{"prompt": null, "answer": "x"}\n')
    write("null_completions.jsonl", '{"prompt": "a", "completion": "x"}\n{"prompt": "b", "completion": null}\n')
    write("chat_user_last.jsonl", json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    write("no_boxed.jsonl", "".join(json.dumps({"prompt": "q", "answer": "7"}) + "\n" for _ in range(4)))
    write("binary.yaml", bytes(range(256)))
    write("list.yaml", "- a\n- b\n")
    write("invalid.yaml", "train: {steps: [\n")
    write("irl.yaml", "algorithm: irl\n")
    write("syntax_reward.py", "def r(prompts, completions\n")
    write("raising_reward.py", "raise RuntimeError('at import')\n")
    write("rewards.py", "\n".join([
        "def wrong_count(prompts, completions, **_):\n    return [0.0]",
        "def raises(prompts, completions, **_):\n    raise KeyError('boom')",
        "def strings(prompts, completions, **_):\n    return ['good'] * len(completions)",
        "def nan(prompts, completions, **_):\n    return [float('nan')] * len(completions)",
        "def none(prompts, completions, **_):\n    return [None] * len(completions)",
        "not_callable = 3",
    ]) + "\n")
    write("a_file", "not a folder")
    broken_model = root / "broken_model"
    broken_model.mkdir()
    for item in Path(tiny_model).iterdir():
        (broken_model / item.name).write_bytes(item.read_bytes())
    weights = broken_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    files["broken_model"] = broken_model
    no_config = root / "no_config"
    no_config.mkdir()
    files["no_config"] = no_config
    from langplay.testing import save_tiny_model

    files["wide_model"] = save_tiny_model(root / "wide", hidden=96)
    run = root / "run"
    result = runner.invoke(app, ["train", "grpo", f"model.name_or_path={tiny_model}", f"data.path={files['prompts.jsonl']}",
                                 f"run.output_dir={run}", "train.steps=1", "train.prompts_per_step=2",
                                 "grpo.group_size=2", "sampling.max_new_tokens=4", "run.progress=false",
                                 "grpo.rewards=[{kind: exact_match}]"])
    assert result.exit_code == 0, result.output
    damaged = {}
    for kind in ("truncated_model", "truncated_optimizer", "garbage_state", "missing_rng"):
        copy = root / f"run_{kind}"
        shutil.copytree(run, copy)
        checkpoint = next((copy / "checkpoints").iterdir())
        if kind == "truncated_model":
            w = checkpoint / "model" / "model.safetensors"
            w.write_bytes(w.read_bytes()[:100])
        elif kind == "truncated_optimizer":
            (checkpoint / "optimizer.safetensors").write_bytes(b"\0" * 10)
        elif kind == "garbage_state":
            (checkpoint / "state.json").write_text("{{{")
        else:
            (checkpoint / "rng.safetensors").unlink()
        damaged[kind] = copy
    return {"root": root, "files": files, "run": run, "damaged": damaged, "tiny": tiny_model}


def base_args(w, algorithm="grpo", data="prompts.jsonl", run=None, model=None):
    return ["train", algorithm, f"model.name_or_path={model or w['tiny']}", f"data.path={w['files'][data]}",
            f"run.output_dir={run or w['run']}", "train.steps=1", "train.prompts_per_step=2", "run.progress=false",
            "sampling.max_new_tokens=4", *(["grpo.group_size=2"] if algorithm == "grpo" else []),
            *(["jepo.group_size=2"] if algorithm == "jepo" else [])]


def reward(w, spec):
    return f"grpo.rewards=[{{kind: function, function: '{spec}'}}]"


F = lambda w, name: w["files"][name]  # noqa: E731


def winrate(w, model="tiny", baseline="tiny", judge=()):
    """`langplay eval winrate` on the world's prompts; every case fails before a model is loaded."""
    models = {"--model": w["tiny"] if model == "tiny" else model, "--baseline": w["tiny"] if baseline == "tiny" else baseline}
    return (["eval", "winrate", "--data", F(w, "prompts.jsonl"), "--output", w["root"] / "winrate"]
            + [a for flag, value in models.items() if value is not None for a in (flag, value)] + list(judge))


def evaluation(w, command, *options, data="prompts.jsonl"):
    """`langplay eval COMMAND` on the tiny model and a data file, into a folder of its own."""
    return ["eval", command, "--model", w["tiny"], "--data", F(w, data), "--output", w["root"] / f"eval-{command}",
            "--max-new-tokens", "2", *options]


CASES = {
    # -- config keys and values
    "unknown key": (lambda w: base_args(w) + ["train.lrr=1"], "unknown key 'train.lrr'"),
    "unknown section": (lambda w: base_args(w) + ["trian.lr=1"], "unknown key 'trian'"),
    "not a number": (lambda w: base_args(w) + ["train.lr=abc"], "train.lr"),
    "negative lr": (lambda w: base_args(w) + ["train.lr=-1"], "train.lr"),
    "zero steps": (lambda w: base_args(w) + ["train.steps=0"], "train.steps"),
    "group of one": (lambda w: base_args(w) + ["grpo.group_size=1"], "grpo.group_size"),
    "bad aggregation": (lambda w: base_args(w) + ["grpo.loss_aggregation=mean"], "grpo.loss_aggregation"),
    "bad kl estimator": (lambda w: base_args(w) + ["grpo.kl_estimator=k9"], "grpo.kl_estimator"),
    "moved key": (lambda w: base_args(w) + ["grpo.sampler_correction=tis"], "is now 'sampling.correction'"),
    "temperature zero": (lambda w: base_args(w) + ["sampling.temperature=0"], "sampling.temperature"),
    "top_p above one": (lambda w: base_args(w) + ["sampling.top_p=2"], "sampling.top_p"),
    "bad backend": (lambda w: base_args(w) + ["sampling.backend=tgi"], "sampling.backend"),
    "bad precision": (lambda w: base_args(w) + ["train.precision=fp8"], "train.precision"),
    "bad sharding": (lambda w: base_args(w) + ["train.sharding=zero3"], "train.sharding"),
    "fsdp2 without torchrun": (lambda w: base_args(w) + ["train.sharding=fsdp2", "grpo.rewards=[{kind: exact_match}]"],
                               "torchrun"),
    "bf16 over float64": (lambda w: base_args(w) + ["train.precision=bf16", "model.dtype=float64",
                                                    "grpo.rewards=[{kind: exact_match}]"], "train.precision=bf16"),
    "bad dtype": (lambda w: base_args(w) + ["model.dtype=int8"], "model.dtype"),
    "not key=value": (lambda w: base_args(w) + ["nonsense"], "is not key=value"),
    "empty key": (lambda w: base_args(w) + ["=3"], "is not key=value"),
    "override into a value": (lambda w: base_args(w) + ["train.lr.x=1"], "train.lr"),
    "reward without kind": (lambda w: base_args(w) + ["grpo.rewards=[{weight: 1}]"], "kind"),
    "function reward without function": (lambda w: base_args(w) + ["grpo.rewards=[{kind: function}]"], "needs function"),
    "reward model without model": (lambda w: base_args(w) + ["grpo.rewards=[{kind: reward_model}]"], "needs model"),
    "bad reward kind": (lambda w: base_args(w) + ["grpo.rewards=[{kind: oracle}]"], "grpo.rewards"),
    "online irl at gamma 1": (lambda w: base_args(w, "irl", "sft.jsonl") + ["irl.online_fraction=0.2", "irl.gamma=1"],
                              "irl.gamma=1"),
    "lsp beta negative": (lambda w: base_args(w, "lsp") + ["lsp.beta=-1"], "lsp.beta"),
    "jepo bad estimator": (lambda w: base_args(w, "jepo") + ["jepo.estimator=triple"], "jepo.estimator"),
    # -- config files and the command line
    "unknown algorithm": (lambda w: ["train", "ppo"], "unknown algorithm 'ppo'"),
    "missing config file": (lambda w: ["train", "grpo", "--config", str(w["root"] / "missing.yaml")], "config file not found"),
    "binary config file": (lambda w: ["train", "grpo", "--config", str(F(w, "binary.yaml"))], "not UTF-8 text"),
    "config file of a list": (lambda w: ["train", "grpo", "--config", str(F(w, "list.yaml"))], "must hold a mapping"),
    "invalid yaml": (lambda w: ["train", "grpo", "--config", str(F(w, "invalid.yaml"))], "is not valid YAML"),
    "file names another algorithm": (lambda w: ["train", "sft", "--config", str(F(w, "irl.yaml"))], "sets algorithm: irl"),
    "override names another algorithm": (lambda w: base_args(w, "sft", "sft.jsonl") + ["algorithm=grpo"], "sets algorithm: grpo"),
    # -- models
    "no model": (lambda w: ["train", "grpo", f"data.path={F(w, 'prompts.jsonl')}"], "set model.name_or_path"),
    "model folder missing": (lambda w: base_args(w, model=w["root"] / "nope"), "cannot load"),
    "truncated model weights": (lambda w: base_args(w, model=F(w, "broken_model"), run=w["root"] / "r1"), "cannot load model"),
    "model folder without config": (lambda w: base_args(w, model=F(w, "no_config"), run=w["root"] / "r2"), "cannot load"),
    "cuda without cuda": (lambda w: base_args(w, run=w["root"] / "r3") + ["model.device=cuda"], "no CUDA device"),
    "generation beyond the context": (lambda w: base_args(w, run=w["root"] / "r4") + ["sampling.max_new_tokens=100000",
                                                                                   "grpo.rewards=[{kind: exact_match}]"],
                                      "does not fit the model's context"),
    # -- data
    "no data": (lambda w: ["train", "grpo", f"model.name_or_path={w['tiny']}"], "no dataset given"),
    "data file missing": (lambda w: base_args(w) + [f"data.path={w['root'] / 'nope.jsonl'}"], "dataset file not found"),
    "empty data file": (lambda w: base_args(w, data="empty.jsonl"), "is empty"),
    "broken jsonl line": (lambda w: base_args(w, data="broken.jsonl"), "line 2: not valid JSON"),
    "jsonl row not an object": (lambda w: base_args(w, data="list.jsonl"), "line 1: a row must be a JSON object"),
    "missing prompt column": (lambda w: base_args(w) + ["data.prompt_column=question"], "no column 'question'"),
    "integer prompts": (lambda w: base_args(w, data="int_prompts.jsonl", run=w["root"] / "r5"), "row 0: column 'prompt' holds 0"),
    "null prompts": (lambda w: base_args(w, data="null_prompts.jsonl", run=w["root"] / "r6"), "row 1: column 'prompt' holds null"),
    "irl null completions": (lambda w: base_args(w, "irl", "null_completions.jsonl", run=w["root"] / "r7"),
                             "row 1: column 'completion' holds null"),
    "sft missing completion column": (lambda w: base_args(w, "sft", "prompts.jsonl"), "no column 'completion'"),
    "chat ending on the user": (lambda w: base_args(w, "sft", "chat_user_last.jsonl", run=w["root"] / "r8")
                                + ["data.messages_column=messages"], "the last message must be the assistant's"),
    "where matches nothing": (lambda w: base_args(w) + ["data.where={answer: zzz}"], "no row matches"),
    "where on a missing column": (lambda w: base_args(w) + ["data.where={kind: x}"], "no column 'kind'"),
    "jepo answers without boxed": (lambda w: base_args(w, "jepo", "no_boxed.jsonl", run=w["root"] / "r9")
                                   + ["jepo.answer_format=boxed"], "no \\boxed"),
    "jepo missing answer column": (lambda w: base_args(w, "jepo") + ["jepo.answer_column=gold"], "gold"),
    "verifier missing answer column": (lambda w: base_args(w) + ["grpo.rewards=[{kind: exact_match, answer_column: gold}]"],
                                       "gold"),
    # -- rewards
    "no reward": (lambda w: base_args(w, run=w["root"] / "r10"), "no reward given"),
    "malformed function spec": (lambda w: base_args(w) + [reward(w, "no_colon")], "must look like 'module:name'"),
    "reward file missing": (lambda w: base_args(w) + [reward(w, f"{w['root']}/nope.py:r")], "reward function file not found"),
    "reward file with a syntax error": (lambda w: base_args(w) + [reward(w, f"{F(w, 'syntax_reward.py')}:r")], "SyntaxError"),
    "reward file raising at import": (lambda w: base_args(w) + [reward(w, f"{F(w, 'raising_reward.py')}:r")], "at import"),
    "reward module missing": (lambda w: base_args(w) + [reward(w, "no_such_module_xyz:r")], "cannot import reward module"),
    "reward not callable": (lambda w: base_args(w) + [reward(w, f"{F(w, 'rewards.py')}:not_callable")], "no callable"),
    "reward returns the wrong count": (lambda w: base_args(w, run=w["root"] / "r13") + [reward(w, f"{F(w, 'rewards.py')}:wrong_count")],
                                       "returned 1 values for 4 completions"),
    "reward raises": (lambda w: base_args(w, run=w["root"] / "r14") + [reward(w, f"{F(w, 'rewards.py')}:raises")], "raised KeyError"),
    "reward returns strings": (lambda w: base_args(w, run=w["root"] / "r15") + [reward(w, f"{F(w, 'rewards.py')}:strings")], "expected a number"),
    "http judge without url": (lambda w: base_args(w) + ["grpo.rewards=[{kind: http_judge, model: judge}]"], "needs url"),
    "http judge unreachable": (lambda w: base_args(w, run=w["root"] / "r17") + [
        f"grpo.rewards=[{{kind: http_judge, url: 'http://127.0.0.1:{closed_port()}/v1', model: judge}}]",
        "http_judge.retries=1", "http_judge.backoff_s=0.01"], "unreachable after 2 tries: connection refused"),
    "reward returns nan": (lambda w: base_args(w, run=w["root"] / "r16") + [reward(w, f"{F(w, 'rewards.py')}:nan"), "train.steps=5"],
                           "the rewards of step 1 are not numbers (reward=nan, reward/nan=nan)"),
    "reward returns none": (lambda w: base_args(w, run=w["root"] / "r18") + [reward(w, f"{F(w, 'rewards.py')}:none"), "train.steps=5"],
                            "a reward function returned None, NaN or inf"),
    # -- run folders, resume, trackers
    "output path is a file": (lambda w: base_args(w, run=F(w, "a_file")) + ["grpo.rewards=[{kind: exact_match}]"], "is a file"),
    "new run in a used folder": (lambda w: base_args(w) + ["grpo.rewards=[{kind: exact_match}]"], "already holds a run"),
    "resume with nothing to resume": (lambda w: base_args(w, run=w["root"] / "r11") + ["grpo.rewards=[{kind: exact_match}]",
                                                                                      "--resume"], "nothing to resume"),
    "resume a truncated model": (lambda w: base_args(w, run=w["damaged"]["truncated_model"])
                                 + ["grpo.rewards=[{kind: exact_match}]", "train.steps=2", "--resume"], "cannot resume from checkpoint"),
    "resume a truncated optimizer": (lambda w: base_args(w, run=w["damaged"]["truncated_optimizer"])
                                     + ["grpo.rewards=[{kind: exact_match}]", "train.steps=2", "--resume"], "cannot resume"),
    "resume garbage state": (lambda w: base_args(w, run=w["damaged"]["garbage_state"])
                             + ["grpo.rewards=[{kind: exact_match}]", "train.steps=2", "--resume"], "cannot resume"),
    "resume without rng": (lambda w: base_args(w, run=w["damaged"]["missing_rng"])
                           + ["grpo.rewards=[{kind: exact_match}]", "train.steps=2", "--resume"], "cannot resume"),
    "resume another architecture": (lambda w: base_args(w, model=F(w, "wide_model")) + ["grpo.rewards=[{kind: exact_match}]",
                                                                                      "train.steps=2", "--resume"], "cannot resume"),
    "tracker not installed": (lambda w: base_args(w, run=w["root"] / "r12") + ["grpo.rewards=[{kind: exact_match}]",
                                                                             "run.trackers=[wandb]"], "not installed"),
    "bad tracker": (lambda w: base_args(w) + ["run.trackers=[mlflow]"], "run.trackers"),
    "rewards to sft in python only": (lambda w: base_args(w, "sft", "sft.jsonl") + ["sft.max_length=0"], "sft.max_length"),
    # -- other commands
    "eval of a missing model": (lambda w: ["eval", "tinyworld", "--model", str(w["root"] / "nope")],
                                "model folder not found"),
    "reward command with a missing data file": (lambda w: ["reward", "--model", str(w["tiny"]), "--data",
                                                           str(w["root"] / "nope.jsonl")], "not found"),
    # -- eval winrate
    "winrate without a model": (lambda w: winrate(w, model=None, judge=["--reward-model", w["tiny"]]), "no model given"),
    "winrate without a judge": (lambda w: winrate(w), "no judge given"),
    "winrate with two judges": (lambda w: winrate(w, judge=["--judge", w["tiny"], "--reward-model", w["tiny"]]),
                                "two judges given (--judge and --reward-model)"),
    "winrate judge url without its model": (lambda w: winrate(w, judge=["--judge-url", "http://localhost:1/v1"]),
                                            "--judge-url and --judge-model go together"),
    "winrate missing prompt column": (lambda w: winrate(w, judge=["--judge", w["tiny"], "--prompt-column", "question"]),
                                      "no column 'question'"),
    "winrate missing subset column": (lambda w: winrate(w, judge=["--judge", w["tiny"], "--subset-column", "kind"]),
                                      "no column 'kind'"),
    "winrate missing model folder": (lambda w: winrate(w, model=w["root"] / "nope", judge=["--judge", w["tiny"]]),
                                     "model folder not found"),
    "winrate baseline is a file": (lambda w: winrate(w, baseline=F(w, "a_file"), judge=["--judge", w["tiny"]]),
                                   "is a file, not a model folder"),
    "winrate unknown preset": (lambda w: winrate(w) + ["--preset", "nope"], "unknown evaluation preset 'nope'"),
    # -- eval accuracy / likelihood / diversity
    "eval accuracy with an unknown verifier": (lambda w: evaluation(w, "accuracy", "--verifier", "regex"),
                                               "unknown verifier 'regex'"),
    "eval accuracy without a verifier": (lambda w: evaluation(w, "accuracy"), "no verifier given: set --verifier"),
    "eval accuracy missing the answer column": (lambda w: evaluation(w, "accuracy", "--verifier", "exact_match",
                                                                     "--answer-column", "gold"), "no column 'gold'"),
    "eval accuracy missing the subset column": (lambda w: evaluation(w, "accuracy", "--verifier", "exact_match",
                                                                     "--subset-column", "level"), "no column 'level'"),
    "eval accuracy at temperature 0": (lambda w: evaluation(w, "accuracy", "--verifier", "exact_match", "--samples",
                                                            "2", "--temperature", "0"), "temperature must be > 0"),
    "eval accuracy with an unknown answer format": (lambda w: evaluation(w, "accuracy", "--verifier", "exact_match",
                                                                         "--answer-format", "latex"),
                                                    "unknown answer format 'latex'"),
    "eval likelihood missing the question column": (lambda w: evaluation(w, "likelihood", "--question-column",
                                                                         "question"), "no column 'question'"),
    "eval likelihood answers without boxed": (lambda w: evaluation(w, "likelihood", "--answer-format", "boxed",
                                                                   data="no_boxed.jsonl"), "no \\boxed"),
    "eval likelihood without a model": (lambda w: ["eval", "likelihood", "--data", str(F(w, "prompts.jsonl"))],
                                        "no model given: set --model"),
    "eval diversity with a bad temperature list": (lambda w: evaluation(w, "diversity", "--temperatures", "0.5,hot"),
                                                   "--temperatures must be"),
    "eval diversity with one sample": (lambda w: evaluation(w, "diversity", "--samples", "1"),
                                       "--samples must be >= 2"),
    "eval diversity with an unknown verifier": (lambda w: evaluation(w, "diversity", "--verifier", "bleu"),
                                                "unknown verifier 'bleu'"),
    "eval preset of another command": (lambda w: evaluation(w, "likelihood", "--preset", "eval_jepo_math"),
                                       "is for `langplay eval accuracy`"),
    "eval accuracy of a missing model folder": (lambda w: ["eval", "accuracy", "--model", w["root"] / "nope", "--data",
                                                           F(w, "prompts.jsonl"), "--verifier", "exact_match"],
                                                "model folder not found"),
    "eval with an unknown backend": (lambda w: evaluation(w, "diversity", "--backend", "tgi"), "unknown backend 'tgi'"),
    "training on an evaluation preset": (lambda w: ["train", "grpo", "--config", "eval_jepo_math"],
                                         "is an evaluation"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_loses_nothing(world, case):
    build, expected = CASES[case]
    before = snapshot(world["run"])
    result = runner.invoke(app, [str(a) for a in build(world)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output[-2000:], repr(result.exception))
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    assert expected in lines[0], lines[0]
    assert snapshot(world["run"]) == before  # the finished run's folder, byte for byte


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 60
