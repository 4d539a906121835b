"""The top-level command: fast help, later stages loaded on first use."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from sparsecircuits.cli import STAGE_COMMANDS, cli


def test_top_level_help_lists_stage_commands_without_importing_torch() -> None:
    code = (
        "import sys\nfrom sparsecircuits.cli import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "prune" in result.stdout and "frontier" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("name", sorted(STAGE_COMMANDS))
def test_stage_command_help_lines_match_the_commands(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command.get_short_help_str(limit=60) == STAGE_COMMANDS[name][1]
