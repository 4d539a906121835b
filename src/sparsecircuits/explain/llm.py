"""The `openai` backend: any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, ...).

One client (the official `openai` package) with:
- retries with exponential backoff on 429, 5xx, timeouts and dropped connections (the
  library's own, `max_retries` of them);
- a concurrency limit (a semaphore around every request);
- a disk cache of requests in the explanations database: the same request is never sent
  twice, so an interrupted run resumes without paying again;
- token accounting: requests actually sent (retries included, counted on the wire), requests
  answered from the cache, prompt and completion tokens, malformed answers.
Errors that retrying cannot fix (no such server, no such model, a refused key, retries used up)
end the command with one line; the units already scored stay stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from typing import Protocol

from sparsecircuits.errors import UserError
from sparsecircuits.explain.offline import Evidence
from sparsecircuits.explain.prompts import (
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

    def to_dict(self) -> dict:
        return asdict(self)


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
        request = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        response = self.request("chat", request)
        choices = response.get("choices") or [{}]
        return (choices[0].get("message") or {}).get("content") or ""

    def prompt_logprobs(self, prompt: str, top: int = 15) -> dict:
        """The prompt's tokens, their character offsets and top log-probabilities."""
        request = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,  # some servers refuse 0; the one token generated is ignored
            "echo": True,
            "logprobs": top,
            "temperature": 0,
        }
        response = self.request("completions", request)
        choices = response.get("choices") or [{}]
        return choices[0].get("logprobs") or {}

    def request(self, endpoint: str, request: dict) -> dict:
        key = hashlib.sha256(
            json.dumps(
                {"url": self.base_url, "endpoint": endpoint, **request}, sort_keys=True
            ).encode()
        ).hexdigest()
        if self.cache is not None:
            cached = self.cache.cached_response(key)
            if cached is not None:
                with self.lock:
                    self.usage.cache_hits += 1
                return cached
        with self.semaphore:
            response = self.send(endpoint, request)
        usage = response.get("usage") or {}
        with self.lock:
            self.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.usage.completion_tokens += int(usage.get("completion_tokens") or 0)
        if self.cache is not None:
            self.cache.store_response(key, endpoint, self.model, response)
        return response

    def send(self, endpoint: str, request: dict) -> dict:
        import openai

        api = self.client.chat.completions if endpoint == "chat" else self.client.completions
        where = f"the LLM server at {self.base_url}"
        try:
            return api.create(**request).model_dump()
        except openai.NotFoundError as error:
            if endpoint == "completions":
                raise LogprobsUnavailable(str(error)) from None
            raise UserError(f"{where} has no model {self.model!r} ({message(error)})") from None
        except openai.AuthenticationError as error:
            raise UserError(
                f"{where} refused the API key (set OPENAI_API_KEY): {message(error)}"
            ) from None
        except openai.BadRequestError as error:
            if endpoint == "completions":
                raise LogprobsUnavailable(str(error)) from None
            raise UserError(f"{where} refused a request: {message(error)}") from None
        except openai.APITimeoutError:
            raise UserError(f"{where} did not answer in time, after retries") from None
        except openai.APIConnectionError:
            raise UserError(f"cannot reach {where} (is it running?)") from None
        except openai.APIStatusError as error:
            raise UserError(
                f"{where} answered HTTP {error.status_code} after retries: {message(error)}"
            ) from None

    def count_malformed(self) -> None:
        with self.lock:
            self.usage.malformed += 1


class LogprobsUnavailable(Exception):
    """The server has no /completions with prompt log-probabilities."""


def message(error: Exception) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(error).splitlines()[0][:200]


class LLMExplainer:
    def __init__(self, client: LLMClient, n_excerpts: int = 5) -> None:
        self.client, self.n_excerpts = client, n_excerpts
        self.name = f"openai:{client.model}"

    def explain(self, evidence: Evidence) -> str:
        return self.answer(explanation_messages(evidence, self.n_excerpts))

    def revise(self, evidence: Evidence, old: str, probes: list[Excerpt]) -> str:
        return self.answer(revision_messages(evidence, old, probes, self.n_excerpts))

    def answer(self, messages: list[dict]) -> str:
        explanation = read_explanation(self.client.chat(messages, max_tokens=80))
        if explanation is None:
            self.client.count_malformed()
            return UNEXPLAINED
        return explanation


class LLMSimulator:
    """All at once with prompt log-probabilities where the server has them ("auto" finds out
    on the first excerpt), else JSON."""

    def __init__(self, client: LLMClient, mode: str = "auto") -> None:
        if mode not in ("auto", "logprobs", "json"):
            raise UserError(f"unknown simulator mode {mode!r} (auto, logprobs or json)")
        self.client, self.mode = client, mode
        self.name = f"openai:{client.model}"
        self.probe_lock = threading.Lock()

    def simulate(self, explanation: str, excerpts: list[list[str]]) -> list[list[float]]:
        return [self.simulate_one(explanation, tokens) for tokens in excerpts]

    def simulate_one(self, explanation: str, tokens: list[str]) -> list[float]:
        if self.mode == "auto":
            with self.probe_lock:  # one worker finds out; the others wait for its answer
                if self.mode == "auto":
                    return self.simulate_with_mode(explanation, tokens)
        return self.simulate_with_mode(explanation, tokens)

    def simulate_with_mode(self, explanation: str, tokens: list[str]) -> list[float]:
        if self.mode in ("auto", "logprobs"):
            try:
                values = self.all_at_once(explanation, tokens)
                if values is not None:
                    self.mode = "logprobs"
                    return values
            except LogprobsUnavailable as error:
                if self.mode == "logprobs":
                    raise UserError(
                        f"the LLM server at {self.client.base_url} gives no prompt "
                        f"log-probabilities ({error}); use --simulator json"
                    ) from None
            self.mode = "json"
        answer = self.client.chat(json_simulation_messages(explanation, tokens))
        values = read_json_simulation(answer, tokens)
        if values is None:
            self.client.count_malformed()
            return [0.0] * len(tokens)
        return values

    def all_at_once(self, explanation: str, tokens: list[str]) -> list[float] | None:
        prompt = all_at_once_prompt(explanation, tokens)
        logprobs = self.client.prompt_logprobs(prompt.text)
        offsets = logprobs.get("text_offset") or []
        top = logprobs.get("top_logprobs") or []
        if not offsets or len(offsets) != len(top):
            return None  # no prompt log-probabilities in the answer
        chosen = []
        for offset in prompt.unknown_offsets:
            # The prompt token that holds the first character of "unknown".
            index = max((i for i, start in enumerate(offsets) if start <= offset), default=0)
            chosen.append(top[index])
        return expected_values(chosen)
