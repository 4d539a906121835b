"""The token-level alignment of a pair's prompts: hand-built pairs whose edit is known, every
built-in task under the shipped tokenizer, patching through the alignment, and `trace --json`
/ `trace --pairs`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli_runner import run_in_process as run_cli
from sparsecircuits.data import CodeTokenizer
from sparsecircuits.errors import UserError
from sparsecircuits.interp.patching import PATCH_SITES, causal_trace, patching
from sparsecircuits.model import GPT, GPTConfig
from sparsecircuits.tasks import (
    TASKS,
    TaskBatch,
    TaskPair,
    align_prompts,
    encode_pairs,
    task_pairs,
    write_pairs_jsonl,
)
from sparsecircuits.tasks.alignment import NO_COUNTERPART
from sparsecircuits.tasks.pairs import pad_batch

MODELS = Path(__file__).parent.parent / "models"
REFERENCE = MODELS / "reference-sparse"  # small enough for a trace in seconds
X = NO_COUNTERPART


@pytest.fixture(scope="module")
def tokenizer() -> CodeTokenizer:
    """The shipped reference tokenizer: a fixed file, so every pair's tokens are fixed."""
    return CodeTokenizer.from_file(MODELS / "reference-sparse-topk" / "tokenizer.json")


@pytest.fixture(scope="module")
def task_batches(tokenizer: CodeTokenizer) -> dict[str, TaskBatch]:
    return {
        name: encode_pairs(task_pairs(name, "test", 64), tokenizer, 128).batch.trimmed()
        for name in TASKS
    }


# Hand-built pairs: (clean, corrupted, noised clean positions, counterpart of each corrupted one)
KNOWN_EDITS = {
    "one token inserted": ([1, 2, 3, 4, 5, 9], [1, 2, 3, 7, 4, 5, 9], (2,), (0, 1, 2, X, 3, 4, 5)),
    "one token deleted": ([1, 2, 8, 3, 4, 9], [1, 2, 3, 4, 9], (2,), (0, 1, 3, 4, 5)),
    "one token substituted": ([1, 2, 3, 9], [1, 5, 3, 9], (1,), (0, 1, 2, 3)),
    "one token for two": ([1, 2, 3, 9], [1, 5, 6, 3, 9], (1,), (0, X, X, 2, 3)),
    "inserted at the start": ([3, 4], [7, 3, 4], (0,), (X, 0, 1)),
    # The last tokens are paired even where a diff of the whole prompts would call the
    # corrupted prompt's last token the inserted one: only what comes before is diffed.
    "inserted before an equal last": ([1, 2, 2], [1, 2, 2, 2], (1,), (0, 1, X, 2)),
    "last token substituted": ([1, 2, 3], [1, 2, 4], (2,), (0, 1, 2)),
    # `else` -> `e` `lif`: the insertion belongs to the change of the last token.
    "last token split in two": ([1, 2, 3], [1, 2, 5, 6], (2,), (0, 1, X, 2)),
    "last token deleted": ([1, 2, 3, 4], [1, 2, 3], (2, 3), (0, 1, 3)),
    "two names swapped": ([5, 1, 6, 2, 7, 2, 0], [5, 2, 6, 1, 7, 1, 0], (1, 3, 5), tuple(range(7))),
    "identical": ([1, 2, 3], [1, 2, 3], (), (0, 1, 2)),
}


@pytest.mark.parametrize("name", KNOWN_EDITS)
def test_known_edits_noise_exactly_the_changed_tokens(name: str) -> None:
    clean, corrupted, noised, counterpart = KNOWN_EDITS[name]
    alignment = align_prompts(clean, corrupted)
    assert alignment.differing == noised
    assert alignment.counterpart == counterpart
    assert alignment.counterpart[-1] == len(clean) - 1  # the answer positions, always paired


def test_an_empty_prompt_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        align_prompts([], [1])


def inserted_token_batch() -> TaskBatch:
    """One pair: the corrupted prompt has token 7 inserted after the third token."""
    return pad_batch([[1, 2, 3, 4, 5, 9], [1, 2, 3, 7, 4, 5, 9]], [10], [11], pad_id=0)


