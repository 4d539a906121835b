"""The `openai` backend: any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, ...).

One client (the official `openai` package) with:
- retries with exponential backoff on 429, 5xx, timeouts and dropped connections (the
  library's own, `max_retries` of them);
- a concurrency limit (a semaphore around every request);
- a disk cache of requests in the explanations database: every request the backend sends is
  looked up there first, so an interrupted or repeated run does not pay again. That includes
  the probe that decides how to simulate: one fixed all-at-once request (the prompt's worked
  example alone), so every run against the same server and model asks the same question, and
  a refusal of it (HTTP 400, 404, ...) is cached too, as "no prompt log-probabilities here".
  `--simulator logprobs` does not trust a cached refusal and asks again;
- token accounting: requests actually sent (retries included, counted on the wire), requests
  answered from the cache, prompt and completion tokens, malformed answers (and the first
  one's problem).

Errors that retrying cannot fix (no such server, no such model, a refused key, retries used up)
end the command with one line; the units already scored stay stored.

What a server answers is checked (explain.llm_answers says how): a body that is not an OpenAI
answer at all ends the command in one line; a malformed answer is counted and its unit goes on
without it (UNEXPLAINED, or a simulation of zeros); only well-formed answers are cached, and a
cached one is checked again when read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from typing import Protocol

from sparsecircuits.errors import UserError, first_line
from sparsecircuits.explain.llm_answers import (
    Answer,
    ChatAnswer,
    CompletionAnswer,
    MalformedAnswer,
    PromptLogprobs,
    TokenCounts,
    answer_object,
    checked,
    error_text,
)
from sparsecircuits.explain.offline import Evidence
from sparsecircuits.explain.prompts import (
    FEW_SHOT,
    FEW_SHOT_EXPLANATION,
    all_at_once_prompt,
    expected_values,
    explanation_messages,
    json_simulation_messages,
    read_explanation,
    read_json_simulation,
    revision_messages,
)
from sparsecircuits.explain.records import Excerpt

UNEXPLAINED = "(the explainer gave no usable explanation)"
# Statuses with which a server says it has no /completions with prompt log-probabilities.
NO_LOGPROBS_STATUSES = (400, 404, 405, 422, 501)
REFUSAL = "sparsecircuits_refused"  # the key of a cached refusal


class RequestCache(Protocol):
    def cached_response(self, key: str) -> dict | None: ...

    def store_response(self, key: str, endpoint: str, model: str, response: dict) -> None: ...


@dataclass
class Usage:
    requests_sent: int = 0  # HTTP requests, retries included
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    malformed: int = 0
    first_malformed: str | None = None  # what was wrong with the first malformed answer

    def to_dict(self) -> dict:
        return asdict(self)


class LogprobsUnavailable(Exception):
    """The server has no /completions with prompt log-probabilities."""


class LLMClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        cache: RequestCache | None = None,
        api_key: str | None = None,
        max_retries: int = 5,
        timeout: float = 60.0,
        concurrency: int = 4,
    ) -> None:
        import openai

        self.base_url, self.model, self.cache = base_url, model, cache
        self.where = f"the LLM server at {base_url}"
        self.usage = Usage()
        self.lock = threading.Lock()
        self.semaphore = threading.Semaphore(concurrency)
        self.concurrency = concurrency

        def count(request: object) -> None:
            with self.lock:
                self.usage.requests_sent += 1

        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            max_retries=max_retries,
            timeout=timeout,
            # The library's own HTTP client (whichever httpx it is built on), counting requests.
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [count]}),
        )

    def chat(self, messages: list[dict], max_tokens: int = 256) -> str:
        """The answer's text ("" when it has none); MalformedAnswer if the answer is not one."""
        request = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        answer = self.request("chat", request, ChatAnswer)
        return answer.choices[0].message.content or ""

    def prompt_logprobs(
        self, prompt: str, top: int = 15, remember_refusal: bool = False
    ) -> PromptLogprobs | None:
        """The prompt's tokens' character offsets and top log-probabilities; None when the
        answer holds none. LogprobsUnavailable when the server refuses the request (cached,
        and believed when read back, only with `remember_refusal`)."""
        request = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,  # some servers refuse 0; the one token generated is ignored
            "echo": True,
            "logprobs": top,
            "temperature": 0,
        }
        answer = self.request("completions", request, CompletionAnswer, remember_refusal)
        logprobs = answer.choices[0].logprobs
        return logprobs if logprobs is not None and logprobs.text_offset else None

    def request(
        self, endpoint: str, request: dict, schema: type[Answer], remember_refusal: bool = False
    ) -> Answer:
        key = hashlib.sha256(
            json.dumps(
                {"url": self.base_url, "endpoint": endpoint, **request}, sort_keys=True
            ).encode()
        ).hexdigest()
        cached = self.cached(key, schema, remember_refusal)
        if cached is not None:
            return cached
        try:
            with self.semaphore:
                body = self.send(endpoint, request)
        except LogprobsUnavailable as refusal:
            if remember_refusal and self.cache is not None:
                self.cache.store_response(key, endpoint, self.model, {REFUSAL: str(refusal)})
            raise
        data = answer_object(body, self.where)
        answer = checked(schema, data, self.where)
        counts = answer.usage or TokenCounts()
        with self.lock:
            self.usage.prompt_tokens += counts.prompt_tokens or 0
            self.usage.completion_tokens += counts.completion_tokens or 0
        if self.cache is not None:
            self.cache.store_response(key, endpoint, self.model, data)
        return answer

    def cached(self, key: str, schema: type[Answer], remember_refusal: bool) -> Answer | None:
        """The cached answer to a request, checked again; None when there is none we can use."""
        if self.cache is None:
            return None
        data = self.cache.cached_response(key)
        if data is None:
            return None
        if REFUSAL in data:
            if not remember_refusal:
                return None
            with self.lock:
                self.usage.cache_hits += 1
            raise LogprobsUnavailable(str(data[REFUSAL]))
        try:
            answer = checked(schema, data, self.where)
        except MalformedAnswer:  # stored by an older version, or edited: ask again
            return None
        with self.lock:
            self.usage.cache_hits += 1
        return answer

    def send(self, endpoint: str, request: dict) -> bytes:
        """The body of the server's answer (status 2xx), retried where retrying helps."""
        import openai

        api = self.client.chat.completions if endpoint == "chat" else self.client.completions
        where = self.where
        try:
            # The raw answer: the library would otherwise return a non-JSON body as a string,
            # or raise from deep inside its parser.
            return api.with_raw_response.create(**request).http_response.content
        except openai.APIStatusError as error:
            if endpoint == "completions" and error.status_code in NO_LOGPROBS_STATUSES:
                raise LogprobsUnavailable(message(error)) from None
            if isinstance(error, openai.NotFoundError):
                raise UserError(f"{where} has no model {self.model!r} ({message(error)})") from None
            if isinstance(error, openai.AuthenticationError):
                raise UserError(
                    f"{where} refused the API key (set OPENAI_API_KEY): {message(error)}"
                ) from None
            if isinstance(error, openai.BadRequestError):
                raise UserError(f"{where} refused a request: {message(error)}") from None
            raise UserError(
                f"{where} answered HTTP {error.status_code} after retries: {message(error)}"
            ) from None
        except openai.APITimeoutError:
            raise UserError(f"{where} did not answer in time, after retries") from None
        except openai.APIConnectionError:
            raise UserError(f"cannot reach {where} (is it running?)") from None

    def count_malformed(self, problem: str) -> None:
        with self.lock:
            self.usage.malformed += 1
            if self.usage.first_malformed is None:
                self.usage.first_malformed = problem


