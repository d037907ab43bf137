"""The training loop end to end on a tiny model: learning, resume, interrupts, bad steps, bad input."""

import json
import math

import pytest

from langplay.config import load_config
from langplay.errors import LangplayError
from langplay.trainer import Trainer


def count_a(prompts, completions, **columns):
    """Reward: fraction of the completion's characters that are 'a'."""
    return [c.count("a") / max(1, len(c)) for c in completions]


def grpo_config(tiny_model, prompt_file, tmp_path, *more):
    return load_config(overrides=[
        f"model.name_or_path={tiny_model}", f"data.path={prompt_file}", f"run.output_dir={tmp_path}/run",
        "train.lr=3e-3", "train.prompts_per_step=4", "grpo.group_size=8", "sampling.max_new_tokens=12",
        "train.micro_batch_size=16", "run.progress=false", *more,
    ])


def test_grpo_raises_a_simple_reward(tiny_model, prompt_file, tmp_path):
    history = Trainer(grpo_config(tiny_model, prompt_file, tmp_path, "train.steps=30"), rewards=[count_a]).train()
    rewards = [h["reward"] for h in history]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.3
    run = tmp_path / "run"
    assert (run / "final" / "model.safetensors").is_file() and (run / "config.yaml").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 30
    sample = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    assert {"prompt", "completion", "reward", "advantage"} <= set(sample)


def test_sft_lowers_the_loss(tiny_model, sft_file, tmp_path):
    config = load_config(overrides=[
        f"model.name_or_path={tiny_model}", f"data.path={sft_file}", f"run.output_dir={tmp_path}/run",
        "algorithm=sft", "train.lr=3e-3", "train.steps=40", "train.prompts_per_step=8", "train.micro_batch_size=3",
        "run.progress=false",
    ])
    history = Trainer(config).train()
    assert history[-1]["nll"] < 0.3 * history[0]["nll"]
    assert all(h["nll"] == pytest.approx(h["loss"]) for h in history)  # micro-batch metrics add up exactly
    assert history[0]["tokens"] == 8 * 4  # three letters and EOS per completion: the prompt carries no loss


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


DETERMINISTIC = ("loss", "reward", "reward_std", "kl", "entropy", "grad_norm", "completion_length")


def test_resume_after_ctrl_c_matches_an_uninterrupted_run(tiny_model, prompt_file, tmp_path):
    straight = Trainer(grpo_config(tiny_model, prompt_file, tmp_path / "a", "train.steps=6", "run.save_every=0"),
                       rewards=[count_a])
    straight.train()

    calls = {"n": 0}

    def interrupting(prompts, completions, **columns):
        calls["n"] += 1
        if calls["n"] == 5:  # inside step 5, after the periodic checkpoint of step 3 and a finished step 4
            raise KeyboardInterrupt
        return count_a(prompts, completions)

    config_b = grpo_config(tiny_model, prompt_file, tmp_path / "b", "train.steps=6", "run.save_every=3")
    with pytest.raises(KeyboardInterrupt):
        Trainer(config_b, rewards=[interrupting]).train()
    checkpoints = sorted(p.name for p in (tmp_path / "b/run/checkpoints").iterdir())
    assert checkpoints == ["step-000003", "step-000004"]  # periodic, then the one written on Ctrl-C

    Trainer(config_b, rewards=[count_a]).train(resume=True)
    a, b = read_metrics(tmp_path / "a/run"), read_metrics(tmp_path / "b/run")
    assert [m["step"] for m in b] == [1, 2, 3, 4, 5, 6]
    for ma, mb in zip(a, b):
        for key in DETERMINISTIC:
            if key in ma:
                assert mb[key] == pytest.approx(ma[key], abs=1e-6), (ma["step"], key)


