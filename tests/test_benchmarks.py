"""The benchmarks run: each one's cheapest form, so a change to what they call breaks a test,
not the next measurement. (Their numbers are measured by running them, never asserted here.)"""

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