def test_patching_maps_an_insertion_pair_through_the_alignment() -> None:
    batch = inserted_token_batch()
    clean_positions = torch.arange(batch.clean.shape[1]).view(1, -1, 1).float()
    moved, valid = batch.at_corrupted_positions(clean_positions)
    # The preamble maps to itself, the inserted token to nothing, the tail one position on.
    assert valid.tolist() == [[True, True, True, False, True, True, True]]
    assert moved.squeeze(-1)[valid].tolist() == [0, 1, 2, 3, 4, 5]
    # Each column of a position scan marks the corrupted position aligned to its clean token.
    model = GPT(GPTConfig(vocab_size=16, n_layer=1, d_model=8, d_head=4, n_ctx=8))
    masks, _ = PATCH_SITES["resid"].masks(model, batch)  # [clean positions, 1, T, 1]
    marked = [row.nonzero().flatten().tolist() for row in masks[:, 0, :, 0]]
    assert marked == [[0], [1], [2], [4], [5], [6]]


def test_layer_0_patching_of_an_insertion_pair_puts_back_only_the_same_tokens() -> None:
    # The stream entering block 0 is the token embedding (no learned positions), and every
    # clean token of this pair is aligned to a copy of itself: no column restores anything
    # at layer 0. Aligned from the end, the preamble's columns put a neighbour back instead.
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, n_layer=2, d_model=16, d_head=8, n_ctx=8)).eval()
    result = patching(model, inserted_token_batch(), "resid")
    assert result.baselines.clean != result.baselines.corrupted
    layer0 = result.values[0]
    assert torch.allclose(layer0, torch.zeros_like(layer0), atol=1e-5)
    # Causal tracing noises the token before the insertion point, and marks its column.
    traced = causal_trace(model, inserted_token_batch(), "resid", samples=2)
    marked = [column.endswith("*") for column in traced.columns]
    assert marked == [False, False, True, False, False, False]


def test_tracing_refuses_a_pair_with_nothing_to_noise() -> None:
    model = GPT(GPTConfig(vocab_size=16, n_layer=1, d_model=8, d_head=4, n_ctx=8)).eval()
    same = pad_batch([[1, 2, 3], [1, 2, 4], [1, 2, 3], [1, 5, 4]], [10, 10], [11, 11], pad_id=0)
    with pytest.raises(UserError, match="1 of 2 pairs have identical"):
        causal_trace(model, same, "resid", samples=1)


def pair_tokens(batch: TaskBatch, i: int) -> tuple[list[int], list[int]]:
    n = batch.n_pairs
    clean = batch.tokens[i, : int(batch.last[i]) + 1].tolist()
    return clean, batch.tokens[n + i, : int(batch.last[n + i]) + 1].tolist()


@pytest.mark.parametrize("task", TASKS)
def test_every_task_noises_only_tokens_that_differ(
    task: str, task_batches: dict[str, TaskBatch]
) -> None:
    """Checked against the raw tokens, not against the diff: the tokens left alone are an
    in-order common subsequence of the two prompts, each noised token is replaced, deleted or
    followed by an insertion, the last tokens are paired and the last one is noised only when
    it differs; and no pair is noised more than by the old position-by-position rule."""
    batch = task_batches[task]
    assert batch.n_pairs >= 32, task
    old_rule = batch.clean != batch.corrupted
    for i, alignment in enumerate(batch.alignments):
        clean, corrupted = pair_tokens(batch, i)
        noised, counterpart = set(alignment.differing), alignment.counterpart
        clean_of = {c: j for j, c in enumerate(counterpart) if c != X}  # clean -> corrupted
        assert len(counterpart) == len(corrupted) and counterpart[-1] == len(clean) - 1
        aligned = [c for c in counterpart if c != X]
        assert aligned == sorted(set(aligned)), (task, i)  # one to one, in order
        for position in range(len(clean) - 1):
            if position not in noised:
                assert clean[position] == corrupted[clean_of[position]], (task, i, position)
                continue
            after = clean_of.get(position)
            replaced = after is None or clean[position] != corrupted[after]
            inserted_after = after is not None and after + 1 < len(corrupted) - 1
            inserted_after = inserted_after and counterpart[after + 1] == X
            inserted_before = position == 0 and counterpart[0] == X
            assert replaced or inserted_after or inserted_before, (task, i, position)
        assert (len(clean) - 1 in noised) == (clean[-1] != corrupted[-1]), (task, i)
        assert len(noised) <= int(old_rule[i, : len(clean)].sum()), (task, i)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_patches_matched_tokens_onto_their_own_copies(
    task: str, task_batches: dict[str, TaskBatch]
) -> None:
    batch = task_batches[task]
    moved, valid = batch.at_corrupted_positions(batch.clean.unsqueeze(-1))
    moved = moved.squeeze(-1)
    noised = batch.differing_positions()
    counterparts = batch.counterparts()
    for i in range(batch.n_pairs):
        for j in valid[i].nonzero().flatten().tolist():
            source = int(counterparts[i, j])
            assert int(moved[i, j]) == int(batch.clean[i, source])
            if not noised[i, source]:  # a matched token goes back onto the same token
                assert int(moved[i, j]) == int(batch.corrupted[i, j]), (task, i, j)


