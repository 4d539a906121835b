"""Token caches and batches.

`prepare_data` turns a corpus into two flat uint16 token streams on disk, train.bin and val.bin,
each document followed by EOT. The split is by document (see `is_validation`). Caches are keyed
by the corpus fingerprint, the validation fraction and the tokenizer's hash, are written to a
temporary folder and renamed into place, and are reused whenever they are complete.

Layout under the cache root (env SPARSECIRCUITS_CACHE, default ~/.cache/sparsecircuits):
    tokenizers/{data_fp}-{vocab_size}.json
    tokens/{data_fp}-{tokenizer_sha}/{train.bin, val.bin, meta.json}
where data_fp hashes the corpus fingerprint together with the validation fraction.
"""

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sparsecircuits.data.corpus import (
    Corpus,
    Document,
    default_cache_root,
    is_validation,
    short_hash,
)
from sparsecircuits.data.specs import open_corpus
from sparsecircuits.data.tokenizer import CodeTokenizer
from sparsecircuits.errors import UserError
from sparsecircuits.files import remove_stale_temporaries, temporary_path
from sparsecircuits.validation import load_json

# When no whole document lands in validation (a corpus of a few files), this share of the end
# of the train stream is held out instead, so tiny corpora still get a validation loss.
TAIL_VAL_FRACTION = 0.05
# Text handed to one encode_batch call: big enough to keep the library's threads busy, small
# enough that the token lists stay well under a few hundred MB.
_ENCODE_BATCH_BYTES = 2_000_000
_CACHE_FORMAT = 1


@dataclass
class TokenizedCorpus:
    train: np.ndarray  # read-only uint16 memmap: documents in order, each followed by EOT
    val: np.ndarray  # read-only uint16 memmap, same layout
    tokenizer: CodeTokenizer
    description: str
    train_documents: int
    val_documents: int
    skipped_files: int  # unreadable files (or bad lines/rows for .jsonl and hf corpora)
    cache_dir: Path
    text_bytes: int = 0  # UTF-8 bytes of all encoded documents, for bytes-per-token figures
    val_from_train_tail: bool = False  # validation is the last tokens of the train stream
    packages: list[str] | None = None  # "name==version" of a package corpus, else None


def prepare_data(
    spec: str | None,
    *,
    vocab_size: int = 2048,
    tokenizer: CodeTokenizer | None = None,
    cache_root: Path | None = None,
    val_fraction: float = 0.02,
    glob: str = "**/*.py",
    progress: bool = True,
) -> TokenizedCorpus:
    """Tokenize a corpus (see `open_corpus` for specs) into cached train/val token streams.

    Without a `tokenizer`, a BPE tokenizer of `vocab_size` is trained on the train documents,
    or loaded from the cache if one was trained on the same data before.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    label = "stdlib" if spec is None else spec
    cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
    corpus = open_corpus(spec, glob, cache_root)
    data_fp = short_hash(corpus.fingerprint(), f"val_fraction={val_fraction!r}")
    if tokenizer is None:
        tokenizer_path = cache_root / "tokenizers" / f"{data_fp}-{vocab_size}.json"
        tokenizer = _load_or_train_tokenizer(
            corpus, label, tokenizer_path, vocab_size, val_fraction, progress
        )
    cache_dir = cache_root / "tokens" / f"{data_fp}-{tokenizer.sha}"
    meta = _read_complete_meta(cache_dir)
    if meta is None:
        meta = _build_token_cache(corpus, label, tokenizer, val_fraction, cache_dir, progress)
    elif progress:
        print(f"using cached tokens in {cache_dir}", file=sys.stderr)
    return TokenizedCorpus(
        train=np.memmap(cache_dir / "train.bin", dtype=np.uint16, mode="r"),
        val=np.memmap(cache_dir / "val.bin", dtype=np.uint16, mode="r"),
        tokenizer=tokenizer,
        description=meta["description"],
        train_documents=meta["train_documents"],
        val_documents=meta["val_documents"],
        skipped_files=meta["skipped"],
        cache_dir=cache_dir,
        text_bytes=meta["text_bytes"],
        val_from_train_tail=meta["val_from_train_tail"],
        packages=meta.get("packages"),
    )


def _no_documents_error(label: str, corpus: Corpus) -> UserError:
    return UserError(
        f"corpus {label} has no readable documents ({corpus.skipped} {corpus.skip_unit} skipped)"
    )


def _load_or_train_tokenizer(
    corpus: Corpus,
    label: str,
    path: Path,
    vocab_size: int,
    val_fraction: float,
    progress: bool,
) -> CodeTokenizer:
    if path.is_file():
        return CodeTokenizer.from_file(path)
    if progress:
        print(
            f"training a {vocab_size:,}-token BPE tokenizer on {corpus.description}",
            file=sys.stderr,
        )
    started = time.perf_counter()
    # Measured on the full 31 MB standard library: about 6 s on 2 cores, so no sampling.
    documents_seen = 0

    def train_texts(include_validation: bool):
        nonlocal documents_seen
        for document in corpus.documents():
            if document.text and (
                include_validation or not is_validation(document.doc_id, val_fraction)
            ):
                documents_seen += 1
                yield document.text

    tokenizer = CodeTokenizer.train(train_texts(include_validation=False), vocab_size)
    if documents_seen == 0:
        # A corpus of a few files can put all of them in validation: learn from those instead.
        tokenizer = CodeTokenizer.train(train_texts(include_validation=True), vocab_size)
    if documents_seen == 0:
        raise _no_documents_error(label, corpus)
    tokenizer.save(path)
    if progress:
        seconds = time.perf_counter() - started
        print(f"trained tokenizer in {seconds:.1f} s, saved to {path}", file=sys.stderr)
    return tokenizer


def _read_complete_meta(cache_dir: Path) -> dict | None:
    """The cache's meta.json if the cache is whole and matches it, else None."""
    try:
        meta = load_json(cache_dir / "meta.json", dict, "token cache file")
        train_bytes = (cache_dir / "train.bin").stat().st_size
        val_bytes = (cache_dir / "val.bin").stat().st_size
        whole = (
            meta["format"] == _CACHE_FORMAT
            and train_bytes == 2 * meta["train_tokens"]
            and val_bytes == 2 * meta["val_tokens"]
        )
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return None
    return meta if whole else None


