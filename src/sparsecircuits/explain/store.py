"""Explanations, their scores and the runs that made them, in one SQLite file.

Schema (version 1):

- `explain_runs`: one row per `sparsecircuits explain` invocation: the model (path and weights
  hash), explainer and simulator names, settings (JSON), start and finish times.
- `explanations`: one row per unit per run: the unit (name, layer, kind, index), the
  explanation text, its scores (correlation on top-and-random and random-only excerpts,
  explained variance, ablation, detection and fuzzing; NULL where undefined, e.g. a unit that
  never fired on the random excerpts), the unit's activation statistics, and `details`
  (JSON; a revision's probe figures).
- `llm_requests`: the `openai` backend's answers by a hash of the request (server, endpoint,
  model, messages, settings), so no request is sent twice.

A run that stops half-way leaves its finished units stored; running the same command again
continues the same run and explains only the units still missing, so nothing is paid twice.
Query it from the CLI (`sparsecircuits explanations top|search`) or from any SQLite client:
`sqlite3 explanations.sqlite "select unit, explanation, score_top_and_random from
explanations order by score_top_and_random desc limit 10"`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sparsecircuits.database import database_errors, insert_row, open_database
from sparsecircuits.validation import parse_json

KIND = "explanations"
VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS explain_runs (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    explainer TEXT NOT NULL,
    simulator TEXT NOT NULL,
    settings TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    usage TEXT
);
CREATE TABLE IF NOT EXISTS explanations (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES explain_runs (id),
    model_sha256 TEXT NOT NULL,
    unit TEXT NOT NULL,
    layer INTEGER NOT NULL,
    kind TEXT NOT NULL,
    unit_index INTEGER NOT NULL,
    explainer TEXT NOT NULL,
    explanation TEXT NOT NULL,
    score_top_and_random REAL,
    score_random_only REAL,
    explained_variance REAL,
    ablation_score REAL,
    detection REAL,
    fuzzing REAL,
    max_activation REAL,
    fraction_nonzero REAL,
    details TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (run_id, unit)
);
CREATE INDEX IF NOT EXISTS explanations_by_unit
    ON explanations (model_sha256, layer, kind, unit_index);
CREATE TABLE IF NOT EXISTS llm_requests (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""

SQLITE_MAX_INT = 2**63 - 1
SCORE_COLUMNS = (
    "score_top_and_random",
    "score_random_only",
    "explained_variance",
    "ablation_score",
    "detection",
    "fuzzing",
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ExplainRun:
    id: int
    done: set[str]  # units already explained in this run


class ExplanationStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.connection = open_database(self.path, KIND, VERSION, SCHEMA)
        self.lock = threading.Lock()  # LLM workers share the connection

    def close(self) -> None:
        """Close the file; the last connection to close also folds away SQLite's -wal file."""
        self.connection.close()

    def __enter__(self) -> ExplanationStore:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def rows(self, sql: str, values: tuple = ()) -> list[sqlite3.Row]:
        """The rows a query returns, each checked against the schema (database.py)."""
        with self.lock, database_errors(self.path, KIND):
            return self.connection.execute(sql, values).fetchall()

    def cached_response(self, key: str) -> dict | None:
        rows = self.rows("SELECT key, response FROM llm_requests WHERE key = ?", (key,))
        source = f"{self.path}: llm_requests row key {key[:16]}...: response"
        return parse_json(rows[0]["response"], dict, source) if rows else None

    def store_response(self, key: str, endpoint: str, model: str, response: dict) -> None:
        fields = {
            "key": key,
            "endpoint": endpoint,
            "model": model,
            "response": json.dumps(response),
            "created_at": now(),
        }
        with self.lock, database_errors(self.path, KIND):
            insert_row(self.connection, "llm_requests", fields, replace=True)

    def start_run(
        self, model: str, model_sha256: str, explainer: str, simulator: str, settings: dict
    ) -> ExplainRun:
        """The unfinished run of the same model, explainer, simulator and settings, or a new
        one."""
        settings_text = json.dumps(settings, sort_keys=True)
        unfinished = self.rows(
            "SELECT id FROM explain_runs WHERE model_sha256 = ? AND explainer = ? AND "
            "simulator = ? AND settings = ? AND finished_at IS NULL ORDER BY id DESC LIMIT 1",
            (model_sha256, explainer, simulator, settings_text),
        )
        if unfinished:
            run_id = unfinished[0]["id"]
            done = self.rows("SELECT unit FROM explanations WHERE run_id = ?", (run_id,))
            return ExplainRun(run_id, {r["unit"] for r in done})
        fields = {
            "model": model,
            "model_sha256": model_sha256,
            "explainer": explainer,
            "simulator": simulator,
            "settings": settings_text,
            "started_at": now(),
        }
        with self.lock, database_errors(self.path, KIND):
            run_id = insert_row(self.connection, "explain_runs", fields, replace=False)
        return ExplainRun(run_id, set())

    def add(self, run: ExplainRun, fields: dict) -> None:
        with self.lock, database_errors(self.path, KIND):
            insert_row(
                self.connection,
                "explanations",
                {"run_id": run.id, "created_at": now(), **fields},
                replace=True,
            )
        run.done.add(fields["unit"])

    def finish_run(self, run: ExplainRun, usage: dict | None = None) -> None:
        with self.lock, database_errors(self.path, KIND), self.connection:
            self.connection.execute(
                "UPDATE explain_runs SET finished_at = ?, usage = ? WHERE id = ?",
                (now(), None if usage is None else json.dumps(usage), run.id),
            )

    def top(
        self,
        score: str = "score_top_and_random",
        limit: int = 20,
        model_sha256: str | None = None,
        layer: int | None = None,
        kind: str | None = None,
        explainer: str | None = None,
    ) -> list[sqlite3.Row]:
        if score not in SCORE_COLUMNS:
            raise ValueError(f"unknown score column {score!r}")
        where, values = filters(model_sha256, layer, kind, explainer)
        return self.rows(
            f"SELECT * FROM explanations WHERE {score} IS NOT NULL{where} "
            f"ORDER BY {score} DESC, unit LIMIT ?",
            (*values, sqlite_limit(limit)),
        )

    def search(self, text: str, limit: int = 20) -> list[sqlite3.Row]:
        """Explanations containing `text` (ignoring ASCII case, as LIKE does), or of the unit
        named `text`. instr, not LIKE: SQLite refuses LIKE patterns over 50,000 bytes."""
        return self.rows(
            "SELECT * FROM explanations WHERE instr(lower(explanation), lower(?)) > 0 "
            "OR unit = ? ORDER BY score_top_and_random DESC NULLS LAST LIMIT ?",
            (text, text, sqlite_limit(limit)),
        )

    def for_model(self, model_sha256: str) -> list[sqlite3.Row]:
        """The latest explanation of every unit of a model (any explainer)."""
        return self.rows(
            "SELECT * FROM explanations WHERE id IN (SELECT MAX(id) FROM explanations "
            "WHERE model_sha256 = ? GROUP BY unit, explainer) ORDER BY layer, kind, unit_index",
            (model_sha256,),
        )


def sqlite_limit(limit: int) -> int:
    """`limit` as SQLite takes it: its integers stop at 2**63 - 1, far beyond any table."""
    return max(0, min(limit, SQLITE_MAX_INT))


def filters(
    model_sha256: str | None, layer: int | None, kind: str | None, explainer: str | None
) -> tuple[str, list]:
    clauses, values = [], []
    for column, value in (
        ("model_sha256", model_sha256),
        ("layer", layer),
        ("kind", kind),
        ("explainer", explainer),
    ):
        if value is not None:
            clauses.append(f" AND {column} = ?")
            values.append(value)
    return "".join(clauses), values
