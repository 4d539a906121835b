"""SQLite databases of queryable results (prunes, explanations, ...): one way to open them.

Each database says what it is in a `sparsecircuits_meta` table (its kind and schema version),
so a command given the wrong file (another kind of database, a newer version's, or no database
at all) stops with one line instead of failing on a missing column later, and nothing in that
file is touched. Every write is its own transaction; WAL journaling lets readers (the viewer,
`sqlite3` in a shell) read while a long job writes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sparsecircuits.errors import UserError

META_TABLE = "sparsecircuits_meta"


def open_database(
    path: Path,
    kind: str,
    version: int,
    schema: str,
    adopt_tables: frozenset[str] = frozenset(),
) -> sqlite3.Connection:
    """Open (creating if needed) the `kind` database at `path`, its tables made by `schema`.

    A database of this kind with an older `version` is brought up to date by running `schema`
    (write it with CREATE ... IF NOT EXISTS); one written before databases carried their kind
    is adopted when its tables are among `adopt_tables`. Anything else is a UserError.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = None
    try:
        # Shared by threads (an LLM backend's workers) behind the owner's lock.
        connection = sqlite3.connect(path, timeout=30, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        stored = read_meta(connection)
        tables = table_names(connection) - {META_TABLE}
        if stored is None and tables and not tables <= adopt_tables:
            raise UserError(
                f"{path} is not a sparsecircuits {kind} database (it holds the tables "
                f"{', '.join(sorted(tables))}); choose another file"
            )
        if stored is not None and stored["kind"] != kind:
            raise UserError(
                f"{path} is a sparsecircuits {stored['kind']} database, not a {kind} database"
            )
        if stored is not None and int(stored["version"]) > version:
            raise UserError(
                f"{path} was written by a newer sparsecircuits ({kind} schema version "
                f"{stored['version']}, this one reads up to {version}); upgrade sparsecircuits"
            )
        connection.execute("PRAGMA journal_mode=WAL")
        with connection:
            connection.executescript(
                f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT);"
            )
            connection.executescript(schema)
            connection.executemany(
                f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (?, ?)",
                [("kind", kind), ("version", str(version))],
            )
        return connection
    except sqlite3.DatabaseError as error:
        if connection is not None:
            connection.close()
        raise UserError(f"cannot use {path} as a {kind} database: {error}") from None
    except UserError:
        connection.close()
        raise


def read_meta(connection: sqlite3.Connection) -> dict[str, str] | None:
    if META_TABLE not in table_names(connection):
        return None
    rows = connection.execute(f"SELECT key, value FROM {META_TABLE}").fetchall()
    meta = {row["key"]: row["value"] for row in rows}
    return meta if {"kind", "version"} <= set(meta) else None


def table_names(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {row[0] for row in rows}


def insert_row(connection: sqlite3.Connection, table: str, fields: dict, replace: bool) -> int:
    """Insert one row (`fields`: column -> value) in its own transaction; its rowid."""
    columns = ", ".join(fields)
    placeholders = ", ".join("?" for _ in fields)
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    with connection:
        cursor = connection.execute(
            f"{verb} INTO {table} ({columns}) VALUES ({placeholders})", tuple(fields.values())
        )
    return int(cursor.lastrowid or 0)
