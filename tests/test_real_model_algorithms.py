"""Every algorithm on the real model (issue 38, item 3): SmolLM2-135M-Instruct as `./dev setup` provides it
(real_model.py), trained two steps each with tiny batches (2 prompts x 2 completions, 24 new tokens):

    SFT        fp32  -       (demonstrations: GSM8K rows)          IRL offline  bf16  -
    GRPO       fp32  hf      LoRA r=4; final/ in transformers and vLLM: the trained policy's greedy text
    GRPO       fp32  vLLM    log-probs vs the trainer's on the real vocabulary; resumed at step 1 == straight through
    LSP        bf16  hf      Box 1 challenger (task and template set), the self-judge (the reference, Box 3)
    JEPO       bf16  vLLM    answer marker 'The answer is', answer_format gsm8k
    IRL online fp32  vLLM    irl.online_fraction=0.5
    GRPO       fp32  hf      two processes under torchrun, train.sharding=fsdp2

and at every step, what a real BPE tokenizer and ChatML template can break: each prompt carries the template once
(one system turn, the default's or data.system_prompt, one user turn, one generation prompt at the end, as special
tokens); a completion ends at `<|im_end|>` or at the length limit, never beyond; and in the training batch, where
pad == EOS == `<|im_end|>`, a finished completion's EOS is its last masked token, counted once.

Marked `real_model` (and `slow`): `./dev test` leaves them out, `./dev test-real` runs them (.ci/run's second stage).
"""

import gc
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from langplay.algorithms.jepo import chain_ids
from langplay.batch import build_batch, token_rows
from langplay.config import ModelConfig, load_config
from langplay.data import encode_sft
from langplay.logprobs import sequence_logprobs
from langplay.models import load_tokenizer
from langplay.policy import Policy
from langplay.trainer import Trainer

from real_model import real_model_dir

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
HERE = Path(__file__).parent
LENGTH = f"{HERE / 'reward_functions.py'}:length"
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# Steers SmolLM2 to short answers that end (EOS within 24 tokens about half the time) and carry JEPO's marker.
SYSTEM = "Answer in one sentence that starts with 'The answer is'."
MARKER = "The answer is"
ARITHMETIC = [  # GSM8K's format: the solution, then "#### answer"
    ("What is 12 times 4?", "12 * 4 = <<12*4=48>>48\n#### 48"),
    ("Tom has 3 apples and buys 5 more. How many apples does he have?", "3 + 5 = <<3+5=8>>8\n#### 8"),
    ("What is 7 plus 8?", "7 + 8 = <<7+8=15>>15\n#### 15"),
    ("A box holds 6 eggs. How many eggs are in 2 boxes?", "6 * 2 = <<6*2=12>>12\n#### 12"),
    ("What is 20 minus 9?", "20 - 9 = <<20-9=11>>11\n#### 11"),
    ("Sam reads 4 pages a day. How many pages does he read in 3 days?", "4 * 3 = <<4*3=12>>12\n#### 12"),
]
GRPO_REWARDS = (f"grpo.rewards=[{{kind: numeric_match, answer_column: answer}}, "
                f"{{kind: function, function: '{LENGTH}', weight: 0.01}}]")
MAX_NEW_TOKENS = 24
# vLLM runs share one engine (langplay pools them per process) as long as these limits and the dtype are the same.
COMMON = ["model.device=cpu", "train.precision=fp32", "train.steps=2", "train.prompts_per_step=2",
          "train.micro_batch_size=8", "train.lr=1e-5", f"sampling.max_new_tokens={MAX_NEW_TOKENS}",
          "sampling.max_prompt_tokens=512", "run.progress=false", "run.save_every=0"]
