"""Damaged files beyond config.json: one line naming the file, nothing saved lost or changed.

Each class of damage found by the bad-input audit (issue 20) is tested with the inputs the
audit listed and a few of the same class it did not: JSON nested too deeply, a damaged LATEST,
metrics.jsonl with a cut or a garbage line, unreadable weights given to `info`, `load`, `export`
and both importers, damaged explanation databases and huge query arguments, puzzles with
activations no network produces. Each refused command must leave every file as it was and no
temporary behind. Everything runs in-process on the session's tiny run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import sparsecircuits
from cli_runner import run_in_process
from sparsecircuits.errors import UserError
from sparsecircuits.explain.store import ExplanationStore
from sparsecircuits.files import TEMP_SUFFIX
from sparsecircuits.loading.checkpoint import CHECKPOINTS, LATEST
from sparsecircuits.loading.metrics_file import METRICS, read_metrics_file
from sparsecircuits.tasks import read_pairs_jsonl
from sparsecircuits.train.trainer import progress_postfix
from sparsecircuits.validation import parse_json
from test_hardening import folder_digest, one_line_error

SHIPPED_PUZZLES = Path(sparsecircuits.__file__).parent / "explain" / "puzzles.json"
DEEP = 100_000


@contextlib.contextmanager
def left_as_it_was(*folders: Path) -> Iterator[None]:
    """Every file under `folders` byte-identical after the block, and no temporary left."""
    before = [folder_digest(folder) for folder in folders]
    yield
    assert [folder_digest(folder) for folder in folders] == before
    for folder in folders:
        assert [p for p in folder.rglob("*") if p.name.endswith(TEMP_SUFFIX)] == []


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def newest_checkpoint(run: Path) -> Path:
    return sorted((run / CHECKPOINTS).glob("step-*"))[-1]


# --- 1. JSON nested too deeply: the one JSON parser says so -------------------------------

NESTINGS = {
    "lists": "[" * DEEP,
    "objects": '{"a":' * DEEP,
    "closed lists": "[" * DEEP + "]" * DEEP,  # valid JSON, only too deep
    "mixed": '[{"k":' * (DEEP // 2),
}


@pytest.mark.parametrize("text", NESTINGS.values(), ids=NESTINGS.keys())
def test_parse_json_refuses_deep_nesting_in_one_line(text):
    with pytest.raises(UserError, match="f.json: not valid JSON: nested too deeply"):
        parse_json(text, object, "f.json")


def pairs_command(tiny_run: Path, file: Path, _: Path) -> list[str]:
    return ["tasks", "eval", str(tiny_run), "--pairs", str(file)]


def puzzles_command(_: Path, file: Path, __: Path) -> list[str]:
    return ["puzzles", "run", str(file)]


def circuit_command(_: Path, file: Path, out: Path) -> list[str]:
    return ["circuit", "draw", str(file), "--out", str(out / "c.svg")]


@pytest.mark.parametrize("nesting", ["lists", "objects", "mixed"])
@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("pairs.jsonl", pairs_command),
        ("puzzles.json", puzzles_command),
        ("circuit.json", circuit_command),
    ],
)
def test_deeply_nested_user_files_are_one_line(tiny_run, tmp_path, name, command, nesting):
    file = tmp_path / "in" / name
    file.parent.mkdir()
    file.write_text(NESTINGS[nesting] + "\n")
    out = tmp_path / "out"
    with left_as_it_was(tmp_path / "in"):
        result = run_in_process(*command(tiny_run, file, out))
    one_line_error(result, str(file), "nested too deeply")
    assert not out.exists()


def test_deeply_nested_checkpoint_json_is_one_line(run_copy):
    (newest_checkpoint(run_copy) / "trainer_state.json").write_text("[" * DEEP)
    with left_as_it_was(run_copy):
        result = run_in_process("info", str(run_copy))
    one_line_error(result, "trainer_state.json", "nested too deeply")


def test_a_deep_line_among_good_pairs_names_its_line(tmp_path):
    good = {"prompt_a": "a", "prompt_b": "b", "answer_a": "x", "answer_b": "y"}
    file = tmp_path / "pairs.jsonl"
    file.write_text(json.dumps(good) + "\n" + "[" * DEEP + "\n")
    with pytest.raises(UserError, match=r"malformed lines 2 .*nested too deeply"):
        read_pairs_jsonl(file)


# --- 2a. LATEST: exactly one checkpoint name, or one line naming the file ------------------

LATEST_DAMAGE = {
    "random bytes": os.urandom(64),
    "invalid utf-8": b"step-\xff\xfe0040\n",
    "a path with a slash": b"step-0000040/../../elsewhere\n",
    "dot dot": b"..\n",
    "an absolute path": b"/tmp\n",
    "a missing checkpoint": b"step-0999999\n",
    "empty": b"",
    # same class, not in the audit
    "whitespace only": b" \n\t\n",
    "two names": b"step-0000040\nstep-0000080\n",
    "no step number": b"step-\n",
    "unicode digits": "step-٤٠\n".encode(),
    "huge": b"step-" + b"0" * 100_000,
}


def latest_commands(run: Path, out: Path) -> dict[str, list[str]]:
    return {
        "info": ["info", str(run)],
        "export": ["export", str(run), "--out", str(out)],
        "resume": ["train", "--out", str(run), "--resume", "--quiet"],
    }


@pytest.mark.parametrize("command", ["info", "export", "resume"])
@pytest.mark.parametrize("content", LATEST_DAMAGE.values(), ids=LATEST_DAMAGE.keys())
def test_damaged_latest_is_one_line_and_changes_nothing(run_copy, tmp_path, content, command):
    (run_copy / LATEST).write_bytes(content)
    out = tmp_path / "exported"
    with left_as_it_was(run_copy):
        result = run_in_process(*latest_commands(run_copy, out)[command])
    one_line_error(result, str(run_copy / LATEST))
    assert not out.exists()


@pytest.mark.parametrize("command", ["info", "export", "resume"])
@pytest.mark.parametrize("kind", ["missing", "a folder", "a dangling link"])
def test_latest_that_is_no_file_is_one_line_and_changes_nothing(run_copy, tmp_path, kind, command):
    """Without LATEST, --resume used to start again from step 0 over the saved checkpoints."""
    (run_copy / LATEST).unlink()
    if kind == "a folder":
        (run_copy / LATEST).mkdir()
    elif kind == "a dangling link":
        (run_copy / LATEST).symlink_to(run_copy / "nowhere")
    out = tmp_path / "exported"
    with left_as_it_was(run_copy):
        result = run_in_process(*latest_commands(run_copy, out)[command])
    one_line_error(result, str(run_copy / LATEST))
    assert not out.exists()


def test_a_checkpoint_folder_itself_still_loads(run_copy):
    (run_copy / LATEST).write_bytes(b"\xff")  # not read: the folder holds the weights
    assert sparsecircuits.load(newest_checkpoint(run_copy)).state["step"] == 80


# --- 2b. metrics.jsonl: a cut last line is dropped, any other bad line refused -------------


def killed_after_step_40(run: Path, tail: bytes) -> list[bytes]:
    """`run` as a kill while writing step 41's line leaves it: LATEST at step 40, metrics of
    steps 1-40 and `tail`; returns the 40 complete lines."""
    lines = (run / METRICS).read_bytes().splitlines(keepends=True)
    (run / METRICS).write_bytes(b"".join(lines[:40]) + tail)
    (run / LATEST).write_text("step-0000040\n")
    shutil.rmtree(run / CHECKPOINTS / "step-0000080")
    return lines[:40]


@pytest.mark.parametrize(
    "tail",
    [b'{"step": 41, "tokens": 20992, "lo', b'{"step": 41, "tokens": 209', b"{"],
    ids=["mid key", "mid number", "just a brace"],
)
def test_resume_drops_a_cut_last_line_and_keeps_every_complete_one(run_copy, tail):
    complete = killed_after_step_40(run_copy, tail)
    result = run_in_process("train", "--out", str(run_copy), "--resume", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "dropped its unfinished last line (line 41" in result.stderr
    text = (run_copy / METRICS).read_bytes()
    assert text.startswith(b"".join(complete)) and text.endswith(b"\n")
    assert [record["step"] for record in read_metrics_file(run_copy / METRICS).records] == list(
        range(1, 81)
    )


def test_resume_keeps_a_complete_last_line_that_lacks_its_newline(run_copy):
    lines = (run_copy / METRICS).read_bytes().splitlines(keepends=True)
    killed_after_step_40(run_copy, b"")
    (run_copy / METRICS).write_bytes(b"".join(lines[:40]).rstrip(b"\n"))
    result = run_in_process("train", "--out", str(run_copy), "--resume", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "dropped" not in result.stderr
    steps = [record["step"] for record in read_metrics_file(run_copy / METRICS).records]
    assert steps == list(range(1, 81))  # step 41's line did not join step 40's


def test_export_copies_only_the_complete_lines(run_copy, tmp_path):
    lines = (run_copy / METRICS).read_bytes().splitlines(keepends=True)
    (run_copy / METRICS).write_bytes(b"".join(lines[:-1]) + lines[-1][:25])
    with left_as_it_was(run_copy):
        result = run_in_process("export", str(run_copy), "--out", str(tmp_path / "exported"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "exported" / METRICS).read_bytes() == b"".join(lines[:-1])


METRICS_DAMAGE = {
    "not JSON": b"{oops",
    "binary": b"\x00\xff\xfe\x80",
    "an array": b"[1, 2]",
    "NaN": b"NaN",
    "a number": b"7",
    # same class, not in the audit
    "no step": b'{"tokens": 1, "loss": 1.0, "density": 1.0}',
    "a text step": b'{"step": "3", "tokens": 1, "loss": 1.0, "density": 1.0}',
    "a negative step": b'{"step": -3, "tokens": 1, "loss": 1.0, "density": 1.0}',
    "deeply nested": b"[" * DEEP,
}


@pytest.mark.parametrize("where", ["middle", "last, with its newline"])
@pytest.mark.parametrize("command", ["export", "resume"])
@pytest.mark.parametrize("junk", METRICS_DAMAGE.values(), ids=METRICS_DAMAGE.keys())
def test_garbage_metrics_lines_are_one_line_naming_file_and_line(
    run_copy, tmp_path, junk, command, where
):
    lines = (run_copy / METRICS).read_bytes().splitlines(keepends=True)
    position = 2 if where == "middle" else len(lines)
    lines.insert(position, junk + b"\n")
    (run_copy / METRICS).write_bytes(b"".join(lines))
    (run_copy / LATEST).write_text("step-0000040\n")  # so that --resume has steps to train
    out = tmp_path / "exported"
    with left_as_it_was(run_copy):
        result = run_in_process(*latest_commands(run_copy, out)[command])
    one_line_error(result, f"{run_copy / METRICS}: line {position + 1}:")
    assert not out.exists()


def test_a_binary_last_line_without_newline_is_damage_not_a_cut_line(run_copy, tmp_path):
    with (run_copy / METRICS).open("ab") as handle:
        handle.write(b"\x00\xff\xfe")
    out = tmp_path / "exported"
    with left_as_it_was(run_copy):
        result = run_in_process("export", str(run_copy), "--out", str(out))
    one_line_error(result, f"{METRICS}: line 81:")


@pytest.mark.parametrize("junk", [b"{oops\n", b"\x00\xff\n", b"[1]\n"])
def test_info_reads_no_metrics_so_damaged_ones_do_not_stop_it(run_copy, junk):
    with (run_copy / METRICS).open("ab") as handle:
        handle.write(junk)
    result = run_in_process("info", str(run_copy))
    assert result.returncode == 0 and result.stderr == "", result.stderr


# --- 2c. unreadable weights: load, info, export and both importers -------------------------


def cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


WEIGHTS_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "zero bytes": lambda _: b"",
    "garbage": lambda _: os.urandom(4096),
    "truncated": cut_in_half,
    # same class, not in the audit
    "header length only": lambda data: data[:8],
    "header cut short": lambda data: data[:40],
    "huge header length": lambda data: (2**62).to_bytes(8, "little") + data[8:],
    "header not JSON": lambda data: data[:8] + b"\xff" * (len(data) - 8),
}


@pytest.mark.parametrize("command", ["info", "export"])
@pytest.mark.parametrize("damage", WEIGHTS_DAMAGE.values(), ids=WEIGHTS_DAMAGE.keys())
def test_damaged_model_weights_are_one_line(run_copy, tmp_path, damage, command):
    weights = newest_checkpoint(run_copy) / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    out = tmp_path / "exported"
    with left_as_it_was(run_copy):
        result = run_in_process(*latest_commands(run_copy, out)[command])
        with pytest.raises(UserError, match="model.safetensors"):
            sparsecircuits.load(run_copy)
    one_line_error(result, str(weights))
    assert not out.exists()


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gpt2")
    config = transformers.GPT2Config(
        vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def import_hf_refused(source: Path, out: Path, named: str) -> None:
    with left_as_it_was(source):
        result = run_in_process("import", "hf", str(source), "--out", str(out))
    one_line_error(result, named)
    assert not out.exists()


@pytest.mark.parametrize("damage", WEIGHTS_DAMAGE.values(), ids=WEIGHTS_DAMAGE.keys())
def test_hf_import_of_damaged_weights_is_one_line(gpt2_folder, tmp_path, damage):
    source = tmp_path / "gpt2"
    shutil.copytree(gpt2_folder, source)
    weights = source / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    import_hf_refused(source, tmp_path / "run", str(weights))


def test_hf_import_of_weights_that_lack_a_tensor_is_one_line(gpt2_folder, tmp_path):
    """transformers would fill the tensor with random numbers and only warn."""
    source = tmp_path / "gpt2"
    shutil.copytree(gpt2_folder, source)
    tensors = load_file(source / "model.safetensors")
    tensors.pop("transformer.h.0.mlp.c_fc.weight")
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})
    import_hf_refused(source, tmp_path / "run", "transformer.h.0.mlp.c_fc.weight")


@pytest.mark.parametrize(
    "text", [b"", b"\x00\xff", b"[" * DEEP, b'{"model_type": "gpt2", '], ids=str
)
def test_hf_import_of_a_damaged_config_is_one_line(gpt2_folder, tmp_path, text):
    source = tmp_path / "gpt2"
    shutil.copytree(gpt2_folder, source)
    (source / "config.json").write_bytes(text)
    import_hf_refused(source, tmp_path / "run", str(source / "config.json"))


OPENAI_CONFIG = {"block_size": 16, "vocab_size": 300, "n_layer": 1, "n_head": 2, "d_model": 16}


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("final_model.pt", lambda _: b""),
        ("final_model.pt", lambda _: os.urandom(4096)),
        ("final_model.pt", cut_in_half),
        ("final_model.pt", lambda data: data[:100]),
        ("beeg_config.json", lambda _: b"[" * DEEP),
        ("beeg_config.json", lambda _: b"\xff\xfe"),
    ],
    ids=["zero bytes", "garbage", "truncated", "a zip header only", "nested", "binary config"],
)
def test_openai_import_of_damaged_files_is_one_line(tmp_path, name, damage):
    source = tmp_path / "csp"
    source.mkdir()
    (source / "beeg_config.json").write_text(json.dumps(OPENAI_CONFIG))
    torch.save({"transformer.wte.weight": torch.zeros(300, 16)}, source / "final_model.pt")
    (source / name).write_bytes(damage((source / name).read_bytes()))
    out = tmp_path / "run"
    with left_as_it_was(source):
        result = run_in_process("import", "openai-sparse", str(source), "--out", str(out))
    one_line_error(result, str(source / name))
    assert not out.exists()


# --- 3. explanation databases: wrong types, bad versions, huge arguments -------------------


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "db" / "explanations.sqlite"
    with ExplanationStore(path) as store:
        run = store.start_run("run", "sha", "offline", "offline", {})
        for index, (text, score) in enumerate([("hello world", 0.5), ("50% of _names_", 0.2)]):
            fields = {
                "model_sha256": "sha", "unit": f"0.mlp.{index}", "layer": 0, "kind": "mlp",
                "unit_index": index, "explainer": "offline", "explanation": text,
                "score_top_and_random": score,
            }  # fmt: skip
            store.add(run, fields)
    return path


def damage_database(path: Path, *statements: str) -> None:
    connection = sqlite3.connect(path)
    with connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()


QUERIES = {"top": ["top"], "search": ["search", "0.mlp.0"]}  # found by its unit


def query(database: Path, name: str, *more: str) -> list[str]:
    command, *arguments = QUERIES[name]
    return ["explanations", command, "--db", str(database), *arguments, *more]


def set_meta(value: str) -> str:
    return f"UPDATE sparsecircuits_meta SET value = {value} WHERE key = 'version'"


DATABASE_DAMAGE = {
    "version 'abc'": ([set_meta("'abc'")], "sparsecircuits_meta.version"),
    "version NULL": ([set_meta("NULL")], "sparsecircuits_meta.version"),
    "version a blob": ([set_meta("x'00ff'")], "version"),
    "version '1.5'": ([set_meta("'1.5'")], "sparsecircuits_meta.version"),
    "version '-1'": ([set_meta("'-1'")], "sparsecircuits_meta.version"),
    "version in other digits": ([set_meta("'١'")], "sparsecircuits_meta.version"),
    "kind a blob": (
        ["UPDATE sparsecircuits_meta SET value = x'00' WHERE key = 'kind'"],
        "kind",
    ),
    "kind NULL": (["UPDATE sparsecircuits_meta SET value = NULL WHERE key = 'kind'"], "kind"),
    "a score that is text": (
        ["UPDATE explanations SET score_top_and_random = 'abc'"],
        "score_top_and_random of row id",
    ),
    "a score that is a blob": (
        ["UPDATE explanations SET score_top_and_random = x'00ff'"],
        "score_top_and_random of row id",
    ),
    "an explanation that is a blob": (
        ["UPDATE explanations SET explanation = CAST('hello' AS BLOB)"],
        "explanation of row id",
    ),
    "a layer that is text": (["UPDATE explanations SET layer = 'x'"], "layer of row id"),
    "an index that is a fraction": (
        ["UPDATE explanations SET unit_index = 1.5"],
        "unit_index of row id",
    ),
    # a table made by hand without the NOT NULL constraints
    "an explanation that is NULL": (
        [
            "ALTER TABLE explanations RENAME TO original",
            "CREATE TABLE explanations AS SELECT * FROM original",
            "UPDATE explanations SET explanation = NULL, score_top_and_random = 1.0 "
            "WHERE unit = '0.mlp.0'",
        ],
        "explanation of row id",
    ),
    "a missing column": (
        ["ALTER TABLE explanations DROP COLUMN score_top_and_random"],
        "score_top_and_random",
    ),
}


@pytest.mark.parametrize("name", QUERIES)
@pytest.mark.parametrize(
    ("statements", "named"), DATABASE_DAMAGE.values(), ids=DATABASE_DAMAGE.keys()
)
def test_damaged_databases_are_one_line_and_left_alone(database, statements, named, name):
    damage_database(database, *statements)
    with left_as_it_was(database.parent):
        result = run_in_process(*query(database, name))
    one_line_error(result, str(database), named)


@pytest.mark.parametrize("name", QUERIES)
@pytest.mark.parametrize("limit", [str(10**30), str(2**63), str(2**63 - 1), "0", "-1", "1e3"])
def test_limits_out_of_range_are_one_line(database, name, limit):
    with left_as_it_was(database.parent):
        result = run_in_process(*query(database, name, "--limit", limit))
    one_line_error(result, "--limit")


def test_the_store_takes_any_limit(database):
    with ExplanationStore(database) as store:
        assert len(store.top(limit=10**30)) == len(store.search("o", limit=10**30)) == 2


@pytest.mark.parametrize("length", [50_001, 100_000, 1_000_000])
def test_a_very_long_search_text_finds_nothing_in_one_go(database, length):
    with left_as_it_was(database.parent):
        result = run_in_process("explanations", "search", "--db", str(database), "a" * length)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no explanation matches"


@pytest.mark.parametrize(
    ("text", "units"),
    [("HELLO", ["0.mlp.0"]), ("50%", ["0.mlp.1"]), ("_names_", ["0.mlp.1"]), ("h%o", [])],
)
def test_search_matches_text_literally_ignoring_case(database, text, units):
    with ExplanationStore(database) as store:
        assert [row["unit"] for row in store.search(text)] == units


# --- 4. puzzles: activations are finite and within a sane bound ---------------------------


def puzzles_with(tmp_path: Path, value: str) -> Path:
    """The first two shipped puzzles, one activation replaced by `value` (JSON text)."""
    puzzles = json.loads(SHIPPED_PUZZLES.read_text())[:2]
    puzzles[1]["excerpts"][0]["activations"][0] = "@value@"
    file = tmp_path / "in" / "puzzles.json"
    file.parent.mkdir(exist_ok=True)
    file.write_text(json.dumps(puzzles).replace('"@value@"', value))
    return file


@pytest.mark.parametrize(
    "value",
    ["1e308", "1e309", "NaN", "-1e308", "Infinity", "-Infinity", "1e10", "-1e200", "1" + "0" * 400],
)
def test_puzzle_activations_out_of_bounds_are_one_line(tmp_path, value):
    file = puzzles_with(tmp_path, value)
    with left_as_it_was(file.parent):
        result = run_in_process("puzzles", "run", str(file))
    one_line_error(result, str(file), "[1].excerpts[0].activations[0]")


@pytest.mark.parametrize("value", ["1e9", "-1e9", "0"])
def test_puzzle_activations_within_bounds_are_scored(tmp_path, value):
    result = run_in_process("puzzles", "run", str(puzzles_with(tmp_path, value)), "--json")
    assert result.returncode == 0, result.stderr
    scores = [s for p in json.loads(result.stdout)["per_puzzle"] for s in p["scores"].values()]
    assert all(math.isfinite(score) for score in scores)


# --- 5. the progress bar shows a validation loss only once there is one -------------------


def test_progress_shows_no_validation_loss_before_the_first_evaluation():
    assert progress_postfix(6.1234, math.nan, 1234.5, 0.0625) == {
        "loss": "6.123",
        "tok_s": "1,234",
        "density": "0.0625",
    }


def test_progress_shows_the_last_validation_loss_once_there_is_one():
    shown = progress_postfix(6.1234, 5.4321, 1234.5, 0.0625)
    assert shown["val"] == "5.432" and list(shown) == ["loss", "val", "tok_s", "density"]
