"""Where the toolkit's files go: the one function every interp command writes through.

A command's `--out` folder is checked when the flag is read (`cli_types.OutputFolder`), so a
file there, a parent that is a file or a folder that cannot be written ends in one line before
any model is loaded. The files of a command are then rendered in memory and written together by
`write_outputs`: each under a temporary name first and renamed into place only once all of them
are on disk, so a failed write replaces nothing, leaves no temporary, and removes the folders
it made itself.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sparsecircuits.cli_types import unusable_folder
from sparsecircuits.errors import UserError
from sparsecircuits.files import atomic_path


def write_outputs(folder: Path, files: dict[str, bytes]) -> list[Path]:
    """Write each name -> content of `files` into `folder` (made if missing); all or nothing.
    Returns the paths written, in the order given."""
    folder = Path(folder)
    problem = unusable_folder(folder)  # checked again: the folder may have changed meanwhile
    if problem is not None:
        raise UserError(problem)
    made = missing_folders(folder)
    paths = [folder / name for name in files]
    try:
        with contextlib.ExitStack() as stack:
            # atomic_path renames its temporary into place when its block ends without an
            # error: here, once every file's temporary is written.
            for path, content in zip(paths, files.values(), strict=True):
                stack.enter_context(atomic_path(path)).write_bytes(content)
    except OSError as error:
        remove_empty(made)
        raise UserError(f"cannot write into {folder}: {error.strerror or error}") from None
    except BaseException:
        remove_empty(made)
        raise
    return paths


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its ancestors that do not exist yet, deepest first."""
    missing = []
    while not os.path.lexists(folder) and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first: a parent is empty once its child is gone
        with contextlib.suppress(OSError):
            folder.rmdir()