_ENGINES = []  # engines built here directly: kept alive (vLLM tears down shared state when one is collected)


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir() -> Path:
    return real_model_dir()


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return load_tokenizer(ModelConfig(name_or_path=str(model_dir)))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """arithmetic.jsonl: short questions in GSM8K's format (question, answer "... #### n"), each asking for the
    marker; demos.jsonl: the 8 shortest rows of the GSM8K sample, as demonstrations (question -> solution)."""
    root = tmp_path_factory.mktemp("real-data")
    arithmetic = root / "arithmetic.jsonl"
    arithmetic.write_text("".join(json.dumps({"question": f"{q} Reply with '{MARKER}' and the number.", "answer": a})
                                  + "\n" for q, a in ARITHMETIC))
    rows = [json.loads(line) for line in (HERE / "data" / "gsm8k_sample.jsonl").read_text().splitlines()]
    demos = root / "demos.jsonl"
    shortest = sorted(rows, key=lambda r: len(r["question"]) + len(r["answer"]))[:8]
    demos.write_text("".join(json.dumps(r) + "\n" for r in shortest))
    return {"arithmetic": arithmetic, "demos": demos}


@pytest.fixture(autouse=True)
def free_each_run(request, tmp_path):
    """A run's trainer (model, reference, optimizer: over 2 GB) is freed when its test ends, not at some later
    collection (the recording wrappers make reference cycles), and its checkpoints are deleted. Each test's time and
    the process's memory after it are printed (`./dev test-real -s` shows them)."""
    started = time.perf_counter()
    yield
    gc.collect()
    for folder in tmp_path.rglob("checkpoints"):  # passed or failed, no 1.6 GB checkpoint is left behind
        shutil.rmtree(folder, ignore_errors=True)
    rss = next((int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmRSS:")), 0) if Path("/proc/self/status").exists() else 0
    print(f"\n[real_model] {request.node.name}: {time.perf_counter() - started:.1f} s, {rss / 2**20:.1f} GB resident")


def need_vllm():
    if os.environ.get("LANGPLAY_REQUIRE_VLLM") != "1":
        pytest.importorskip("vllm")
    gc.collect()  # samplers of earlier runs give their engine back to the pool


# -- running and recording ---------------------------------------------------------------------------------------
@dataclass
class Generation:
    prompts: list[str]
    n: int
    limit: int
    samples: object


@dataclass
class Run:
    trainer: Trainer
    history: list[dict] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)  # every sampler call, in order
    experiences: list = field(default_factory=list)  # every step's Experience


def watch(sampler, calls: list[Generation]):
    """Record each call of `sampler.generate` (prompts, n, length limit, samples) in `calls`."""
    generate = sampler.generate

    def recorded(prompts, n, seeds, max_new_tokens=None):
        samples = generate(prompts, n, seeds, max_new_tokens)
        calls.append(Generation(list(prompts), n, max_new_tokens or sampler.config.max_new_tokens, samples))
        return samples

    sampler.generate = recorded
    return sampler


def config(algorithm: str, model_dir, out: Path, *more: str):
    return load_config(overrides=[f"algorithm={algorithm}", f"model.name_or_path={model_dir}", *COMMON,
                                  f"run.output_dir={out}", *more])


def start(cfg, rewards=None) -> Run:
    run = Run(Trainer(cfg, rewards=rewards))
    watch(run.trainer.sampler, run.generations)
    collect = run.trainer.algorithm.collect

    def recorded(rows, seeds):
        experience = collect(rows, seeds)
        run.experiences.append(experience)
        return experience

    run.trainer.algorithm.collect = recorded
    return run


def train(cfg, rewards=None, resume=False) -> Run:
    run = start(cfg, rewards)
    run.history = run.trainer.train(resume=resume)
    return run


def trained(run: Run, steps: int = 2) -> None:
    """The run trained every step: finite loss and gradient, no step skipped, final/ written."""
    assert [h["step"] for h in run.history][-1] == steps
    for h in run.history:
        assert torch.isfinite(torch.tensor([h["loss"], h["grad_norm"]])).all() and h["skipped"] == 0.0, h
    assert (run.trainer.run_dir / "final" / "model.safetensors").is_file()


def clean(*folders: Path) -> None:
    """A run folder (2 GB and more: final/, checkpoints of 1.6 GB each) goes once its test has read it."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


# -- what a real tokenizer and template can break ------------------------------------------------------------------
def check_prompt(tokenizer, text: str, ids: list[int], system: str = DEFAULT_SYSTEM) -> None:
    """The chat template applied once: one system turn (`system`), one user turn, the generation prompt once and
    last; in tokens, `<|im_start|>` three times and `<|im_end|>` twice, as special tokens; the ids are the text."""
    assert text.count("<|im_start|>system\n") == 1 and text.count(system) == 1, text
    assert system == DEFAULT_SYSTEM or DEFAULT_SYSTEM not in text, text
    assert text.count("<|im_start|>user\n") == 1, text
    assert text.count("<|im_start|>assistant\n") == 1 and text.endswith("<|im_start|>assistant\n"), text
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert ids.count(im_start) == 3 and ids.count(im_end) == 2, ids
    assert tokenizer.decode(ids) == text


def check_generation(tokenizer, call: Generation, system: str = DEFAULT_SYSTEM) -> None:
    """Prompts as check_prompt; each completion ends at its first `<|im_end|>` (finished) or has exactly the length
    limit without one, with one sampler log-prob per token, and its text holds no special token."""
    eos, samples = tokenizer.eos_token_id, call.samples
    assert len(samples) == len(call.prompts) * call.n
    for index, prompt in enumerate(call.prompts):
        check_prompt(tokenizer, prompt, samples.prompt_ids[index * call.n], system)
    for ids, finished, text, logps in zip(samples.completion_ids, samples.finished, samples.texts, samples.logprobs):
        assert len(logps) == len(ids) and all(lp <= 0 for lp in logps)
        if finished:
            assert ids[-1] == eos and eos not in ids[:-1], ids
        else:
            assert eos not in ids and len(ids) == call.limit, ids
        assert "<|im_end|>" not in text and "<|im_start|>" not in text, text


def check_rows(batch: dict, rows: range, prompts: list[list[int]], completions: list[list[int]],
               finished: list[bool], eos: int) -> None:
    """Rows `rows` of a training batch hold these prompts and completions; each completion's tokens, and only they,
    are masked: with pad == EOS, a finished completion's EOS is its last masked token, and counted once."""
    mask, width = batch["completion_mask"], batch["completion_mask"].shape[1]
    for row, prompt, completion, done in zip(rows, prompts, completions, finished):
        length = int(mask[row].sum())
        assert length == len(completion) and bool(mask[row, :length].all()), (row, length, len(completion))
        assert batch["input_ids"][row, batch["input_ids"].shape[1] - width:][:length].tolist() == completion
        prompt_part = batch["input_ids"][row, : batch["input_ids"].shape[1] - width]
        assert prompt_part[batch["attention_mask"][row, : prompt_part.numel()].bool()].tolist() == prompt
        if done:
            assert completion[-1] == eos and completion.count(eos) == 1
            assert batch["input_ids"][row, batch["input_ids"].shape[1] - width + length - 1] == eos


def unpack_batch(batch: dict) -> tuple[list[list[int]], list[list[int]]]:
    """The prompt and completion ids of each row of a `build_batch` batch, without padding."""
    width = batch["completion_mask"].shape[1]
    prompt_width = batch["input_ids"].shape[1] - width
    prompts, completions = [], []
    for ids, attention, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(),
                                    batch["completion_mask"].tolist()):
        prompts.append([t for t, a in zip(ids[:prompt_width], attention[:prompt_width]) if a])
        completions.append([t for t, m in zip(ids[prompt_width:], mask) if m])
    return prompts, completions


