"""Writing files safely, the one way every stage does it.

- Every file or folder the project writes appears whole or not at all: it is written under a
  temporary name beside its destination (`.{name}.{pid}-{random}.sc-tmp`) and renamed into place.
- A temporary that a killed process left behind is removed by the next writer to the same place
  (its pid is in the name, so a live writer's temporaries are never touched).
- A run folder has an owner and one writer at a time: `claim_run_folder` writes a marker with the
  run's identity on first use, refuses a folder that holds something else, and holds a lock while
  the command writes (a second writer gets one clear line).
- Unusable output paths (an existing folder where a file is expected, a parent that is a file,
  no permission) end in one UserError line, never a traceback.

Leaf module: imports only the standard library, `errors` and `validation` (which reads JSON).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from sparsecircuits.errors import UserError
from sparsecircuits.validation import load_json

TEMP_SUFFIX = ".sc-tmp"
_TEMP_PATTERN = re.compile(r"\.(\d+)-[0-9a-f]+" + re.escape(TEMP_SUFFIX) + "$")
MARKER = ".sparsecircuits-run.json"
LOCK = ".sparsecircuits.lock"


def temporary_path(path: Path) -> Path:
    """A fresh temporary name beside `path`, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(folder: Path, name: str | None = None) -> int:
    """Delete temporaries in `folder` (only those of `name`, if given) whose writer is dead."""
    if not folder.is_dir():
        return 0
    prefix = f".{name}." if name is not None else "."
    removed = 0
    for entry in folder.iterdir():
        match = _TEMP_PATTERN.search(entry.name)
        if match is None or not entry.name.startswith(prefix):
            continue
        if _pid_alive(int(match.group(1))):
            continue
        _remove(entry)
        removed += 1
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_output_file(path: Path) -> Path:
    """Make sure `path` can become a file: not empty, not a folder, its parent a folder that
    exists (created if missing) and can be written. Returns the path."""
    path = Path(path)
    if str(path) in ("", "."):
        raise UserError("the output path is empty")
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file path")
    _make_parent(path)
    return path


def _make_parent(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"cannot write {path}: {parent} is not a folder") from None
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: no permission to write into {parent}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; it replaces `path` only if the block
    finishes. Any OSError while writing becomes one UserError line; the temporary never stays."""
    path = check_output_file(Path(path))
    remove_stale_temporaries(path.parent, path.name)
    temporary = temporary_path(path)
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        if temporary.exists() or temporary.is_symlink():
            _remove(temporary)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def finite_json(value: object) -> object:
    """`value` with every NaN or infinite float replaced by None: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def json_text(value: object, indent: int | None = 2) -> str:
    """Strict JSON (no NaN): what every JSON file and --json output of the project is."""
    return json.dumps(finite_json(value), indent=indent, allow_nan=False)


def write_json_atomic(path: Path, data: object, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json_text(data, indent))


def _fsync(path: Path) -> None:
    if path.is_dir():
        for file in path.rglob("*"):
            if file.is_file():
                _fsync(file)
        return
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a staging folder that becomes the new folder `path` only if the block finishes.
    `path` must not exist or be an empty folder; if another writer filled it meanwhile, this
    one fails with a clear line and leaves theirs alone."""
    path = Path(path)
    if str(path) in ("", "."):
        raise UserError("the output folder is empty")
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file; choose a new folder")
    if path.exists() and any(path.iterdir()):
        raise UserError(f"{path} exists and is not empty; choose a new folder")
    _make_parent(path)
    remove_stale_temporaries(path.parent, path.name)
    staging = temporary_path(path)
    try:
        staging.mkdir()
        yield staging
        _fsync(staging)
        with contextlib.suppress(OSError):
            path.rmdir()  # an empty folder the user made for us
        try:
            os.rename(staging, path)
        except OSError:
            raise UserError(
                f"{path} was written by another process meanwhile; kept theirs"
            ) from None
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        if staging.exists():
            _remove(staging)


def read_marker(folder: Path) -> dict | None:
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        return load_json(marker, dict, "run marker")
    except UserError:  # unreadable: treated as no marker, so the folder is not adopted blindly
        return None


@contextlib.contextmanager
def claim_run_folder(
    folder: Path, kind: str, identity: dict, adopt: bool = False
) -> Iterator[Path]:
    """Own `folder` for a command of `kind` (e.g. "train") whose run is `identity` (a JSON-able
    dict: what must match to write here again), and hold its lock until the block ends.

    A new or empty folder is marked as this run's. A folder with this run's marker is reused.
    A folder with another run's marker, or with other files and no marker, is refused, unless
    `adopt` says the caller has checked that the unmarked content is this same run (a run
    written before markers existed). Stale temporaries inside are removed once the lock is held.
    """
    folder = Path(folder)
    if str(folder) in ("", "."):
        raise UserError("the output folder is empty")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder")
    created = not folder.exists()
    if created:
        _make_folder(folder)
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into {folder}: permission denied")
    marker = read_marker(folder)
    wanted = {"kind": kind, "identity": identity}
    if marker is not None:
        if marker.get("kind") != kind:
            raise UserError(
                f"{folder} belongs to a {marker.get('kind')} command, not {kind}; "
                "choose another --out"
            )
        if marker.get("identity") != identity:
            raise UserError(
                f"{folder} holds another {kind} run (its config differs); choose another --out"
            )
    elif _has_content(folder) and not adopt:
        raise UserError(
            f"{folder} is not empty and is not a {kind} run of this config; choose another --out"
        )
    try:
        with _folder_lock(folder):
            if marker is None:
                write_json_atomic(folder / MARKER, wanted)
            for sub in (folder, *[p for p in folder.iterdir() if p.is_dir() and p.name[0] != "."]):
                remove_stale_temporaries(sub)
            yield folder
    except BaseException:
        # A command that failed before writing anything leaves the folder as it found it.
        if marker is None and not _has_content(folder):
            _unclaim(folder, remove_folder=created)
        raise


def _unclaim(folder: Path, remove_folder: bool) -> None:
    with contextlib.suppress(OSError):
        for name in (MARKER, LOCK):
            (folder / name).unlink(missing_ok=True)
        if remove_folder:
            folder.rmdir()


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {folder}: {error.strerror or error}") from None


def _has_content(folder: Path) -> bool:
    return any(entry.name not in (MARKER, LOCK) for entry in folder.iterdir())


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    lock_path = folder / LOCK
    try:
        handle = open(lock_path, "a+")  # noqa: SIM115 (closed by the `with` below)
    except OSError as error:
        raise UserError(f"cannot write into {folder}: {error.strerror or error}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(
                f"{folder} is being written by {holder}; wait for it or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
