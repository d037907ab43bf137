"""Judges served over HTTP, against a small chat-completions server of the tests' own on 127.0.0.1: one request
per completion, concurrent, in order; retries, timeouts and refusals as one-line errors; replies with no text as
the fallback; the API key; and 2-step GRPO and LSP runs scored by the endpoint."""

import json
import math
import re
import socket
import time

import pytest

from langplay.config import HttpJudgeConfig, load_config
from langplay.errors import LangplayError
from langplay.rewards.http_judge import ChatClient, HttpJudgeReward, http_self_reward
from langplay.rewards.self_judge import judge_prompt
from langplay.trainer import Trainer

from judge_server import BOX_3, chat_reply, serving  # noqa: E402

QUICK = {"backoff_s": 0.01, "timeout_s": 5.0}  # retries in hundredths of a second, not the default half-second


@pytest.fixture
def server():
    judge, stop = serving()
    yield judge
    stop()


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the client ---------------------------------------------------------------------------------------------------
def test_one_request_per_prompt_concurrent_and_in_order(server):
    server.delay_s = lambda number: 0.02 * (number % 4)  # later requests often finish first
    prompts = [f"prompt {i}" for i in range(12)]
    replies = ChatClient(server.url, "judge", concurrency=4, max_tokens=17, temperature=0.5, **QUICK).complete(prompts)
    assert replies == prompts  # the server echoes: each reply is its own prompt's, in the prompts' order
    assert len(server.requests) == 12 and server.max_in_flight > 1
    assert sorted(body["messages"][0]["content"] for body in server.requests) == sorted(prompts)
    assert server.requests[0] | {"messages": None} == {"model": "judge", "messages": None, "max_tokens": 17,
                                                      "temperature": 0.5}
    assert all(body["messages"][0]["role"] == "user" and len(body["messages"]) == 1 for body in server.requests)


@pytest.mark.parametrize("status", [503, 429])
def test_busy_or_failing_server_is_retried_until_it_answers(server, status):
    server.respond = lambda number, body: (status, {"error": {"message": "busy"}}) if number < 2 else chat_reply("ok")
    assert ChatClient(server.url, "judge", retries=3, **QUICK).complete(["x"]) == ["ok"]
    assert len(server.requests) == 3


def test_a_server_failing_every_try_is_one_line_with_its_message(server):
    server.respond = lambda number, body: (500, {"object": "error", "message": "engine dead\nTraceback ..."})
    with pytest.raises(LangplayError) as info:
        ChatClient(server.url, "judge", retries=2, **QUICK).complete(["x"])
    assert str(info.value) == f"judge endpoint {server.url} failed after 3 tries: HTTP 500: engine dead"
    assert len(server.requests) == 3


def test_a_reply_slower_than_the_timeout_is_retried_then_one_line(server):
    server.delay_s = 1.0
    started = time.perf_counter()
    with pytest.raises(LangplayError) as info:
        ChatClient(server.url, "judge", retries=1, timeout_s=0.2, backoff_s=0.01).complete(["x"])
    assert str(info.value) == f"judge endpoint {server.url} timed out after 2 tries: no reply within timeout_s=0.2 s"
    assert len(server.requests) == 2 and time.perf_counter() - started < 1.5


def test_an_unreachable_endpoint_is_one_line_naming_the_url():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(LangplayError) as info:
        ChatClient(url, "judge", retries=2, **QUICK).complete(["x", "y"])
    assert str(info.value) == f"judge endpoint {url} unreachable after 3 tries: connection refused"


@pytest.mark.parametrize("payload", [{"error": {"message": "max_tokens is too large", "code": 400}},  # OpenAI's
                                     {"object": "error", "message": "max_tokens is too large"}])  # older vLLM's
def test_a_refused_request_fails_at_once_quoting_the_server(server, payload):
    server.respond = lambda number, body: (400, payload)
    with pytest.raises(LangplayError) as info:
        ChatClient(server.url, "judge", retries=3, **QUICK).complete(["x"])
    assert str(info.value) == (f"judge endpoint {server.url} refused the request: HTTP 400: max_tokens is too large")
    assert len(server.requests) == 1


def test_a_url_without_the_api_base_says_so(server):
    with pytest.raises(LangplayError, match="HTTP 404: no such route .*http://host:8000/v1"):
        ChatClient(server.url.removesuffix("/v1"), "judge", **QUICK).complete(["x"])


NO_TEXT = {
    "not json": (200, "<html>garbage</html>"),
    "no choices": (200, {"choices": []}),
    "no message": (200, {"choices": [{"index": 0}]}),
    "content null": (200, {"choices": [{"message": {"role": "assistant", "content": None}}]}),
    "content missing": (200, {"choices": [{"message": {"role": "assistant"}}]}),
    "content not text": (200, {"choices": [{"message": {"content": [1, 2]}}]}),
    "empty": (200, ""),
}


@pytest.mark.parametrize("case", list(NO_TEXT))
def test_a_reply_with_no_text_is_empty_and_scores_the_fallback(server, case):
    server.respond = lambda number, body: NO_TEXT[case]
    settings = HttpJudgeConfig(**QUICK)
    assert ChatClient.from_config(server.url, "judge", settings).complete(["x"]) == [""]
    rewards, metrics = HttpJudgeReward(server.url, "judge", settings).score(["p"], ["a"], {"raw_prompt": ["q"]})
    assert rewards == [0.0] and metrics == {"reward/http_judge": 0.0, "http_judge_parse/fallback": 1.0}
    quality, metrics = http_self_reward(server.url, "judge", settings, 64).score(["p"], ["a"], {"raw_prompt": ["q"]})
    assert math.isnan(quality[0]) and metrics == {"self_reward_parse/fallback": 1.0}