def finished_count(run: Run) -> int:
    return sum(sum(call.samples.finished) for call in run.generations)


# -- the template and the marker, on the real tokenizer (no model) ------------------------------------------------
def test_the_chat_template_is_applied_once(tokenizer):
    policy = Policy(None, tokenizer)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    for prompt, system in [("What is 2+2?", DEFAULT_SYSTEM), ("What is 2+2?", "Be brief."), (chat, "Be brief.")]:
        text = policy.format_prompt(prompt, None if system == DEFAULT_SYSTEM else system)
        check_prompt(tokenizer, text, policy.encode(text), system)
    # a system prompt given twice (the row's and data.system_prompt) stays one turn: the row's
    messages = [{"role": "system", "content": "Mine."}, {"role": "user", "content": "Hi"}]
    check_prompt(tokenizer, policy.format_prompt(messages, "Config's."), policy.encode(policy.format_prompt(messages)),
                 "Mine.")
    # SFT's rows: the formatted prompt, then the target and one EOS
    prompt_ids, completion_ids = encode_sft(policy, "What is 2+2?", "The answer is 4.", None, 1024)
    check_prompt(tokenizer, tokenizer.decode(prompt_ids), prompt_ids)
    assert completion_ids[-1] == tokenizer.eos_token_id and completion_ids.count(tokenizer.eos_token_id) == 1
    assert tokenizer.decode(completion_ids, skip_special_tokens=True) == "The answer is 4."


