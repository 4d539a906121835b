"""Bad input, unusable paths, two writers and killed writers: one clear line, nothing lost.

In-process through the CLI's own `main` wherever the process boundary is not what is tested.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import run_in_process
from sparsecircuits.errors import UserError
from sparsecircuits.files import (
    TEMP_SUFFIX,
    atomic_folder,
    atomic_path,
    claim_run_folder,
    json_text,
    remove_stale_temporaries,
    write_text_atomic,
)
from sparsecircuits.loading.checkpoint import CHECKPOINTS, LATEST, latest_name

REFERENCE = Path(__file__).parent.parent / "models" / "reference-sparse"


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def dead_pid() -> int:
    """The pid of a process that has surely exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- numeric flags have ranges -------------------------------------------------------------

TRAIN_BAD_FLAGS = [
    (["--eval-every", "0"], "--eval-every"),
    (["--checkpoint-every", "-1"], "--checkpoint-every"),
    (["--steps", "0"], "--steps"),
    (["--tokens", "-5"], "--tokens"),
    (["--batch-size", "0"], "--batch-size"),
    (["--d-model", "0"], "--d-model"),
    (["--n-layer", "-1"], "--n-layer"),
    (["--n-ctx", "1"], "--n-ctx"),
    (["--d-head", "0"], "--d-head"),
    (["--vocab-size", "10"], "--vocab-size"),
    (["--lr", "-0.1"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--density", "0"], "--density"),
    (["--density", "1.5"], "--density"),
    (["--density", "nan"], "--density"),
    (["--embedding-density", "-1"], "--embedding-density"),
    (["--afrac", "2"], "--afrac"),
    (["--anneal-end", "1.5"], "--anneal-end"),
    (["--anneal-end", "-0.1"], "--anneal-end"),
    (["--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize(("flags", "named"), TRAIN_BAD_FLAGS)
def test_out_of_range_training_flags_are_one_line(tmp_path, flags, named):
    out = tmp_path / "run"
    one_line_error(run_in_process("train", "--preset", "tiny", *flags, "--out", str(out)), named)
    assert not out.exists()


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_is_refused(out):
    one_line_error(run_in_process("train", "--preset", "tiny", "--out", out), "--out", "empty")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--target-loss", "0.693"], "--target-loss"),  # chance: any circuit meets it
        (["--target-loss", "0.9"], "--target-loss"),
        (["--target-loss", "-0.1"], "--target-loss"),
        (["--target-loss", "0"], "--target-loss"),
        (["--target-loss", "nan"], "--target-loss"),
        (["--steps", "0"], "--steps"),
        (["--sweep", "-1"], "--sweep"),
        (["--k-coef", "-1"], "--k-coef"),
        (["--seed", "-3"], "--seed"),
    ],
)
def test_prune_refuses_nonsense_before_any_work(flags, named):
    result = run_in_process("prune", str(REFERENCE), "--task", "single_double_quote", *flags)
    one_line_error(result, named)


def test_frontier_with_no_task_names_is_refused(tmp_path):
    result = run_in_process(
        "frontier", str(REFERENCE), "--tasks", ",", "--out", str(tmp_path / "f.png")
    )
    one_line_error(result, "names no task")
    assert not (tmp_path / "f.png").exists()


def test_bare_command_prints_help_and_succeeds():
    result = run_in_process()
    assert result.returncode == 0 and result.stderr == ""
    assert "Usage: sparsecircuits" in result.stdout and "train" in result.stdout


# --- one way to write -----------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_and_no_temporary_when_writing_fails(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_folder_where_a_file_belongs_is_one_line(tmp_path):
    (tmp_path / "out.html").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        write_text_atomic(tmp_path / "out.html", "x")


def test_a_parent_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        write_text_atomic(tmp_path / "file" / "out.html", "x")
    assert (tmp_path / "file").read_text() == "x"


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead, live = dead_pid(), os.getppid()
    stale_file = tmp_path / f".a.json.{dead}-00ff{TEMP_SUFFIX}"
    stale_folder = tmp_path / f".step-0000004.{dead}-0a0b{TEMP_SUFFIX}"
    live_file = tmp_path / f".a.json.{live}-beef{TEMP_SUFFIX}"
    stale_file.write_text("x")
    stale_folder.mkdir()
    (stale_folder / "model.safetensors").write_text("x")
    live_file.write_text("x")
    (tmp_path / "keep.json.tmp").write_text("not ours")
    assert remove_stale_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live_file.name, "keep.json.tmp"])


def test_atomic_folder_refuses_a_folder_that_is_not_empty_and_leaves_it_alone(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights").write_text("someone's")
    with pytest.raises(UserError, match="not empty"), atomic_folder(out):
        pass
    assert (out / "weights").read_text() == "someone's"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_folder_has_one_writer_at_a_time(tmp_path):
    with (
        claim_run_folder(tmp_path / "run", "train", {"a": 1}),
        pytest.raises(UserError, match="being written by pid"),
        claim_run_folder(tmp_path / "run", "train", {"a": 1}),
    ):
        pass
    with claim_run_folder(tmp_path / "run", "train", {"a": 1}):  # free again afterwards
        pass
    with (
        pytest.raises(UserError, match="another train run"),
        claim_run_folder(tmp_path / "run", "train", {"a": 2}),
    ):
        pass


def test_json_output_never_holds_nan():
    text = json_text({"val_loss": float("nan"), "x": [float("inf"), 1.5]})
    assert json.loads(text) == {"val_loss": None, "x": [None, 1.5]}


# --- training never overwrites what it does not own -------------------------------------------


def test_training_into_a_copy_of_a_shipped_model_is_refused_and_changes_nothing(tmp_path):
    copy = tmp_path / "my-model"
    shutil.copytree(REFERENCE, copy)
    before = folder_digest(copy)
    one_line_error(run_in_process("train", "--preset", "tiny", "--out", str(copy)), "not empty")
    one_line_error(run_in_process("train", "--out", str(copy), "--resume"), str(copy))
    assert folder_digest(copy) == before


def test_a_run_whose_latest_pointer_is_gone_is_not_overwritten(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    (copy / LATEST).unlink()
    before = folder_digest(copy)
    result = run_in_process("train", "--preset", "tiny", "--out", str(copy))
    one_line_error(result, "no LATEST")
    assert folder_digest(copy) == before


def test_a_second_training_into_the_same_folder_gets_one_line(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    marker = json.loads((copy / ".sparsecircuits-run.json").read_text())
    before = folder_digest(copy)
    with claim_run_folder(copy, "train", marker["identity"]):  # a training in progress
        result = run_in_process("train", "--out", str(copy), "--resume", "--quiet")
    one_line_error(result, "being written by")
    assert folder_digest(copy) == before


def test_resume_removes_a_killed_writers_half_checkpoint(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    half = copy / CHECKPOINTS / f".step-0000081.{dead_pid()}-1234{TEMP_SUFFIX}"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"half a file")
    result = run_in_process("train", "--out", str(copy), "--resume", "--quiet")
    assert result.returncode == 0, result.stderr
    assert not half.exists()
    assert latest_name(copy) == latest_name(tiny_run)
    leftovers = [p for p in copy.rglob("*") if p.name.endswith(TEMP_SUFFIX)]
    assert leftovers == []


def test_export_into_a_file_or_a_full_folder_is_one_line(tiny_run, tmp_path):
    (tmp_path / "afile").write_text("x")
    one_line_error(run_in_process("export", str(tiny_run), "--out", str(tmp_path / "afile")))
    assert (tmp_path / "afile").read_text() == "x"


def test_resuming_on_a_changed_corpus_says_so(capsys):
    from types import SimpleNamespace

    from sparsecircuits.train.trainer import warn_if_corpus_changed

    corpus = SimpleNamespace(cache_dir=Path("tokens/abc-123"), train=[0] * 10)
    warn_if_corpus_changed({"fingerprint": "abc-123"}, corpus)
    warn_if_corpus_changed({"train_tokens": 10}, corpus)  # a run saved before fingerprints
    assert capsys.readouterr().err == ""
    warn_if_corpus_changed({"fingerprint": "abc-999"}, corpus)
    warn_if_corpus_changed({"train_tokens": 11}, corpus)
    assert capsys.readouterr().err.count("warning: the corpus") == 2


def test_training_into_a_file_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_in_process("train", "--preset", "tiny", "--out", str(tmp_path / "notes.txt"))
    one_line_error(result, "is a file")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_info_json_is_strict_json_even_without_a_validation_loss(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    state_file = copy / CHECKPOINTS / latest_name(copy) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "val_loss": float("nan")}))  # Python writes NaN
    result = run_in_process("info", str(copy), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout, parse_constant=lambda name: pytest.fail(name))
