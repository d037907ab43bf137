"""A run folder is never lost: reuse refused, nothing written by a run that fails early, checkpoints that a
kill at any moment leaves whole, damaged checkpoints reported in one line."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from langplay.checkpoint import list_checkpoints, save_checkpoint
from langplay.config import load_config
from langplay.errors import LangplayError
from langplay.trainer import Trainer
from reward_functions import count_a


def config(tiny_model, prompt_file, run, *more):
    return load_config(overrides=[
        f"model.name_or_path={tiny_model}", f"data.path={prompt_file}", f"run.output_dir={run}", "train.steps=2",
        "train.prompts_per_step=2", "grpo.group_size=2", "sampling.max_new_tokens=4", "run.progress=false", *more,
    ])


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_run_never_touches_a_folder_that_holds_a_run(tiny_model, prompt_file, tmp_path):
    run = tmp_path / "run"
    Trainer(config(tiny_model, prompt_file, run), rewards=[count_a]).train()
    before = snapshot(run)
    with pytest.raises(LangplayError, match="already holds a run: --resume continues it, --overwrite"):
        Trainer(config(tiny_model, prompt_file, run, "train.lr=1e-2"), rewards=[count_a]).train()
    assert snapshot(run) == before  # byte for byte
    Trainer(config(tiny_model, prompt_file, run, "run.overwrite=true", "train.steps=1"), rewards=[count_a]).train()
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert json.loads((run / "run.json").read_text())["precision"] in ("fp32", "bf16")


@pytest.mark.parametrize("failure", ["raises", "wrong_count"])
def test_a_run_that_fails_before_its_first_step_ends_writes_nothing(tiny_model, prompt_file, tmp_path, failure):
    def bad(prompts, completions, **columns):
        if failure == "raises":
            raise ValueError("no")
        return [0.0]

    run = tmp_path / "run"
    with pytest.raises(LangplayError):
        Trainer(config(tiny_model, prompt_file, run), rewards=[bad]).train()
    assert not run.exists() or not any(run.iterdir())
    Trainer(config(tiny_model, prompt_file, run), rewards=[count_a]).train()  # and the folder is free to use


@pytest.mark.parametrize("value", [None, math.nan])
def test_rewards_that_are_not_numbers_stop_the_first_step_and_write_nothing(tiny_model, prompt_file, tmp_path, value):
    def not_a_number(prompts, completions, **columns):
        return [value] * len(completions)

    run = tmp_path / "run"
    with pytest.raises(LangplayError, match=r"the rewards of step 1 are not numbers \(reward=nan, "
                                            r"reward/not_a_number=nan\): a reward function returned None") as error:
        Trainer(config(tiny_model, prompt_file, run, "run.save_every=1"), rewards=[not_a_number]).train()
    assert "\n" not in str(error.value)
    assert not run.exists() or not any(run.iterdir())
    Trainer(config(tiny_model, prompt_file, run), rewards=[count_a]).train()  # the corrected run needs no --overwrite


def left_by_a_run_that_skipped_every_step(tiny_model, prompt_file, run: Path) -> None:
    """The folder an earlier langplay left when every step was skipped: config, metrics and checkpoints, each
    step logged (and saved) as skipped, no final/."""
    Trainer(config(tiny_model, prompt_file, run, "train.steps=3", "run.save_every=1"), rewards=[count_a]).train()
    shutil.rmtree(run / "final")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps({**m, "loss": math.nan, "skipped": 1.0}) + "\n"
                                               for m in lines))
    for checkpoint in list_checkpoints(run / "checkpoints"):
        state = json.loads((checkpoint / "state.json").read_text())
        (checkpoint / "state.json").write_text(json.dumps({**state, "bad_steps": state["step"]}))


def interrupted_in_its_first_step(tiny_model, prompt_file, run: Path) -> None:
    def interrupting(prompts, completions, **columns):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(config(tiny_model, prompt_file, run), rewards=[interrupting]).train()
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000000"]


@pytest.mark.parametrize("leftover", [left_by_a_run_that_skipped_every_step, interrupted_in_its_first_step],
                         ids=lambda f: f.__name__)
def test_a_folder_whose_run_trained_no_step_does_not_block_a_new_run(tiny_model, prompt_file, tmp_path, leftover):
    run = tmp_path / "run"
    leftover(tiny_model, prompt_file, run)
    with pytest.warns(UserWarning, match="trained no step: replacing"):
        Trainer(config(tiny_model, prompt_file, run), rewards=[count_a]).train()  # no --overwrite
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["skipped"]) for m in metrics] == [(1, 0.0), (2, 0.0)]  # replaced, not appended to
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000002"] and (run / "final").is_dir()


def a_final(run: Path) -> None:
    shutil.copytree(list_checkpoints(run / "checkpoints")[-1] / "model", run / "final")


def a_trained_checkpoint(run: Path) -> None:
    state = list_checkpoints(run / "checkpoints")[-1] / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "bad_steps": 1}))


def a_trained_logged_step(run: Path) -> None:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:-1] + [lines[-1].replace('"skipped": 1.0', '"skipped": 0.0')]))


def a_config_with_no_step_recorded(run: Path) -> None:  # e.g. log_every=10 and a crash at step 5
    shutil.rmtree(run / "checkpoints")
    (run / "metrics.jsonl").unlink()


def an_unreadable_metrics_line(run: Path) -> None:
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "lo')


@pytest.mark.parametrize("evidence", [a_final, a_trained_checkpoint, a_trained_logged_step,
                                      a_config_with_no_step_recorded, an_unreadable_metrics_line],
                         ids=lambda f: f.__name__)
def test_a_folder_that_may_hold_a_trained_step_is_a_run(tiny_model, prompt_file, tmp_path, evidence):
    """In doubt, a folder holds a run: only proof that no step trained lets a new run replace it."""
    run = tmp_path / "run"
    left_by_a_run_that_skipped_every_step(tiny_model, prompt_file, run)
    evidence(run)
    before = snapshot(run)
    with pytest.raises(LangplayError, match="already holds a run"):
        Trainer(config(tiny_model, prompt_file, run), rewards=[count_a]).train()
    assert snapshot(run) == before


def test_an_output_path_that_is_a_file_is_a_clear_error(tiny_model, prompt_file, tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(LangplayError, match="is a file"):
        Trainer(config(tiny_model, prompt_file, tmp_path / "file"), rewards=[count_a]).train()
    assert (tmp_path / "file").read_text() == "mine"


def test_resume_cuts_samples_and_metrics_back_to_the_checkpoint(tiny_model, prompt_file, tmp_path):
    run = tmp_path / "run"
    Trainer(config(tiny_model, prompt_file, run, "train.steps=3", "run.save_every=2"), rewards=[count_a]).train()
    checkpoints = run / "checkpoints"
    for late in list_checkpoints(checkpoints)[1:]:  # keep step 2 only, as if killed after step 3 was logged
        os.rename(late, late.with_name(".gone"))
    with (run / "samples.jsonl").open("a") as f:
        f.write('{"step": 3, "broken')  # a line cut by the kill
    Trainer(config(tiny_model, prompt_file, run, "train.steps=3", "run.save_every=2"), rewards=[count_a]).train(resume=True)
    metrics = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [1, 2, 3]
    samples = [json.loads(l)["step"] for l in (run / "samples.jsonl").read_text().splitlines()]
    assert samples == sorted(samples) and set(samples) == {1, 2, 3}
    assert samples.count(1) == samples.count(3)  # step 3's samples once, not twice


class Killed(BaseException):
    pass


def test_a_kill_while_rotating_never_leaves_a_listed_checkpoint_without_weights(tiny_model, prompt_file, tmp_path,
                                                                                 monkeypatch):
    run = tmp_path / "run"
    trainer = Trainer(config(tiny_model, prompt_file, run, "train.steps=2", "run.save_every=1", "run.keep_checkpoints=1"),
                      rewards=[count_a])
    trainer.train()
    directory = run / "checkpoints"
    real_rmtree = shutil.rmtree
    calls = {"n": 0}

    def dies_halfway(path, *args, **kw):  # deleting a folder: one file goes, then the process "dies"
        if not Path(path).exists():
            return real_rmtree(path, *args, **kw)
        calls["n"] += 1
        next(p for p in Path(path).rglob("*") if p.is_file()).unlink()
        raise Killed

    monkeypatch.setattr(shutil, "rmtree", dies_halfway)
    with pytest.raises(Killed):
        save_checkpoint(directory, 3, trainer.policy, trainer.optimizer.state_dict(), trainer.scheduler,
                        {"position": 0, "bad_steps": 0}, keep=1)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    listed = list_checkpoints(directory)
    assert calls["n"] >= 1 and [p.name for p in listed] == ["step-000003"]  # the half-deleted one is not listed
    assert all((p / "model" / "model.safetensors").is_file() for p in listed)
    save_checkpoint(directory, 4, trainer.policy, trainer.optimizer.state_dict(), trainer.scheduler,
                    {"position": 0, "bad_steps": 0}, keep=1)
    assert sorted(p.name for p in directory.iterdir()) == ["step-000004"]  # leftovers cleared by the next save


@pytest.mark.parametrize("damage", ["truncated_model", "truncated_optimizer", "garbage_state", "missing_rng",
                                    "other_architecture"])
def test_a_damaged_checkpoint_is_a_one_line_error(tiny_model, prompt_file, tmp_path, damage):
    from langplay.testing import save_tiny_model

    run = tmp_path / "run"
    Trainer(config(tiny_model, prompt_file, run, "run.save_every=1"), rewards=[count_a]).train()
    last = list_checkpoints(run / "checkpoints")[-1]
    model = config(tiny_model, prompt_file, run).model.name_or_path
    if damage == "truncated_model":
        weights = last / "model" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "truncated_optimizer":
        (last / "optimizer.safetensors").write_bytes((last / "optimizer.safetensors").read_bytes()[:50])
    elif damage == "garbage_state":
        (last / "state.json").write_text("{not json")
    elif damage == "missing_rng":
        (last / "rng.safetensors").unlink()
    else:
        model = save_tiny_model(tmp_path / "wide", hidden=96)
    with pytest.raises(LangplayError, match=f"cannot resume from checkpoint {last}") as error:
        Trainer(config(model, prompt_file, run, "train.steps=3"), rewards=[count_a]).train(resume=True)
    assert "\n" not in str(error.value)


KILLED_RUN = """
import sys
from langplay.config import load_config
from langplay.trainer import Trainer
def count_a(prompts, completions, **columns):
    return [c.count("a") / max(1, len(c)) for c in completions]