@pytest.mark.parametrize("text, marker", [
    ("12 * 4 = 48. The answer is 48.", "The answer is"),
    ("So the answer is48", "The answer is"),
    ("She makes 9 * 2 = $18 a day.\n#### 18", "####"),
    ("9*2=18 ####18", "####"),
    ("####### 7", "####"),
])
def test_jepo_cuts_chains_at_the_marker_on_the_real_tokenizer(tokenizer, text, marker):
    """BPE merges across the marker's end (' is48', '#####') are cut and the marker's rest re-encoded: the chain's
    text always ends exactly at the (last) marker."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    chain = chain_ids(tokenizer, ids, marker)
    decoded = tokenizer.decode(chain, skip_special_tokens=True)
    assert decoded.lower().endswith(marker.lower()) and text.lower().startswith(decoded.lower()), (decoded, text)


# -- the algorithms ---------------------------------------------------------------------------------------------------
def test_sft_fp32(model_dir, files, tokenizer, tmp_path):
    out = tmp_path / "sft"
    run = train(config("sft", model_dir, out, f"data.path={files['demos']}", "data.prompt_column=question",
                       "data.completion_column=answer"))
    trained(run)
    eos = tokenizer.eos_token_id
    answers = {r["answer"] for r in map(json.loads, files["demos"].read_text().splitlines())}
    for experience in run.experiences:
        batch = experience.batch
        prompts, completions = unpack_batch(batch)
        check_rows(batch, range(len(prompts)), prompts, completions, [True] * len(prompts), eos)
        for prompt, completion in zip(prompts, completions):
            check_prompt(tokenizer, tokenizer.decode(prompt), prompt)
            assert tokenizer.decode(completion, skip_special_tokens=True) in answers
    # the EOS's log-prob is computed (the row's last masked position), as every other target token's
    batch = run.experiences[-1].batch
    with torch.no_grad():
        logp = sequence_logprobs(run.trainer.policy.model, batch).logp
    last = batch["completion_mask"].sum(1).long() - 1
    assert bool((logp[torch.arange(len(last)), last] < 0).all())
    assert all(0 < h["nll"] < 10 for h in run.history)
    clean(out)


def test_irl_offline_bf16(model_dir, files, tokenizer, tmp_path):
    out = tmp_path / "irl"
    run = train(config("irl", model_dir, out, f"data.path={files['demos']}", "data.prompt_column=question",
                       "data.completion_column=answer", "train.precision=bf16", "irl.td_weight=0.01"))
    trained(run)
    assert json.loads((out / "run.json").read_text())["precision"] == "bf16"
    assert not run.generations  # offline: nothing sampled
    for experience, h in zip(run.experiences, run.history):
        batch = experience.batch
        prompts, completions = unpack_batch(batch)
        check_rows(batch, range(len(prompts)), prompts, completions, [True] * len(prompts), tokenizer.eos_token_id)
        # every demonstration ends with EOS (== pad): terminal, its value after EOS 0, none read as truncated
        assert batch["terminal"].tolist() == [1.0] * len(prompts) and h["truncated"] == 0.0
        assert all(torch.isfinite(torch.tensor(h[k])) for k in ("nll", "td", "value", "implicit_reward"))
    clean(out)


def test_grpo_lora_hf_and_final_loads_in_transformers_and_vllm(model_dir, files, tokenizer, tmp_path):
    """GRPO with LoRA (reference = the adapter off) on the transformers sampler; final/ (the adapter merged) loads in
    transformers with the trained policy's logits and in vLLM's engine, and both write its greedy text."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "grpo-lora"
    run = train(config("grpo", model_dir, out, f"data.path={files['arithmetic']}", "data.prompt_column=question",
                       f"data.system_prompt={SYSTEM}", "grpo.group_size=2", GRPO_REWARDS, "model.lora.r=4",
                       "model.lora.alpha=8", "train.lr=1e-3", "train.precision=fp32"))
    trained(run)
    policy, eos = run.trainer.policy, tokenizer.eos_token_id
    assert policy.uses_lora and len(run.generations) == 2
    for call, experience in zip(run.generations, run.experiences):
        check_generation(tokenizer, call, SYSTEM)
        s = call.samples
        check_rows(experience.batch, range(len(s)), s.prompt_ids, s.completion_ids, s.finished, eos)
    assert finished_count(run) > 0  # some completions ended at <|im_end|>: the EOS checks above were not empty
    assert run.history[0]["kl"] == 0.0  # step 1: the adapter (B = 0) changes nothing, the reference is the policy
    assert all(h["sampler_mismatch"] < 1e-4 for h in run.history)  # the trainer's own weights sample (fp32)

    final = out / "final"
    prompts = [policy.format_prompt(q, SYSTEM) for q, _ in ARITHMETIC[:3]]
    loaded = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    policy.model.eval()
    ids = torch.tensor([policy.encode(prompts[0] + "The answer is 48.")])
    with torch.no_grad():
        mine, theirs, before = (m(ids).logits for m in (policy.model, loaded, base))
    assert (mine - theirs).abs().max() < 1e-4  # final/ is the trained policy (adapter merged)
    assert (mine - before).abs().max() > 1e-3  # and training moved it: the comparison is not of two base models

    def greedy(model) -> list[str]:
        texts = []
        with torch.no_grad():
            for prompt in prompts:
                x = torch.tensor([policy.encode(prompt)])
                y = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                   max_new_tokens=MAX_NEW_TOKENS, eos_token_id=eos, pad_token_id=eos)
                texts.append(tokenizer.decode(y[0, x.shape[1]:], skip_special_tokens=True))
        return texts

    expected = greedy(policy.model)
    assert all(expected) and greedy(loaded) == expected
    del loaded, base
    need_vllm()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams, TokensPrompt

    from langplay.sampling.vllm import gc_not_frozen, keep_torch_threads

    # vLLM's engine built from final/ itself (not a pooled one with the trained weights pushed in)
    with keep_torch_threads(), gc_not_frozen():
        llm = LLM(model=str(final), tokenizer=str(final), dtype="float32", seed=0, max_model_len=512,
                  enable_chunked_prefill=False, max_num_batched_tokens=8192, enforce_eager=True)
        _ENGINES.append(llm)
        outputs = llm.generate([TokensPrompt(prompt_token_ids=policy.encode(p)) for p in prompts],
                               SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS, detokenize=False),
                               use_tqdm=False)
    assert [tokenizer.decode(o.outputs[0].token_ids, skip_special_tokens=True) for o in outputs] == expected
    clean(out)


