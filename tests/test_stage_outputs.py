"""Where the pipeline's later stages write (view --export, prune/frontier/circuit draw --out)
and what counts they take: a path that cannot be written or a count out of range is one usage
line before any model loads, nothing is created, and an earlier export survives a failed one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli_runner import run_in_process
from sparsecircuits.errors import UserError
from sparsecircuits.files import TEMP_SUFFIX
from sparsecircuits.viewer import export
from sparsecircuits.viewer.export_folder import MARKER

REFERENCE = Path(__file__).resolve().parents[1] / "models" / "reference-sparse"


def one_usage_line(result, fragment: str) -> None:  # noqa: ANN001
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def bad_places(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "a-file").write_text("kept\n")
    places = {
        "a file": (tmp_path / "a-file", "a file"),
        "under a file": (tmp_path / "a-file" / "sub", "not a folder"),
    }
    if Path("/proc/sys").is_dir():  # a folder no one may create files in, even as root
        places["/proc/sys"] = (Path("/proc/sys/sparsecircuits-test"), "cannot write")
    return places


def assert_untouched(tmp_path: Path) -> None:
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"]
    assert (tmp_path / "a-file").read_text() == "kept\n"


@pytest.mark.parametrize("case", ["a file", "under a file", "/proc/sys"])
def test_view_export_refuses_a_place_it_cannot_write_in_one_line(tmp_path, case):
    places = bad_places(tmp_path)
    if case not in places:
        pytest.skip("no /proc/sys on this system")
    out, fragment = places[case]
    one_usage_line(run_in_process("view", str(REFERENCE), "--export", str(out)), fragment)
    assert_untouched(tmp_path)


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        (["prune", str(REFERENCE), "--task", "bracket_closing", "--out"], "is a file, not a"),
        (["frontier", str(REFERENCE), "--tasks", "bracket_closing", "--out"], "is a file, not a"),
        (["circuit", "draw", "missing.json", "--out"], "is a file, not a folder"),
    ],
)
def test_output_files_under_a_file_are_refused_before_any_work(tmp_path, command, fragment):
    bad_places(tmp_path)
    out = tmp_path / "a-file" / "result.svg"
    one_usage_line(run_in_process(*command, str(out)), fragment)
    assert_untouched(tmp_path)


def test_output_file_that_is_a_folder_or_a_dangling_link_is_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    os.symlink(tmp_path / "nowhere", tmp_path / "link.json")
    for out, fragment in [("folder", "is a folder"), ("link.json", "a link to nothing")]:
        result = run_in_process(
            "prune", str(REFERENCE), "--task", "bracket_closing", "--out", str(tmp_path / out)
        )
        one_usage_line(result, fragment)
    assert not (tmp_path / "nowhere").exists() and list((tmp_path / "folder").iterdir()) == []


def test_frontier_refuses_a_plot_format_before_pruning(tmp_path):
    result = run_in_process(
        "frontier", str(REFERENCE), "--tasks", "bracket_closing", "--out", str(tmp_path / "f.xyz")
    )
    assert result.returncode != 0 and result.stderr.count("\n") == 1
    assert "cannot write .xyz" in result.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["tasks", "show", "bracket_closing", "--n", "1000001"], "--n"),
        (["tasks", "show", "bracket_closing", "--seed", str(2**32)], "--seed"),
        (["tasks", "show", "bracket_closing", "--seed", "-1"], "--seed"),
        (["tasks", "eval", str(REFERENCE), "--task", "bracket_closing", "--n", "0"], "--n"),
        (["tasks", "eval", str(REFERENCE), "--batch-size", "0"], "--batch-size"),
        (["tasks", "eval", str(REFERENCE), "--seed", "9" * 30], "--seed"),
    ],
)
def test_task_counts_and_seeds_out_of_range_are_one_line(arguments, fragment):
    one_usage_line(run_in_process(*arguments), fragment)


def earlier_export(folder: Path) -> None:
    folder.mkdir()
    (folder / MARKER).write_text("pages written by sparsecircuits view --export\n")
    (folder / "index.html").write_text("earlier")


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def test_a_new_export_replaces_an_earlier_one_whole(tmp_path, monkeypatch):
    out = tmp_path / "site"
    earlier_export(out)
    (out / "gone.html").write_text("a page the new export does not have")

    def pages(site, folder: Path, n_tokens: int) -> dict[str, float]:  # noqa: ANN001
        (folder / MARKER).write_text("new\n")
        (folder / "index.html").write_text("new")
        return {"index": 0.0}

    monkeypatch.setattr(export, "write_pages", pages)
    assert export.export_site(None, out) == {"index": 0.0}
    assert sorted(path.name for path in out.iterdir()) == [MARKER, "index.html"]
    assert (out / "index.html").read_text() == "new"
    assert leftovers(tmp_path) == []


def test_a_failed_export_leaves_the_earlier_one_and_no_temporaries(tmp_path, monkeypatch):
    out = tmp_path / "site"
    earlier_export(out)

    def failing(site, folder: Path, n_tokens: int) -> dict[str, float]:  # noqa: ANN001
        (folder / "index.html").write_text("half")
        raise UserError("the corpus went away")

    monkeypatch.setattr(export, "write_pages", failing)
    with pytest.raises(UserError, match="corpus went away"):
        export.export_site(None, out)
    assert (out / "index.html").read_text() == "earlier"
    assert leftovers(tmp_path) == []
    fresh = tmp_path / "new" / "deeper" / "site"
    with pytest.raises(UserError):
        export.export_site(None, fresh)
    assert not (tmp_path / "new").exists()  # nor the parents made for it


def test_an_export_refuses_a_folder_that_changed_to_hold_other_files(tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds other files"):
        export.export_site(None, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_a_killed_exports_staging_is_cleaned_up(tmp_path, monkeypatch):
    out = tmp_path / "site"
    earlier_export(out)
    dead = 2**22 + 12345  # above Linux's default pid_max: no live process has it
    staged = f".site.{dead}-0a1b2c3d{TEMP_SUFFIX}"  # a swap's new pages, and their staging
    for name in (staged, f".{staged}.{dead}-11223344{TEMP_SUFFIX}"):
        (tmp_path / name).mkdir()

    def pages(site, folder: Path, n_tokens: int) -> dict[str, float]:  # noqa: ANN001
        (folder / MARKER).write_text("new\n")
        return {}

    monkeypatch.setattr(export, "write_pages", pages)
    export.export_site(None, out)
    assert leftovers(tmp_path) == []
