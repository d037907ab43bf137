"""Two processes (gloo, CPU) give the same loss and updated weights as one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

HERE = Path(__file__).parent


def overrides(tiny_model, prompt_file, out, aggregation):
    return [
        f"model.name_or_path={tiny_model}", f"data.path={prompt_file}", f"run.output_dir={out}",
        "model.device=cpu", "train.steps=2", "train.lr=1e-2", "train.prompts_per_step=4", "grpo.group_size=4",
        "sampling.max_new_tokens=10", "train.micro_batch_size=3", "run.progress=false", "run.save_every=0",
        f"grpo.loss_aggregation={aggregation}", "grpo.scale_rewards=batch",
        f"grpo.rewards=[{{kind: function, function: '{HERE / 'reward_functions.py'}:count_a'}}]",
    ]


def run(tiny_model, prompt_file, out, processes, aggregation):
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent / "src")}
    result = subprocess.run([*launcher, str(HERE / "multiprocess_worker.py"),
                             *overrides(tiny_model, prompt_file, out, aggregation)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return metrics, load_file(out / "final" / "model.safetensors")


@pytest.mark.parametrize("aggregation", ["grpo", "dapo"])
def test_two_processes_match_one(tiny_model, prompt_file, tmp_path, aggregation):
    one_metrics, one_weights = run(tiny_model, prompt_file, tmp_path / "one", 1, aggregation)
    two_metrics, two_weights = run(tiny_model, prompt_file, tmp_path / "two", 2, aggregation)
    for a, b in zip(one_metrics, two_metrics):
        for key in ("loss", "reward", "reward_std", "grad_norm", "completion_length"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    assert one_metrics[0]["reward_std"] > 0  # the update is not trivially zero
    for name in one_weights:
        assert (one_weights[name] - two_weights[name]).abs().max() < 1e-5, name