def test_grpo_vllm_logprobs_match_and_a_resumed_run_ends_as_the_straight_one(model_dir, files, tokenizer, tmp_path):
    """vLLM's engine: its log-probs are the trainer's on the real vocabulary (fp32, <= 1e-4, EOS included); a run
    saved at step 1 and resumed there ends with the straight run's weights, having sampled the same step 2."""
    need_vllm()

    def cfg(out, *more):
        return config("grpo", model_dir, out, f"data.path={files['arithmetic']}", "data.prompt_column=question",
                      f"data.system_prompt={SYSTEM}", "grpo.group_size=2", GRPO_REWARDS, "sampling.backend=vllm",
                      "train.precision=fp32", *more)

    straight = start(cfg(tmp_path / "straight", "run.save_every=1"))
    trainer, eos = straight.trainer, tokenizer.eos_token_id
    assert type(trainer.sampler).__name__ == "VLLMSampler"
    prompts = [trainer.policy.format_prompt(q, SYSTEM) for q, _ in ARITHMETIC]
    samples = trainer.sampler.generate(prompts, 2, list(range(len(prompts))))
    batch = build_batch(samples.prompt_ids, samples.completion_ids, trainer.policy.tokenizer.pad_token_id)
    with torch.no_grad():
        mine = sequence_logprobs(trainer.policy.model, batch).logp
    theirs = token_rows(samples.logprobs, batch["completion_mask"])
    finished = [i for i, f in enumerate(samples.finished) if f]
    assert finished  # EOS tokens are among those compared
    ends = batch["completion_mask"].sum(1).long() - 1
    assert all(batch["input_ids"][i, batch["input_ids"].shape[1] - batch["completion_mask"].shape[1] + ends[i]] == eos
               for i in finished)
    assert float(((mine - theirs) * batch["completion_mask"]).abs().max()) <= 1e-4
    straight.generations.clear()

    straight.history = trainer.train()
    trained(straight)
    for call, experience in zip(straight.generations, straight.experiences):
        check_generation(tokenizer, call, SYSTEM)
        s = call.samples
        check_rows(experience.batch, range(len(s)), s.prompt_ids, s.completion_ids, s.finished, eos)
    assert all(h["sampler_mismatch"] < 1e-4 for h in straight.history)  # after the weight sync too
    step_2, engine = straight.generations[1].samples.completion_ids, trainer.sampler.llm
    del straight, trainer
    gc.collect()  # its engine goes back to the pool: the resumed run takes it, weights pushed from the checkpoint

    resumed = train(cfg(tmp_path / "resumed"), resume=tmp_path / "straight" / "checkpoints" / "step-000001")
    assert resumed.trainer.sampler.llm is engine  # one engine for the configuration, not one per run
    assert [h["step"] for h in resumed.history] == [2]
    assert resumed.generations[0].samples.completion_ids == step_2
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    start_weights = load_file(model_dir / "model.safetensors")
    assert a.keys() == b.keys() and max((a[k] - start_weights[k]).abs().max().item() for k in a) > 0
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    clean(tmp_path / "straight", tmp_path / "resumed")


