"""Where `view --export` may write: a new or empty folder, or an earlier export (which it
replaces), checked when the flag is read so a bad folder is one line before any model loads.

Light on purpose (click and `cli_types` only): `view` reads its flags before importing the site.
"""

from __future__ import annotations

import os
from pathlib import Path

from sparsecircuits.cli_types import OutputFolder, unusable_folder

MARKER = ".sparsecircuits-viewer"


def holds_other_files(folder: Path) -> bool:
    """Whether `folder` has content that no earlier export wrote (so must not be replaced)."""
    if not os.path.isdir(folder) or (Path(folder) / MARKER).is_file():
        return False
    return any(Path(folder).iterdir())


def unusable_export(folder: Path) -> str | None:
    if holds_other_files(folder):
        return f"{folder} holds other files; choose a new folder for the viewer's pages"
    return None


class ExportFolder(OutputFolder):
    """An `OutputFolder` that is also not somebody else's folder."""

    @staticmethod
    def problem(path: Path) -> str | None:
        return unusable_folder(path) or unusable_export(path)
