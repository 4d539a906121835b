"""Corpora of Python packages: the installed distributions, or the wheels a manifest pins.

A package corpus is the `.py` files of a list of packages, each distinct file content once
(many packages vendor the same modules). A document's id is the hash of its content, so the
train/validation split is decided by the file itself, the same on every machine whatever
folder it was installed in. The package names and versions travel with the corpus
(`packages`), so a run's config records exactly what it learned from.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sparsecircuits.data.corpus import (
    THIRD_PARTY_DIRS,
    Corpus,
    Document,
    file_stamp,
    short_hash,
)


@dataclass
class PackageSource:
    """One package's Python files: installed ones (absolute paths) or the members of a wheel
    or sdist archive, read in sorted order."""

    requirement: str  # "name==version", or "python==3.11.7" for the standard library
    files: list[Path] = field(default_factory=list)  # installed files
    archive: Path | None = None  # or a wheel (.whl, zip) or sdist (.tar.gz)

    def contents(self) -> Iterator[tuple[str, bytes | None]]:
        """(path, bytes or None if unreadable) for every .py file."""
        if self.archive is None:
            for path in self.files:
                try:
                    yield str(path), path.read_bytes()
                except OSError:
                    yield str(path), None
        elif self.archive.suffix == ".whl":
            yield from _zip_members(self.archive)
        else:
            yield from _tar_members(self.archive)

    def stamp(self) -> str:
        """What the source holds, without reading it: file sizes and times, or the archive's."""
        paths = self.files if self.archive is None else [self.archive]
        return short_hash(self.requirement, *(f"{path}={file_stamp(path)}" for path in paths))


def _zip_members(archive: Path) -> Iterator[tuple[str, bytes | None]]:
    with zipfile.ZipFile(archive) as opened:
        for name in sorted(opened.namelist()):
            if name.endswith(".py"):
                try:
                    yield name, opened.read(name)
                except (OSError, zipfile.BadZipFile, RuntimeError):
                    yield name, None


def _tar_members(archive: Path) -> Iterator[tuple[str, bytes | None]]:
    with tarfile.open(archive) as opened:
        members = sorted((m for m in opened.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            if member.name.endswith(".py"):
                handle = opened.extractfile(member)
                yield member.name, handle.read() if handle is not None else None


class PackageCorpus(Corpus):
    """The .py files of several packages, each distinct content once, in package order."""

    def __init__(self, sources: list[PackageSource], description: str, fingerprint: str):
        self.sources = sources
        self.description = description
        self._fingerprint = fingerprint
        self.skipped = 0
        self.duplicates = 0  # files whose content an earlier file already had

    @property
    def packages(self) -> list[str]:  # type: ignore[override]
        return [source.requirement for source in self.sources]

    def documents(self) -> Iterator[Document]:
        self.skipped = self.duplicates = 0
        seen: set[bytes] = set()
        for source in self.sources:
            for _, data in source.contents():
                text = _utf8(data)
                if text is None:
                    self.skipped += 1
                    continue
                digest = hashlib.sha256(data).digest()
                if digest in seen:
                    self.duplicates += 1
                    continue
                seen.add(digest)
                yield Document(doc_id=digest.hex()[:32], text=text)

    def fingerprint(self) -> str:
        return self._fingerprint


def _utf8(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def normalised_name(name: str) -> str:
    """PEP 503: runs of -, _ and . are one -, case folded."""
    return re.sub(r"[-_.]+", "-", name).lower()


def python_requirement() -> str:
    return "python=={}.{}.{}".format(*sys.version_info[:3])


def stdlib_source() -> PackageSource:
    """The running interpreter's standard library as one package (third-party folders left
    out: they are the installed distributions)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if name not in THIRD_PARTY_DIRS)
        files += [Path(folder, name) for name in sorted(names) if name.endswith(".py")]
    return PackageSource(python_requirement(), sorted(files))


def installed_sources(search_path: list[str] | None = None) -> list[PackageSource]:
    """Every distribution installed on `search_path` (default sys.path) that has .py files, by
    normalised name; the first of two installs of one name wins, as it does on import."""
    sources: dict[str, PackageSource] = {}
    found = importlib.metadata.distributions(**({"path": search_path} if search_path else {}))
    for distribution in found:
        name = distribution.metadata["Name"] or ""
        key = normalised_name(name)
        if not key or key in sources:
            continue
        listed = [item for item in distribution.files or [] if item.suffix == ".py"]
        files = sorted(
            path for path in map(Path, map(distribution.locate_file, listed)) if path.is_file()
        )
        if files:
            sources[key] = PackageSource(f"{name}=={distribution.version}", files)
    return [sources[key] for key in sorted(sources)]


def installed_corpus(search_path: list[str] | None = None) -> PackageCorpus:
    """`--data installed`: the standard library and every installed distribution's .py files."""
    sources = [stdlib_source(), *installed_sources(search_path)]
    n_files = sum(len(source.files) for source in sources)
    description = (
        f"Python {sys.version_info.major}.{sys.version_info.minor} standard library and "
        f"{len(sources) - 1} installed distributions ({n_files:,} .py files before "
        "removing duplicates)"
    )
    fingerprint = short_hash("installed", *(source.stamp() for source in sources))
    return PackageCorpus(sources, description, fingerprint)
