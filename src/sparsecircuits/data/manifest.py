"""Pinned corpora: a manifest of `name==version` lines whose wheels pip fetches once.

A manifest (a `.manifest` file) names packages by exact version, one a line (`#` starts a
comment), and `stdlib` for the running interpreter's standard library:

    # the reference models' corpus
    stdlib
    sympy==1.13.3

`sparsecircuits corpus build FILE` downloads each package's wheel with pip (`--no-deps
--only-binary :all:`, so no package's build code runs) into the cache, and writes `lock.json`
with every archive's SHA-256 and size. Training with `--data FILE` reads the Python files
straight out of those wheels and never downloads anything: an unbuilt manifest is one line
saying which command builds it.

Layout: {cache}/corpora/{manifest name}-{hash of its lines}/{lock.json, archives/*.whl}
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from sparsecircuits.data.corpus import short_hash
from sparsecircuits.data.packages import (
    PackageCorpus,
    PackageSource,
    normalised_name,
    python_requirement,
    stdlib_source,
)
from sparsecircuits.errors import UserError
from sparsecircuits.files import atomic_folder, write_json_atomic
from sparsecircuits.validation import load_json

MANIFEST_SUFFIX = ".manifest"
STDLIB_LINE = "stdlib"
LOCK_FORMAT = "sparsecircuits.corpus-lock/1"
MAX_MANIFEST_BYTES = 1_000_000
MAX_REQUIREMENTS = 2_000
# A pinned requirement: a distribution name (PEP 508) and an exact version (PEP 440 characters).
_PINNED = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==([A-Za-z0-9.+!_-]+)$")


@dataclass(frozen=True)
class Manifest:
    path: Path
    requirements: tuple[str, ...]  # "name==version", in the file's order
    stdlib: bool
    digest: str  # SHA-256 of the normalised lines: what the corpus holds

    @property
    def label(self) -> str:
        return self.path.name


def read_manifest(path: Path) -> Manifest:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise UserError(f"{path}: over {MAX_MANIFEST_BYTES:,} bytes; not a manifest")
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    requirements: list[str] = []
    names: dict[str, int] = {}
    stdlib = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line == STDLIB_LINE:
            stdlib = True
            continue
        match = _PINNED.match(line)
        if match is None:
            raise UserError(
                f"{path}:{number}: expected NAME==VERSION or '{STDLIB_LINE}', got {line[:80]!r}"
            )
        name = normalised_name(match.group(1))
        if name in names:
            raise UserError(
                f"{path}:{number}: {match.group(1)} is pinned on line {names[name]} too"
            )
        names[name] = number
        requirements.append(line)
    if len(requirements) > MAX_REQUIREMENTS:
        raise UserError(f"{path}: {len(requirements):,} packages, more than {MAX_REQUIREMENTS:,}")
    if not requirements and not stdlib:
        raise UserError(f"{path}: names no package")
    lines = ([STDLIB_LINE] if stdlib else []) + requirements
    digest = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    return Manifest(path, tuple(requirements), stdlib, digest)


class LockedArchive(BaseModel):
    requirement: str
    file: str = Field(pattern=r"^[A-Za-z0-9._+!-]+\.whl$")  # a plain file name, no folders
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Lock(BaseModel):
    format: Literal["sparsecircuits.corpus-lock/1"]
    manifest_sha256: str
    python: str  # the interpreter that built it, whose stdlib a `stdlib` line means
    archives: list[LockedArchive]


def corpus_folder(manifest: Manifest, cache_root: Path) -> Path:
    return cache_root / "corpora" / f"{manifest.path.stem}-{manifest.digest[:16]}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_lock(manifest: Manifest, folder: Path, verify: bool = False) -> Lock | None:
    """The folder's lock if it is whole and its archives are there (with their recorded
    sizes; with `verify`, their recorded hashes too), else None."""
    try:
        lock = load_json(folder / "lock.json", Lock, "corpus lock")
    except UserError:
        return None
    if lock.manifest_sha256 != manifest.digest:
        return None
    for archive in lock.archives:
        path = folder / "archives" / archive.file
        if not path.is_file() or path.stat().st_size != archive.bytes:
            return None
        if verify and file_sha256(path) != archive.sha256:
            return None
    return lock


def build_corpus(
    manifest: Manifest, cache_root: Path, log: Callable[[str], None] = print
) -> tuple[Path, Lock]:
    """Download the manifest's wheels into the cache (once) and return the folder and lock."""
    folder = corpus_folder(manifest, cache_root)
    lock = read_lock(manifest, folder, verify=True)
    if lock is not None:
        log(f"{manifest.label}: already built in {folder} (hashes checked)")
        return folder, lock
    if folder.exists():
        log(f"{manifest.label}: {folder} is incomplete or changed; building it again")
        shutil.rmtree(folder)
    with atomic_folder(folder) as staging:
        archives = staging / "archives"
        archives.mkdir()
        if manifest.requirements:
            log(f"{manifest.label}: downloading {len(manifest.requirements)} wheels with pip")
            download_wheels(manifest, archives)
        lock = Lock(
            format=LOCK_FORMAT,
            manifest_sha256=manifest.digest,
            python=python_requirement(),
            archives=locked_archives(manifest, archives),
        )
        write_json_atomic(staging / "lock.json", lock.model_dump())
    return folder, lock


def download_wheels(manifest: Manifest, into: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--dest",
        str(into),
        *manifest.requirements,
    ]
    finished = subprocess.run(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if finished.returncode != 0:
        errors = [line for line in finished.stderr.splitlines() if line.startswith("ERROR")]
        reason = errors[-1] if errors else f"pip exited with {finished.returncode}"
        raise UserError(f"{manifest.label}: pip could not download a wheel: {reason}")


def locked_archives(manifest: Manifest, folder: Path) -> list[LockedArchive]:
    """One wheel per requirement, matched by its file name's distribution part."""
    wheels = {normalised_name(path.name.split("-", 1)[0]): path for path in folder.glob("*.whl")}
    locked = []
    for requirement in manifest.requirements:
        name = normalised_name(requirement.split("==", 1)[0])
        if name not in wheels:
            raise UserError(f"{manifest.label}: pip brought no wheel for {requirement}")
        path = wheels[name]
        locked.append(
            LockedArchive(
                requirement=requirement,
                file=path.name,
                sha256=file_sha256(path),
                bytes=path.stat().st_size,
            )
        )
    return locked


def manifest_corpus(path: Path, cache_root: Path) -> PackageCorpus:
    """`--data FILE.manifest`: the pinned packages' Python files, read from the built cache."""
    manifest = read_manifest(path)
    folder = corpus_folder(manifest, cache_root)
    lock = read_lock(manifest, folder)
    if lock is None:
        raise UserError(
            f"corpus {manifest.label} is not built on this machine (or its files changed): "
            f"run `sparsecircuits corpus build {path}` first"
        )
    sources = [stdlib_source()] if manifest.stdlib else []
    sources += [
        PackageSource(archive.requirement, archive=folder / "archives" / archive.file)
        for archive in lock.archives
    ]
    stdlib_stamp = sources[0].stamp() if manifest.stdlib else ""
    fingerprint = short_hash(
        "manifest", stdlib_stamp, *(archive.sha256 for archive in lock.archives)
    )
    description = f"{len(lock.archives)} packages pinned by {manifest.label}"
    if manifest.stdlib:
        description += f" and the standard library of {python_requirement()}"
    return PackageCorpus(sources, description, fingerprint)