def test_lsp_box1_challenger_and_self_judge_bf16(model_dir, tokenizer, tmp_path):
    """LSP on the transformers sampler in bf16: Box 1 (task and template filled) as the challenger's prompt, the
    queries answered as user turns, and the frozen reference judging each answer with Box 3."""
    out = tmp_path / "lsp"
    task, template = "solve a grade-school math word problem", "{a one-sentence math question}"
    run = start(config("lsp", model_dir, out, f"lsp.task={task}", f"lsp.template='{template}'", "lsp.group_size=2",
                       "lsp.max_query_tokens=24", "lsp.self_reward=true", "lsp.judge_max_new_tokens=16",
                       f"lsp.rewards=[{{kind: function, function: '{LENGTH}', weight: 0.01}}]", "train.precision=bf16"))
    judge = run.trainer.algorithm.self_reward
    judged: list[Generation] = []
    make = judge.make_sampler
    judge.make_sampler = lambda sampling, policy: watch(make(sampling, policy), judged)
    run.history = run.trainer.train()
    trained(run)
    eos = tokenizer.eos_token_id
    assert len(run.generations) == 4 and len(judged) == 2  # per step: the queries, the answers; the judge
    for step, experience in enumerate(run.experiences):
        queries, answers = run.generations[2 * step], run.generations[2 * step + 1]
        assert queries.limit == 24 and len(queries.prompts) == 2 and len(set(queries.prompts)) == 1
        box1 = queries.prompts[0]
        assert f"generate an input for the language task '{task}'" in box1 and f"'{template}' [End Generation]" in box1
        for call in (queries, answers, judged[step]):
            check_generation(tokenizer, call)
        texts = queries.samples.texts
        assert [p.count(q) >= 1 for p, q in zip(answers.prompts, texts)] == [True, True]  # each query a user turn
        assert all("<Instruction>" + q in p for p, q in zip(judged[step].prompts, [q for q in texts for _ in range(2)]))
        # the batch: 4 answers, then the 2 queries (their prompt Box 1), each masked exactly
        a, q = answers.samples, queries.samples
        check_rows(experience.batch, range(6), a.prompt_ids + q.prompt_ids, a.completion_ids + q.completion_ids,
                   a.finished + q.finished, eos)
        assert experience.batch["is_challenger"].tolist() == [0.0] * 4 + [1.0] * 2
    first = run.history[0]
    assert abs(first["kl/solver"]) < 1e-6 and abs(first["kl/challenger"]) < 1e-6  # policy == reference at step 1
    for h in run.history:  # the judge read every answer (4 a step): a parse outcome each
        assert sum(v for k, v in h.items() if k.startswith("self_reward_parse/")) == 4
    clean(out)


