"""Every `langplay eval` command on the real model (issue 38, item 6): SmolLM2-135M-Instruct as `./dev setup`
provides it (real_model.py), through the command line, on GSM8K rows (tests/data/gsm8k_sample.jsonl, the first 50
of GSM8K's test split, MIT: tests/data/GSM8K_LICENSE) and a few easy questions in GSM8K's format:

    accuracy    hf and vLLM   the gold read after "####"; each row's score the numeric match of its answer (checked
                              here by a rule of the test's own); the summary the mean of the rows; pass@k of the rows
    likelihood  vLLM          per row log pi(solution + <|im_end|> | prompt) and its tokens as transformers computes
                              them directly (pad == EOS: the EOS counted once); the bound finite
    diversity   vLLM          metrics in range, recomputed from the cached samples; near-greedy samples nearly the
                              same (distinct-2 low, Self-BLEU high), T = 1 ones far apart
    winrate     hf, vLLM      SmolLM2 judging itself against itself: both orders, its parse / decisive rates as its
                              replies give them, every readable prompt a tie (0.5); real answers of two models
                              judged by scripted judges over HTTP: the always-[[A]] judge gives 0.5 exactly, the
                              longer-answer judge what its verdicts in both orders give

Marked `real_model` (and `slow`): `./dev test` leaves them out, `./dev test-real` runs them (.ci/run's second stage).
"""

import gc
import itertools
import json
import math
import os
import re
import shutil
import statistics
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from langplay.cli import app

from real_model import real_model_dir

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
HERE = Path(__file__).parent
EASY = [  # short questions SmolLM2 answers in one sentence, right or wrong, in GSM8K's format
    ("What is 12 times 4?", "12 * 4 = <<12*4=48>>48\n#### 48"),
    ("What is 20 minus 9?", "20 - 9 = <<20-9=11>>11\n#### 11"),
    ("Tom has 3 apples and buys 5 more. How many apples does he have?", "3 + 5 = <<3+5=8>>8\n#### 8"),
    ("What is 7 plus 8?", "7 + 8 = <<7+8=15>>15\n#### 15"),
]
GSM8K_ROWS = 2  # the first rows of GSM8K's test split, after the easy ones
TOKENS = 32  # every command's answers as long: the commands share one vLLM engine (and the judge its own)
NUMBER = re.compile(r"-?[\d,]*\.?\d+")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return real_model_dir()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rows = [{"question": q, "answer": a} for q, a in EASY]
    rows += [json.loads(line) for line in (HERE / "data" / "gsm8k_sample.jsonl").read_text().splitlines()[:GSM8K_ROWS]]
    path = tmp_path_factory.mktemp("real-eval") / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(autouse=True)
