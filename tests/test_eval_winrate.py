"""Pairwise win rate (`langplay eval winrate`): verdicts, the two orders' combination, intervals, subsets, judges,
the cache, the command."""

import json
import sys
import types

import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers import LlamaForSequenceClassification
from typer.testing import CliRunner

from langplay.errors import LangplayError
from langplay.evaluation import pairwise
from langplay.evaluation.answers import Decoding
from langplay.evaluation.metrics import bootstrap_interval
from langplay.evaluation.pairwise import (combine_orders, judge_both_orders, model_outcome,
                                          parse_verdict, summarize, win_rate_report)
from langplay.testing import save_tiny_model, tiny_llama_config
from langplay.tinyworld.tokenizer import build_tokenizer

from test_eval_answers import CountingSampler

PROMPTS = [f"say {c}" for c in "abcdef"]
DECODING = Decoding(max_new_tokens=6)


def always_first(instructions, answers_a, answers_b):
    return ["Both are fine, but the first reads better. [[A]]"] * len(instructions)


def longer_answer(instructions, answers_a, answers_b):
    return ["[[tie]]" if len(a) == len(b) else "[[A]]" if len(a) > len(b) else "[[B]]"
            for a, b in zip(answers_a, answers_b)]


def scripted(replies):
    """A judge that gives these replies, in order, to the 2n pairs it is shown (model as A first, then as B)."""
    return lambda instructions, answers_a, answers_b: list(replies)


# -- pure functions on hand-computed inputs ------------------------------------------------------------------
@pytest.mark.parametrize("reply, verdict", [
    ("[[A]]", "A"), ("Answer B is more complete. [[B]]", "B"), ("[[tie]]", "tie"), ("[[ TIE ]]", "tie"),
    ("[[C]]", "tie"), ("Reply [[A]], [[B]] or [[tie]].\nVerdict: [[B]]", "B"),  # the last verdict wins
    ("A", "A"), (" b. ", "B"), ("Tie", "tie"),  # a bare verdict (a Python judge's)
    ("A is better", None), ("[[D]]", None), ("[A]", None), ("", None), (None, None), (3, None), (b"[[A]]", None),
])
def test_verdicts_are_read_from_any_reply(reply, verdict):
    assert parse_verdict(reply) == verdict


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_parsing_never_raises(text):
    assert parse_verdict(text) in ("A", "B", "tie", None)


def test_each_order_gives_the_model_an_outcome_and_a_prompt_scores_their_mean():
    assert [model_outcome(v, "A") for v in ("A", "B", "tie", None)] == [1.0, 0.0, 0.5, None]
    assert [model_outcome(v, "B") for v in ("A", "B", "tie", None)] == [0.0, 1.0, 0.5, None]
    assert combine_orders(1.0, 0.0) == 0.5 and combine_orders(1.0, 0.5) == 0.75 and combine_orders(0.0, 0.0) == 0.0
    assert combine_orders(None, 1.0) is None and combine_orders(1.0, None) is None


def test_bootstrap_interval_contains_the_estimate_shrinks_with_more_prompts_and_is_seeded():
    scores = [1.0, 0.0, 0.5, 1.0, 0.75, 0.0, 1.0, 0.25]
    mean = sum(scores) / len(scores)
    low, high = bootstrap_interval(scores, seed=3)
    assert low < mean < high
    spread = [i / 37 % 1 for i in range(0, 200, 7)]  # values of many levels: the seed shows in the interval
    assert bootstrap_interval(spread, seed=3) == bootstrap_interval(spread, seed=3) != bootstrap_interval(spread, seed=4)
    more_low, more_high = bootstrap_interval(scores * 16, seed=3)  # the same mix, 16 times the prompts
    assert more_low < mean < more_high and (more_high - more_low) < (high - low) / 2.5  # about 1/4: 1/sqrt(16)
    assert bootstrap_interval([0.5]) == (0.5, 0.5) and bootstrap_interval([]) == (None, None)


# -- the combination over prompts ------------------------------------------------------------------------------
def test_a_judge_that_always_prefers_the_first_answer_gives_exactly_half():
    n = len(PROMPTS)
    records = judge_both_orders(always_first, PROMPTS, ["x"] * n, ["yy"] * n)
    s = summarize(records)
    assert s["win_rate"] == 0.5 and (s["wins"], s["ties"], s["losses"]) == (0, n, 0)
    assert s["position_consistency"] == 0.0  # every pair: the two orders disagree
    assert (s["parse_rate"], s["decisive_rate"], s["first_position_rate"]) == (1.0, 1.0, 1.0)  # its bias, seen
    assert [r["verdict_model_as_a"] for r in records] == ["A"] * n and [r["outcome_model_as_b"] for r in records] == [0.0] * n


