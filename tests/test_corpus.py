"""Package corpora (installed and pinned by a manifest) and `corpus build|stats`.

The wheels are made here and served to the real pip from a local folder (PIP_NO_INDEX,
PIP_FIND_LINKS), so `corpus build` runs its real download step without a network."""

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

import sparsecircuits
from cli_runner import run_cli, run_in_process
from sparsecircuits.data import default_cache_root, open_corpus, prepare_data
from sparsecircuits.data.manifest import build_corpus, corpus_folder, read_manifest
from sparsecircuits.data.packages import installed_corpus, python_requirement
from sparsecircuits.data.stats import bracket_counts, pattern_counts
from sparsecircuits.errors import UserError

SHARED = "def shared():\n    return [[1, 2], [3]]\n"  # in both wheels: one document


def make_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    info = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    contents = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    records = [f"{member},,\n" for member in contents] + [f"{info}/RECORD,,\n"]
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in contents.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{info}/RECORD", "".join(records))
    return path


@pytest.fixture
def wheel_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local package index of two wheels that pip (in a subprocess) downloads from."""
    index = tmp_path / "index"
    index.mkdir()
    body = "\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(200))
    make_wheel(
        index,
        "alpha",
        "1.0",
        {
            "alpha/__init__.py": b"VALUE = 'alpha'\n",
            "alpha/shared.py": SHARED.encode(),
            "alpha/body.py": body.encode(),
            "alpha/latin1.py": "x = 'caf\xe9'\n".encode("latin-1"),  # not UTF-8: skipped
            "alpha/data.txt": b"not python\n",
        },
    )
    make_wheel(index, "beta_pkg", "2.0", {"beta_pkg/copy.py": SHARED.encode()})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index


def write_manifest(folder: Path, text: str, name: str = "corpus.manifest") -> Path:
    path = folder / name
    path.write_text(text)
    return path


# --- the manifest ---------------------------------------------------------------------------


def test_a_manifest_pins_packages_and_may_name_the_stdlib(tmp_path):
    path = write_manifest(tmp_path, "# comment\nstdlib\nalpha==1.0  # trailing\n\nBeta_Pkg==2.0\n")
    manifest = read_manifest(path)
    assert manifest.requirements == ("alpha==1.0", "Beta_Pkg==2.0") and manifest.stdlib
    # The stdlib always comes first; the packages' order is the corpus's order.
    same = write_manifest(tmp_path, "alpha==1.0\nBeta_Pkg==2.0\nstdlib\n", "b.manifest")
    assert read_manifest(same).digest == manifest.digest
    reordered = write_manifest(tmp_path, "Beta_Pkg==2.0\nalpha==1.0\nstdlib\n", "c.manifest")
    assert read_manifest(reordered).digest != manifest.digest


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("alpha>=1.0\n", "expected NAME==VERSION"),
        ("alpha\n", "expected NAME==VERSION"),
        ("alpha==1.0; os_name=='nt'\n", "expected NAME==VERSION"),
        ("--index-url http://example.invalid\n", "expected NAME==VERSION"),
        ("alpha==1.0\nALPHA==2.0\n", "pinned on line 1 too"),
        ("# nothing\n\n", "names no package"),
    ],
)
def test_a_bad_manifest_is_one_line_naming_the_line(tmp_path, text, fragment):
    with pytest.raises(UserError, match=fragment):
        read_manifest(write_manifest(tmp_path, text))


def test_a_manifest_that_is_not_text_is_one_line(tmp_path):
    path = tmp_path / "bad.manifest"
    path.write_bytes(b"\xff\xfe\x00alpha")
    with pytest.raises(UserError, match="not UTF-8"):
        read_manifest(path)


# --- building and reading a pinned corpus ---------------------------------------------------


def test_an_unbuilt_manifest_says_which_command_builds_it(tmp_path):
    path = write_manifest(tmp_path, "alpha==1.0\n")
    result = run_in_process(
        "train", "--preset", "tiny", "--data", str(path), "--out", str(tmp_path / "r")
    )
    assert result.returncode == 2
    assert f"run `sparsecircuits corpus build {path}` first" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()


def test_build_downloads_with_pip_records_hashes_and_reads_only_python(tmp_path, wheel_index):
    path = write_manifest(tmp_path, "alpha==1.0\nbeta_pkg==2.0\n")
    result = run_cli("corpus", "build", str(path))
    assert result.returncode == 0, result.stderr
    assert "2 wheels" in result.stdout
    folder = corpus_folder(read_manifest(path), default_cache_root())
    lock = json.loads((folder / "lock.json").read_text())
    for archive in lock["archives"]:
        data = (folder / "archives" / archive["file"]).read_bytes()
        assert archive["sha256"] == hashlib.sha256(data).hexdigest()
    assert [a["requirement"] for a in lock["archives"]] == ["alpha==1.0", "beta_pkg==2.0"]

    corpus = open_corpus(str(path))
    documents = list(corpus.documents())
    texts = sorted(document.text for document in documents)
    assert len(texts) == 3 and SHARED in texts  # the shared file once, no .txt, no latin-1
    assert corpus.duplicates == 1 and corpus.skipped == 1
    assert corpus.packages == ["alpha==1.0", "beta_pkg==2.0"]
    # Document ids are content hashes: the split does not depend on where a file lives.
    shared = next(d for d in documents if d.text == SHARED)
    assert shared.doc_id == hashlib.sha256(SHARED.encode()).hexdigest()[:32]

    again = run_cli("corpus", "build", str(path))
    assert again.returncode == 0 and "already built" in again.stdout


def test_a_changed_archive_is_noticed_and_built_again(tmp_path, wheel_index):
    path = write_manifest(tmp_path, "beta_pkg==2.0\n")
    manifest = read_manifest(path)
    folder, lock = build_corpus(manifest, default_cache_root(), log=lambda line: None)
    archive = folder / "archives" / lock.archives[0].file
    archive.write_bytes(archive.read_bytes()[:-1] + b"!")  # same size, other bytes
    lines = []
    build_corpus(manifest, default_cache_root(), log=lines.append)
    assert any("building it again" in line for line in lines)
    assert archive.read_bytes() == (wheel_index / archive.name).read_bytes()
    archive.unlink()
    with pytest.raises(UserError, match="not built on this machine"):
        open_corpus(str(path))


def test_a_package_pip_cannot_find_is_one_line_and_leaves_no_folder(tmp_path, wheel_index):
    path = write_manifest(tmp_path, "alpha==1.0\nnowhere-pkg==9.9\n")
    result = run_cli("corpus", "build", str(path))
    assert result.returncode == 2
    assert "pip could not download a wheel" in result.stderr and "nowhere-pkg" in result.stderr
    assert result.stderr.count("\nerror:") + result.stderr.startswith("error:") == 1
    assert not corpus_folder(read_manifest(path), default_cache_root()).exists()


def test_training_on_a_manifest_records_its_packages(tmp_path, wheel_index):
    path = write_manifest(tmp_path, "alpha==1.0\nbeta_pkg==2.0\n")
    assert run_cli("corpus", "build", str(path)).returncode == 0
    out = tmp_path / "run"
    flags = ["--preset", "tiny", "--steps", "2", "--n-ctx", "16", "--vocab-size", "300"]
    result = run_in_process("train", *flags, "--data", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = sparsecircuits.load(out).config["data"]
    assert data["packages"] == ["alpha==1.0", "beta_pkg==2.0"]


# --- the installed corpus -------------------------------------------------------------------


def install_fake(site: Path, name: str, version: str, files: dict[str, str]) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for relative, text in files.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_text(text)
    (info / "RECORD").write_text("".join(f"{relative},,\n" for relative in files))


def test_installed_is_the_stdlib_and_every_distribution_once(tmp_path):
    site = tmp_path / "site"
    install_fake(
        site, "zeta", "0.1", {"zeta/a.py": SHARED, "zeta/b.py": "B = 2\n", "zeta/c.txt": "x"}
    )
    install_fake(site, "Eta_Pkg", "3.0", {"eta/copy.py": SHARED})
    corpus = installed_corpus([str(site)])
    assert corpus.packages == [python_requirement(), "Eta_Pkg==3.0", "zeta==0.1"]
    documents = list(corpus.documents())
    (tmp_path / "empty").mkdir()
    stdlib_only = installed_corpus([str(tmp_path / "empty")])
    assert stdlib_only.packages == [python_requirement()]
    stdlib_documents = len(list(stdlib_only.documents()))
    assert stdlib_documents > 500
    # The stdlib's distinct files, eta's copy of SHARED and zeta's b.py; zeta's copy of
    # SHARED is a duplicate, c.txt is no Python.
    assert len(documents) == stdlib_documents + 2
    assert corpus.duplicates == stdlib_only.duplicates + 1
    assert sum(document.text == SHARED for document in documents) == 1
    first = corpus.fingerprint()
    (site / "zeta/b.py").write_text("B = 22\n")
    assert installed_corpus([str(site)]).fingerprint() != first


# --- what a corpus holds --------------------------------------------------------------------


def test_brackets_are_told_apart_by_what_the_bracket_follows():
    text = (
        "x = [[1, 2], [3]]\n"  # a one-line nested literal closing ]]: 1 nested, 2 flat
        "y = a[b[i]]\n"  # a subscript in a subscript
        "z = f([1])\n"  # a flat literal as an argument
        "w = [\n    [1],\n]\n"  # nested over lines: not closed with ]]
        "v = d[[0]]\n"  # a literal inside a subscript: neither
        "s = ']]'  # ]] in a string or a comment counts nothing\n"
        "r = [[0]] + xs\n"
    )
    counts = bracket_counts(text)
    assert counts["nested_list_closings"] == 2
    assert counts["subscript_double_closings"] == 1
    assert counts["flat_list_closings"] == 2 + 1 + 1 + 1 + 1


def test_a_file_that_python_cannot_tokenize_counts_nothing():
    assert bracket_counts("x = [[1, 2]]\n")["nested_list_closings"] == 1
    assert bracket_counts("x = [[1, 2]]\ny = [[3]\n") == {}  # a bracket never closed


def test_line_patterns_count_each_tasks_construction():
    text = (
        "seen = set()\nname = ''\nf'{x}'\n'{}'.format(x)\nwith open('a.txt', 'w') as f:\n"
        "    pass\nwhile True:\n    return True\nif done == True:\n    a, b = b, a\n"
        "self.size = size\nsquare = lambda v: v * v\nfor i, item in enumerate(xs):\n"
        "    pass\nfor i in range(3):\n    y = 1 if i else 2\nelif z:\n"
    )
    counts = pattern_counts(text)
    expected_ones = [
        "set_initialisations",
        "string_initialisations",
        "fstrings",
        "format_calls",
        "with_as",
        "open_modes",
        "while_true",
        "return_true",
        "if_equals_true",
        "swaps",
        "self_assignments",
        "lambdas",
        "enumerate_loops",
        "range_loops",
        "elif",
        "ternaries",
    ]
    assert {name: counts[name] for name in expected_ones} == dict.fromkeys(expected_ones, 1)


def test_corpus_stats_reports_files_tokens_and_counts(tmp_path):
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "a.py").write_text("x = [[1, 2]]\n" * 50)
    (folder / "b.py").write_text("seen = set()\n" * 50)
    result = run_in_process("corpus", "stats", str(folder), "--vocab-size", "300", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["files"] == 2 and stats["bytes"] == 13 * 50 * 2
    data = prepare_data(str(folder), vocab_size=300, progress=False)
    assert stats["tokens"] == len(data.train) + len(data.val)
    nested = stats["constructions"]["nested_list_closings"]
    assert nested["count"] == 50 and nested["task"] == "bracket_counting"
    assert nested["per_million_tokens"] == pytest.approx(50 * 1e6 / stats["tokens"])
    text = run_in_process("corpus", "stats", str(folder), "--no-tokens")
    assert text.returncode == 0 and "]] closing a one-line nested list literal" in text.stdout


def test_corpus_stats_of_a_missing_corpus_is_one_line(tmp_path):
    result = run_in_process("corpus", "stats", str(tmp_path / "nowhere"), "--no-tokens")
    assert result.returncode == 2 and result.stderr.startswith("error: corpus not found")


def test_installed_is_accepted_wherever_data_is():
    assert os.environ.get("SPARSECIRCUITS_CACHE")  # the tests' private cache
    corpus = open_corpus("installed")
    assert corpus.packages[0] == python_requirement()
    assert any(package.startswith("torch==") for package in corpus.packages)
