"""Corpus readers: the standard library, a folder, a .txt/.jsonl file or a Hugging Face
dataset as a stream of documents, plus a cheap fingerprint of what the corpus holds for cache
keys. Package corpora are in packages.py and manifest.py; specs.py picks one from a spec."""

import hashlib
import importlib
import importlib.util
import os
import sys
import sysconfig
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from sparsecircuits.data.tokenizer import EOT
from sparsecircuits.errors import UserError, first_line
from sparsecircuits.validation import parse_json

# Third-party packages live inside the stdlib folder but are not part of it.
THIRD_PARTY_DIRS = frozenset({"site-packages", "dist-packages"})
CACHE_ENV_VAR = "SPARSECIRCUITS_CACHE"


def default_cache_root() -> Path:
    """Where tokenizers, token streams, built corpora and stored results live."""
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "sparsecircuits"


@dataclass(frozen=True)
class Document:
    doc_id: str  # stable id used for the train/validation split: a relative path or "name:N"
    text: str


def short_hash(*parts: str) -> str:
    """16 hex digits of SHA-256 over the parts, kept apart so ("ab", "c") != ("a", "bc")."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def file_stamp(path: Path) -> str:
    """Size and modification time: enough to notice an edit without reading the file."""
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _read_utf8(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


class Corpus(ABC):
    """A source of documents. `skipped` counts what could not be read during the last pass."""

    description: str
    skipped: int = 0
    skip_unit: str = "files"  # what `skipped` counts, for messages
    duplicates: int = 0  # documents left out because an earlier one had the same content
    packages: list[str] | None = None  # "name==version" of a package corpus

    @abstractmethod
    def documents(self) -> Iterator[Document]:
        """Yield readable documents in a fixed order, counting unreadable ones in `skipped`."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A stable 16-hex-digit hash of what the corpus contains, computed without reading it."""


class FileTreeCorpus(Corpus):
    """Every file in a fixed, sorted list under one root folder; each file is one document."""

    def __init__(self, root: Path, relative_paths: list[str], description: str):
        self.root = root
        self.relative_paths = relative_paths
        self.description = description
        self.skipped = 0

    def documents(self) -> Iterator[Document]:
        self.skipped = 0
        for relative in self.relative_paths:
            text = _read_utf8(self.root / relative)
            if text is None:
                self.skipped += 1
                continue
            yield Document(doc_id=relative, text=text)

    def fingerprint(self) -> str:
        stamps = [f"{rel}={file_stamp(self.root / rel)}" for rel in self.relative_paths]
        return short_hash("files", *stamps)


def stdlib_corpus() -> FileTreeCorpus:
    """Every .py file of the running interpreter's standard library, without site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    relative_paths = []
    for folder, subfolders, files in os.walk(root):
        # Prune in place so os.walk never descends into (possibly large) third-party trees.
        subfolders[:] = [name for name in subfolders if name not in THIRD_PARTY_DIRS]
        for name in files:
            if name.endswith(".py") and os.path.isfile(os.path.join(folder, name)):
                relative_paths.append(Path(folder, name).relative_to(root).as_posix())
    relative_paths.sort()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    description = f"Python {version} standard library ({root}, {len(relative_paths):,} .py files)"
    return FileTreeCorpus(root, relative_paths, description)


def directory_corpus(root: Path, glob: str) -> FileTreeCorpus:
    relative_paths = sorted(
        path.relative_to(root).as_posix() for path in root.glob(glob) if path.is_file()
    )
    description = f"{root} ({len(relative_paths):,} files matching {glob})"
    return FileTreeCorpus(root, relative_paths, description)


class TextFileCorpus(Corpus):
    """One text file: a single document, or several if it is split by <|endoftext|> markers."""

    def __init__(self, path: Path):
        self.path = path
        self.description = f"text file {path}"
        self.skipped = 0

    def documents(self) -> Iterator[Document]:
        self.skipped = 0
        text = _read_utf8(self.path)
        if text is None:
            self.skipped = 1
            return
        for index, chunk in enumerate(text.split(EOT)):
            if chunk.strip():
                yield Document(doc_id=f"{self.path.name}:{index}", text=chunk)

    def fingerprint(self) -> str:
        return short_hash("txt", str(self.path.resolve()), file_stamp(self.path))


class JsonlCorpus(Corpus):
    """One JSON object per line, its text in the "text" field; bad lines are skipped."""

    skip_unit = "lines"

    def __init__(self, path: Path):
        self.path = path
        self.description = f"JSON lines file {path}"
        self.skipped = 0

    def documents(self) -> Iterator[Document]:
        self.skipped = 0
        try:
            file = self.path.open("rb")
        except OSError:
            self.skipped = 1
            return
        with file:
            for line_number, raw_line in enumerate(file, start=1):
                if not raw_line.strip():
                    continue
                text = _text_field(raw_line)
                if text is None:
                    self.skipped += 1
                    continue
                yield Document(doc_id=f"{self.path.name}:{line_number}", text=text)

    def fingerprint(self) -> str:
        return short_hash("jsonl", str(self.path.resolve()), file_stamp(self.path))


class _CorpusLine(BaseModel):
    """A line of a .jsonl corpus: an object with a "text" string (other keys ignored)."""

    text: str


def _text_field(raw_line: bytes) -> str | None:
    try:
        return parse_json(raw_line, _CorpusLine, "corpus line").text
    except UserError:  # not JSON (or not UTF-8), or no "text" string: skipped and counted
        return None


class HuggingFaceCorpus(Corpus):
    """A split of a Hugging Face `datasets` dataset, one row per document."""

    skip_unit = "rows"

    def __init__(self, name: str, split: str, field: str):
        self.name = name
        self.split = split
        self.field = field
        self.description = f"Hugging Face dataset {name} (split {split}, field {field!r})"
        self.skipped = 0

    def documents(self) -> Iterator[Document]:
        datasets = importlib.import_module("datasets")
        try:
            rows = datasets.load_dataset(self.name, split=self.split)
        except Exception as error:  # the library raises many types for a missing dataset
            raise UserError(
                f"cannot load hf:{self.name}:{self.split}: {first_line(error)}"
            ) from error
        self.skipped = 0
        for index, row in enumerate(rows):
            text = row.get(self.field)
            if not isinstance(text, str):
                self.skipped += 1
                continue
            yield Document(doc_id=f"{self.name}:{self.split}:{index}", text=text)

    def fingerprint(self) -> str:
        return short_hash("hf", self.name, self.split, self.field)


def open_hf(spec: str) -> HuggingFaceCorpus:
    parts = spec.removeprefix("hf:").split(":")
    if len(parts) > 3 or not all(parts):
        raise UserError(
            f"bad corpus spec {spec!r}: expected hf:NAME, hf:NAME:SPLIT or hf:NAME:SPLIT:FIELD"
        )
    if importlib.util.find_spec("datasets") is None:
        raise UserError(f"reading {spec} needs the 'datasets' package: pip install datasets")
    defaults = ["train", "text"]  # split, field
    name, split, field = parts + defaults[len(parts) - 1 :]
    return HuggingFaceCorpus(name, split, field)


def is_validation(doc_id: str, val_fraction: float) -> bool:
    """Whether a document is held out for validation: decided by a hash of its id, so the same
    documents are held out on every run and machine."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction
