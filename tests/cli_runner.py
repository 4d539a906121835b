"""Run the real `sparsecircuits` command, as a user would: in a subprocess where the process
boundary matters (kills, two processes at once), in-process otherwise (much faster)."""

import contextlib
import io
import os
import subprocess
import sys

from sparsecircuits.cli import main


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sparsecircuits", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def run_in_process(*args: str) -> subprocess.CompletedProcess:
    """`sparsecircuits ARGS` through the same `main` the console script calls."""
    stdout, stderr = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["sparsecircuits", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(list(args), code, stdout.getvalue(), stderr.getvalue())
