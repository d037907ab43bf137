"""The benchmarks (BENCHMARKS.md) run: GRPO vs TRL gives both sides the same work; the precision one times both."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_step_breakdown_splits_each_step_into_phases_that_add_up():
    out = subprocess.run([sys.executable, "benchmarks/step_breakdown.py", "--hidden", "32", "--layers", "1",
                          "--steps", "2", "--precision", "fp32", "--threads", "1"],
                         cwd=ROOT, check=True, capture_output=True, text=True, timeout=600).stdout
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert out.startswith("precision fp32, backend hf") and len(lines) == 2 and "(warm-up)" in lines[0]
    for line in lines:
        total, parts = line.split(": ")[1].split(" s = ")
        phases = [float(word) for word in parts.split() if word.replace(".", "").isdigit()]
        assert len(phases) == 6 and float(total) == pytest.approx(sum(phases), abs=0.03), line
        assert phases[0] > 0 and phases[4] > 0, line  # sampling, loss and backward


@pytest.mark.slow
def test_grpo_vs_trl_benchmark_gives_both_sides_the_same_tokens(tmp_path):
    prompts, group, prompt_tokens, tokens = 2, 2, 40, 8
    out = tmp_path / "grpo_vs_trl.json"
    subprocess.run(
        [sys.executable, "benchmarks/grpo_vs_trl.py", "--hidden", "32", "--layers", "1", "--prompts", str(prompts),
         "--group", str(group), "--tokens", str(tokens), "--prompt-tokens", str(prompt_tokens), "--rounds", "1",
         "--steps", "2", "--profile", "1", "--precision", "bf16", "--json", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=600,
    )
    result = json.loads(out.read_text())
    assert result["langplay_precision"] == "bf16"  # asked for, not what auto picks for this small model
    # Completions of the full length on both sides, and TRL's own token count agrees with the prompts we built.
    assert result["langplay"]["mean_completion_length"] == result["trl"]["mean_completion_length"] == tokens
    sequence_tokens = prompts * group * (prompt_tokens + tokens)
    assert result["sequence_tokens_per_step"] == {"langplay": sequence_tokens, "trl": sequence_tokens}
    # langplay runs each prompt once for its group, TRL once per completion.
    assert result["model_tokens_per_pass"] == {"langplay": prompts * prompt_tokens + prompts * group * tokens,
                                               "trl": sequence_tokens}
    assert result["langplay"]["timed_steps"] == result["trl"]["timed_steps"] == 1
    for side in ("langplay", "trl"):
        assert result["profile_s_per_step"][side]["matmul"] > 0
    training = result["training_pass"]  # MFU against the fp32 peak too: a real ceiling on every CPU
    assert training["fp32_peak_tflops"] > 0 and 0 < training["fraction_of_fp32_peak"] < 1, training
    probes = training["peak_probes_tflops"]  # one probe of each after every round, the best taken as the peak
    assert len(probes["bf16"]) == len(probes["fp32"]) == 1 and training["fp32_peak_tflops"] == max(probes["fp32"])


@pytest.mark.slow
def test_grpo_vs_trl_on_gsm8k_questions_with_eos_records_the_run(tmp_path):
    """--data (GSM8K's questions, the chat template applied by both: the benchmark stops if their token ids differ)
    and --eos on the tiny model: the JSON says which CPU, when, which commit and with what settings, and how each
    side's completions ended."""
    out = tmp_path / "grpo_vs_trl_gsm8k.json"
    tokens = 8
    subprocess.run(
        [sys.executable, "benchmarks/grpo_vs_trl.py", "--hidden", "32", "--layers", "1", "--data",
         "tests/data/gsm8k_sample.jsonl", "--prompts", "2", "--group", "2", "--tokens", str(tokens), "--eos",
         "--rounds", "1", "--steps", "2", "--json", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    result = json.loads(out.read_text())
    run = result["provenance"]
    assert run["cpu"]["model_name"] and run["date"] and run["commit"]["sha"] and run["peak_rss_gb"] > 0
    assert run["settings"]["eos"] is True and run["settings"]["data"] == "tests/data/gsm8k_sample.jsonl"
    assert result["data"]["prompts"] == 2 and len(result["data"]["prompt_tokens"]) == 2
    assert set(result["sides"]) == {"langplay-hf", "trl-hf"} and set(result["ratios_langplay_over_trl"]) == {
        "langplay-hf/trl-hf"}
    for side in result["sides"].values():
        assert side["timed_steps"] == 1 and side["completions_sampled"] == 2 * 2 * 2  # warm-up step included
        assert 0 < side["mean_completion_length"] <= tokens and 0 <= side["ended_at_eos"] <= 1
        assert side["generated_tokens_per_s"] > 0


def test_the_real_model_benchmarks_share_rewards_and_paths(tmp_path):
    """benchmarks/real_gsm8k.py: the GSM8K reward reads text and TRL's chat messages alike, the gold-free reward
    needs no answer, --data falls back to a file that exists, and the provenance names the CPU and the commit."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import real_gsm8k
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    gold = ["She makes 9 * 2 = $18.\n#### 18", "#### 1,000"]
    texts = ["So she makes 18 dollars.", "The answer is 999."]
    assert real_gsm8k.gsm8k_match(None, texts, gold) == [1.0, 0.0]
    assert real_gsm8k.gsm8k_match(None, [[{"role": "assistant", "content": t}] for t in texts], gold) == [1.0, 0.0]
    assert real_gsm8k.ends_with_number(None, ["It is 42.", "no number here", "7 then words"]) == [1.0, 0.0, 1.0]
    assert real_gsm8k.gsm8k_path(None).is_file()
    rows = real_gsm8k.gsm8k_rows(ROOT / "tests" / "data" / "gsm8k_sample.jsonl", 3, offset=1)
    assert len(rows) == 3 and all("####" in r["answer"] for r in rows)
    with pytest.raises(SystemExit):
        real_gsm8k.gsm8k_path(tmp_path / "missing.jsonl")
    with pytest.raises(SystemExit):
        real_gsm8k.model_path(str(tmp_path))
    run = real_gsm8k.provenance()
    assert run["cpu"]["model_name"] and run["date"] and "sha" in run["commit"]


@pytest.mark.slow
def test_precision_benchmark_times_both_and_measures_the_peak(tmp_path):
    out = tmp_path / "precision.json"
    subprocess.run([sys.executable, "benchmarks/precision.py", "--hidden", "32", "--rounds", "1", "--steps", "2",
                    "--json", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["bf16_peak_tflops"] > 0
    size = result["sizes"]["32"]
    assert size["fp32_step_s"] > 0 and size["bf16_step_s"] > 0 and size["bf16_fraction_of_peak"] > 0
    if result["native_bf16"]:  # without bf16 units the probe's rate is no ceiling (an AMD EPYC read 0.93-1.18)
        assert size["bf16_fraction_of_peak"] < 1, size


def test_packed_rows_benchmark_times_both_layouts_on_the_same_loss(tmp_path):
    out = tmp_path / "packed_rows.json"
    subprocess.run([sys.executable, "benchmarks/packed_rows.py", "--rows", "12", "--micro", "12", "4", "--rounds", "1",
                    "--steps", "1", "--threads", "1", "--json", str(out)], cwd=ROOT, check=True, capture_output=True,
                   timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"12", "4"}
    for size in result["results"].values():
        assert all(len(v) == 1 and v[0] > 0 for v in size["times_s"].values())
        loss = size["loss_first_step"]
        assert loss["packed"] == pytest.approx(loss["padded"], rel=1e-4)  # the same rows, the same loss
        # packing never runs more columns; tinyworld's rows differ in prompt length, so here it runs fewer
        assert size["token_columns_per_step"]["packed"] < size["token_columns_per_step"]["padded"]

def test_the_bf16_peak_keeps_to_its_budget_on_a_machine_without_bf16_units():
    """Without AMX or AVX512-BF16 (oneDNN held to AVX2 here) a 4096 x 1024 x 4096 bf16 product takes about two
    minutes, and twenty of them ran CI past its limit once: the probe must pick a product that fits."""
    code = "import sys, time; sys.path.insert(0, 'benchmarks'); import step_cost; t = time.time(); " \
           "peak = step_cost.bf16_peak_tflops(budget_s=1.0); print(peak, time.time() - t)"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True,
                         text=True, timeout=120).stdout.split()
    peak, seconds = float(out[0]), float(out[1])
    assert peak > 0 and seconds < 20, (peak, seconds)


@pytest.mark.slow
def test_the_prepared_gpu_check_runs_every_algorithm_on_a_cpu(tmp_path):
    """benchmarks/gpu_check.py is what a lent GPU runs; on a CPU with the tiny shape it must run end to end, so
    the day a device is lent the one command works."""
    out = tmp_path / "gpu_check.json"
    subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--shape", "tiny", "--steps", "2",
                    "--tokens", "6", "--json", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    assert set(result["algorithms"]) == {"grpo", "lsp", "jepo", "irl", "sft"}
    assert all(row["steps"] == 2 and row["median_step_s"] > 0 and row["tokens_per_second"] > 0
               for row in result["algorithms"].values())
    assert result["trl_grpo"]["median_step_s"] > 0 and result["grpo_over_trl"] > 0
