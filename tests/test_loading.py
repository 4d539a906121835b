"""The shared pieces every analysis stage stands on: `sparsecircuits.load`, the activation
stream and the SQLite helper."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

import sparsecircuits
from sparsecircuits.circuits.store import PruneStore
from sparsecircuits.database import insert_row, open_database
from sparsecircuits.errors import UserError
from sparsecircuits.loading import Run
from sparsecircuits.loading.activations import iter_activations, run_corpus

HOOKS = ["blocks.0.mlp.hook_post", "blocks.1.hook_resid_post"]


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Run:
    return sparsecircuits.load(tiny_run)


def test_load_gives_model_tokenizer_and_config(run, tiny_run):
    assert run.config["model"]["n_layer"] == run.model.config.n_layer == 2
    assert run.tokenizer.vocab_size <= run.model.config.vocab_size
    assert run.path.parent.parent == tiny_run  # the run folder's latest checkpoint
    again = sparsecircuits.load(run.path)  # a checkpoint folder loads too
    assert torch.equal(again.model.wte.weight, run.model.wte.weight)


def test_stream_walks_the_held_out_split_in_order(run):
    n_ctx = run.model.config.n_ctx
    corpus = run_corpus(run)
    batches = list(iter_activations(run, HOOKS, 5 * n_ctx, batch_size=2, corpus=corpus))
    assert [len(batch.tokens) for batch in batches] == [2, 2, 1]
    offsets = torch.cat([batch.offsets for batch in batches])
    assert offsets.tolist() == [k * n_ctx for k in range(5)]
    first = batches[1]
    expected = torch.as_tensor(corpus.val[2 * n_ctx : 4 * n_ctx].astype("int64"))
    assert torch.equal(first.tokens.flatten(), expected)
    _, cache = run.model.run_with_cache(first.tokens, HOOKS)
    for hook in HOOKS:
        assert torch.allclose(first.activations[hook], cache[hook])
    assert first.activations[HOOKS[0]].shape == (2, n_ctx, run.model.config.d_mlp)


def test_stream_resumes_from_a_window(run):
    n_ctx = run.model.config.n_ctx
    whole = list(iter_activations(run, HOOKS[0], 4 * n_ctx, batch_size=4))[0]
    rest = list(iter_activations(run, HOOKS[0], 2 * n_ctx, batch_size=4, start=2))[0]
    assert rest.first_window == 2
    assert torch.equal(rest.tokens, whole.tokens[2:])
    assert torch.allclose(rest.activations[HOOKS[0]], whole.activations[HOOKS[0]][2:])


def test_stream_stops_at_the_end_of_the_split(run):
    n_ctx = run.model.config.n_ctx
    windows = len(run_corpus(run).val) // n_ctx
    seen = sum(len(b.tokens) for b in iter_activations(run, HOOKS[0], 10**9, batch_size=64))
    assert seen == windows


def test_seeded_stream_samples_the_same_windows_again(run):
    n_ctx = run.model.config.n_ctx

    def offsets(seed: int) -> list[int]:
        stream = iter_activations(
            run, HOOKS[0], 6 * n_ctx, 4, split="train", order="random", seed=seed
        )
        return torch.cat([batch.offsets for batch in stream]).tolist()

    assert offsets(3) == offsets(3) != offsets(4)
    assert len(offsets(3)) == 6


def test_shuffled_stream_never_shows_a_token_twice_and_resumes(run):
    window = 16
    whole = [
        batch.offsets
        for batch in iter_activations(
            run, HOOKS[0], 10**9, 64, order="shuffled", seed=5, window=window
        )
    ]
    offsets = torch.cat(whole)
    assert len(offsets) == len(run_corpus(run).val) // window  # the whole grid, once each
    assert (offsets % window == 0).all() and len(set(offsets.tolist())) == len(offsets)
    assert offsets.tolist() != sorted(offsets.tolist())
    middle = len(offsets) // 2
    rest = next(iter_activations(run, HOOKS[0], 3 * window, 64, order="shuffled", seed=5,
                                 window=window, start=middle))  # fmt: skip
    assert rest.offsets.tolist() == offsets[middle : middle + 3].tolist()
    past_the_end = iter_activations(run, HOOKS[0], 64, 64, window=window, start=len(offsets))
    assert list(past_the_end) == []
    assert rest.tokens.shape == (3, window)


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"hooks": "blocks.9.nothing"}, "no hook point matches"),
        ({"split": "test"}, "unknown split"),
        ({"n_tokens": 0}, "must be positive"),
        ({"window": 10**6}, "the window"),
        ({"order": "sorted"}, "unknown window order"),
    ],
)
def test_stream_refuses_bad_requests_in_one_line(run, arguments, fragment):
    call = {"hooks": HOOKS, "n_tokens": 64} | arguments
    with pytest.raises(UserError, match=fragment):
        next(iter_activations(run, call.pop("hooks"), call.pop("n_tokens"), **call))


SCHEMA = "CREATE TABLE IF NOT EXISTS things (id INTEGER PRIMARY KEY, name TEXT);"


def test_database_records_its_kind_and_reopens(tmp_path):
    path = tmp_path / "things.sqlite"
    connection = open_database(path, "things", 1, SCHEMA)
    rowid = insert_row(connection, "things", {"name": "a"}, replace=False)
    connection.close()
    again = open_database(path, "things", 1, SCHEMA)
    assert again.execute("SELECT name FROM things WHERE id = ?", (rowid,)).fetchone()[0] == "a"


def test_database_refuses_another_kind_a_newer_version_and_foreign_files(tmp_path):
    path = tmp_path / "things.sqlite"
    open_database(path, "things", 2, SCHEMA).close()
    with pytest.raises(UserError, match="is a sparsecircuits things database, not a prune"):
        PruneStore(path)
    with pytest.raises(UserError, match="newer sparsecircuits"):
        open_database(path, "things", 1, SCHEMA)

    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE songs (title TEXT)")
    with pytest.raises(UserError, match="not a sparsecircuits things database.*songs"):
        open_database(foreign, "things", 1, SCHEMA)
    with sqlite3.connect(foreign) as connection:  # left as it was
        assert {row[0] for row in connection.execute("SELECT name FROM sqlite_master")} == {"songs"}

    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, " * 100)
    with pytest.raises(UserError, match="cannot use .* as a things database"):
        open_database(text, "things", 1, SCHEMA)
    assert text.read_text() == "not a database at all, " * 100


def test_prune_store_adopts_a_store_written_before_databases_had_a_kind(tmp_path):
    path = tmp_path / "prunes.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE prunes (key TEXT PRIMARY KEY, model_sha256 TEXT NOT NULL, run TEXT "
            "NOT NULL, task TEXT NOT NULL, target_loss REAL NOT NULL, ablation TEXT NOT NULL, "
            "nodes INTEGER, edges INTEGER, circuit_loss REAL, seconds REAL, error TEXT, "
            "metrics TEXT, measured_at TEXT NOT NULL)"
        )
        connection.execute(
            "INSERT INTO prunes (key, model_sha256, run, task, target_loss, ablation, "
            "measured_at) VALUES ('k', 'm', 'r', 't', 0.15, 'mean', 'then')"
        )
    store = PruneStore(path)
    assert store.get("k")["task"] == "t"
    store.put("k2", {"model_sha256": "m", "run": "r", "task": "u", "target_loss": 0.1,
                     "ablation": "zero", "measured_at": "now"})  # fmt: skip
    assert PruneStore(path).get("k2")["ablation"] == "zero"