def message(error: Exception) -> str:
    return error_text(getattr(error, "body", None), first_line(error))


class LLMExplainer:
    def __init__(self, client: LLMClient, n_excerpts: int = 5) -> None:
        self.client, self.n_excerpts = client, n_excerpts
        self.name = f"openai:{client.model}"

    def explain(self, evidence: Evidence) -> str:
        return self.answer(explanation_messages(evidence, self.n_excerpts))

    def revise(self, evidence: Evidence, old: str, probes: list[Excerpt]) -> str:
        return self.answer(revision_messages(evidence, old, probes, self.n_excerpts))

    def answer(self, messages: list[dict]) -> str:
        try:
            text = self.client.chat(messages, max_tokens=80)
        except MalformedAnswer as error:
            self.client.count_malformed(str(error))
            return UNEXPLAINED
        explanation = read_explanation(text)
        if explanation is None:
            self.client.count_malformed(f"{self.client.where}: an empty explanation")
            return UNEXPLAINED
        return explanation


# The probe: the worked example simulated on its own tokens, the same request in every run.
PROBE = all_at_once_prompt(FEW_SHOT_EXPLANATION, [token for token, _ in FEW_SHOT])


class LLMSimulator:
    """All at once with prompt log-probabilities where the server has them, else JSON. Which
    one is decided once, by the probe, before the first excerpt ("auto": JSON if the server
    has none; "logprobs": then the command ends)."""

    def __init__(self, client: LLMClient, mode: str = "auto") -> None:
        if mode not in ("auto", "logprobs", "json"):
            raise UserError(f"unknown simulator mode {mode!r} (auto, logprobs or json)")
        self.client, self.mode = client, mode
        self.name = f"openai:{client.model}"
        self.method = "json" if mode == "json" else None  # decided by the probe
        self.probe_lock = threading.Lock()

    def simulate(self, explanation: str, excerpts: list[list[str]]) -> list[list[float]]:
        if explanation == UNEXPLAINED:  # nothing to simulate from: pay for nothing
            return [[0.0] * len(tokens) for tokens in excerpts]
        return [self.simulate_one(explanation, tokens) for tokens in excerpts]

    def simulate_one(self, explanation: str, tokens: list[str]) -> list[float]:
        if self.method is None:
            with self.probe_lock:  # one worker finds out; the others wait for its answer
                if self.method is None:
                    self.method = self.probe()
        try:
            if self.method == "logprobs":
                return self.all_at_once(explanation, tokens)
            return self.json_simulation(explanation, tokens)
        except MalformedAnswer as error:
            self.client.count_malformed(str(error))
            return [0.0] * len(tokens)

    def probe(self) -> str:
        """The method: "logprobs" if the server gives usable prompt log-probabilities, else
        "json"."""
        try:
            # Only "auto" believes a cached refusal: "logprobs" asks, the server may have changed.
            found = self.client.prompt_logprobs(PROBE.text, remember_refusal=self.mode == "auto")
            if found is not None:
                return "logprobs"
            reason = "its answers hold none"
        except LogprobsUnavailable as error:
            reason = str(error)
        except MalformedAnswer as error:
            self.client.count_malformed(str(error))
            reason = "its answer is malformed"
        if self.mode == "logprobs":
            raise UserError(
                f"{self.client.where} gives no prompt log-probabilities ({reason}); "
                "use --simulator json"
            )
        return "json"

    def all_at_once(self, explanation: str, tokens: list[str]) -> list[float]:
        prompt = all_at_once_prompt(explanation, tokens)
        try:
            logprobs = self.client.prompt_logprobs(prompt.text)
        except LogprobsUnavailable as error:  # the probe passed: this request was refused
            raise UserError(f"{self.client.where} refused a request: {error}") from None
        if logprobs is None:
            raise MalformedAnswer(f"{self.client.where}: no prompt log-probabilities")
        offsets, top = logprobs.text_offset, logprobs.top_logprobs
        chosen = []
        for offset in prompt.unknown_offsets:
            # The prompt token that holds the first character of "unknown".
            index = max((i for i, start in enumerate(offsets) if start <= offset), default=0)
            chosen.append(top[index])
        return expected_values(chosen)

    def json_simulation(self, explanation: str, tokens: list[str]) -> list[float]:
        answer = self.client.chat(json_simulation_messages(explanation, tokens))
        values = read_json_simulation(answer, tokens)
        if values is None:
            raise MalformedAnswer(f"{self.client.where}: a JSON simulation that does not fit")
        return values