def test_a_judge_preferring_the_longer_answer_on_known_answers():
    model = ["aaa", "b", "cc", "dd"]  # longer, shorter, longer, as long: win, loss, win, tie
    baseline = ["a", "bbb", "c", "dd"]
    s = summarize(judge_both_orders(longer_answer, PROMPTS[:4], model, baseline))
    assert s["win_rate"] == (1 + 0 + 1 + 0.5) / 4
    assert (s["wins"], s["ties"], s["losses"], s["position_consistency"], s["parse_failures"]) == (2, 1, 1, 1.0, 0)


def test_ties_mixed_orders_and_parse_failures():
    # model as A for the 5 prompts, then model as B: outcomes (1, 1) (0.5, 1) (None, 0) (0, 0) (0.5, 0.5)
    replies = ["[[A]]", "[[tie]]", "no verdict here", "[[B]]", "[[tie]]",
               "[[B]]", "[[B]]", "[[A]]", "[[A]]", "[[tie]]"]
    records = judge_both_orders(scripted(replies), PROMPTS[:5], list("vwxyz"), list("VWXYZ"))
    assert [r["score"] for r in records] == [1.0, 0.75, None, 0.0, 0.5]
    s = summarize(records)
    assert s["win_rate"] == (1 + 0.75 + 0 + 0.5) / 4  # prompt 3 excluded: its model-as-A verdict is unreadable
    assert (s["judged"], s["wins"], s["ties"], s["losses"]) == (4, 2, 1, 1)
    assert (s["parse_failures"], s["excluded"], s["position_consistency"]) == (1, 1, 3 / 4)
    # the judge's rates over all 10 replies: 9 readable, 6 of them pick an answer, 3 of those the first shown
    assert (s["parse_rate"], s["decisive_rate"], s["first_position_rate"]) == (9 / 10, 6 / 9, 3 / 6)
    none = summarize(judge_both_orders(scripted(["?"] * 4), PROMPTS[:2], ["a", "b"], ["c", "d"]))
    assert none["win_rate"] is None and none["parse_failures"] == 4 and none["excluded"] == 2
    assert (none["parse_rate"], none["decisive_rate"], none["first_position_rate"]) == (0.0, None, None)


def test_subsets_are_reported_separately_and_overall_is_their_prompt_weighted_mix():
    model = ["aaa", "b", "cc", "dd", "eeee", "f"]
    baseline = ["a", "bbb", "c", "dd", "e", "ff"]
    subsets = ["x", "x", "y", "y", "y", "z"]
    report = win_rate_report(judge_both_orders(longer_answer, PROMPTS, model, baseline, subsets), seed=0)
    parts = report["subsets"]
    assert list(parts) == ["x", "y", "z"] and [parts[k]["prompts"] for k in parts] == [2, 3, 1]
    assert (parts["x"]["win_rate"], parts["y"]["win_rate"], parts["z"]["win_rate"]) == (0.5, 2.5 / 3, 0.0)
    weighted = sum(p["win_rate"] * p["judged"] for p in parts.values()) / sum(p["judged"] for p in parts.values())
    assert report["overall"]["win_rate"] == pytest.approx(weighted) == pytest.approx(3.5 / 6)
    assert report["overall"]["ci_low"] <= report["overall"]["win_rate"] <= report["overall"]["ci_high"]


def test_a_judge_with_the_wrong_number_of_replies_is_a_clear_error():
    with pytest.raises(LangplayError, match="returned 1 replies for 4 pairs"):
        judge_both_orders(scripted(["[[A]]"]), PROMPTS[:2], ["a", "b"], ["c", "d"])


# -- judges and the cache on tiny models -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """Two tiny causal LMs (different weights) and a tiny sequence classifier as reward model."""
    root = tmp_path_factory.mktemp("winrate")
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = tiny_llama_config(len(tokenizer))
    config.num_labels = 1
    LlamaForSequenceClassification(config).save_pretrained(root / "rm")
    tokenizer.save_pretrained(root / "rm")
    return {"model": save_tiny_model(root / "model", seed=0), "baseline": save_tiny_model(root / "base", seed=1),
            "rm": root / "rm"}


class CountingComplete:
    """A text judge's `complete` that prefers the longer answer it finds in our prompt, counting its calls."""

    def __init__(self):
        self.prompts = []

    def __call__(self, prompts):
        self.prompts += prompts
        replies = []
        for p in prompts:
            a = p.split("[Answer A]\n")[1].split("\n\n[Answer B]")[0]
            b = p.split("[Answer B]\n")[1].split("\n\nFirst explain")[0]
            replies.append("[[tie]]" if len(a) == len(b) else "[[A]]" if len(a) > len(b) else "[[B]]")
        return replies


