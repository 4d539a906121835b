"""Tests for sparsecircuits.data: corpora, tokenizer, token caches and batches.

Everything runs on small corpora written into tmp_path, with a 300-token vocabulary, so the
whole file takes a few seconds; the standard library is only listed, never tokenized.
"""

import contextlib
import importlib.util
import itertools
import json
import os
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsecircuits.data import (
    EOT,
    CodeTokenizer,
    is_validation,
    open_corpus,
    prepare_data,
    sample_batch,
    validation_batches,
)
from sparsecircuits.errors import UserError

SMALL_VOCAB = 300


def python_source(seed: int) -> str:
    """A few hundred lines of varied, Python-looking text."""
    lines = [f'"""Module number {seed}."""', "", "import os", ""]
    for i in range(40):
        name = f"function_{seed}_{i}"
        lines += [
            f"def {name}(value, count={i}):",
            f"    # comment {i * seed} with unicode: héllo ☃",
            "    if value is None:",
            f"        return count + {seed}",
            "\tfor item in range(count):",
            f"\t\tvalue = value * {i} + item  # tabs too",
            '    return f"{value!r} done"',
            "",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    """A small package: readable .py files, one non-UTF-8 .py file, one unreadable one."""
    root = tmp_path / "code"
    (root / "pkg").mkdir(parents=True)
    for i in range(3):
        (root / f"module_{i}.py").write_text(python_source(i), encoding="utf-8")
    (root / "pkg" / "inner.py").write_text(python_source(10), encoding="utf-8")
    (root / "pkg" / "latin1.py").write_bytes(
        "# coding: latin-1\nname = 'caf\xe9'\n".encode("latin-1")
    )
    (root / "notes.txt").write_text("not python\n", encoding="utf-8")
    locked = root / "pkg" / "locked.py"
    locked.write_text("x = 1\n", encoding="utf-8")
    locked.chmod(0)
    return root


def readable_py_texts(root: Path) -> list[str]:
    """The .py files the current user can actually read as UTF-8 (root ignores chmod 000)."""
    texts = []
    for path in root.rglob("*.py"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            texts.append(path.read_bytes().decode("utf-8"))
    return texts


@pytest.fixture(scope="module")
def small_tokenizer() -> CodeTokenizer:
    return CodeTokenizer.train([python_source(i) for i in range(4)], vocab_size=SMALL_VOCAB)


# --- corpora ---------------------------------------------------------------------------------


def test_stdlib_corpus_lists_files_without_site_packages():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = open_corpus(None)
    assert "standard library" in corpus.description
    assert len(corpus.relative_paths) > 500
    assert corpus.relative_paths == sorted(corpus.relative_paths)
    assert not any(
        part in ("site-packages", "dist-packages")
        for relative in corpus.relative_paths
        for part in Path(relative).parts
    )
    first = list(itertools.islice(corpus.documents(), 3))
    assert len(first) == 3
    for document in first:
        assert document.doc_id.endswith(".py")
        assert (stdlib / document.doc_id).is_file()
    assert open_corpus("stdlib").relative_paths == corpus.relative_paths


def test_directory_corpus_reads_matching_files_and_counts_skipped(code_dir: Path):
    corpus = open_corpus(str(code_dir))
    documents = list(corpus.documents())
    ids = [document.doc_id for document in documents]
    assert ids == sorted(ids)
    assert "pkg/inner.py" in ids and "module_0.py" in ids
    assert "pkg/latin1.py" not in ids
    assert len(documents) == len(readable_py_texts(code_dir))
    assert corpus.skipped == 6 - len(documents)  # 6 .py files in all
    assert corpus.skipped >= 1  # the latin-1 file, whoever we run as
    assert documents[ids.index("module_1.py")].text == python_source(1)


def test_directory_corpus_honours_glob(code_dir: Path):
    corpus = open_corpus(str(code_dir), glob="*.txt")
    assert [document.doc_id for document in corpus.documents()] == ["notes.txt"]


def test_fingerprint_is_stable_and_notices_changes(code_dir: Path):
    first = open_corpus(str(code_dir)).fingerprint()
    assert len(first) == 16 and int(first, 16) >= 0
    assert open_corpus(str(code_dir)).fingerprint() == first
    (code_dir / "module_0.py").write_text("changed = True\n", encoding="utf-8")
    assert open_corpus(str(code_dir)).fingerprint() != first


def test_txt_corpus_is_one_document_or_split_on_eot(tmp_path: Path):
    whole = tmp_path / "whole.txt"
    whole.write_text("a = 1\n\nb = 2\n", encoding="utf-8")
    assert [(d.doc_id, d.text) for d in open_corpus(str(whole)).documents()] == [
        ("whole.txt:0", "a = 1\n\nb = 2\n")
    ]
    split = tmp_path / "split.txt"
    split.write_text(f"first{EOT}second{EOT}\n", encoding="utf-8")
    assert [(d.doc_id, d.text) for d in open_corpus(str(split)).documents()] == [
        ("split.txt:0", "first"),
        ("split.txt:1", "second"),
    ]


def test_jsonl_corpus_skips_and_counts_bad_lines(tmp_path: Path):
    path = tmp_path / "data.jsonl"
    lines = [
        json.dumps({"text": "x = 1\n"}),
        "{not json",
        json.dumps({"content": "no text field"}),
        "",
        json.dumps({"text": 42}),
        json.dumps({"text": "y = 2\n", "extra": True}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = open_corpus(str(path))
    assert [(d.doc_id, d.text) for d in corpus.documents()] == [
        ("data.jsonl:1", "x = 1\n"),
        ("data.jsonl:6", "y = 2\n"),
    ]
    assert corpus.skipped == 3


def test_unknown_spec_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="corpus not found: .*nowhere"):
        open_corpus(str(tmp_path / "nowhere"))
    other = tmp_path / "table.csv"
    other.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(UserError, match="expected 'stdlib', 'installed', a .manifest file"):
        open_corpus(str(other))
    with pytest.raises(UserError, match="hf:NAME"):
        open_corpus("hf:")
    with pytest.raises(UserError, match="empty corpus spec"):
        open_corpus("")


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets present")
def test_hf_corpus_without_datasets_says_what_to_install():
    with pytest.raises(UserError, match="needs the 'datasets' package: pip install datasets"):
        open_corpus("hf:someone/python-code:train")


def test_empty_corpus_is_a_user_error(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"has no readable documents \(0 files skipped\)"):
        prepare_data(str(empty), cache_root=tmp_path / "cache", progress=False)
    (empty / "bad.py").write_bytes(b"\xff\xfe\x00 not utf-8")
    with pytest.raises(UserError, match=r"has no readable documents \(1 files skipped\)"):
        prepare_data(str(empty), cache_root=tmp_path / "cache", progress=False)


def test_validation_split_is_deterministic_and_about_the_right_size():
    ids = [f"pkg/module_{i}.py" for i in range(4000)]
    held_out = [is_validation(doc_id, 0.1) for doc_id in ids]
    assert held_out == [is_validation(doc_id, 0.1) for doc_id in ids]
    assert 0.08 < sum(held_out) / len(ids) < 0.12
    assert not any(is_validation(doc_id, 0.0) for doc_id in ids)
    with pytest.raises(UserError, match="val_fraction"):
        is_validation("a.py", 1.5)


# --- tokenizer -------------------------------------------------------------------------------

TRICKY_TEXTS = [
    "",
    "def f(x):\n\treturn x  # tab-indented\n",
    "class A:\n        def deep(self):\n            pass\r\n\r\n",
    "s = 'héllo wörld ☃ 日本語 😀'\n",
    f"literal = '{EOT}'\n",
    "   \n\n\n\t \t trailing   ",
    "\x00\x7f control bytes \u200b",
]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_tokenizer_round_trips_exactly(small_tokenizer: CodeTokenizer, text: str):
    assert small_tokenizer.decode(small_tokenizer.encode(text)) == text


def test_tokenizer_eot_and_vocabulary(small_tokenizer: CodeTokenizer):
    assert small_tokenizer.eot_id == 0
    assert small_tokenizer.vocab_size == SMALL_VOCAB
    assert small_tokenizer.decode([small_tokenizer.eot_id]) == EOT
    # A literal marker in a document is text, not a document boundary.
    assert small_tokenizer.eot_id not in small_tokenizer.encode(f"x = '{EOT}'")
    batch = ["a = 1\n", "\tb = 'ü'\n"]
    assert small_tokenizer.encode_batch(batch) == [small_tokenizer.encode(t) for t in batch]


def test_token_text_is_readable(small_tokenizer: CodeTokenizer):
    texts = [small_tokenizer.id_to_token_text(i) for i in small_tokenizer.encode(" \n\t")]
    assert "".join(texts) == " \n\t"
    assert small_tokenizer.id_to_token_text(small_tokenizer.eot_id) == EOT
    for i in small_tokenizer.encode("    return value"):
        assert "Ġ" not in small_tokenizer.id_to_token_text(i)
    with pytest.raises(UserError, match="outside the vocabulary"):
        small_tokenizer.id_to_token_text(10**6)


def test_tokenizer_save_and_load(small_tokenizer: CodeTokenizer, tmp_path: Path):
    path = tmp_path / "nested" / "tokenizer.json"
    small_tokenizer.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temp files left
    loaded = CodeTokenizer.from_file(path)
    assert loaded.sha == small_tokenizer.sha
    assert len(loaded.sha) == 16
    text = python_source(7)
    assert loaded.encode(text) == small_tokenizer.encode(text)
    with pytest.raises(UserError, match="not found"):
        CodeTokenizer.from_file(tmp_path / "missing.json")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"version": "1.0", "model": ', encoding="utf-8")
    with pytest.raises(UserError, match="cannot read tokenizer"):
        CodeTokenizer.from_file(corrupt)


def test_tokenizer_training_is_deterministic(small_tokenizer: CodeTokenizer):
    again = CodeTokenizer.train([python_source(i) for i in range(4)], vocab_size=SMALL_VOCAB)
    assert again.sha == small_tokenizer.sha


@pytest.mark.parametrize("vocab_size", [65536, 100])
def test_vocab_size_out_of_range_is_a_user_error(vocab_size: int, tmp_path: Path):
    with pytest.raises(UserError, match="vocab_size"):
        CodeTokenizer.train(["x = 1\n"], vocab_size=vocab_size)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "a.py").write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(UserError, match="vocab_size"):
        prepare_data(
            str(tmp_path / "code"), vocab_size=vocab_size, cache_root=tmp_path, progress=False
        )


# --- token caches ----------------------------------------------------------------------------


def test_prepare_data_builds_and_reuses_the_cache(code_dir: Path, tmp_path: Path):
    cache_root = tmp_path / "cache"
    data = prepare_data(
        str(code_dir), vocab_size=SMALL_VOCAB, cache_root=cache_root, progress=False
    )
    assert data.train.dtype == np.uint16 and data.val.dtype == np.uint16
    assert len(data.train) > 0 and len(data.val) > 0
    with pytest.raises(ValueError):
        data.train[0] = 1  # read-only
    texts = readable_py_texts(code_dir)
    documents = len(texts)
    assert data.train_documents + data.val_documents == documents
    assert data.skipped_files == 6 - documents
    all_tokens = np.concatenate([data.train, data.val])
    assert int((all_tokens == data.tokenizer.eot_id).sum()) == documents
    assert python_source(1) in data.tokenizer.decode(all_tokens.tolist())
    assert data.text_bytes == sum(len(text.encode()) for text in texts)
    assert str(code_dir) in data.description
    assert data.cache_dir.parent == cache_root / "tokens"
    assert len(list((cache_root / "tokenizers").glob("*.json"))) == 1

    files = sorted(data.cache_dir.iterdir())
    assert [f.name for f in files] == ["meta.json", "train.bin", "val.bin"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = prepare_data(
        str(code_dir), vocab_size=SMALL_VOCAB, cache_root=cache_root, progress=False
    )
    assert again.cache_dir == data.cache_dir
    assert again.tokenizer.sha == data.tokenizer.sha
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    np.testing.assert_array_equal(again.train, data.train)
    assert not [p for p in (cache_root / "tokens").iterdir() if p.name.startswith(".")]


def test_incomplete_cache_is_rebuilt(code_dir: Path, tmp_path: Path):
    cache_root = tmp_path / "cache"
    data = prepare_data(
        str(code_dir), vocab_size=SMALL_VOCAB, cache_root=cache_root, progress=False
    )
    expected = np.array(data.train)
    del data
    train_file = next((cache_root / "tokens").iterdir()) / "train.bin"
    os.truncate(train_file, 10)
    rebuilt = prepare_data(
        str(code_dir), vocab_size=SMALL_VOCAB, cache_root=cache_root, progress=False
    )
    np.testing.assert_array_equal(rebuilt.train, expected)


def test_prepare_data_splits_by_document(tmp_path: Path, small_tokenizer: CodeTokenizer):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(12):
        (root / f"m{i:02d}.py").write_text(f"value_{i} = {i}\n", encoding="utf-8")
    data = prepare_data(
        str(root),
        tokenizer=small_tokenizer,
        cache_root=tmp_path / "cache",
        val_fraction=0.5,
        progress=False,
    )
    expected_val = sum(is_validation(f"m{i:02d}.py", 0.5) for i in range(12))
    assert 0 < expected_val < 12
    assert data.val_documents == expected_val
    assert data.train_documents == 12 - expected_val
    assert not data.val_from_train_tail
    assert data.cache_dir.name.endswith(small_tokenizer.sha)
    assert not (tmp_path / "cache" / "tokenizers").exists()  # the given tokenizer was used


def test_tiny_corpus_holds_out_the_end_of_the_train_stream(tmp_path: Path):
    root = tmp_path / "one"
    root.mkdir()
    (root / "only.py").write_text(python_source(3), encoding="utf-8")
    data = prepare_data(str(root), vocab_size=SMALL_VOCAB, cache_root=tmp_path, progress=False)
    assert data.val_from_train_tail
    assert data.train_documents == 1 and data.val_documents == 0
    total = len(data.train) + len(data.val)
    assert len(data.val) == round(total * 0.05)
    assert data.val[-1] == data.tokenizer.eot_id
    whole = data.tokenizer.decode(np.concatenate([data.train, data.val]).tolist())
    assert whole == python_source(3) + EOT


# --- batches ---------------------------------------------------------------------------------


def test_sample_batch_shapes_shift_and_determinism():
    tokens = np.arange(500, dtype=np.uint16)
    x, y = sample_batch(tokens, 8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == torch.int64
    # With tokens 0..499 every window is a run of consecutive numbers.
    assert torch.equal(y, x + 1)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(y.max()) <= 499
    x_again, _ = sample_batch(tokens, 8, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x_again)
    x_other, _ = sample_batch(tokens, 8, 16, torch.Generator().manual_seed(1))
    assert not torch.equal(x, x_other)


def test_sample_batch_can_reach_the_last_token():
    tokens = np.arange(11, dtype=np.uint16)  # exactly one window of 10 plus its target
    x, y = sample_batch(tokens, 3, 10, torch.Generator().manual_seed(0))
    assert torch.equal(y[0], torch.arange(1, 11))


def test_sample_batch_rejects_short_streams():
    with pytest.raises(UserError, match="only 10 tokens, fewer than the context length"):
        sample_batch(np.zeros(10, dtype=np.uint16), 2, 10, torch.Generator())


def test_validation_batches_are_consecutive_windows():
    tokens = np.arange(1000, dtype=np.uint16)
    batches = validation_batches(tokens, batch_size=4, n_ctx=10, max_tokens=95)
    assert [x.shape[0] for x, _ in batches] == [4, 4, 1]
    x = torch.cat([x for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    assert torch.equal(x.flatten(), torch.arange(90))
    assert torch.equal(y, x + 1)
    assert x.dtype == torch.int64
    assert validation_batches(tokens, 4, 10, max_tokens=3)[0][0].shape == (1, 10)
    everything = validation_batches(tokens, 64, 10, max_tokens=10**9)
    assert sum(x.shape[0] for x, _ in everything) == 99  # (1000 - 1) // 10 windows
    with pytest.raises(UserError, match="fewer than the context length"):
        validation_batches(tokens[:5], 4, 10, max_tokens=100)
