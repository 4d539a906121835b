"""A real HTTP server on 127.0.0.1 that speaks the OpenAI protocol, for testing the `openai`
backend without a network: chat completions, completions with prompt log-probabilities,
model listing, and faults on demand (429, 500, a hang past the client's timeout, malformed (empty)
answers, an unknown model), and any answer changed into a bad one (`Corruption`).

Its "model" reads the prompts our backend writes: as explainer it names the token with the
highest activation; as simulator it predicts 10 on the tokens the explanation quotes.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-model"
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def unescape(token: str) -> str:
    return token.replace("\\n", "\n").replace("\\t", "\t").replace("\\\\", "\\")


def quoted(text: str) -> list[str]:
    return [json.loads(match) for match in QUOTED.findall(text)]


@dataclass
class Corruption:
    """Answers on `route` changed by `change` (the good answer -> anything JSON can hold, or
    bytes sent as they are): `times` of them, after `skip` good ones."""

    route: str  # "/chat/completions" or "/completions"
    change: Callable[[dict], object]
    skip: int = 0
    times: int = 1
    content_type: str = "application/json"
    seen: int = 0

    def applies(self) -> bool:
        """Whether this answer (the next one on the route) is changed."""
        self.seen += 1
        return self.skip < self.seen <= self.skip + self.times


class FakeLLM(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, logprobs: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.logprobs = logprobs
        self.faults: list[str] = []  # consumed one per request: 429, 500, hang, malformed
        self.hang_seconds = 3.0
        self.requests: dict[str, int] = {}
        self.corruptions: list[Corruption] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_fault(self, route: str) -> str | None:
        """The next fault; a malformed answer waits for a chat request."""
        with self.lock:
            if not self.faults or (self.faults[0] == "malformed" and "chat" not in route):
                return None
            return self.faults.pop(0)

    def __enter__(self) -> FakeLLM:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: FakeLLM

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path.endswith("/models"):
            self.reply(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self.reply(404, error("no such route"))

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        route = self.path.rsplit("/v1", 1)[-1]
        with self.server.lock:
            self.server.requests[route] = self.server.requests.get(route, 0) + 1
        fault = self.server.next_fault(route)
        if fault == "429":
            return self.reply(429, error("slow down"), {"retry-after-ms": "10"})
        if fault == "500":
            return self.reply(500, error("internal error"), {"retry-after-ms": "10"})
        if fault == "hang":
            time.sleep(self.server.hang_seconds)
        if body.get("model") != MODEL:
            return self.reply(404, error(f"The model `{body.get('model')}` does not exist"))
        if route == "/chat/completions":
            text = "" if fault == "malformed" else chat_answer(body["messages"])
            return self.reply(200, *self.corrupted(route, chat_response(text, body)))
        if route == "/completions" and self.server.logprobs:
            return self.reply(200, *self.corrupted(route, completion_response(body)))
        return self.reply(404, error("no such route"))

    def corrupted(self, route: str, payload: dict) -> tuple[object, dict]:
        """The answer to send, and its headers."""
        with self.server.lock:
            for corruption in self.server.corruptions:
                if corruption.route == route and corruption.applies():
                    headers = {"Content-Type": corruption.content_type}
                    return corruption.change(payload), headers
        return payload, {}

    def reply(self, status: int, payload: object, headers: dict | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a hang past its timeout)


def error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


def usage(prompt: str, answer: str) -> dict:
    prompt_tokens, completion_tokens = len(prompt) // 4 + 1, len(answer) // 4 + 1
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_answer(messages: list[dict]) -> str:
    user = messages[-1]["content"]
    if user.startswith("Explanation:"):  # the JSON simulator
        explanation = user.splitlines()[0]
        tokens = json.loads(user.splitlines()[1].split(": ", 1)[1])
        wanted = quoted(explanation.split("responds to", 1)[1])
        return json.dumps([[token, 10 if token in wanted else 0] for token in tokens])
    best, best_value = None, -1  # the explainer: the most active token
    for line in user.splitlines():
        token, tab, value = line.rpartition("\t")
        if tab and value.isdigit() and int(value) > best_value:
            best, best_value = unescape(token), int(value)
    return f"The unit responds to the token {json.dumps(best)}."


def chat_response(text: str, body: dict) -> dict:
    prompt = " ".join(message["content"] for message in body["messages"])
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": usage(prompt, text),
    }


def completion_response(body: dict) -> dict:
    """Echo the prompt as tokens (text between tabs and newlines) with top log-probabilities;
    at each "unknown" of the second unit: 10 if the line's token is quoted in its explanation."""
    prompt = body["prompt"]
    second = prompt.index("Unit 2 responds to")
    explanation_line = prompt[second:].splitlines()[0]
    wanted = quoted(explanation_line)
    tokens, offsets, top = [], [], []
    line_token = None
    for match in re.finditer(r"[^\t\n]+|\t|\n", prompt):
        piece, start = match.group(0), match.start()
        tokens.append(piece)
        offsets.append(start)
        if piece == "unknown" and start > second:
            hit = unescape(line_token or "") in wanted
            high, low = (0.9, 0.1) if hit else (0.05, 0.95)
            top.append({"10": math.log(high), "0": math.log(low)})
        else:
            top.append({piece: 0.0})
        if piece == "\n":
            line_token = None
        elif piece != "\t" and line_token is None:
            line_token = piece
    return {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "text": prompt + "0",
                "finish_reason": "length",
                "logprobs": {
                    "tokens": tokens,
                    "token_logprobs": [0.0] * len(tokens),
                    "top_logprobs": top,
                    "text_offset": offsets,
                },
            }
        ],
        "usage": usage(prompt, "0"),
    }