def test_the_digit_judge_reads_smollm2_as_a_direct_forward_pass_does(model_dir, tokenizer):
    """lsp.judge=digits on the real tokenizer: each score 0..7 is one token after "<Score>", and the expected score
    equals one computed from a plain transformers forward pass of the whole text (fp32)."""
    from transformers import AutoModelForCausalLM

    from langplay.rewards.self_judge import DigitJudge, judge_prompt

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    policy = Policy(model, tokenizer, reference=model)
    queries, answers = ["What is 7 plus 8?", "Name a colour."], ["7 + 8 = 15. The answer is 15.", "zzz qqq"]
    scores, metrics = DigitJudge(policy).score(queries, answers, {"raw_prompt": queries})
    digits = [tokenizer.convert_tokens_to_ids(str(k)) for k in range(8)]
    for query, answer, score in zip(queries, answers, scores):
        text = policy.format_prompt(judge_prompt(query, answer)) + "<Score>"
        with torch.no_grad():
            logits = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
        p = torch.softmax(logits.float(), -1)[digits]
        assert score == pytest.approx((p * torch.arange(8)).sum().item() / p.sum().item(), abs=1e-4)
    assert 0.2 < metrics["self_reward_digit_mass"] <= 1  # SmolLM2 puts about half its mass on the digits


