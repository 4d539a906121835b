"""The benchmarks run: each one's cheapest form, so a change to what they call breaks a test,
not the next measurement. (Their numbers are measured by running them, never asserted here.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def run_benchmark(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_train_throughput_runs_one_step_of_each_model():
    result = run_benchmark("train_throughput.py", "--preset", "tiny", "--steps", "1")
    assert result.returncode == 0, result.stderr
    assert "sparse step time / dense step time" in result.stdout


@pytest.mark.parametrize(
    "name",
    sorted(
        path.name
        for path in BENCHMARKS.glob("*.py")
        if path.name != "timing.py" and not path.name.endswith("_worker.py")  # helpers
    ),
)
def test_every_benchmark_answers_help(name):
    result = run_benchmark(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_sae_vs_sparse_runs_on_one_tiny_model_twice(tiny_run: Path, tmp_path: Path):
    work = tmp_path / "work"
    flags = ["--model", f"a={tiny_run}", "--model", f"b={tiny_run}", "--width", "64"]
    flags += ["--hook", "blocks.1.hook_resid_post", "--k-grid", "4", "--sae-tokens", "512"]
    flags += ["--eval-tokens", "256", "--units", "3", "--tokens", "2048", "--work", str(work)]
    flags += ["--db", str(work / "e.sqlite"), "--json", str(tmp_path / "r.json")]
    result = run_benchmark("sae_vs_sparse.py", *flags)
    assert result.returncode == 0, result.stderr
    sets = json.loads((tmp_path / "r.json").read_text())["sets"]
    assert list(sets) == ["a neurons", "a SAE latents", "b neurons", "b SAE latents"]
    assert sets["a neurons"]["units"] == 3 and sets["a SAE latents"]["units"] == 3
    # One model twice: the same units, records and SAE (same seed) give the same scores.
    assert (
        sets["a SAE latents"]["score_top_and_random"]
        == sets["b SAE latents"]["score_top_and_random"]
    )
