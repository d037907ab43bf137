"""N processes are really N (torchrun, gloo on CPU), and give what one process gives with the same global batch:
every algorithm, weights compared in float64 to 1e-12 and first-step gradients in float32 to 1e-6; and a
two-"node" run (two torchrun launchers, c10d rendezvous on 127.0.0.1) matches too."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # real torchrun launches
HERE = Path(__file__).parent
COUNT_A = f"{HERE / 'reward_functions.py'}:count_a"


def algorithm_runs(tiny64, tiny, files, out: Path) -> list[dict]:
    common = ["model.device=cpu", "train.steps=2", "train.lr=1e-3", "run.progress=false", "run.save_every=0",
              "sampling.max_new_tokens=6", "train.micro_batch_size=3"]
    reward = f"[{{kind: function, function: '{COUNT_A}'}}]"
    plans = {
        "grpo": ["algorithm=grpo", f"data.path={files['prompts']}", "train.prompts_per_step=4", "grpo.group_size=3",
                 "grpo.scale_rewards=batch", f"grpo.rewards={reward}"],
        # LSP and JEPO one row per micro-batch: their micro-batches mix prompts, so which rows share a prompt's
        # KV cache depends on the split, and the shared path's gradient differs from the full pass by ~4e-8
        # (relative, float64; its forward is exact). GRPO keeps whole groups in a micro-batch on both sides.
        "lsp": ["algorithm=lsp", "train.prompts_per_step=4", "train.micro_batch_size=1", "lsp.group_size=2", "lsp.challenger_prompt=Write a task.",
                "lsp.max_query_tokens=5", f"lsp.rewards={reward}"],
        "jepo": ["algorithm=jepo", f"data.path={files['prompts']}", "train.prompts_per_step=4", "jepo.group_size=2",
                 "train.micro_batch_size=1",
                 "jepo.answer_marker=a"],
        "irl": ["algorithm=irl", f"data.path={files['sft']}", "train.prompts_per_step=4", "irl.online_fraction=0.5",
                "irl.td_weight=0.1"],
        "sft": ["algorithm=sft", f"data.path={files['sft']}", "train.prompts_per_step=4"],
    }
    runs = [{"name": name, "out": str(out / name),
             "overrides": [f"model.name_or_path={tiny64}", "model.dtype=float64", *common, *more, f"run.output_dir={out / name}"]}
            for name, more in plans.items()]
    runs.append({"name": "grpo-fp32", "out": str(out / "grpo-fp32"),
                 "overrides": [f"model.name_or_path={tiny}", "model.dtype=float32", "train.precision=fp32", *common,
                               *plans["grpo"], f"run.output_dir={out / 'grpo-fp32'}"]})
    extra = {  # what sharding must also survive
        "grpo-lora": [*plans["grpo"], "model.lora.r=4", "model.lora.alpha=8", "grpo.beta=0.1"],
        # rows differ by rank (a* rows of their own), so the ranks run different numbers of micro-batches
        "jepo-generation": [*plans["jepo"], "jepo.policy_gradient=generation"],
        # a model that often says EOS at once: one rank's completions end before the other's
        "grpo-eos": [*plans["grpo"], f"model.name_or_path={files['eos_model']}",
                     f"grpo.rewards=[{{kind: function, function: '{HERE / 'reward_functions.py'}:length'}}]"],
        "grpo-long": [*plans["grpo"], "train.steps=4", "run.save_every=2"],
        # LSP's R_Q from the reference judge: sampling needs the reference whole, gathered from its shards
        "lsp-self": [*plans["lsp"], "lsp.self_reward=true", "lsp.judge_max_new_tokens=8"],
    }
    for name, more in extra.items():
        runs.append({"name": name, "out": str(out / name),
                     "overrides": [f"model.name_or_path={tiny64}", "model.dtype=float64", *common, *more,
                                   f"run.output_dir={out / name}"]})
    return runs


def sharded(runs: list[dict], out: Path) -> list[dict]:
    """The same runs with train.sharding=fsdp2, as NAME-fsdp2; then grpo-long resumed from its step-2 checkpoint."""
    copies = [{**r, "name": f"{r['name']}-fsdp2", "out": str(out / f"{r['name']}-fsdp2"),
               "overrides": [*r["overrides"], "train.sharding=fsdp2", f"run.output_dir={out / (r['name'] + '-fsdp2')}"]}
              for r in runs]
    long = next(r for r in copies if r["name"] == "grpo-long-fsdp2")
    copies.append(resumed(long, "grpo-resumed-fsdp2", out))
    return copies


def resumed(run: dict, name: str, out: Path, sharding: str = "fsdp2") -> dict:
    """`run` resumed from its step-2 checkpoint into a folder of its own, with train.sharding=`sharding`."""
    return {**run, "name": name, "out": str(out / name), "resume_from": f"{run['out']}/checkpoints/step-000002",
            "overrides": [*run["overrides"], f"train.sharding={sharding}", f"run.output_dir={out / name}"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(plan: list[dict], folder: Path, processes: int, nodes: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    plan_file = folder / "plan.json"
    plan_file.write_text(json.dumps({"runs": plan}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent / "src"),
           "LANGPLAY_EXPECT_WORLD_SIZE": str(processes * nodes)}
    port = free_port()
    if nodes == 1:
        commands = [[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                     "--master_addr", "127.0.0.1", "--master_port", str(port)]]
    else:  # one launcher per "node", meeting at a c10d rendezvous on loopback
        commands = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--node_rank", str(rank),
                     "--nproc_per_node", str(processes), "--rdzv_backend", "c10d",
                     "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "langplay-test"] for rank in range(nodes)]
    running = [subprocess.Popen([*c, str(HERE / "multiprocess_worker.py"), str(plan_file)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    outputs = [p.communicate(timeout=400)[0] for p in running]
    for process, output in zip(running, outputs):
        assert process.returncode == 0, output[-4000:]


def ranks_that_ran(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "ranks").glob("rank-*.json"))]


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_model):
    from langplay.testing import save_tiny_model

    root = tmp_path_factory.mktemp("mp")
    tiny64 = save_tiny_model(root / "tiny64", seed=1)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"say {c}", "answer": c}) + "\n" for c in "abcdefgh"))
    sft = root / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": f"say {c}", "completion": c * 3}) + "\n" for c in "abcdefgh"))
    files = {"prompts": prompts, "sft": sft, "eos_model": eos_prone_model(tiny64, root / "eos")}
    launch(algorithm_runs(tiny64, tiny_model, files, root / "p1"), root / "p1", 1)
    two = algorithm_runs(tiny64, tiny_model, files, root / "p2")
    launch(two + sharded(two, root / "p2"), root / "p2", 2)
    # the sharded run's checkpoint, resumed by one process without sharding: the format is the same
    long = next(r for r in sharded(two, root / "p2") if r["name"] == "grpo-long-fsdp2")
    launch([resumed(long, "grpo-resumed-unsharded", root / "after", sharding="none")], root / "after", 1)
    two_nodes = [r for r in algorithm_runs(tiny64, tiny_model, files, root / "nodes") if r["name"] == "grpo"]
    launch(two_nodes, root / "nodes", processes=1, nodes=2)
    return root


def eos_prone_model(source: Path, path: Path) -> Path:
    """The tiny model with EOS made likely at every position (a shared offset in the embeddings that the EOS row
    of the output layer reads), so completions end at different lengths."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float64)
    tokenizer = AutoTokenizer.from_pretrained(source)
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] += 3.0
        model.get_output_embeddings().weight[tokenizer.eos_token_id, 0] = 0.5
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def final_weights(folder: Path) -> dict:
    return load_file(folder / "final" / "model.safetensors")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


