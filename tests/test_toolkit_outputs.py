"""The toolkit's --out folders: a file there, a parent that is a file, an empty path or a place
that cannot be written is one line and exit 2 before any work; a write that fails replaces
nothing, leaves no temporary and removes the folders it made.

The tests run as root, for whom permission bits stop nothing: a read-only place is a path
under /proc/sys (a read-only mount, which `os.access` and every write refuse even for root),
and a place that passes `os.access` but refuses every write is /sys (sysfs: mkdir fails with
EPERM), which the up-front trial file catches.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli_runner import run_in_process
from sparsecircuits.errors import UserError
from sparsecircuits.files import TEMP_SUFFIX
from sparsecircuits.interp.outputs import write_outputs
from test_hardening import folder_digest, one_line_error

REFERENCE = Path(__file__).parent.parent / "models" / "reference-sparse"
READ_ONLY = Path("/proc/sys")  # read-only even for root
REFUSES_WRITES = Path("/sys")  # looks writable to os.access as root; new files fail

# Every toolkit command that writes into an --out folder, with small sizes.
COMMANDS = {
    "patch": ["patch", str(REFERENCE), "--task", "single_double_quote", "--n", "4"],
    "trace": ["trace", str(REFERENCE), "--task", "single_double_quote", "--n", "4"],
    "probe": ["probe", str(REFERENCE), "--task", "single_double_quote", "--n", "8"],
    "heads": ["heads", str(REFERENCE), "--sequences", "2"],
    "attention": ["attention", str(REFERENCE), "--prompt", "x = 1"],
    "lens": ["lens", str(REFERENCE), "--prompt", "x = 1"],
}


def bad_outs(tmp: Path) -> dict[str, tuple[str, str]]:
    """name -> (--out value, what the one line must say)."""
    (tmp / "results").write_text("saved earlier\n")
    (tmp / "link").symlink_to(tmp / "results")
    (tmp / "dangling").symlink_to(tmp / "nowhere")
    return {
        "existing file": (str(tmp / "results"), "is a file"),
        "link to a file": (str(tmp / "link"), "is a file"),
        "dangling link": (str(tmp / "dangling"), "is a link to nothing"),
        "parent is a file": (str(tmp / "results" / "figures"), "is not a folder"),
        "grandparent is a file": (str(tmp / "results" / "a" / "b"), "is not a folder"),
        "empty": ("", "empty"),
        "blank": ("   ", "empty"),
        "read-only folder": (str(READ_ONLY / "sc-out"), "permission denied"),
        "under read-only folder": (str(READ_ONLY / "sc" / "deeper"), "permission denied"),
    }


BAD_OUT_NAMES = [
    "existing file",
    "link to a file",
    "dangling link",
    "parent is a file",
    "grandparent is a file",
    "empty",
    "blank",
    "read-only folder",
    "under read-only folder",
]


def test_the_read_only_places_really_are_read_only():
    # What the tests below rely on, checked rather than assumed (root included).
    assert not os.access(READ_ONLY, os.W_OK)
    with pytest.raises(OSError):
        (READ_ONLY / "sc-probe").mkdir()
    with pytest.raises(OSError):
        (REFUSES_WRITES / "sc-probe").mkdir()


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", BAD_OUT_NAMES)
def test_an_unusable_out_is_one_line_before_any_work(tmp_path, command, case):
    out, message = bad_outs(tmp_path)[case]
    before = folder_digest(tmp_path)
    result = run_in_process(*COMMANDS[command], "--out", out)
    one_line_error(result, "--out", message)
    assert folder_digest(tmp_path) == before  # the saved file is byte-identical
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "link", "results"]
    assert not (READ_ONLY / "sc-out").exists()


def test_an_out_no_write_can_reach_is_one_line_and_leaves_nothing():
    out = REFUSES_WRITES / "sc-out"
    for command in ("attention", "heads"):
        result = run_in_process(*COMMANDS[command], "--out", str(out))
        one_line_error(result, "refuses new files", str(out))
        assert not out.exists()


def test_a_command_that_fails_after_the_check_leaves_no_folder(tmp_path):
    out = tmp_path / "new" / "figures"
    result = run_in_process("patch", str(REFERENCE), "--task", "no_such_task", "--out", str(out))
    one_line_error(result, "unknown task")
    assert list(tmp_path.iterdir()) == []


def test_results_go_into_a_new_nested_folder_or_beside_earlier_ones(tmp_path):
    out = tmp_path / "a" / "b"
    first = run_in_process(*COMMANDS["heads"], "--out", str(out))
    assert first.returncode == 0, first.stderr
    (out / "notes.txt").write_text("mine")
    second = run_in_process(*COMMANDS["attention"], "--out", str(out))
    assert second.returncode == 0, second.stderr
    names = sorted(p.name for p in out.iterdir())
    assert "induction.png" in names and "attention.html" in names
    assert (out / "notes.txt").read_text() == "mine"
    assert not [name for name in names if name.endswith(TEMP_SUFFIX)]


def test_write_outputs_is_all_or_nothing(tmp_path):
    out = tmp_path / "made" / "here"
    too_long = "x" * 300 + ".html"  # the file system refuses the name itself
    with pytest.raises(UserError, match="cannot write"):
        write_outputs(out, {"a.png": b"new", "b.json": b"{}", too_long: b"x"})
    assert not (tmp_path / "made").exists()  # the folders this write made are gone again

    out = tmp_path / "existing"
    out.mkdir()
    (out / "a.png").write_bytes(b"old")
    (out / "c.html").mkdir()  # a folder where a file of the result belongs
    before = folder_digest(out)
    with pytest.raises(UserError, match="is a folder"):
        write_outputs(out, {"a.png": b"new", "b.json": b"{}", "c.html": b"x"})
    assert folder_digest(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.html"]  # no temporaries

    paths = write_outputs(out, {"a.png": b"new", "d.json": b"{}"})
    assert paths == [out / "a.png", out / "d.json"] and (out / "a.png").read_bytes() == b"new"


def test_write_outputs_rechecks_the_folder_at_write_time(tmp_path):
    out = tmp_path / "out"
    out.write_text("appeared meanwhile")
    with pytest.raises(UserError, match="is a file"):
        write_outputs(out, {"a.json": b"{}"})
    assert out.read_text() == "appeared meanwhile"