def test_an_evaluation_resumes_from_its_cache_calling_no_sampler_and_no_judge(tiny_pair, tmp_path, monkeypatch):
    complete = CountingComplete()
    counter = CountingSampler(monkeypatch)

    def run():
        cache = pairwise.answer_cache(tmp_path)
        judge = pairwise.completion_judge(pairwise.cached_complete(complete, cache, "counting", progress=False))
        return pairwise.evaluate_win_rate(str(tiny_pair["model"]), str(tiny_pair["baseline"]), PROMPTS, judge,
                                          decoding=DECODING, cache=cache, device="cpu", progress=False)

    report, judgments = run()
    assert len(counter.prompts) == 2 * len(PROMPTS) and len(complete.prompts) == 2 * len(PROMPTS)
    by_hand = [1.0 if len(j["model_answer"]) > len(j["baseline_answer"]) else
               0.5 if len(j["model_answer"]) == len(j["baseline_answer"]) else 0.0 for j in judgments]
    assert report["overall"]["win_rate"] == sum(by_hand) / len(by_hand)
    counter.prompts.clear()
    complete.prompts.clear()
    again, _ = run()
    assert counter.prompts == [] and complete.prompts == []  # everything came from answers.jsonl
    assert again == report


def test_an_llm_judge_writes_through_the_sampler_and_its_replies_are_cached(tiny_pair, tmp_path, monkeypatch):
    counter = CountingSampler(monkeypatch)
    cache = pairwise.answer_cache(tmp_path)
    judge = pairwise.llm_judge(str(tiny_pair["model"]), cache, template="{instruction}|{answer_a}|{answer_b}",
                               max_new_tokens=5, device="cpu", progress=False)
    records = judge_both_orders(judge, PROMPTS[:3], ["x", "y", "z"], ["u", "v", "w"])
    assert len(counter.prompts) == 6 and "say a|x|u" in counter.prompts[0]  # the chat-formatted judge prompt
    s = summarize(records)
    assert s["parse_failures"] == 6 and s["win_rate"] is None  # a random tiny model writes no verdict: counted
    counter.prompts.clear()
    again = judge_both_orders(judge, PROMPTS[:3], ["x", "y", "z"], ["u", "v", "w"])
    assert counter.prompts == [] and again == records


def test_a_model_against_itself_is_half_with_a_reward_model_judge(tiny_pair, tmp_path):
    judge = pairwise.reward_model_judge(str(tiny_pair["rm"]), device="cpu")
    model = str(tiny_pair["model"])
    report, judgments = pairwise.evaluate_win_rate(model, model, PROMPTS, judge, decoding=DECODING,
                                                   cache=pairwise.answer_cache(tmp_path), device="cpu", progress=False)
    s = report["overall"]
    assert s["win_rate"] == 0.5 and s["ties"] == len(PROMPTS) and s["position_consistency"] == 1.0
    assert judgments[0]["reply_model_as_a"].startswith("score A ") and report["judge"] == f"reward_model:{tiny_pair['rm']}"
    # and it does tell answers apart: a different answer gets a different score
    replies = judge(["say a"], ["aaaa"], ["zz"])
    assert parse_verdict(replies[0]) in ("A", "B")


def test_the_http_judge_asks_a_chat_server_and_caches_its_replies(tmp_path):
    from judge_server import chat_reply, serving

    server, stop = serving()
    server.respond = lambda number, body: chat_reply("I prefer the first. [[A]]")  # position-biased judge
    try:
        cache = pairwise.answer_cache(tmp_path)
        judge = pairwise.http_judge(server.url, "big-judge", cache, max_tokens=64, progress=False, retries=0)
        records = judge_both_orders(judge, PROMPTS[:2], ["x", "y"], ["u", "v"])
        assert summarize(records)["win_rate"] == 0.5 and summarize(records)["position_consistency"] == 0.0
        assert len(server.requests) == 4  # concurrent: in any order
        assert {(r["model"], r["max_tokens"]) for r in server.requests} == {("big-judge", 64)}
        asked = {r["messages"][0]["content"] for r in server.requests}
        assert asked == {pairwise.judge_prompt(q, a, b) for q, a, b in
                         [("say a", "x", "u"), ("say a", "u", "x"), ("say b", "y", "v"), ("say b", "v", "y")]}
        judge_both_orders(judge, PROMPTS[:2], ["x", "y"], ["u", "v"])
        assert len(server.requests) == 4  # the second time, every reply came from the cache
    finally:
        stop()


# -- options, the preset, the command ----------------------------------------------------------------------------
def test_exactly_one_judge_is_chosen_and_the_command_line_replaces_a_presets():
    assert pairwise.check_judge_choice("m", None, None, None) == "judge"
    assert pairwise.check_judge_choice(None, "http://u", "m", None) == "judge_url"
    for args, message in [((None, None, None, None), "no judge given"), (("m", None, None, "rm"), "two judges given"),
                          ((None, "http://u", None, None), "go together"), ((None, None, "m", None), "go together")]:
        with pytest.raises(LangplayError, match=message):
            pairwise.check_judge_choice(*args)
    preset = {"judge_model": "big", "data": "d"}
    assert pairwise.prefer_given_judge(preset, {"reward_model": "rm"}) == {"data": "d"}
    assert pairwise.prefer_given_judge(preset, {"judge_url": "http://u"}) == preset  # the preset's model, served there
    assert pairwise.prefer_given_judge(preset, {"judge": None}) == preset


