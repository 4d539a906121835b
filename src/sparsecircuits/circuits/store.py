"""Prune results in SQLite: measured once, reused by `frontier` and the benchmarks.

One prune takes minutes and comparing checkpoints takes many. Each result is stored under a
key made of everything it depends on: the weights (their hash), the encoded task pairs, the
prune settings and the sweep. A prune that cannot reach its target is stored too, with its
message, so a frontier over many runs does not retry it. The table doubles as a record anyone
can query: `sqlite3 ~/.cache/sparsecircuits/prunes.sqlite 'select run, task, edges from prunes'`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sparsecircuits.circuits.circuit_file import model_hash
from sparsecircuits.circuits.config import STRICT_OPTIONS, PruneConfig
from sparsecircuits.circuits.pipeline import RECIPE_VERSION, prune_to_target_loss
from sparsecircuits.circuits.sweep import GRID, K_COEFS
from sparsecircuits.circuits.task_data import TaskSplits
from sparsecircuits.data.tokens import default_cache_root
from sparsecircuits.database import insert_row, open_database
from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run
from sparsecircuits.validation import parse_json

STORE_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS prunes (
    key TEXT PRIMARY KEY,
    model_sha256 TEXT NOT NULL,
    run TEXT NOT NULL,
    task TEXT NOT NULL,
    target_loss REAL NOT NULL,
    ablation TEXT NOT NULL,
    nodes INTEGER,
    edges INTEGER,
    circuit_loss REAL,
    seconds REAL,
    error TEXT,
    metrics TEXT,
    measured_at TEXT NOT NULL
);
"""


def default_store_path() -> Path:
    return default_cache_root() / "prunes.sqlite"


class PruneStore:
    """The `prunes` table of one SQLite file; every write is its own transaction."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.connection = open_database(
            self.path, "prune store", STORE_VERSION, SCHEMA, adopt_tables=frozenset({"prunes"})
        )

    def get(self, key: str) -> sqlite3.Row | None:
        return self.connection.execute("SELECT * FROM prunes WHERE key = ?", (key,)).fetchone()

    def put(self, key: str, fields: dict) -> None:
        insert_row(self.connection, "prunes", {"key": key, **fields}, replace=True)


def prune_key(weights_sha256: str, splits: TaskSplits, config: PruneConfig) -> str:
    digest = hashlib.sha256()
    settings = config.to_dict()
    # Strictness switches that are off leave the key as it was before they existed, so results
    # stored then are still found (with every switch off a prune returns what it returned).
    for name in STRICT_OPTIONS.values():
        if not settings[name]:
            del settings[name]
    what = {"model": weights_sha256, "task": splits.name, "config": settings}
    sweep = {"candidates": list(K_COEFS), "grid": list(GRID), "recipe": RECIPE_VERSION}
    digest.update(json.dumps({**what, "sweep": sweep}, sort_keys=True).encode())
    for batch in splits.batches():
        for tensor in (batch.tokens, batch.last, batch.correct, batch.wrong):
            digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def stored_prune_metrics(
    run: Run,
    run_path: Path,
    splits: TaskSplits,
    config: PruneConfig,
    store: PruneStore,
    fresh: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """The metrics of `prune_to_target_loss` on the pairs of `splits`, with its sweep
    history: from the store when this exact prune was measured before (unless `fresh`), else
    pruned now and stored.

    Raises UserError, stored or new, when no circuit reaches the target.
    """
    weights_sha256 = model_hash(run)
    task = splits.name
    key = prune_key(weights_sha256, splits, config)
    row = None if fresh else store.get(key)
    if row is not None:
        log(f"  {task}: stored result of {row['measured_at']} (pass --fresh to prune again)")
        if row["error"] is not None:
            raise UserError(row["error"])
        return parse_json(row["metrics"], dict, f"{store.path}: prunes row {key[:16]}...: metrics")
    fields = {
        "model_sha256": weights_sha256,
        "run": str(run_path),
        "task": task,
        "target_loss": config.target_loss,
        "ablation": config.ablation,
    }
    measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        outcome = prune_to_target_loss(run, splits, config, log=log)
    except UserError as error:
        store.put(key, fields | {"error": str(error), "measured_at": measured_at})
        raise
    metrics = {**outcome.metrics, "sweep": outcome.sweep}  # the sweep, for tuning the recipe
    columns = {name: metrics[name] for name in ("nodes", "edges", "circuit_loss", "seconds")}
    store.put(key, fields | columns | {"metrics": json.dumps(metrics), "measured_at": measured_at})
    return metrics