def trace_args(tmp_path: Path, *source: str) -> list[str]:
    out = str(tmp_path / "trace")
    return ["trace", str(REFERENCE), *source, "--kind", "resid", "--samples", "1", "--out", out]


def test_trace_json_reports_the_noised_positions_of_each_pair(tmp_path: Path) -> None:
    result = run_cli(*trace_args(tmp_path, "--task", "if_ternary", "--n", "3"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert report["task"] == "if_ternary" and report["n_pairs"] == 3
    assert [entry["name"] for entry in report["results"]] == ["if_ternary-trace-resid"]
    assert report["results"][0]["strongest"] and report["results"][0]["files"]
    tokenizer = CodeTokenizer.from_file(REFERENCE / "tokenizer.json")
    pairs = task_pairs("if_ternary", "test", 3)
    for entry in report["pairs"]:
        pair = pairs[entry["pair"]]
        clean, corrupted = tokenizer.encode(pair.prompt_a), tokenizer.encode(pair.prompt_b)
        assert entry["n_tokens"] == len(clean)
        assert entry["noised_positions"] == list(align_prompts(clean, corrupted).differing)
        assert entry["n_tokens"] - 1 not in entry["noised_positions"]  # if_ternary inserts


def test_trace_and_patch_read_a_pairs_file(tmp_path: Path) -> None:
    pairs_file = tmp_path / "mine.jsonl"
    inserted = TaskPair(
        prompt_a="    x = 1\n    if x == 2",
        prompt_b="    x = 1\n    return True if x == 2",
        answer_a=":\n",
        answer_b=" else None\n",
    )
    write_pairs_jsonl([inserted, *task_pairs("with_as", "test", 2)], pairs_file)
    result = run_cli(*trace_args(tmp_path, "--pairs", str(pairs_file)), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pairs_file"] == str(pairs_file) and report["n_pairs"] == 3
    tokenizer = CodeTokenizer.from_file(REFERENCE / "tokenizer.json")
    clean = tokenizer.encode(inserted.prompt_a)
    # "return True" goes in after the indentation: the indentation token is the one noised.
    indent = [tokenizer.id_to_token_text(token) for token in clean].index("\n   ")
    assert report["pairs"][0] == {"pair": 0, "n_tokens": len(clean), "noised_positions": [indent]}
    assert (tmp_path / "trace" / "mine-trace-resid.json").is_file()
    plain = run_cli(*trace_args(tmp_path / "again", "--pairs", str(pairs_file)))
    assert plain.returncode == 0, plain.stderr
    assert "noised 1" in plain.stdout and "last token in" in plain.stdout
    out = tmp_path / "patched"
    patched = run_cli("patch", str(REFERENCE), "--pairs", str(pairs_file), "--out", str(out))
    assert patched.returncode == 0, patched.stderr
    assert (out / "mine-resid-activation.json").is_file()


@pytest.mark.parametrize(
    ("lines", "source", "message"),
    [
        ('{"prompt_a": "x", "prompt_b": "y", "answer_a": "1"}\n', "pairs", "malformed lines 1"),
        ("{not json\n", "pairs", "malformed lines 1"),
        ("", "pairs", "no pairs"),
        (None, "pairs", "pairs file not found"),
        ('{"prompt_a": "x", "prompt_b": "y", "answer_a": "1", "answer_b": "2"}\n', "both", "one"),
        (None, "neither", "exactly one of --task"),
    ],
)
def test_trace_refuses_bad_pairs_in_one_line(
    tmp_path: Path, lines: str | None, source: str, message: str
) -> None:
    pairs_file = tmp_path / "pairs.jsonl"
    if lines is not None:
        pairs_file.write_text(lines)
    flags = {
        "pairs": ["--pairs", str(pairs_file)],
        "both": ["--pairs", str(pairs_file), "--task", "var_if"],
        "neither": [],
    }[source]
    result = run_cli(*trace_args(tmp_path, *flags), "--json")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stdout == ""