def test_the_api_key_is_sent_as_a_bearer_token_when_set(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ChatClient(server.url, "judge", **QUICK).complete(["x"])
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    ChatClient(server.url, "judge", **QUICK).complete(["x"])
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-other")
    ChatClient(server.url, "judge", api_key_env="MY_JUDGE_KEY", **QUICK).complete(["x"])
    auth = [{k.lower(): v for k, v in h.items()}.get("authorization") for h in server.headers]
    assert auth == [None, "Bearer sk-test", "Bearer sk-other"]


# -- the scorers ----------------------------------------------------------------------------------------------------
def scripted_score(response: str) -> int:
    return len(response) % 8  # 0..7, Box 3's scale


def box_3_judge(number, body):
    """Scores the response by its length; a Calculation only for odd lengths, never a Score for length 7."""
    _, response = BOX_3.search(body["messages"][0]["content"]).groups()
    score = scripted_score(response)
    if score == 7:
        return chat_reply("I cannot decide.")
    return chat_reply(f"Fine. <Calculation>{score}</Calculation>" + ("" if score % 2 else f" <Score>{score}</Score>"))


def test_the_reward_scores_each_instruction_and_response_with_box_3(server):
    server.respond = box_3_judge
    judge = HttpJudgeReward(server.url, "judge", HttpJudgeConfig(**QUICK))
    answers = ["ab", "abc", "abcdefg", ""]
    rewards, metrics = judge.score(["<formatted>"] * 4, answers, {"raw_prompt": ["q0", "q1", "q2", "q3"]})
    assert rewards == [2.0, 3.0, 0.0, 0.0]  # length 7: no readable score, the fallback 0
    assert metrics == {"reward/http_judge": 1.25, "http_judge_parse/score": 2.0, "http_judge_parse/calculation": 1.0,
                       "http_judge_parse/fallback": 1.0}
    assert sorted(body["messages"][0]["content"] for body in server.requests) == sorted(
        judge_prompt(q, a) for q, a in zip(["q0", "q1", "q2", "q3"], answers))


def test_a_two_step_grpo_run_is_rewarded_by_the_endpoint(server, tiny_model, prompt_file, tmp_path):
    server.respond = box_3_judge
    reward = f"grpo.rewards=[{{kind: http_judge, url: '{server.url}', model: judge}}]"
    config = load_config(overrides=[
        f"model.name_or_path={tiny_model}", f"data.path={prompt_file}", f"run.output_dir={tmp_path}/run",
        "train.steps=2", "train.prompts_per_step=2", "grpo.group_size=4", "sampling.max_new_tokens=9",
        "run.progress=false", "run.save_every=0", "http_judge.backoff_s=0.01", "http_judge.max_tokens=32", reward])
    history = Trainer(config).train()
    assert len(server.requests) == 2 * 2 * 4  # one request per completion
    assert {body["model"] for body in server.requests} == {"judge"}
    assert {body["max_tokens"] for body in server.requests} == {32}
    judged = server.judged()
    assert all(re.fullmatch("say [a-h]", instruction) for instruction, _ in judged)  # the raw prompt, no template
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    by_response = {response: float(scripted_score(response) if scripted_score(response) < 7 else 0)
                   for _, response in judged}
    assert samples and all(s["reward"] == by_response[s["completion"]] for s in samples)
    for step, metrics in enumerate(history):
        scores = [by_response[response] for _, response in judged[8 * step : 8 * step + 8]]
        assert metrics["reward"] == pytest.approx(sum(scores) / 8)
        assert metrics["reward/http_judge"] == pytest.approx(sum(scores) / 8)


def test_a_two_step_lsp_run_takes_its_quality_reward_from_the_endpoint(server, tiny_model, tmp_path):
    server.respond = box_3_judge
    config = load_config(overrides=[
        "algorithm=lsp", f"model.name_or_path={tiny_model}", f"run.output_dir={tmp_path}/run", "train.steps=2",
        "train.prompts_per_step=2", "lsp.group_size=2", "sampling.max_new_tokens=9", "lsp.max_query_tokens=6",
        "lsp.challenger_prompt=Write a task.", "run.progress=false", "run.save_every=0", "lsp.self_reward=true",
        f"lsp.self_reward_url={server.url}", "lsp.self_reward_model=judge", "lsp.judge_max_new_tokens=24",
        "http_judge.backoff_s=0.01"])
    history = Trainer(config, rewards=[lambda prompts, completions, **_: [0.0] * len(completions)]).train()
    assert len(server.requests) == 2 * 2 * 2 and {body["max_tokens"] for body in server.requests} == {24}
    judged = server.judged()
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert samples and all((s["query"], s["answer"]) in judged for s in samples)  # the query as instruction
    for sample in samples:  # R_Q: the scripted score, NaN where the reply has none
        expected = scripted_score(sample["answer"])
        assert sample["quality"] == expected if expected < 7 else math.isnan(sample["quality"])
    for step, metrics in enumerate(history):
        scores = [scripted_score(response) for _, response in judged[4 * step : 4 * step + 4]]
        readable = [s for s in scores if s < 7]
        assert metrics["self_reward_unreadable"] == pytest.approx(1 - len(readable) / 4)
        assert metrics.get("self_reward_parse/fallback", 0.0) == 4 - len(readable)
        if readable:
            assert metrics["self_reward"] == pytest.approx(sum(readable) / len(readable))