def _build_token_cache(
    corpus: Corpus,
    label: str,
    tokenizer: CodeTokenizer,
    val_fraction: float,
    cache_dir: Path,
    progress: bool,
) -> dict:
    """Encode the corpus into a temporary folder, then rename it to `cache_dir`."""
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(cache_dir.parent)  # caches half-built by killed processes
    temp_dir = temporary_path(cache_dir)
    temp_dir.mkdir()
    try:
        meta = _encode_corpus(corpus, label, tokenizer, val_fraction, temp_dir, progress)
        meta["description"] = corpus.description
        meta["tokenizer_sha"] = tokenizer.sha
        meta["vocab_size"] = tokenizer.vocab_size
        meta["val_fraction"] = val_fraction
        meta["packages"] = corpus.packages
        meta["duplicates"] = corpus.duplicates
        (temp_dir / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        finished_meanwhile = _read_complete_meta(cache_dir)
        if finished_meanwhile is not None:
            # Another run built the same cache while we encoded; keep theirs, it may be in use.
            shutil.rmtree(temp_dir)
            return finished_meanwhile
        if cache_dir.exists():
            shutil.rmtree(cache_dir)  # an incomplete leftover, never trusted
        os.rename(temp_dir, cache_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return meta


def _encode_corpus(
    corpus: Corpus,
    label: str,
    tokenizer: CodeTokenizer,
    val_fraction: float,
    out_dir: Path,
    progress: bool,
) -> dict:
    """Write train.bin and val.bin into `out_dir`; return their counts for meta.json."""
    counts = {"train_tokens": 0, "val_tokens": 0, "train_documents": 0, "val_documents": 0}
    text_bytes = 0
    with (
        tqdm(
            desc="encoding", unit="B", unit_scale=True, file=sys.stderr, disable=not progress
        ) as bar,
        open(out_dir / "train.bin", "wb") as train_file,
        open(out_dir / "val.bin", "wb") as val_file,
    ):
        files = {"train": train_file, "val": val_file}

        def encode_and_write(batch: list[Document]) -> None:
            id_lists = tokenizer.encode_batch([document.text for document in batch])
            streams: dict[str, list[int]] = {"train": [], "val": []}
            for document, ids in zip(batch, id_lists, strict=True):
                split = "val" if is_validation(document.doc_id, val_fraction) else "train"
                streams[split].extend(ids)
                streams[split].append(tokenizer.eot_id)
                counts[f"{split}_documents"] += 1
            for split, stream in streams.items():
                np.asarray(stream, dtype=np.uint16).tofile(files[split])
                counts[f"{split}_tokens"] += len(stream)

        batch: list[Document] = []
        batch_bytes = 0
        for document in corpus.documents():
            if not document.text:
                continue
            size = len(document.text.encode("utf-8"))
            batch.append(document)
            batch_bytes += size
            text_bytes += size
            if batch_bytes >= _ENCODE_BATCH_BYTES:
                encode_and_write(batch)
                bar.update(batch_bytes)
                batch, batch_bytes = [], 0
        if batch:
            encode_and_write(batch)
            bar.update(batch_bytes)

    if counts["train_documents"] + counts["val_documents"] == 0:
        raise _no_documents_error(label, corpus)
    held_out_tail = counts["val_tokens"] == 0 or counts["train_tokens"] == 0
    if held_out_tail:
        _hold_out_train_tail(out_dir, counts)
    return {
        "format": _CACHE_FORMAT,
        **counts,
        "skipped": corpus.skipped,
        "skip_unit": corpus.skip_unit,
        "text_bytes": text_bytes,
        "val_from_train_tail": held_out_tail,
    }


def _hold_out_train_tail(out_dir: Path, counts: dict[str, int]) -> None:
    """Move the last TAIL_VAL_FRACTION of all tokens from train.bin into val.bin."""
    if counts["train_tokens"] == 0:
        os.replace(out_dir / "val.bin", out_dir / "train.bin")
    total = counts["train_tokens"] + counts["val_tokens"]
    counts["train_documents"] += counts["val_documents"]
    counts["val_documents"] = 0
    held_out = max(1, round(total * TAIL_VAL_FRACTION))
    kept = total - held_out
    tail = np.array(np.memmap(out_dir / "train.bin", dtype=np.uint16, mode="r")[kept:])
    tail.tofile(out_dir / "val.bin")
    os.truncate(out_dir / "train.bin", 2 * kept)
    counts["train_tokens"], counts["val_tokens"] = kept, held_out


def sample_batch(
    tokens: np.ndarray, batch_size: int, n_ctx: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of the token stream: x and y = x shifted by one, both [batch, n_ctx] int64.

    Offsets come from `generator`, so the same generator state gives the same batch.
    """
    windows = windows_at(tokens, sample_offsets(tokens, batch_size, n_ctx, generator), n_ctx + 1)
    return windows[:, :-1], windows[:, 1:]


def sample_offsets(
    tokens: np.ndarray, batch_size: int, n_ctx: int, generator: torch.Generator
) -> torch.Tensor:
    """Random start offsets of `batch_size` windows of n_ctx + 1 tokens (input and target)."""
    _check_batch_shape(tokens, batch_size, n_ctx)
    return torch.randint(0, len(tokens) - n_ctx, (batch_size,), generator=generator)


def windows_at(tokens: np.ndarray, offsets: torch.Tensor, length: int) -> torch.Tensor:
    """[len(offsets), length] int64 token ids starting at each offset of the stream."""
    rows = offsets.numpy()[:, None] + np.arange(length)
    return torch.from_numpy(np.asarray(tokens[rows], dtype=np.int64))


def validation_batches(
    tokens: np.ndarray, batch_size: int, n_ctx: int, max_tokens: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive, non-overlapping windows from the start of the stream, about `max_tokens`
    predicted tokens in all (at least one window), grouped into batches of `batch_size`."""
    _check_batch_shape(tokens, batch_size, n_ctx)
    available = (len(tokens) - 1) // n_ctx
    n_windows = min(available, max(1, max_tokens // n_ctx))
    windows = torch.from_numpy(np.asarray(tokens[: n_windows * n_ctx + 1], dtype=np.int64))
    x = windows[:-1].reshape(n_windows, n_ctx)
    y = windows[1:].reshape(n_windows, n_ctx)
    return [
        (x[start : start + batch_size], y[start : start + batch_size])
        for start in range(0, n_windows, batch_size)
    ]


def _check_batch_shape(tokens: np.ndarray, batch_size: int, n_ctx: int) -> None:
    if batch_size < 1 or n_ctx < 1:
        raise UserError(
            f"batch size and context length must be positive, got {batch_size}, {n_ctx}"
        )
    if len(tokens) < n_ctx + 1:
        raise UserError(
            f"the token stream has only {len(tokens):,} tokens, fewer than the context length "
            f"+ 1 ({n_ctx + 1:,}); use a bigger corpus or a shorter context"
        )
