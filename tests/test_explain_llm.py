"""The `openai` backend against a real local HTTP server speaking the same protocol, with
faults injected: retries, the request cache, token accounting, malformed answers, bad
servers and models."""

from __future__ import annotations

import json
import socket
import sqlite3

import pytest

from cli_runner import run_in_process
from fake_llm import MODEL, FakeLLM


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
        result = run_in_process(*arguments, "--revise", "--json")
        assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    revised = [row for row in rows if row["explainer"] == f"openai:{MODEL}+revised"]
    assert len(revised) == 4 and all(row["explanation"] for row in revised)
