"""Which corpus a `--data` spec names."""

from pathlib import Path

from sparsecircuits.data.corpus import (
    Corpus,
    JsonlCorpus,
    TextFileCorpus,
    default_cache_root,
    directory_corpus,
    open_hf,
    stdlib_corpus,
)
from sparsecircuits.data.manifest import MANIFEST_SUFFIX, manifest_corpus
from sparsecircuits.data.packages import installed_corpus
from sparsecircuits.errors import UserError

EXPECTED = (
    "expected 'stdlib', 'installed', a .manifest file, a directory, a .txt or .jsonl file, "
    "or hf:NAME"
)


def open_corpus(spec: str | None, glob: str = "**/*.py", cache_root: Path | None = None) -> Corpus:
    """Open a corpus by spec: None or "stdlib" (the standard library), "installed" (it and
    every installed distribution), a .manifest file built by `corpus build`, a directory (files
    matching `glob`), a .txt or .jsonl file, or "hf:NAME[:SPLIT[:FIELD]]"."""
    if spec is None or spec == "stdlib":
        return stdlib_corpus()
    if spec == "installed":
        return installed_corpus()
    if spec.startswith("hf:"):
        return open_hf(spec)
    if not spec.strip():
        raise UserError(f"empty corpus spec ({EXPECTED})")  # Path("") would mean the cwd
    path = Path(spec).expanduser()
    if path.is_dir():
        return directory_corpus(path, glob)
    if path.is_file() and path.suffix == MANIFEST_SUFFIX:
        return manifest_corpus(path, cache_root or default_cache_root())
    if path.is_file() and path.suffix == ".txt":
        return TextFileCorpus(path)
    if path.is_file() and path.suffix == ".jsonl":
        return JsonlCorpus(path)
    if path.exists():
        raise UserError(f"cannot use {spec} as a corpus ({EXPECTED})")
    raise UserError(f"corpus not found: {spec} ({EXPECTED})")
