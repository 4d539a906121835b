"""SQLite databases of queryable results (prunes, explanations, ...): one way to open them.

Each database says what it is in a `sparsecircuits_meta` table (its kind and schema version),
so a command given the wrong file (another kind of database, a newer version's, or no database
at all) stops with one line instead of failing on a missing column later, and nothing in that
file is touched. Every write is its own transaction; WAL journaling lets readers (the viewer,
`sqlite3` in a shell) read while a long job writes.

SQLite keeps any value in any column, so a file edited by hand (or by another program) may hold
text where a score should be, a blob, or NULL. Every row read comes through `checked_rows`,
which holds each value against the type its column has in the schema the program declared,
and a damaged value is one line naming the file, the column and the row. `database_errors`
does the same for what SQLite itself refuses (a malformed file, a missing column).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from sparsecircuits.errors import UserError, first_line
from sparsecircuits.files import check_output_file
from sparsecircuits.validation import field_error, shown

META_TABLE = "sparsecircuits_meta"
META_SCHEMA = f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT);"
ROW_KEYS = ("id", "key")  # the columns that name a row in an error, where a query has one
# A declared column type's affinity (SQLite's rules, in its order) -> the Python types its
# values are read as, and how an error says it.
AFFINITIES: tuple[tuple[tuple[str, ...], tuple[type, ...], str], ...] = (
    (("INT",), (int,), "an integer"),
    (("CHAR", "CLOB", "TEXT"), (str,), "a text"),
    (("REAL", "FLOA", "DOUB"), (float, int), "a number"),
)


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
    path = check_output_file(Path(path))  # a folder there, or a parent that is a file: one line
    connection = None
    try:
        # Shared by threads (an LLM backend's workers) behind the owner's lock.
        connection = sqlite3.connect(path, timeout=30, check_same_thread=False)
        connection.row_factory = checked_rows(path, column_types(META_SCHEMA + schema))
        stored = read_meta(connection)
        tables = table_names(connection) - {META_TABLE}
        if stored is None and tables and not tables <= adopt_tables:
            raise UserError(
                f"{path} is not a sparsecircuits {kind} database (it holds the tables "
                f"{', '.join(sorted(tables))}); choose another file"
            )
        if stored is not None and stored_kind(stored, path) != kind:
            raise UserError(
                f"{path} is a sparsecircuits {stored['kind']} database, not a {kind} database"
            )
        if stored is not None and stored_version(stored, path) > version:
            raise UserError(
                f"{path} was written by a newer sparsecircuits ({kind} schema version "
                f"{stored['version']}, this one reads up to {version}); upgrade sparsecircuits"
            )
        # A database already of this kind and version is not written to: opening it to read
        # (or to be refused) leaves its file as it was.
        if stored is None or (stored["kind"], stored["version"]) != (kind, str(version)):
            connection.execute("PRAGMA journal_mode=WAL")
            with connection:
                connection.executescript(META_SCHEMA)
                connection.executescript(schema)
                connection.executemany(
                    f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (?, ?)",
                    [("kind", kind), ("version", str(version))],
                )
        return connection
    except (sqlite3.DatabaseError, UserError) as error:
        if connection is not None:
            connection.close()
        if isinstance(error, UserError):
            raise
        raise UserError(f"cannot use {path} as a {kind} database: {first_line(error)}") from None


def stored_kind(meta: dict[str, str], path: Path) -> str:
    """The kind of database its meta table names."""
    if not isinstance(meta["kind"], str):
        raise field_error(path, f"{META_TABLE}.kind", f"expected a text, got {shown(meta['kind'])}")
    return meta["kind"]


def stored_version(meta: dict[str, str], path: Path) -> int:
    """The schema version in a database's meta table (its digits, as written by open_database)."""
    text = meta["version"]
    if text is None or not text.isascii() or not text.isdigit():
        raise field_error(path, f"{META_TABLE}.version", f"expected an integer, got {shown(text)}")
    return int(text)


def read_meta(connection: sqlite3.Connection) -> dict[str, str] | None:
    if META_TABLE not in table_names(connection):
        return None
    rows = connection.execute(f"SELECT key, value FROM {META_TABLE}").fetchall()
    meta = {row["key"]: row["value"] for row in rows}
    return meta if {"kind", "version"} <= set(meta) else None


def table_names(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {row[0] for row in rows}


def column_types(schema: str) -> dict[str, tuple[tuple[type, ...], str]]:
    """Column name -> the Python types its values may have and their description, for every
    column `schema` declares (run on an empty in-memory database to let SQLite parse it).

    A name declared in several tables allows what any of them allows: rows arrive without
    their table's name.
    """
    allowed: dict[str, tuple[tuple[type, ...], str]] = {}
    memory = sqlite3.connect(":memory:")
    try:
        memory.executescript(schema)
        for table in table_names(memory):
            for _, name, declared, not_null, _, key in memory.execute(
                f"PRAGMA table_info({table})"
            ).fetchall():
                types, description = affinity(declared)
                # An INTEGER PRIMARY KEY is the rowid: never NULL, whatever it declares.
                if not not_null and not (key and types == (int,)):
                    types, description = (*types, type(None)), f"{description} or NULL"
                if name in allowed:
                    before = allowed[name]
                    types = tuple(dict.fromkeys(before[0] + types))
                    description = f"{before[1]} or {description}"
                allowed[name] = (types, description)
    finally:
        memory.close()
    return allowed


def affinity(declared: str) -> tuple[tuple[type, ...], str]:
    declared = declared.upper()
    for markers, types, description in AFFINITIES:
        if any(marker in declared for marker in markers):
            return types, description
    return (int, float, str, bytes), "a value"  # BLOB or NUMERIC: anything goes


def checked_rows(
    path: Path, allowed: dict[str, tuple[tuple[type, ...], str]]
) -> Callable[[sqlite3.Cursor, tuple], sqlite3.Row]:
    """A row factory that refuses a value of the wrong type for its column (by name)."""

    def row_factory(cursor: sqlite3.Cursor, values: tuple) -> sqlite3.Row:
        names = [column[0] for column in cursor.description]
        for name, value in zip(names, values, strict=True):
            types, description = allowed.get(name, ((object,), ""))
            if not isinstance(value, types):
                # Name the row by a key column where the query has one.
                key = next((key for key in ROW_KEYS if key in names), None)
                where = f" of row {key} {shown(values[names.index(key)])}" if key else ""
                raise field_error(
                    path, f"{name}{where}", f"expected {description}, got {shown(value)}"
                )
        return sqlite3.Row(cursor, values)

    return row_factory


@contextlib.contextmanager
def database_errors(path: Path, kind: str) -> Iterator[None]:
    """What SQLite refuses while reading or writing `path` (malformed, locked, a missing
    column), as one line naming the file."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        raise UserError(f"cannot use {path} as a {kind} database: {first_line(error)}") from None


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