ALGORITHMS = ["grpo", "lsp", "jepo", "irl", "sft"]


@pytest.mark.parametrize("name", ALGORITHMS)
def test_two_processes_are_two_and_match_one_in_float64(launched, name):
    one, two = launched / "p1" / name, launched / "p2" / name
    ran = ranks_that_ran(two)
    assert [r["rank"] for r in ran] == [0, 1] and {r["world"] for r in ran} == {2}
    assert len({r["pid"] for r in ran}) == 2 and all("MULTI_CPU" in r["distributed"] for r in ran)
    assert [r["world"] for r in ranks_that_ran(one)] == [1]
    w1, w2 = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    start = load_file(launched / "tiny64" / "model.safetensors")
    moved = max((w1[k] - start[k]).abs().max().item() for k in w1)
    assert moved > 1e-6  # the runs trained: the comparison below is not of two untouched models
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-12
    g1 = load_file(one / "first_gradient.safetensors")["grad"]
    g2 = load_file(two / "first_gradient.safetensors")["grad"]
    assert (g1 - g2).abs().max().item() < 1e-12 and g1.abs().max().item() > 0
    m1 = [json.loads(l) for l in (one / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(l) for l in (two / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(m1, m2):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-12)


def test_float32_gradients_of_two_processes_match_one(launched):
    g1 = load_file(launched / "p1" / "grpo-fp32" / "first_gradient.safetensors")["grad"]
    g2 = load_file(launched / "p2" / "grpo-fp32" / "first_gradient.safetensors")["grad"]
    assert g1.abs().max() > 1e-4 and (g1 - g2).abs().max() < 1e-6


def test_two_nodes_on_loopback_match_one_process(launched):
    ran = ranks_that_ran(launched / "nodes" / "grpo")
    assert [r["rank"] for r in ran] == [0, 1] and {r["node"] for r in ran} == {"0", "1"}
    w1 = load_file(launched / "p1" / "grpo" / "final" / "model.safetensors")
    w2 = load_file(launched / "nodes" / "grpo" / "final" / "model.safetensors")
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-12


# -- FSDP2 (train.sharding=fsdp2) --------------------------------------------------------------------------------
SHARDED = [*ALGORITHMS, "grpo-lora", "jepo-generation", "grpo-eos", "grpo-long", "lsp-self"]
WITH_REFERENCE = {"grpo", "lsp", "jepo", "jepo-generation", "grpo-eos", "grpo-long", "lsp-self"}  # a KL (LoRA: none)


@pytest.mark.parametrize("name", SHARDED)
def test_fsdp2_on_two_processes_matches_one_unsharded_process_in_float64(launched, name):
    one, two = launched / "p1" / name, launched / "p2" / f"{name}-fsdp2"
    ran = ranks_that_ran(two)
    assert [r["rank"] for r in ran] == [0, 1] and all(r["sharded"] and r["world"] == 2 for r in ran)
    assert not any(r["sharded"] for r in ranks_that_ran(one))
    if name in WITH_REFERENCE:  # the frozen reference is sharded too: each rank holds half of it, no full copy
        for r in ran:
            reference = r["reference"]
            assert 0 < reference["local"] <= 0.6 * reference["full"] and not reference["plain_copy"], reference
            assert reference["whole_tensors"] == 0, reference
            assert reference["gathered"] == (name == "lsp-self")  # made whole only for the judge that samples
    else:
        assert all(r["reference"] is None for r in ran)
    w1, w2 = final_weights(one), final_weights(two)  # final/: the consolidated HF model (LoRA merged)
    start = load_file(launched / "tiny64" / "model.safetensors")
    assert max_difference(w1, {k: start[k] for k in w1 if k in start}) > 1e-6
    assert max_difference(w1, w2) < 1e-12
    g1 = load_file(one / "first_gradient.safetensors")["grad"]
    g2 = load_file(two / "first_gradient.safetensors")["grad"]
    assert g1.shape == g2.shape and g1.abs().max().item() > 0 and (g1 - g2).abs().max().item() < 1e-12


def test_the_sharded_reference_pass_matches_the_plain_model_with_uneven_rows(tmp_path, tiny_model):
    """Rank 0 holds 3 rows, rank 1 one (micro-batches of 1): rank 1 joins two more forwards' all-gathers, and
    both get the plain model's log-probs (float64). Without that it deadlocks, hence the time limit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent / "src")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(free_port()), str(HERE / "sharded_reference_worker.py"),
                           str(tiny_model), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank-*.json"))]
    assert [(r["rank"], r["rows"]) for r in ran] == [(0, 3), (1, 1)]
    for r in ran:
        assert not r["plain_copy"] and r["max_logp"] > 0.1 and r["max_difference"] < 1e-12, r


def test_fsdp2_float32_gradients_match_one_process(launched):
    g1 = load_file(launched / "p1" / "grpo-fp32" / "first_gradient.safetensors")["grad"]
    g2 = load_file(launched / "p2" / "grpo-fp32-fsdp2" / "first_gradient.safetensors")["grad"]
    assert g1.abs().max() > 1e-4 and (g1 - g2).abs().max() < 1e-6


def test_fsdp2_ranks_that_do_uneven_work_do_not_deadlock(launched):
    """The runs above finished; here: they really were uneven. JEPO's literal update gives the ranks different
    numbers of rows (so of micro-batches); the EOS-prone model ends one rank's completions before the other's."""
    jepo = ranks_that_ran(launched / "p2" / "jepo-generation-fsdp2")
    assert any(a != b for a, b in zip(jepo[0]["rows"], jepo[1]["rows"]))
    eos = ranks_that_ran(launched / "p2" / "grpo-eos-fsdp2")
    assert any(a != b for a, b in zip(eos[0]["widths"], eos[1]["widths"]))
    assert min(eos[0]["widths"] + eos[1]["widths"]) < 6  # some batch ended by EOS before max_new_tokens


def test_fsdp2_resume_is_exact_and_its_checkpoint_resumes_unsharded(launched):
    straight = final_weights(launched / "p2" / "grpo-long-fsdp2")
    assert max_difference(straight, final_weights(launched / "p1" / "grpo-long")) < 1e-12
    assert max_difference(straight, final_weights(launched / "p2" / "grpo-resumed-fsdp2")) < 1e-12
    assert max_difference(straight, final_weights(launched / "after" / "grpo-resumed-unsharded")) < 1e-12
    resumed = [json.loads(l)["step"] for l in (launched / "p2" / "grpo-resumed-fsdp2" / "metrics.jsonl").read_text().splitlines()]
    assert resumed == [3, 4]  # it did resume at step 2, not train from scratch
