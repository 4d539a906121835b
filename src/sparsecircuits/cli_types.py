"""Click parameter types with ranges, shared by every command: a flag outside its range ends in
one usage line, never in a traceback (or, worse, a run that silently does something else).

Leaf module: imports click and the standard library only.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import click

# Two-way softmax task loss of a model that guesses: ln 2 nats. A circuit that does nothing sits
# there, give or take sampling noise, so a target must stay clear of it to mean anything.
CHANCE_LOSS = math.log(2)
HIGHEST_TARGET_LOSS = round(CHANCE_LOSS - 0.05, 3)


class FiniteFloat(click.FloatRange):
    """A float in a range that is also a real number (NaN compares false to every bound)."""

    name = "float"

    def convert(self, value, param, ctx):  # noqa: ANN001 (click's signature)
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


DEVICE_OPTION = {
    "default": "cpu",
    "show_default": True,
    "help": "cpu, cuda or cuda:N: where the model runs.",
}


class OutputPath(click.Path):
    """A path the command will create: never empty. Subclasses name in `problem` what else
    makes a path unusable, checked as the flag is read."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    @staticmethod
    def problem(path: Path) -> str | None:
        return None

    def convert(self, value, param, ctx):  # noqa: ANN001
        if isinstance(value, str) and not value.strip():
            self.fail("the path is empty", param, ctx)
        path = super().convert(value, param, ctx)
        problem = self.problem(path)
        if problem is not None:
            self.fail(problem, param, ctx)
        return path


def unusable_file(path: Path) -> str | None:
    """Why `path` cannot be (or replace) a file this process writes; None if it can."""
    if os.path.isdir(path):
        return f"{path} is a folder; give a file path"
    if os.path.islink(path) and not os.path.exists(path):
        return f"{path} is a link to nothing"  # replacing it would not write where it points
    problem = unusable_folder(Path(path).parent)
    return None if problem is None else f"cannot write {path}: {problem}"


def unusable_folder(path: Path) -> str | None:
    """Why `path` cannot be (or become) a folder this process writes into; None if it can.
    The nearest existing ancestor is what a later mkdir would write into; it is tried with a
    hidden file removed at once, since permission bits do not tell (root passes every access
    check, and /proc or /sys refuse new files whatever the bits say)."""
    if os.path.lexists(path) and not os.path.isdir(path):
        what = "a file" if os.path.exists(path) else "a link to nothing"
        return f"{path} is {what}, not a folder"
    ancestor = Path(path)
    while not os.path.lexists(ancestor) and ancestor.parent != ancestor:
        ancestor = ancestor.parent
    if not os.path.isdir(ancestor):
        return f"cannot make {path}: {ancestor} is not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot write into {ancestor}: permission denied"
    try:
        handle, trial = tempfile.mkstemp(prefix=".sparsecircuits-write-test-", dir=ancestor)
    except OSError as error:
        reason = error.strerror or str(error)
        if ancestor == Path(path):
            return f"cannot write into {path}: {reason}"
        return f"cannot make {path}: {ancestor} refuses new files ({reason})"
    os.close(handle)
    os.unlink(trial)
    return None


class OutputFolder(OutputPath):
    """A folder the command writes its files into, checked before any work: a file there, a
    parent that is a file or a place that cannot be written ends in one usage line before a
    model is loaded, and nothing is created until the files are written."""

    problem = staticmethod(unusable_folder)


class OutputFile(OutputPath):
    """A file the command will write (replacing one already there, atomically), checked before
    any work by the rules of `files.check_output_file` leaving nothing behind: a folder there, a
    link to nothing, a parent that is a file or a place that cannot be written is one usage line
    before a model is loaded or a circuit pruned."""

    problem = staticmethod(unusable_file)


# A count becomes a tensor size or index somewhere, and torch holds those in 64 bits: a larger
# one is refused here rather than overflowing there. Sizes that fit 64 bits but not in memory
# are refused by `sparsecircuits.loading.memory` where a command knows what it will allocate.
LARGEST_COUNT = 2**63 - 1
# numpy's legacy seeding takes 32 bits, torch 64; the trainer also derives per-step seeds as
# seed * 1_000_003 + step * 7919 + rank, which must stay inside torch's 64 bits.
LARGEST_SEED = 2**32 - 1


def count_at_least(minimum: int) -> click.IntRange:
    """An integer count from `minimum` up to what a tensor size can be."""
    return click.IntRange(min=minimum, max=LARGEST_COUNT)


POSITIVE_INT = count_at_least(1)
# Task pairs are drawn and tokenised one at a time in Python (a few thousand a second): more
# than this would run for many minutes before any analysis started.
MAX_PAIRS = 100_000
PAIR_COUNT = click.IntRange(min=1, max=MAX_PAIRS)
SEED = click.IntRange(min=0, max=LARGEST_SEED)
FRACTION = FiniteFloat(min=0, max=1, min_open=True)  # (0, 1]: kept fractions
UNIT_INTERVAL = FiniteFloat(min=0, max=1)  # [0, 1]
POSITIVE_FLOAT = FiniteFloat(min=0, min_open=True)
TARGET_LOSS = FiniteFloat(min=0, max=HIGHEST_TARGET_LOSS, min_open=True, max_open=True)


def splice_options(help_text: str):  # noqa: ANN201 (a click decorator)
    """`--sae DIR` (an SAE to splice into the command's run) and `--force`."""

    def decorate(command):  # noqa: ANN001, ANN202
        command = click.option(
            "--force", is_flag=True, help="With --sae: use an SAE of another model anyway."
        )(command)
        return click.option(
            "--sae",
            "sae_folder",
            type=click.Path(path_type=Path, file_okay=False),
            help=help_text,
        )(command)

    return decorate
