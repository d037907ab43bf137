"""Judges served over HTTP: an OpenAI-compatible chat-completions endpoint, as `vllm serve` exposes one.

`ChatClient` sends each prompt as one user message, `concurrency` requests at a time, and returns the replies in
order; a reply with no text becomes "". A connection error, a timeout, HTTP 429 or 5xx is retried with a short
exponential backoff; once the retries are spent, or at once on any other 4xx, it raises a one-line LangplayError
naming the URL. `HttpJudge` scores (instruction, response) pairs with LSP's Box-3 prompt through it, as a reward
(`{kind: http_judge, url: ..., model: ...}`) or as LSP's R_Q (`lsp.self_reward_url`). Defaults: config.HttpJudgeConfig.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from langplay.config import HttpJudgeConfig
from langplay.errors import LangplayError, first_line
from langplay.rewards.self_judge import judge_prompt, read_scores

DEFAULTS = HttpJudgeConfig()


class RetryableError(Exception):
    """A failed try worth repeating: the server may be starting, busy or restarting."""

    def __init__(self, what: str, detail: str):
        super().__init__(detail)
        self.what, self.detail = what, detail


class ChatClient:
    """complete(prompts) -> replies, one chat-completions request per prompt, in the prompts' order."""

    def __init__(self, url: str, model: str, *, timeout_s: float = DEFAULTS.timeout_s,
                 retries: int = DEFAULTS.retries, concurrency: int = DEFAULTS.concurrency,
                 max_tokens: int = DEFAULTS.max_tokens, temperature: float = DEFAULTS.temperature,
                 backoff_s: float = DEFAULTS.backoff_s, api_key_env: str = DEFAULTS.api_key_env):
        self.url, self.model = url.rstrip("/"), model
        self.timeout_s, self.retries, self.concurrency, self.backoff_s = timeout_s, retries, concurrency, backoff_s
        self.max_tokens, self.temperature = max_tokens, temperature
        api_key = os.environ.get(api_key_env, "")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @classmethod
    def from_config(cls, url: str, model: str, settings: HttpJudgeConfig, **overrides) -> ChatClient:
        return cls(url, model, **{**settings.model_dump(), **overrides})

    def complete(self, prompts: list[str]) -> list[str]:
        if not prompts:
            return []
        limits = httpx.Limits(max_connections=self.concurrency)
        with httpx.Client(timeout=self.timeout_s, headers=self.headers, limits=limits) as http, \
                ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self.complete_one, http, prompt) for prompt in prompts]
            try:
                return [future.result() for future in futures]
            except BaseException:  # one request gave up: the others would only fail the same way, later
                for future in futures:
                    future.cancel()
                raise

    def complete_one(self, http: httpx.Client, prompt: str) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": self.max_tokens, "temperature": self.temperature}
        tries = self.retries + 1
        for attempt in range(tries):
            try:
                return reply_text(self.post(http, body))
            except RetryableError as failure:
                if attempt == tries - 1:
                    raise LangplayError(f"judge endpoint {self.url} {failure.what} after {tries} "
                                        f"{'try' if tries == 1 else 'tries'}: {failure.detail}") from None
                time.sleep(self.backoff_s * 2**attempt)

    def post(self, http: httpx.Client, body: dict) -> httpx.Response:
        """One try: the response, a RetryableError, or a LangplayError for a request the server refuses."""
        try:
            response = http.post(f"{self.url}/chat/completions", json=body)
        except httpx.TimeoutException:
            raise RetryableError("timed out", f"no reply within timeout_s={self.timeout_s:g} s") from None
        except httpx.ConnectError as exc:
            raise RetryableError("unreachable", connection_failure(exc)) from None
        except httpx.TransportError as exc:  # the server dropped the connection, a broken reply
            raise RetryableError("failed", f"{type(exc).__name__}: {first_line(exc)}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetryableError("failed", f"HTTP {status}: {server_message(response)}")
        if status >= 400:
            hint = " (is the URL the API's base, e.g. http://host:8000/v1?)" if status == 404 else ""
            raise LangplayError(f"judge endpoint {self.url} refused the request: HTTP {status}: "
                                f"{server_message(response)}{hint}")
        return response


def connection_failure(exc: httpx.ConnectError) -> str:
    text = first_line(exc)
    return "connection refused" if "refused" in text.lower() else text


def server_message(response: httpx.Response) -> str:
    """The server's own words: OpenAI's {"error": {"message"}}, vLLM's {"message"}, or the body's first line."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        message = error.get("message") if isinstance(error, dict) else error or payload.get("message")
        if message:
            return one_line(str(message))
    return one_line(response.text) or response.reason_phrase


def one_line(text: str, limit: int = 200) -> str:
    return (text.strip().splitlines() or [""])[0][:limit]


def reply_text(response: httpx.Response) -> str:
    """choices[0].message.content, or "" for anything else: a judge's reply is only ever text to parse."""
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


class HttpJudge:
    """Box-3 scores (0..7) from a judge served over HTTP, under the scorer contract: `fallback` where a reply has
    no readable score, and the count of each parse outcome as `{metrics_prefix}/{outcome}`."""

    def __init__(self, client: ChatClient, fallback: float, metrics_prefix: str, name: str):
        self.client, self.fallback, self.metrics_prefix, self.__name__ = client, fallback, metrics_prefix, name

    def score(self, prompts: list[str], completions: list[str], columns: dict) -> tuple[list[float], dict[str, float]]:
        instructions = columns.get("raw_prompt") or prompts  # the instruction as written, before any chat template
        replies = self.client.complete([judge_prompt(q, a) for q, a in zip(instructions, completions)])
        return read_scores(replies, self.fallback, self.metrics_prefix)


class HttpJudgeReward(HttpJudge):
    """The reward kind http_judge: 0, the lowest score, where no score can be read (a NaN reward would make the
    whole step's loss NaN and skip it); its mean is logged like any reward's."""

    def __init__(self, url: str, model: str, settings: HttpJudgeConfig):
        super().__init__(ChatClient.from_config(url, model, settings), 0.0, "http_judge_parse", "http_judge")

    def score(self, prompts, completions, columns):
        scores, metrics = super().score(prompts, completions, columns)
        return scores, {f"reward/{self.__name__}": sum(scores) / len(scores) if scores else float("nan"), **metrics}


def http_self_reward(url: str, model: str, settings: HttpJudgeConfig, max_tokens: int) -> HttpJudge:
    """LSP's R_Q from an endpoint, as ReferenceJudge's: NaN (left out of R_Q) where no score can be read."""
    client = ChatClient.from_config(url, model, settings, max_tokens=max_tokens)
    return HttpJudge(client, float("nan"), "self_reward_parse", "self_reward")
