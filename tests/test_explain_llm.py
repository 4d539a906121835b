"""The `openai` backend against a real local HTTP server speaking the same protocol, with
faults injected: retries, the request cache, token accounting, malformed answers, bad
servers and models."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Callable

import pytest

from cli_runner import run_in_process
from fake_llm import MODEL, Corruption, FakeLLM


def explain_arguments(run, db, server_url, *extra: str) -> list[str]:
    return [
        "explain", str(run), "--layer", "1", "--units", "0-3", "--tokens", "20000", "--quiet",
        "--no-ablation", "--db", str(db), "--backend", "openai", "--base-url", server_url,
        "--model", MODEL, "--max-retries", "3", *extra,
    ]  # fmt: skip


def usage_line(stderr: str) -> dict:
    line = next(line for line in stderr.splitlines() if line.startswith("openai backend: "))
    return json.loads(line.split(": ", 1)[1])


def test_openai_backend_explains_scores_and_never_pays_twice(tiny_run, tmp_path):
    db = tmp_path / "e.sqlite"
    with FakeLLM() as server:
        first = run_in_process(*explain_arguments(tiny_run, db, server.base_url, "--json"))
        assert first.returncode == 0, first.stderr
        rows = [json.loads(line) for line in first.stdout.splitlines()]
        assert len(rows) == 4
        assert all(row["explanation"].startswith("the token ") for row in rows)
        assert all(row["explainer"] == f"openai:{MODEL}" for row in rows)
        spent = usage_line(first.stderr)
        sent = sum(server.requests.values())
        assert spent["requests_sent"] == sent > 4  # one explanation + simulations per unit
        assert spent["prompt_tokens"] > 0 and spent["completion_tokens"] > 0
        assert server.requests["/completions"] > 0  # the all-at-once simulator

        # As if killed before the last two units: only they are redone, from the cache.
        with sqlite3.connect(db) as connection:
            connection.execute("DELETE FROM explanations WHERE unit IN ('1.mlp.2', '1.mlp.3')")
            connection.execute("UPDATE explain_runs SET finished_at = NULL")
        again = run_in_process(*explain_arguments(tiny_run, db, server.base_url, "--json"))
        assert again.returncode == 0, again.stderr
        assert [json.loads(line)["unit"] for line in again.stdout.splitlines()] == [
            "1.mlp.2",
            "1.mlp.3",
        ]
        assert sum(server.requests.values()) == sent  # nothing sent again
        assert usage_line(again.stderr)["cache_hits"] > 0
    with sqlite3.connect(db) as connection:
        stored = connection.execute("SELECT usage FROM explain_runs").fetchone()[0]
    assert json.loads(stored)["cache_hits"] > 0


def test_retries_ride_out_rate_limits_server_errors_and_a_hang(tiny_run, tmp_path):
    with FakeLLM() as server:
        server.faults = ["429", "500", "429", "hang"]
        server.hang_seconds = 2.0
        result = run_in_process(
            *explain_arguments(tiny_run, tmp_path / "e.sqlite", server.base_url, "--timeout", "1")
        )
        assert result.returncode == 0, result.stderr
        spent = usage_line(result.stderr)
        assert spent["requests_sent"] == sum(server.requests.values())
        assert not server.faults  # every fault was met, and retried


def test_malformed_answers_are_counted_not_fatal(tiny_run, tmp_path):
    with FakeLLM(logprobs=False) as server:
        server.faults = ["malformed"] * 3
        result = run_in_process(
            *explain_arguments(tiny_run, tmp_path / "e.sqlite", server.base_url, "--json")
        )
        assert result.returncode == 0, result.stderr
        assert usage_line(result.stderr)["malformed"] == 3
        assert server.requests.get("/completions", 0) == 1  # tried once, then JSON
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(rows) == 4


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("unknown model", "has no model 'gpt-nothing'"),
        ("unreachable", "cannot reach the LLM server"),
        ("no logprobs", "gives no prompt log-probabilities"),
        ("no url", "needs --base-url and --model"),
    ],
)
def test_server_problems_end_in_one_line(tiny_run, tmp_path, case, fragment):
    db = tmp_path / "e.sqlite"
    with FakeLLM(logprobs=case != "no logprobs") as server:
        arguments = explain_arguments(tiny_run, db, server.base_url, "--max-retries", "0")
        if case == "unknown model":
            arguments[arguments.index(MODEL)] = "gpt-nothing"
        if case == "unreachable":
            url = f"http://127.0.0.1:{closed_port()}/v1"
            arguments[arguments.index(server.base_url)] = url
        if case == "no logprobs":
            arguments += ["--simulator", "logprobs"]
        if case == "no url":
            index = arguments.index("--base-url")
            del arguments[index : index + 2]
        result = run_in_process(*arguments)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert fragment in lines[-1] and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_llm_revision_sends_the_old_explanation_and_the_probes(tiny_run, tmp_path):
    with FakeLLM() as server:
        arguments = explain_arguments(tiny_run, tmp_path / "e.sqlite", server.base_url)
        arguments[arguments.index("0-3")] = "0-1"  # the probe pass simulates ~1000 windows a unit
        result = run_in_process(*arguments, "--revise", "--json")
        assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    revised = [row for row in rows if row["explainer"] == f"openai:{MODEL}+revised"]
    assert len(revised) == 2 and all(row["explanation"] for row in revised)


def llm_requests_sent(server: FakeLLM) -> int:
    return sum(server.requests.values())


def small_run(run, db, server_url, *extra: str) -> list[str]:
    """Two units, one at a time: the units before a fault are stored before it comes."""
    arguments = explain_arguments(run, db, server_url, "--concurrency", "1", *extra)
    arguments[arguments.index("0-3")] = "0-1"
    return arguments


def stored_units(db) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT unit FROM explanations")]


def cached_answers(db) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT COUNT(*) FROM llm_requests").fetchone()[0]


@pytest.mark.parametrize("logprobs", [True, False], ids=["logprobs", "json"])
def test_an_identical_rerun_sends_nothing(tiny_run, tmp_path, logprobs):
    db = tmp_path / "e.sqlite"
    with FakeLLM(logprobs=logprobs) as server:
        first = run_in_process(*small_run(tiny_run, db, server.base_url))
        assert first.returncode == 0, first.stderr
        sent = llm_requests_sent(server)
        assert server.requests["/completions"] == (sent - 2 if logprobs else 1)  # the probe

        # Finished: the same command makes a new run, every answer from the cache, the probe's
        # "no prompt log-probabilities" included.
        again = run_in_process(*small_run(tiny_run, db, server.base_url))
        assert again.returncode == 0, again.stderr
        assert llm_requests_sent(server) == sent
        assert usage_line(again.stderr)["requests_sent"] == 0
        assert usage_line(again.stderr)["cache_hits"] == sent

        # Stopped after its last unit was stored: nothing left to do, nothing asked.
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE explain_runs SET finished_at = NULL")
        done = run_in_process(*small_run(tiny_run, db, server.base_url, "--json"))
        assert done.returncode == 0, done.stderr
        assert "2 of 2 units already explained" in done.stderr and not done.stdout
        assert llm_requests_sent(server) == sent
        assert usage_line(done.stderr)["requests_sent"] == 0


def test_only_auto_believes_a_cached_refusal_of_logprobs(tiny_run, tmp_path):
    db = tmp_path / "e.sqlite"
    with FakeLLM(logprobs=False) as server:
        assert run_in_process(*small_run(tiny_run, db, server.base_url)).returncode == 0
        server.logprobs = True  # the server now has them
        auto = run_in_process(*small_run(tiny_run, db, server.base_url))
        assert auto.returncode == 0 and usage_line(auto.stderr)["requests_sent"] == 0
        asked = run_in_process(*small_run(tiny_run, db, server.base_url, "--simulator", "logprobs"))
        assert asked.returncode == 0, asked.stderr
        assert server.requests["/completions"] > 2  # the probe again, then every excerpt


def test_cached_answers_that_do_not_fit_are_asked_again(tiny_run, tmp_path):
    db = tmp_path / "e.sqlite"
    with FakeLLM() as server:
        assert run_in_process(*small_run(tiny_run, db, server.base_url)).returncode == 0
        sent = llm_requests_sent(server)
        with sqlite3.connect(db) as connection:  # as an older version might have stored them
            chat = "SELECT key FROM llm_requests WHERE endpoint = 'chat' ORDER BY key LIMIT 2"
            keys = [row[0] for row in connection.execute(chat)]
            bad_answers = [{"choices": [{"message": {"content": 5}}]}, {"choices": "x"}]
            for key, bad in zip(keys, bad_answers, strict=True):
                update = "UPDATE llm_requests SET response = ? WHERE key = ?"
                connection.execute(update, (json.dumps(bad), key))
            connection.execute("DELETE FROM explanations")
            connection.execute("UPDATE explain_runs SET finished_at = NULL")
        again = run_in_process(*small_run(tiny_run, db, server.base_url))
        assert again.returncode == 0, again.stderr
        assert llm_requests_sent(server) == sent + 2
        assert usage_line(again.stderr)["malformed"] == 0


def at(path: tuple, value: object) -> Callable[[dict], dict]:
    """An answer with the value at `path` replaced (DELETE: removed)."""

    def change(answer: dict) -> dict:
        target = answer
        for part in path[:-1]:
            target = target[part]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return answer

    return change


def raw_at(path: tuple, text: str) -> Callable[[dict], bytes]:
    """An answer with `text` written as it is (no JSON encoding) at `path`."""
    return lambda answer: json.dumps(at(path, "@@")(answer)).replace('"@@"', text).encode()


def logprobs_changed(change: Callable[[dict], object]) -> Callable[[dict], dict]:
    def apply(answer: dict) -> dict:
        change(answer["choices"][0]["logprobs"])
        return answer

    return apply


def every_top(value: object) -> Callable[[dict], None]:
    """Every top log-probability replaced by `value`."""

    def change(logprobs: dict) -> None:
        logprobs["top_logprobs"] = [{k: value for k in top} for top in logprobs["top_logprobs"]]

    return change


DELETE = object()
CHAT, COMPLETIONS = "/chat/completions", "/completions"
CONTENT = ("choices", 0, "message", "content")
PROMPT_TOKENS = ("usage", "prompt_tokens")
LOGPROBS = ("choices", 0, "logprobs")
HTML = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"

# (route, change, content type): an answer that is an OpenAI answer with something wrong in it.
MALFORMED = {
    "choices not a list": (CHAT, at(("choices",), {"0": "x"})),
    "content an int": (CHAT, at(CONTENT, 5)),
    "content a list": (CHAT, at(CONTENT, [{"type": "text", "text": "hello"}])),
    "usage a string": (CHAT, at(PROMPT_TOKENS, "12")),
    "usage huge": (CHAT, at(PROMPT_TOKENS, 10**30)),
    "usage infinite": (CHAT, raw_at(PROMPT_TOKENS, "1e999")),
    "usage negative": (CHAT, at(PROMPT_TOKENS, -3)),
    "usage nested": (CHAT, at(PROMPT_TOKENS, {"cached": 3})),
    "top_logprobs not dicts": (COMPLETIONS, logprobs_changed(
        lambda lp: lp.update(top_logprobs=[str(top) for top in lp["top_logprobs"]])
    )),
    "top_logprobs a dict": (COMPLETIONS, at((*LOGPROBS, "top_logprobs"), {"0": -0.1})),
    "text_offset not ints": (COMPLETIONS, logprobs_changed(
        lambda lp: lp.update(text_offset=[str(offset) for offset in lp["text_offset"]])
    )),
    "logprob huge": (COMPLETIONS, logprobs_changed(every_top(1e308))),
    "logprob NaN": (COMPLETIONS, logprobs_changed(every_top(float("nan")))),
    "logprob a string": (COMPLETIONS, logprobs_changed(every_top("-0.5"))),
    # Not in the issue, of the same kinds:
    "message missing": (CHAT, at(("choices", 0, "message"), DELETE)),
    "choices empty": (CHAT, at(("choices",), [])),
    "choices missing": (CHAT, at(("choices",), DELETE)),
    "choice a string": (CHAT, at(("choices",), ["The unit responds to x."])),
    "content null": (CHAT, at(CONTENT, None)),
    "content gigantic": (CHAT, at(CONTENT, "The unit responds to " + "x" * 300_000)),
    "usage a float": (CHAT, at(PROMPT_TOKENS, 12.5)),
    "logprobs null": (COMPLETIONS, at(LOGPROBS, None)),
    "offsets and tokens of other lengths": (COMPLETIONS, logprobs_changed(
        lambda lp: lp.update(text_offset=lp["text_offset"][:-1])
    )),
    "logprob -infinity": (COMPLETIONS, logprobs_changed(every_top(float("-inf")))),
}  # fmt: skip

WELL_FORMED_BUT_UNUSABLE = {"content null", "logprobs null"}

# Bodies no OpenAI-compatible server sends: the command ends.
JSON = "application/json"
NOT_AN_ANSWER = {
    "an HTML page": (CHAT, lambda answer: HTML, "text/html"),
    "an HTML page called JSON": (CHAT, lambda answer: HTML, JSON),
    "junk JSON": (CHAT, lambda answer: b'{"choices": [{"message": ', JSON),
    "an empty body": (CHAT, lambda answer: b"", JSON),
    "a JSON array": (CHAT, lambda answer: [answer], JSON),
    "a JSON string": (CHAT, lambda answer: "ok", JSON),
    "an error object": (CHAT, lambda answer: {"error": {"message": "overloaded"}}, JSON),
    "not UTF-8": (CHAT, lambda answer: b"\xff\xfe{", JSON),
    "an HTML page to the probe": (COMPLETIONS, lambda answer: HTML, "text/html"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_answer_is_counted_and_the_run_goes_on(tiny_run, tmp_path, case):
    route, change = MALFORMED[case]
    db = tmp_path / "e.sqlite"
    with FakeLLM() as server:
        # Skip the probe: a malformed answer to one excerpt's simulation.
        server.corruptions = [Corruption(route, change, skip=1 if route == COMPLETIONS else 0)]
        result = run_in_process(*small_run(tiny_run, db, server.base_url, "--json"))
        assert server.corruptions[0].seen > server.corruptions[0].skip  # it was sent
        # A well-formed answer with nothing usable in it is cached; any other is not.
        unusable = case in WELL_FORMED_BUT_UNUSABLE
        assert cached_answers(db) == llm_requests_sent(server) - (not unusable)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    spent = usage_line(result.stderr)
    assert spent["malformed"] == 1, spent
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and sorted(stored_units(db)) == ["1.mlp.0", "1.mlp.1"]
    if route == CHAT:
        assert rows[0]["explanation"] == "(the explainer gave no usable explanation)"


@pytest.mark.parametrize("case", ["logprobs null", "top_logprobs not dicts"])
def test_a_probe_without_usable_logprobs_falls_back_to_json(tiny_run, tmp_path, case):
    route, change = MALFORMED[case]
    db = tmp_path / "e.sqlite"
    with FakeLLM() as server:
        server.corruptions = [Corruption(route, change)]
        result = run_in_process(*small_run(tiny_run, db, server.base_url))
        assert result.returncode == 0, result.stderr
        assert server.requests["/completions"] == 1
        assert server.requests["/chat/completions"] > 2  # the JSON simulator
    assert usage_line(result.stderr)["malformed"] == (case != "logprobs null")


@pytest.mark.parametrize("case", list(NOT_AN_ANSWER))
def test_a_body_that_is_not_an_answer_ends_the_run_in_one_line(tiny_run, tmp_path, case):
    route, change, content_type = NOT_AN_ANSWER[case]
    db = tmp_path / "e.sqlite"
    with FakeLLM() as server:
        # Unit 0 is stored before the explanation of unit 1 comes back wrong.
        skip = 1 if route == CHAT else 0
        server.corruptions = [Corruption(route, change, skip, content_type=content_type)]
        result = run_in_process(*small_run(tiny_run, db, server.base_url))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and server.base_url in lines[-1], result.stderr
        assert "Traceback" not in result.stderr
        assert stored_units(db) == (["1.mlp.0"] if route == CHAT else [])
        assert cached_answers(db) == llm_requests_sent(server) - 1

        # Nothing of it was cached: once the server is right, the run goes on.
        sent = llm_requests_sent(server)
        again = run_in_process(*small_run(tiny_run, db, server.base_url))
        assert again.returncode == 0, again.stderr
        assert llm_requests_sent(server) > sent
    assert sorted(stored_units(db)) == ["1.mlp.0", "1.mlp.1"]