def test_jepo_vllm_bf16(model_dir, files, tokenizer, tmp_path):
    need_vllm()
    out = tmp_path / "jepo"
    run = train(config("jepo", model_dir, out, f"data.path={files['arithmetic']}", "data.prompt_column=question",
                       f"data.system_prompt={SYSTEM}", "sampling.backend=vllm", "train.precision=bf16",
                       "jepo.group_size=2", f"jepo.answer_marker={MARKER}", "jepo.answer_format=gsm8k"))
    trained(run)
    eos = tokenizer.eos_token_id
    for call, experience in zip(run.generations, run.experiences):
        check_generation(tokenizer, call, SYSTEM)
        s, batch = call.samples, experience.batch
        prompts, completions = unpack_batch(batch)
        for row, sampled in enumerate(s.completion_ids):
            if completions[row] == sampled:  # no marker (or left out of the bound): the sampled generation
                check_rows(batch, [row], [s.prompt_ids[row]], [sampled], [s.finished[row]], eos)
            else:  # [x | c_i, a*]: the chain cut at the marker, then the reference answer, no EOS
                text = tokenizer.decode(completions[row], skip_special_tokens=True)
                assert MARKER.lower() in text.lower() and eos not in completions[row], text
    formatted = [h for h in run.history if h["formatted"] > 0]
    assert formatted and all(torch.isfinite(torch.tensor(h["log_likelihood"])) for h in formatted)
    assert all(torch.isfinite(torch.tensor(h["sampler_mismatch"])) for h in run.history)
    clean(out)


def test_irl_online_vllm(model_dir, files, tokenizer, tmp_path):
    need_vllm()
    out = tmp_path / "irl-online"
    run = train(config("irl", model_dir, out, f"data.path={files['demos']}", "data.prompt_column=question",
                       "data.completion_column=answer", "sampling.backend=vllm", "train.precision=fp32",
                       "irl.online_fraction=0.5", "irl.td_weight=0.01"))
    trained(run)
    eos = tokenizer.eos_token_id
    for call, experience, h in zip(run.generations, run.experiences, run.history):
        check_generation(tokenizer, call)
        s, batch = call.samples, experience.batch
        experts = int(batch["is_expert"].sum())
        assert experts == 2 and len(s) == 2 and batch["is_expert"].numel() == 4
        rows = range(experts, experts + len(s))
        check_rows(batch, rows, s.prompt_ids, s.completion_ids, s.finished, eos)
        # EOS (== pad) is terminal for demonstrations and finished samples; a sample cut at the limit is not
        assert batch["terminal"].tolist() == [1.0] * experts + [float(f) for f in s.finished]
        assert h["sampled_tokens"] == sum(map(len, s.completion_ids)) and h["sampler_mismatch"] < 1e-4
    clean(out)


def test_grpo_two_processes_fsdp2_under_torchrun(model_dir, files, tmp_path):
    """Two CPU processes (gloo), each one prompt's group, the weights, gradients, optimizer state and reference
    sharded by FSDP2 (SmolLM2 ties its embeddings to its output layer); final/ loads in transformers."""
    from transformers import AutoModelForCausalLM

    from test_multiprocess import launch, ranks_that_ran

    out = tmp_path / "fsdp2"
    overrides = ["algorithm=grpo", f"model.name_or_path={model_dir}", *COMMON, f"data.path={files['arithmetic']}",
                 "data.prompt_column=question", f"data.system_prompt={SYSTEM}", "grpo.group_size=2", GRPO_REWARDS,
                 "train.precision=fp32", "train.sharding=fsdp2", f"run.output_dir={out}"]
    launch([{"name": "grpo-fsdp2", "out": str(out), "overrides": overrides}], tmp_path / "plan", processes=2)
    ran = ranks_that_ran(out)
    assert [r["rank"] for r in ran] == [0, 1] and all(r["world"] == 2 and r["sharded"] for r in ran)
    for r in ran:  # each rank holds about half the frozen reference, no full copy
        assert 0 < r["reference"]["local"] <= 0.6 * r["reference"]["full"] and not r["reference"]["plain_copy"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["skipped"] == 0.0 for m in metrics)
    assert all(torch.isfinite(torch.tensor([m["loss"], m["grad_norm"]])).all() for m in metrics)
    final = AutoModelForCausalLM.from_pretrained(out / "final", dtype=torch.float32)
    start_weights = load_file(model_dir / "model.safetensors")
    moved = max((p - start_weights[name]).abs().max().item() for name, p in final.state_dict().items()
                if name in start_weights)
    assert moved > 0
    clean(out)