def timed(request):
    """Each test's wall and CPU time, printed (`./dev test-real -s` shows them)."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    print(f"\n[real_model] {request.node.name}: {time.perf_counter() - wall:.1f} s, "
          f"{time.process_time() - cpu:.1f} s CPU")


@pytest.fixture(scope="module")
def winrate_folder(tmp_path_factory) -> Path:
    """One eval folder for the win-rate tests: the model's answers are sampled once, each judge's replies cached
    apart."""
    return tmp_path_factory.mktemp("real-winrate") / "eval"


def need_vllm():
    if os.environ.get("LANGPLAY_REQUIRE_VLLM") != "1":
        pytest.importorskip("vllm")
    gc.collect()  # samplers of earlier commands give their engine back to the pool


def cli(*args) -> str:
    result = CliRunner().invoke(app, ["eval", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def last_number_right(answer: str, gold: str) -> float:
    """The test's own GSM8K check: the answer's last number equals the gold one."""
    found = NUMBER.findall(answer)
    return float(bool(found) and float(found[-1].replace(",", "")) == float(gold))


# -- accuracy --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_accuracy_reads_the_gold_after_hashes_and_scores_each_answer_by_its_last_number(backend, model_dir, data,
                                                                                        tmp_path):
    if backend == "vllm":
        need_vllm()
    samples = 4 if backend == "vllm" else 0  # pass@k from vLLM's samples; the hf loop answers near-greedily only
    out = tmp_path / "accuracy"
    text = cli("accuracy", "--model", model_dir, "--data", data, "--question-column", "question", "--answer-format",
               "gsm8k", "--verifier", "numeric_match", "--samples", samples, "--temperature", 0.7, "--max-new-tokens",
               TOKENS, "--backend", backend, "--output", out)
    report, rows = json.loads((out / "report.json").read_text()), read_rows(out / "rows.jsonl")
    golds = [json.loads(line)["answer"].rsplit("####", 1)[1].strip() for line in data.read_text().splitlines()]
    assert [r["gold"] for r in rows] == golds == ["48", "11", "8", "15", "18", "3"]
    for row in rows:
        assert row["greedy_score"] == last_number_right(row["greedy_answer"], row["gold"]), row
        assert "<|im_end|>" not in row["greedy_answer"] and "<|im_start|>" not in row["greedy_answer"]
    # SmolLM2 gets some easy questions right ("12 times 4 is 48."), GSM8K's not in 32 tokens
    assert sum(r["greedy_score"] for r in rows[: len(EASY)]) >= 1, [r["greedy_answer"] for r in rows]
    assert report["overall"]["prompts"] == len(rows) and "greedy" in text
    assert report["overall"]["greedy"] == pytest.approx(sum(r["greedy_score"] for r in rows) / len(rows))
    if samples:
        cached = [json.loads(line)["answers"] for line in (out / "answers.jsonl").read_text().splitlines()]
        pools = [a for a in cached if len(a) == samples]
        assert len(pools) == len(rows)
        for row in rows:
            assert len(row["sampled_scores"]) == samples
        # pass@k by enumeration: the share of the k-subsets of each row's samples that hold a right one
        for k in (1, 2, 4):
            by_subsets = [statistics.fmean(max(c) for c in itertools.combinations(r["sampled_scores"], k)) for r in rows]
            assert report["overall"][f"pass@{k}"] == pytest.approx(statistics.fmean(by_subsets))
        # (at T = 0.7 SmolLM2 gets an easy question right in some samples and not others, so pass@2 > pass@1)
        assert any(0 < sum(r["sampled_scores"]) < samples for r in rows), [r["sampled_scores"] for r in rows]
        for row, pool in zip(rows, pools):  # cached greedy answers first, then each prompt's samples in order
            assert row["sampled_scores"] == [last_number_right(sample, row["gold"]) for sample in pool]


# -- likelihood ------------------------------------------------------------------------------------------------
def test_likelihood_of_reference_solutions_matches_transformers_per_token(model_dir, data, tmp_path):
    need_vllm()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "likelihood"
    cli("likelihood", "--model", model_dir, "--data", data, "--question-column", "question", "--answer-eos",
        "--samples", 2, "--marker", "####", "--max-new-tokens", TOKENS, "--backend", "vllm", "--limit", 5,
        "--output", out)
    report, rows = json.loads((out / "report.json").read_text()), read_rows(out / "rows.jsonl")
    assert len(rows) == 5 and report["answer_eos"] is True
    for row in rows:
        assert math.isfinite(row["plain"]) and row["plain"] < 0 and math.isfinite(row["bound"]) and row["bound"] < 0
    for kind in ("plain", "bound"):
        per_token = -sum(r[kind] for r in rows) / sum(r[f"{kind}_tokens"] for r in rows)
        assert report[kind]["nll_per_token"] == pytest.approx(per_token) and 0 < per_token < 20
    assert 0 <= report["bound"]["marker_found"] <= 1

    # the GSM8K row, directly: the chat template's prompt, the solution, then <|im_end|> (== the pad token)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    row = json.loads(data.read_text().splitlines()[len(EASY)])
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": row["question"]}], tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target = tokenizer(row["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + target])).logits[0, len(prompt_ids) - 1 : -1]
    token_logp = torch.log_softmax(logits.double(), -1).gather(1, torch.tensor(target)[:, None])[:, 0]
    ours = rows[len(EASY)]
    assert ours["answer"] == row["answer"] and ours["plain_tokens"] == len(target)
    assert ours["plain"] / ours["plain_tokens"] == pytest.approx(float(token_logp.mean()), abs=1e-5)
    assert ours["plain"] == pytest.approx(float(token_logp.sum()), abs=1e-3)


# -- diversity -------------------------------------------------------------------------------------------------
def distinct(texts: list[str], n: int) -> float:
    grams = [tuple(t.split()[i : i + n]) for t in texts for i in range(len(t.split()) - n + 1)]
    return len(set(grams)) / len(grams)


def test_diversity_is_low_near_greedy_high_at_temperature_one_and_recomputes_from_the_samples(model_dir, data,
                                                                                               tmp_path):
    need_vllm()
    out, k = tmp_path / "diversity", 4
    cli("diversity", "--model", model_dir, "--data", data, "--question-column", "question", "--temperatures",
        "0.01,1.0", "--samples", k, "--verifier", "numeric_match", "--answer-format", "gsm8k", "--max-new-tokens",
        TOKENS, "--backend", "vllm", "--limit", 3, "--output", out)
    report = json.loads((out / "report.json").read_text())
    near, hot = report["points"]
    assert (near["temperature"], hot["temperature"]) == (0.01, 1.0)
    for point in (near, hot):
        assert all(0 <= point[m] <= 1 for m in ("self_bleu", "distinct_1", "distinct_2", "score")), point
    cached = [json.loads(line)["answers"] for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(cached) == 2 * 3 and all(len(pool) == k for pool in cached)
    pools = {0.01: cached[:3], 1.0: cached[3:]}  # written temperature by temperature, prompts in order
    for point in (near, hot):
        own = sum(distinct(pool, 2) for pool in pools[point["temperature"]]) / 3
        assert point["distinct_2"] == pytest.approx(own)
    # near-greedy: k nearly identical samples, so about 1/k of their bigrams distinct; at T = 1 nearly all
    assert near["distinct_2"] <= 0.45 and near["self_bleu"] >= 0.7, near
    assert hot["distinct_2"] >= 0.7 and hot["self_bleu"] <= 0.4, hot


# -- win rate --------------------------------------------------------------------------------------------------
def test_smollm2_as_the_position_swapped_judge_of_itself_gives_ties_and_its_rates(model_dir, data, winrate_folder):
    """The transformers loop answers and judges (a judge's long prompts would build a second vLLM engine here)."""
    out, n = winrate_folder, 4
    text = cli("winrate", "--model", model_dir, "--baseline", model_dir, "--judge", model_dir, "--data", data,
               "--prompt-column", "question", "--limit", n, "--max-new-tokens", TOKENS, "--judge-max-new-tokens", 48,
               "--backend", "hf", "--output", out)
    report, judgments = json.loads((out / "report.json").read_text()), read_rows(out / "judgments.jsonl")
    s = report["overall"]
    assert len(judgments) == n and "decisive" in text and "parse fail." in text
    verdicts = [j[k] for j in judgments for k in ("verdict_model_as_a", "verdict_model_as_b")]
    readable = [v for v in verdicts if v is not None]
    assert s["parse_failures"] == verdicts.count(None) and s["parse_rate"] == len(readable) / (2 * n)
    assert s["decisive_rate"] == (sum(v != "tie" for v in readable) / len(readable) if readable else None)
    for j in judgments:  # A against A: the same answers in both orders, so the same judge prompt and reply
        assert j["model_answer"] == j["baseline_answer"] and j["reply_model_as_a"] == j["reply_model_as_b"]
        assert j["score"] in (None, 0.5)
    assert s["win_rate"] in (None, 0.5) and s["wins"] == s["losses"] == 0


def terse_copy(model_dir: Path, folder: Path) -> Path:
    """SmolLM2 with another default system prompt: the same weights (linked), other answers."""
    folder.mkdir()
    for item in model_dir.iterdir():
        if item.suffix == ".safetensors":
            (folder / item.name).symlink_to(item)
        else:
            shutil.copy(item, folder / item.name)
    template = folder / "chat_template.jinja"
    text = template.read_text()
    assert "You are a helpful AI assistant named SmolLM, trained by Hugging Face" in text
    template.write_text(text.replace("You are a helpful AI assistant named SmolLM, trained by Hugging Face",
                                     "Answer with the number only."))
    return folder


def test_real_answers_are_judged_in_both_orders_by_scripted_judges(model_dir, data, winrate_folder, tmp_path):
    """The model against a terse baseline on real answers (vLLM), judged over HTTP: a judge that always says [[A]]
    gives exactly 0.5 with every prompt's orders disagreeing; one that prefers the longer answer gives the win rate
    its verdicts give by hand, each pair asked in both orders."""
    need_vllm()
    from judge_server import chat_reply, serving

    from langplay.evaluation.pairwise import judge_prompt

    terse = terse_copy(model_dir, tmp_path / "terse")
    out, n = winrate_folder, 4
    server, stop = serving()
    answer = re.compile(r"\[Answer A\]\n(.*)\n\n\[Answer B\]\n(.*)\n\nFirst explain", re.DOTALL)

    def longer(number, body):
        a, b = answer.search(body["messages"][0]["content"]).groups()
        return chat_reply("Reasoning. [[tie]]" if len(a) == len(b) else "[[A]]" if len(a) > len(b) else "[[B]]")

    args = ["winrate", "--model", model_dir, "--baseline", terse, "--data", data, "--prompt-column", "question",
            "--limit", n, "--max-new-tokens", TOKENS, "--backend", "vllm", "--judge-url", server.url, "--output", out]
    try:
        server.respond = lambda number, body: chat_reply("The first one. [[A]]")
        cli(*args, "--judge-model", "first")
        s = json.loads((out / "report.json").read_text())["overall"]
        assert (s["win_rate"], s["ties"], s["position_consistency"]) == (0.5, n, 0.0)
        assert (s["parse_rate"], s["decisive_rate"], s["first_position_rate"]) == (1.0, 1.0, 1.0)
        judgments = read_rows(out / "judgments.jsonl")
        differ = sum(j["model_answer"] != j["baseline_answer"] for j in judgments)
        assert differ >= 1  # (SmolLM2 often ignores the system prompt: some answers are the same)
        asked = [body["messages"][0]["content"] for body in server.requests]
        assert set(asked) == {judge_prompt(j["prompt"], a, b) for j in judgments for a, b in  # a same pair once
                              [(j["model_answer"], j["baseline_answer"]), (j["baseline_answer"], j["model_answer"])]}

        server.respond = longer  # another judge (its replies cached apart), the same answers (from the cache)
        cli(*args, "--judge-model", "longer")
        report, judgments = json.loads((out / "report.json").read_text()), read_rows(out / "judgments.jsonl")
        by_hand = [1.0 if len(j["model_answer"]) > len(j["baseline_answer"]) else
                   0.5 if len(j["model_answer"]) == len(j["baseline_answer"]) else 0.0 for j in judgments]
        assert report["overall"]["win_rate"] == sum(by_hand) / n and report["overall"]["position_consistency"] == 1.0
        assert by_hand.count(0.5) == n - differ  # the same answer: a tie in both orders
        s = report["overall"]  # ties are readable and not decisive; of the decisive verdicts, half say A
        assert (s["parse_rate"], s["decisive_rate"], s["first_position_rate"]) == (1.0, differ / n, 0.5)
    finally:
        stop()