config = load_config(overrides=sys.argv[1:])
Trainer(config, rewards=[count_a]).train()
"""


@pytest.mark.slow
def test_kill_9_during_saves_leaves_every_listed_checkpoint_loadable(tiny_model, prompt_file, tmp_path):
    """A real SIGKILL at moments spread over a run that saves every step; each listed checkpoint must load."""
    from langplay.checkpoint import load_checkpoint

    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    listed = []
    for trial, delay in enumerate((0.0, 0.4, 0.9)):  # after the first save, while saves go on every step
        run = tmp_path / f"run{trial}"
        args = [f"model.name_or_path={tiny_model}", f"data.path={prompt_file}", f"run.output_dir={run}",
                "train.steps=200", "train.prompts_per_step=2", "grpo.group_size=2", "sampling.max_new_tokens=4",
                "run.progress=false", "run.save_every=1", "run.keep_checkpoints=1"]
        process = subprocess.Popen([sys.executable, str(script), *args], env={**os.environ, "OMP_NUM_THREADS": "1"})
        started = time.time()  # wait for the first checkpoint however slow the start is, then kill mid-run
        while not list_checkpoints(run / "checkpoints") and process.poll() is None and time.time() - started < 120:
            time.sleep(0.05)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        listed += list_checkpoints(run / "checkpoints")
    assert len(listed) == 3, "each killed run must have left its (single, kept) checkpoint"
    trainer = Trainer(config(tiny_model, prompt_file, tmp_path / "probe"), rewards=[count_a])
    for path in listed:
        state = load_checkpoint(path, trainer.policy, trainer.optimizer, trainer.scheduler)
        assert state["step"] >= 1