def test_the_lsp_alpacaeval_preset_mirrors_the_papers_protocol():
    from langplay.evaluation.answers import eval_preset

    options = dict.fromkeys(["model", "baseline", "data", "prompt_column", "subset", "split", "limit", "subset_column",
                             "judge", "judge_url", "judge_model", "reward_model", "temperature", "max_new_tokens",
                             "judge_max_new_tokens"])
    preset = eval_preset("eval_lsp_alpacaeval", "winrate", {**options, "model": "runs/lsp/final"})
    assert preset["model"] == "runs/lsp/final" and preset["baseline"] == "meta-llama/Llama-3.2-3B-Instruct"
    assert (preset["data"], preset["subset"], preset["split"]) == ("tatsu-lab/alpaca_eval", "alpaca_eval", "eval")
    assert (preset["prompt_column"], preset["subset_column"], preset["temperature"]) == ("instruction", "dataset", 0.01)
    assert preset["judge_model"] == "meta-llama/Llama-4-Maverick-17B-128E-Instruct"  # the v3 paper's judge


def test_the_command_writes_the_report_the_judgments_and_the_plot(tiny_pair, tmp_path, monkeypatch):
    from langplay.cli import app

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "kind": "xy"[i % 2]}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "eval"
    args = ["eval", "winrate", "--model", str(tiny_pair["model"]), "--baseline", str(tiny_pair["baseline"]),
            "--data", str(data), "--subset-column", "kind", "--max-new-tokens", "6", "--output", str(out)]
    result = CliRunner().invoke(app, args + ["--reward-model", str(tiny_pair["rm"])])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert list(report["subsets"]) == ["x", "y"] and report["overall"]["prompts"] == len(PROMPTS)
    judgments = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == len(PROMPTS) and {"reply_model_as_a", "reply_model_as_b"} <= set(judgments[0])
    assert (out / "winrate.png").stat().st_size > 0 and "overall" in result.output

    seen = []

    class FakeChatClient:  # the same evaluation judged over HTTP: answers from the cache, the judge's wiring
        def __init__(self, url, model, **options):
            seen.append((url, model, options["max_tokens"]))

        def complete(self, prompts):
            return ["[[B]]"] * len(prompts)

    monkeypatch.setitem(sys.modules, "langplay.rewards.http_judge", types.SimpleNamespace(ChatClient=FakeChatClient))
    result = CliRunner().invoke(app, args + ["--judge-url", "http://judge/v1", "--judge-model", "j",
                                             "--judge-max-new-tokens", "32"])
    assert result.exit_code == 0, result.output
    assert seen == [("http://judge/v1", "j", 32)]
    assert json.loads((out / "report.json").read_text())["overall"]["position_consistency"] == 0.0


def test_the_command_samples_answers_and_the_judge_with_the_backend_and_seed_given(tiny_pair, tmp_path, monkeypatch):
    """--backend reaches every sampler (the two models' answers and an LLM judge's replies), --seed the answers'
    noise keys; an unknown backend is one line before any model loads."""
    import langplay.sampling as sampling
    from langplay.cli import app
    from langplay.sampling.keys import key_of

    backends, seeds, real = [], [], sampling.make_sampler

    def recording(config, policy):
        inner = real(config, policy)
        backends.append(config.backend)

        class Recording:
            def generate(self, prompts, n, keys, max_new_tokens=None):
                seeds.append(list(keys))
                return inner.generate(prompts, n, keys, max_new_tokens)

        return Recording()

    monkeypatch.setattr(sampling, "make_sampler", recording)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:2]))
    args = ["eval", "winrate", "--model", str(tiny_pair["model"]), "--baseline", str(tiny_pair["baseline"]),
            "--data", str(data), "--judge", str(tiny_pair["model"]), "--max-new-tokens", "4",
            "--judge-max-new-tokens", "4", "--output", str(tmp_path / "eval")]
    result = CliRunner().invoke(app, args + ["--backend", "hf", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert backends == ["hf"] * 3  # model, baseline, judge
    assert seeds[0] == [key_of(7, 0), key_of(7, 1)]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["decoding"]["seed"] == 7 and report["overall"]["parse_rate"] is not None
    result = CliRunner().invoke(app, args + ["--backend", "tpu"])
    assert result.exit_code == 2 and "unknown backend 'tpu'" in result.output