def test_non_finite_rewards_skip_steps_then_stop_the_run(tiny_model, prompt_file, tmp_path):
    """After a trained step, non-finite rewards skip steps, which change nothing, until train.max_bad_steps stops
    the run (on the first step they are an error of their own: tests/test_run_folder.py)."""
    calls, after_step_1 = [], {}

    def nan_after_step_1(prompts, completions, **columns):
        calls.append(1)
        if len(calls) == 2:  # step 2 scores on the weights step 1 trained
            after_step_1.update({k: v.clone() for k, v in trainer.policy.model.state_dict().items()})
        return count_a(prompts, completions) if len(calls) == 1 else [math.nan] * len(completions)

    trainer = Trainer(grpo_config(tiny_model, prompt_file, tmp_path, "train.steps=10"), rewards=[nan_after_step_1])
    with pytest.warns(UserWarning, match="step skipped"), pytest.raises(LangplayError, match="3 steps in a row"):
        trainer.train()
    assert trainer.step == 4
    after = trainer.policy.model.state_dict()
    assert all((after_step_1[k] == after[k]).all() for k in after)  # skipped steps change nothing


def test_a_raising_reward_function_is_named_with_the_sample(tiny_model, prompt_file, tmp_path):
    def broken_reward(prompts, completions, **columns):
        raise ZeroDivisionError("oops")

    trainer = Trainer(grpo_config(tiny_model, prompt_file, tmp_path, "train.steps=2"), rewards=[broken_reward])
    with pytest.raises(LangplayError, match=r"reward function 'broken_reward' raised ZeroDivisionError: oops .*prompt"):
        trainer.train()


def test_dataset_without_the_columns_lists_the_columns_it_has(tiny_model, sft_file, tmp_path):
    config = grpo_config(tiny_model, sft_file, tmp_path, "data.prompt_column=question")
    with pytest.raises(LangplayError, match="no column 'question'.*it has prompt, completion"):
        Trainer(config, rewards=[count_a])


@pytest.mark.parametrize("algorithm", ["sft", "irl"])
def test_rewards_given_to_an_algorithm_without_rewards_are_an_error(tiny_model, sft_file, tmp_path, algorithm):
    config = load_config(overrides=[f"model.name_or_path={tiny_model}", f"data.path={sft_file}",
                                    f"run.output_dir={tmp_path}/run", f"algorithm={algorithm}"])
    with pytest.raises(LangplayError, match=f"{algorithm} learns from demonstrations and takes no rewards"):
        Trainer(config, rewards=[count_a])


def test_missing_model_and_dataset_are_clear_errors(tiny_model, prompt_file, tmp_path):
    with pytest.raises(LangplayError, match="cannot load tokenizer|cannot load model"):
        Trainer(grpo_config(tmp_path / "nope", prompt_file, tmp_path), rewards=[count_a])
    with pytest.raises(LangplayError, match="dataset file not found"):
        Trainer(grpo_config(tiny_model, tmp_path / "nope.jsonl", tmp_path), rewards=[count_a])


def test_prompts_per_step_must_split_over_processes(tiny_model, prompt_file, tmp_path):
    class TwoProcesses:
        num_processes, process_index, is_main_process = 2, 0, True

    with pytest.raises(LangplayError, match="multiple of 2"):
        Trainer(grpo_config(tiny_model, prompt_file, tmp_path, "train.prompts_per_step=3"),
                rewards=[count_a], accelerator=TwoProcesses())


def test_micro_batch_size_does_not_change_the_update(tiny_model, prompt_file, tmp_path):
    results = []
    for micro in (32, 5):
        trainer = Trainer(grpo_config(tiny_model, prompt_file, tmp_path / str(micro), "train.steps=2",
                                      f"train.micro_batch_size={micro}", "grpo.loss_aggregation=grpo"),
                          rewards=[count_a])
        history = trainer.train()
        results.append((history, trainer.policy.model.state_dict()))
    (h1, w1), (h2, w2) = results
    assert h1[-1]["loss"] == pytest.approx(h2[-1]["loss"], abs=1e-6)
    assert [h["grad_norm"] for h in h1] == pytest.approx([h["grad_norm"] for h in h2], rel=1e-5)
    # 32 keeps each group of 8 whole (its prompt runs once, shared); 5 splits groups (prompts run per row):
    # float rounding differs a little, and AdamW's normalisation amplifies it on near-zero gradients.
    assert all((w1[k] - w2[k]).abs().max() < 1e-4 for k in w1)


def test_the_trainer_names_no_algorithm():
    """Each algorithm owns its contract (dataset columns, reference model, whether it generates): the one loop
    has no per-algorithm branch."""
    from pathlib import Path

    from langplay.config import ALGORITHMS

    source = (Path(__file__).parents[1] / "src" / "langplay" / "trainer.py").read_text()
    assert not [name for name in ALGORITHMS if f'"{name}"' in source or f"'{name}'" in source]


MAX_NEW = 40  # long enough that the random model ends some completions with EOS


def finished_is_the_completions_own(prompts, completions, finished, **_):
    """A reward that checks the `finished` column lines up with its completions: with a character tokenizer a
    completion that ended with EOS has fewer than MAX_NEW characters (a cut one MAX_NEW, or fewer where the random
    model wrote special tokens), and the batch holds both kinds."""
    assert len(finished) == len(completions) and set(finished) <= {True, False}
    assert all(len(c) < MAX_NEW for c, done in zip(completions, finished) if done)
    assert any(finished) and not all(finished)
    return [c.count("a") / max(1, len(c)) for c in completions]


@pytest.mark.parametrize("algorithm", ["grpo", "lsp", "jepo", "irl"])
def test_every_algorithm_that_samples_sees_the_samplers_own_logprobs_and_finished_flags(algorithm, tiny_model,
                                                                                        prompt_file, sft_file, tmp_path):
    """With the transformers sampler in fp32 the sampler's log-probs are the trainer's: the logged mismatch is ~0
    for every algorithm that samples, which it would not be if its rows were laid out a token or a row off; and
    the rewards see each completion's own `finished` flag."""
    reward = [finished_is_the_completions_own] if algorithm in ("grpo", "lsp", "jepo") else None
    more = {"grpo": ["grpo.group_size=2"], "lsp": ["lsp.group_size=2", "lsp.challenger_prompt=Write a task."],
            "jepo": ["jepo.group_size=2", "jepo.answer_marker=a"],
            "irl": [f"data.path={sft_file}", "irl.online_fraction=0.5"]}[algorithm]
    config = load_config(overrides=[
        f"algorithm={algorithm}", f"model.name_or_path={tiny_model}", f"data.path={prompt_file}",
        f"run.output_dir={tmp_path}/run", "train.steps=1", "train.prompts_per_step=4", "train.precision=fp32",
        f"sampling.max_new_tokens={MAX_NEW}", "run.progress=false", *more])
    history = Trainer(config, rewards=reward).train()
    assert 0 <= history[0]["sampler_mismatch"] < 1e-5


def test_grpo_sees_the_samplers_own_logprobs_row_by_row(tiny_model, prompt_file, tmp_path):
    """The HF sampler's log-probs are the policy's (fp32): the logged mismatch is ~0, which it would not be if
    they were laid out a token off. Under sampling.correction=ppo the ratio is then 1 and the update the same."""
    plain = Trainer(grpo_config(tiny_model, prompt_file, tmp_path / "a", "train.steps=1", "train.precision=fp32",
                                "sampling.correction=none"), rewards=[count_a]).train()
    ppo = Trainer(grpo_config(tiny_model, prompt_file, tmp_path / "b", "train.steps=1", "train.precision=fp32",
                              "sampling.correction=ppo"), rewards=[count_a]).train()
    assert plain[0]["sampler_mismatch"] < 1e-5 and ppo[0]["sampler_mismatch"] < 1e-5
    assert ppo[0]["loss"] == pytest.approx(plain[0]["loss"], abs=1e-5)
    assert ppo[0]["grad_norm"] == pytest.approx(plain[0]["grad_norm"], rel=1e-4)
